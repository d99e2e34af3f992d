"""Tests of xfit.phantoms: realistic procedural spine CT with per-level labels."""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from xfit.errors import InputError, OutputExistsError
from xfit.io import crop_centred
from xfit.levels import LEVEL_TO_LABEL
from xfit.phantoms import TISSUE, draw_params, make_phantom, montage, write_phantoms
from xfit.phantoms.morphometry import MORPHOMETRY
from xfit.phantoms.posture import SPINE_LEVELS, sagittal_tilts
from xfit.phantoms.report import hu_bands, measure_vertebra, tissue_stats

SEEDS = range(8)


@pytest.fixture(scope="module")
def phantoms():
    return {s: make_phantom(s) for s in SEEDS}


def test_smoke_shapes_dtypes_affine(phantoms):
    ph = phantoms[0]
    assert ph.hu.shape == ph.seg.shape == ph.tissue.shape == (64, 64, 64)
    assert ph.hu.dtype == np.float32 and ph.seg.dtype == np.int16 and ph.tissue.dtype == np.int16
    np.testing.assert_allclose(np.diag(ph.affine)[:3], 1.25)
    centre = ph.affine @ np.array([31.5, 31.5, 31.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)
    assert set(np.unique(ph.seg)) <= {0, *LEVEL_TO_LABEL.values()}
    assert set(np.unique(ph.tissue)) <= set(TISSUE.values())
    json.dumps(ph.to_json())


def test_every_vertebra_carries_its_level(phantoms):
    for s, ph in phantoms.items():
        lvl = ph.info["centre_level"]
        assert ph.centre_label == LEVEL_TO_LABEL[lvl]
        present = set(np.unique(ph.seg)) - {0}
        i = SPINE_LEVELS.index(lvl)
        # the centred vertebra and its two neighbours, labelled in order along z
        for n in SPINE_LEVELS[max(i - 1, 0) : i + 2]:
            assert LEVEL_TO_LABEL[n] in present, (s, n)
        z_of = {lab: ndimage.center_of_mass(ph.seg == lab)[2] for lab in present}
        order = sorted(present, key=lambda lab: -z_of[lab])  # cranial first
        assert [SPINE_LEVELS.index(next(k for k, v in LEVEL_TO_LABEL.items() if v == lab)) for lab in order] == sorted(
            SPINE_LEVELS.index(next(k for k, v in LEVEL_TO_LABEL.items() if v == lab)) for lab in order
        ), s


def test_deterministic_and_seeds_differ(phantoms):
    again = make_phantom(1)
    np.testing.assert_array_equal(again.hu, phantoms[1].hu)
    np.testing.assert_array_equal(again.seg, phantoms[1].seg)
    assert again.to_json() == phantoms[1].to_json()
    assert np.abs(phantoms[0].hu - phantoms[1].hu).mean() > 20.0


def test_vertebra_centred_on_the_grid(phantoms):
    """The grid centre is the centroid of the whole vertebra (measured on a field of view that
    holds all of it), and the 64^3 crop holds nearly all of it."""
    for s in (0, 1, 2):
        big = make_phantom(s, fov_mm=130.0)
        m = big.vertebra_mask
        assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()), s
        c = np.array(ndimage.center_of_mass(m))
        assert np.all(np.abs(c - (m.shape[0] - 1) / 2) <= 0.5 + 1e-6), (s, c)
        assert phantoms[s].vertebra_mask.sum() > 0.95 * m.sum(), s


@pytest.mark.parametrize("level", ["T8", "L3"])
def test_dimensions_match_published_table(level):
    """Measured body, canal and process dimensions lie within the published mean +- 3 SD
    (plus 2.5 mm of voxel measurement error) at one thoracic and one lumbar level."""
    m = MORPHOMETRY[level]
    for seed in range(3):
        ph = make_phantom(seed, level=level, noise_hu=0.0)
        got = measure_vertebra(ph)
        for key in (
            "body_width",
            "body_depth",
            "body_height_ant",
            "body_height_post",
            "canal_width",
            "transverse_width",
        ):
            ref = getattr(m, key)
            assert abs(got[key] - ref.mean) <= 3 * ref.sd + 2.5, (level, seed, key, got[key], ref)


def test_hu_classes_in_published_ranges(phantoms):
    st = tissue_stats(list(phantoms.values()))
    assert -150 <= st["fat"]["median"] <= -50
    assert 20 <= st["muscle"]["median"] <= 70
    assert 60 <= st["disc"]["median"] <= 120
    assert -10 <= st["csf"]["median"] <= 30
    for s, ph in phantoms.items():
        core = ndimage.binary_erosion(ph.vertebra_mask, iterations=3)
        assert 40 <= np.median(ph.hu[core]) <= 330, s  # trabecular bone, osteoporotic to young
    bands = hu_bands(list(phantoms.values()))
    assert bands["above 450"] < 0.10  # a thin cortical rim, not solid bone
    assert bands["fat -500 to -30"] > 0.08


def test_trabecular_density_follows_age():
    young, old = [], []
    for s in range(40):
        p = draw_params(s)
        v = p.spine.vertebrae[p.spine.centre_level]
        (young if p.spine.age_density < 0.3 else old if p.spine.age_density > 0.7 else []).append(v.trab_hu)
    assert np.mean(young) > np.mean(old) + 80


def test_posture_ranges_and_tilts():
    lord, tilt_l5, tilt_l1, scol = [], [], [], 0
    for s in range(200):
        p = draw_params(s).spine.posture
        phi = sagittal_tilts(p)
        lord.append(p.lordosis)
        tilt_l5.append(phi["L5"])
        tilt_l1.append(phi["L1"])
        scol += p.scoliosis_cobb > 0
    assert 30 < np.mean(lord) < 65
    assert np.mean(tilt_l5) > 10 and np.mean(tilt_l1) < 0  # lordosis: L5 forwards, L1 back
    assert 0.05 < scol / 200 < 0.3
    # the centred vertebra tilts up to about 20 degrees across cases
    tilts = [
        abs(make_phantom(s, size=16, spacing_mm=4.0, blur=False, noise_hu=0).info["vertebra"]["sagittal_tilt_deg"])
        for s in range(12)
    ]
    assert max(tilts) > 10


def test_crop_equals_centre_of_whole_body():
    """The same seed on a 48^3 grid and on a 120 mm field of view: the central block is equal
    (textures, noise and scanner blur are functions of world positions)."""
    small = make_phantom(3, size=48, level="T10")
    big = make_phantom(3, size=48, level="T10", fov_mm=120.0)
    n, m = 48, big.hu.shape[0]
    o = (m - n) // 2
    sl = (slice(o, o + n),) * 3
    np.testing.assert_allclose(big.affine[:3, 3] + o * 1.25, small.affine[:3, 3])
    np.testing.assert_array_equal(big.seg[sl], small.seg)
    np.testing.assert_array_equal(big.tissue[sl], small.tissue)
    np.testing.assert_allclose(big.hu[sl], small.hu, atol=1e-2)


def test_vertebra_centred_matches_training_crop():
    """Cutting the loader's crop (centroid of the vertebra's label, io.crop_centred) from a
    larger phantom gives the vertebra-centred phantom."""
    big = make_phantom(5, size=32, spacing_mm=2.5, fov_mm=140.0, noise_hu=0.0)
    c = ndimage.center_of_mass(big.vertebra_mask)
    ref = make_phantom(5, size=32, spacing_mm=2.5, noise_hu=0.0)
    np.testing.assert_array_equal(crop_centred(big.seg, c, 32, 0), ref.seg)
    np.testing.assert_allclose(crop_centred(big.hu, c, 32, -1000.0), ref.hu, atol=1e-2)


def test_scanner_switches():
    clean = make_phantom(2, size=32, noise_hu=0.0, blur=False, metal=False)
    noisy = make_phantom(2, size=32, noise_hu=20.0, blur=False, metal=False)
    diff = noisy.hu - clean.hu
    assert 16.0 < diff.std() < 24.0 and abs(diff.mean()) < 1.5
    # correlated: neighbouring voxels of the noise are positively correlated
    assert np.corrcoef(diff[:-1].ravel(), diff[1:].ravel())[0, 1] > 0.2
    blurred = make_phantom(2, size=32, noise_hu=0.0, blur=True, metal=False)
    assert blurred.hu.max() < clean.hu.max()
    metal = make_phantom(2, size=64, noise_hu=0.0, blur=False, metal=True)
    assert (metal.tissue == TISSUE["metal"]).sum() > 50 and metal.hu.max() > 3000
    np.testing.assert_array_equal(metal.seg, make_phantom(2, size=64, noise_hu=0.0, blur=False, metal=False).seg)
    assert clean.hu.max() < 2000


def test_thoracic_and_lumbar_surroundings():
    t = make_phantom(4, level="T7", fov_mm=200.0, noise_hu=0.0)
    lu = make_phantom(4, level="L3", fov_mm=200.0, noise_hu=0.0)
    count = lambda ph, name: int((ph.tissue == TISSUE[name]).sum())
    assert count(t, "lung") > 50000 and count(t, "rib") > 2000 and count(t, "blood") > 5000
    assert count(lu, "kidney") > 2000 and count(lu, "lung") == 0
    assert count(lu, "fat") > 20000
    assert np.median(t.hu[t.tissue == TISSUE["lung"]]) < -700


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(level="X9"),
        dict(level="C3"),
        dict(level="L5-L1"),
        dict(size=4),
        dict(size=(64, 64)),
        dict(spacing_mm=0.0),
        dict(spacing_mm=float("nan")),
        dict(fov_mm=-5.0),
        dict(noise_hu=-1.0),
        dict(centre="middle"),
        dict(fov_mm=1e5),
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(InputError):
        make_phantom(0, **kwargs)


def test_write_phantoms(tmp_path):
    out = tmp_path / "ph"
    paths = write_phantoms(out, 2, size=32, spacing_mm=2.5, seed=7, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "case0000_ct.nii.gz",
            "case0000_seg.nii.gz",
            "case0000_tissue.nii.gz",
            "case0000.json",
            "case0001_ct.nii.gz",
            "case0001_seg.nii.gz",
            "case0001_tissue.nii.gz",
            "case0001.json",
            "montage.png",
        ]
    )
    assert all(p.exists() for p in paths)
    ref = make_phantom(8, size=32, spacing_mm=2.5)
    ct, seg = nib.load(out / "case0001_ct.nii.gz"), nib.load(out / "case0001_seg.nii.gz")
    np.testing.assert_allclose(ct.affine, ref.affine)
    np.testing.assert_allclose(np.asarray(ct.dataobj), ref.hu, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(seg.dataobj), ref.seg)
    meta = json.loads((out / "case0001.json").read_text())
    assert meta["seed"] == 8 and meta["centre_label"] == ref.centre_label
    with pytest.raises(OutputExistsError):
        write_phantoms(out, 1, size=32, spacing_mm=2.5, seed=7, progress=False)
    write_phantoms(out, 1, size=32, spacing_mm=2.5, seed=7, progress=False, force=True)
    assert not (out / "case0001_ct.nii.gz").exists()  # --force replaces the whole folder


def test_write_phantoms_interrupted_leaves_nothing(tmp_path, monkeypatch):
    from xfit.phantoms import writing

    real = writing.make_phantom
    calls = []

    def failing(seed, **kw):
        calls.append(seed)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(seed, **kw)

    monkeypatch.setattr(writing, "make_phantom", failing)
    out = tmp_path / "ph"
    with pytest.raises(KeyboardInterrupt):
        write_phantoms(out, 4, size=16, spacing_mm=5.0, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_montage(tmp_path, phantoms):
    path = montage([phantoms[0], phantoms[2]], tmp_path / "m.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError):
        montage([phantoms[0]], path, force=False)
    with pytest.raises(InputError):
        montage([], tmp_path / "e.png")


def test_realism_report(tmp_path):
    from xfit.phantoms.report import run_report

    rep = run_report(3, tmp_path / "rep", seed=1, size=32, spacing_mm=2.5, n_images=2, progress=False)
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {
        "report.md",
        "report.json",
        "montage.png",
        "whole_body.png",
    }
    lvl = next(iter(rep["dimensions"]))
    row = rep["dimensions"][lvl]["body_width"]
    assert row["published_mean"] == MORPHOMETRY[lvl].body_width.mean and row["mean"] > 10
    assert "fat" in rep["tissues"] and 0 < rep["hu_bands"]["above 450"] < 0.2
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| level |" in text and "HU per tissue class" in text
