"""Tests of xfit.phantoms: procedural spine CT phantoms with labels."""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from xfit.errors import InputError, OutputExistsError
from xfit.phantoms import LABELS, Phantom, make_phantom, montage, write_phantoms

SEEDS = range(10)


@pytest.fixture(scope="module")
def phantoms():
    return {s: make_phantom(s) for s in SEEDS}


@pytest.fixture(scope="module")
def fov_pair():
    """A crop and a 160 mm field of view of the same seed (thoracic: ribs and lungs)."""
    return make_phantom(3, level="thoracic"), make_phantom(3, level="thoracic", fov_mm=160.0)


def _axis(ph: Phantom, d: int) -> np.ndarray:
    n = ph.hu.shape[d]
    return ph.affine[d, d] * np.arange(n) + ph.affine[d, 3]


def test_smoke_shapes_dtypes_affine(phantoms):
    ph = phantoms[0]
    assert ph.hu.shape == ph.labels.shape == (64, 64, 64)
    assert ph.hu.dtype == np.float32 and ph.labels.dtype == np.int16
    np.testing.assert_allclose(np.diag(ph.affine)[:3], 1.25)
    centre = ph.affine @ np.array([31.5, 31.5, 31.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)
    assert set(np.unique(ph.labels)) <= set(LABELS)
    json.dumps(ph.params)  # JSON-serializable


def test_deterministic_and_seeds_differ(phantoms):
    again = make_phantom(1)
    np.testing.assert_array_equal(again.hu, phantoms[1].hu)
    np.testing.assert_array_equal(again.labels, phantoms[1].labels)
    assert again.params == phantoms[1].params
    assert np.abs(phantoms[0].hu - phantoms[1].hu).mean() > 20.0
    assert (phantoms[0].labels != phantoms[1].labels).mean() > 0.02


@pytest.mark.parametrize("level", ["lumbar", "thoracic"])
def test_level_and_parameters(level):
    ph = make_phantom(5, level=level, size=32, spacing_mm=2.5)
    assert ph.params["spine"]["level"] == level
    assert ph.params["vertebra"]["level"][0] == level[0].upper()
    assert ph.hu.shape == (32, 32, 32)


def test_hu_ranges_in_label_regions(phantoms):
    for s, ph in phantoms.items():
        vert = ph.labels == 1
        interior = ndimage.binary_erosion(vert, iterations=3)
        assert interior.sum() > 500, s
        assert 150 <= np.median(ph.hu[interior]) <= 300, s  # trabecular core
        assert 700 <= ph.hu[vert].max() <= 1500, s  # cortical shell
        assert 70 <= np.median(ph.hu[ph.labels == 3]) <= 110, s  # discs
        assert -20 <= np.median(ph.hu[ph.labels == 4]) <= 45, s  # canal: CSF / cord
        soft = ph.hu[ph.labels == 0]
        assert np.mean((soft > 35) & (soft < 65)) > 0.2, s  # muscle around the spine


def test_vertebra_extents_and_centre(phantoms):
    for s, ph in phantoms.items():
        i, j, k = np.nonzero(ph.labels == 1)
        x, y, z = _axis(ph, 0)[i], _axis(ph, 1)[j], _axis(ph, 2)[k]
        width = np.ptp(x) + 1.25
        depth = np.ptp(y) + 1.25
        assert 50 <= width <= 80, (s, width)
        assert 60 <= depth <= 80, (s, depth)
        # AP/LR bounding-box centre and body centre at the origin (within a few mm)
        assert abs((x.max() + x.min()) / 2) < 4 and abs((y.max() + y.min()) / 2) < 4, s
        v = ph.params["vertebra"]
        assert 20 <= v["body_height_mm"] <= 30, s
        bc = v["body_centre_mm"]
        assert abs(bc[0]) < 3 and abs(bc[2]) < 3, s
        # body height measured in the label: a column through the anterior body
        ic = int(np.argmin(np.abs(_axis(ph, 0) - bc[0])))
        jc = int(np.argmin(np.abs(_axis(ph, 1) - (bc[1] + 0.4 * v["body_depth_mm"] / 2))))
        col = ph.labels[ic, jc] == 1
        assert abs(col.sum() * 1.25 - v["body_height_mm"]) < 4.0, s
        # the whole centred vertebra lies inside the crop
        lab = ph.labels == 1
        assert not (lab[0].any() or lab[-1].any() or lab[:, 0].any() or lab[:, -1].any())


def test_neighbours_discs_canal_present(phantoms):
    for s, ph in phantoms.items():
        counts = np.bincount(ph.labels.ravel(), minlength=7)
        assert counts[2] > 2000 and counts[3] > 1000 and counts[4] > 1000, s
        # neighbours above and below the centred vertebra
        k = np.nonzero((ph.labels == 2).any(axis=(0, 1)))[0]
        assert k.min() < 10 and k.max() > 53, s


def test_posterior_elements_point_posterior(phantoms):
    for s, ph in phantoms.items():
        i, j, k = np.nonzero(ph.labels == 1)
        y, z = _axis(ph, 1)[j], _axis(ph, 2)[k]
        tip = y < y.min() + 6  # spinous process tip region
        assert np.mean(z[tip]) < -1.0, s  # posterior-inferior


def test_fov_shares_centre_with_crop(fov_pair):
    crop, fov = fov_pair
    n, m = crop.hu.shape[0], fov.hu.shape[0]
    assert m == 128 and (m - n) % 2 == 0
    o = (m - n) // 2
    centre = (slice(o, o + n),) * 3
    np.testing.assert_allclose(fov.affine[:3, 3] + o * 1.25, crop.affine[:3, 3])
    agree = (fov.labels[centre] == crop.labels).mean()
    assert agree > 0.95
    assert np.array_equal(fov.labels[centre] == 1, crop.labels == 1)
    assert np.median(np.abs(fov.hu[centre] - crop.hu)) < 1.0


def test_fov_has_body(fov_pair):
    _, fov = fov_pair
    soft = fov.hu[fov.labels == 0]
    assert np.sum((soft > 40) & (soft < 60)) > 10000  # muscle
    assert np.sum((soft > -120) & (soft < -60)) > 10000  # fat
    assert (fov.labels == 5).sum() > 1000  # ribs
    air = fov.labels == 6
    assert air.sum() > 10000 and np.median(fov.hu[air]) < -700
    assert fov.labels[0, 0, 0] == 6 and fov.hu[0, 0, 0] < -900  # air outside the body


@pytest.mark.parametrize("kwargs", [dict(level="cervical"), dict(size=4), dict(spacing_mm=0.0),
                                    dict(fov_mm=-5.0), dict(noise_hu=-1.0)])
def test_bad_arguments(kwargs):
    with pytest.raises(InputError):
        make_phantom(0, **kwargs)


def test_noise_level():
    clean = make_phantom(2, noise_hu=0.0, size=32)
    noisy = make_phantom(2, noise_hu=20.0, size=32)
    diff = noisy.hu - clean.hu
    assert 17.0 < diff.std() < 23.0 and abs(diff.mean()) < 1.0


def test_write_phantoms(tmp_path):
    out = tmp_path / "ph"
    paths = write_phantoms(out, 2, size=32, spacing_mm=2.5, seed=7, progress=False)
    assert (out / "case0000_ct.nii.gz").exists() and (out / "case0001_seg.nii.gz").exists()
    assert (out / "case0001.json").exists() and (out / "montage.png").exists()
    assert len(paths) == 7
    ref = make_phantom(8, size=32, spacing_mm=2.5, centre="vertebra")  # write_phantoms' default
    ct = nib.load(out / "case0001_ct.nii.gz")
    seg = nib.load(out / "case0001_seg.nii.gz")
    np.testing.assert_allclose(ct.affine, ref.affine)
    np.testing.assert_allclose(np.asarray(ct.dataobj), ref.hu, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(seg.dataobj), ref.labels)
    assert json.loads((out / "case0001.json").read_text())["seed"] == 8
    with pytest.raises(OutputExistsError):
        write_phantoms(out, 1, size=32, spacing_mm=2.5, seed=7, progress=False)
    write_phantoms(out, 1, size=32, spacing_mm=2.5, seed=7, progress=False, force=True)


def test_montage(tmp_path, phantoms):
    path = montage([phantoms[0], phantoms[2]], tmp_path / "m.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError):
        montage([phantoms[0]], path, force=False)
    with pytest.raises(InputError):
        montage([], tmp_path / "e.png")


def test_vertebra_centred_phantom():
    """centre="vertebra": the centroid of label 1 is at the grid centre (within half a voxel),
    the anatomy is the grid-centred phantom shifted by whole voxels, and no air is padded in."""
    from scipy import ndimage

    for seed in (0, 3):
        grid = make_phantom(seed, size=48, spacing_mm=1.25, noise_hu=0.0)
        vert = make_phantom(seed, size=48, spacing_mm=1.25, noise_hu=0.0, centre="vertebra")
        whole = make_phantom(seed, size=48, spacing_mm=1.25, noise_hu=0.0, fov_mm=120.0, centre="vertebra")
        c = np.array(ndimage.center_of_mass(whole.labels == 1))  # the whole vertebra is inside
        assert np.all(np.abs(c - (whole.hu.shape[0] - 1) / 2) <= 0.5 + 1e-6), c
        assert vert.hu.min() > -999.0  # no air padding (the crop's fill value is -1000)
        shift = np.rint(np.array(vert.params["centre_shift_mm"]) / 1.25).astype(int)
        assert np.abs(shift).max() > 0  # the vertebra is not at the drawing centre
        # overlapping block of both grids holds the same voxels
        sl_v = tuple(slice(max(0, -d), 48 - max(0, d)) for d in shift)
        sl_g = tuple(slice(max(0, d), 48 + min(0, d)) for d in shift)
        np.testing.assert_array_equal(vert.labels[sl_v], grid.labels[sl_g])
        np.testing.assert_allclose(vert.hu[sl_v], grid.hu[sl_g], atol=1e-3)
        np.testing.assert_allclose(vert.affine, grid.affine)
    with pytest.raises(InputError):
        make_phantom(0, size=32, centre="middle")


def test_vertebra_centred_matches_training_crop():
    """The prior's data loader cuts the same cube from a larger phantom."""
    from xfit.io import Volume
    from xfit.prior.data import DataSettings, examples_from_volume

    big = make_phantom(5, size=32, spacing_mm=2.5, fov_mm=140.0, noise_hu=0.0)
    ex = examples_from_volume(Volume(big.hu, big.affine), Volume(big.labels.astype(np.float32), big.affine),
                              DataSettings(32, 2.5, (-1000.0, 1500.0), (1,)))
    ref = make_phantom(5, size=32, spacing_mm=2.5, noise_hu=0.0, centre="vertebra")
    np.testing.assert_array_equal(ex[0][0][1] > 0, ref.labels == 1)
