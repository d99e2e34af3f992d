"""Tests of xfit.prior.datasets (layouts) and xfit.prior.data (crops, skips, cache) on tiny
synthetic spines written by tests/spine_synth.py."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from spine_synth import TS_V1, TS_V2, spine_volume, write_layout, write_nifti, write_xfit_case, write_xfit_collection

from xfit.errors import InputError
from xfit.io import crop_centred
from xfit.levels import level_label, parse_levels
from xfit.prior.data import MAX_OUTSIDE, CropStore, DataSettings, dry_run, load_training_set, prepare_case
from xfit.prior.datasets import TOTALSEG_CLASS_MAPS, detect_layout, find_cases, read_class_map
from xfit.units import hu_to_unit as hu_to_unit_np

LEVELS5 = ("T11", "T12", "L1", "L2", "L3")
S32 = DataSettings(32, 2.5, (-1000.0, 1500.0))


def _load(folder, settings=S32, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("workers", 1)
    return load_training_set(folder, settings, **kw)


# ----------------------------------------------------------------------------- xfit layout


def test_vertebra_centred_cases_give_one_crop_each(tmp_path):
    d = write_xfit_collection(tmp_path / "c", 3, centres=["T12", "L1", "L2"], levels=LEVELS5)
    coll = find_cases(d)
    assert coll.layout == "xfit" and len(coll.cases) == 3
    assert all("tissue" not in str(f) for c in coll.cases for f in c.files)  # tissue map ignored
    data = _load(d)
    assert len(data.volumes) == 3 and data.volumes.shape == (3, 2, 32, 32, 32)
    assert data.levels == [level_label("T12"), level_label("L1"), level_label("L2")]
    assert data.sources == ["case0000_ct.nii.gz:T12", "case0001_ct.nii.gz:L1", "case0002_ct.nii.gz:L2"]
    assert data.level_counts() == {"T12": 1, "L1": 1, "L2": 1}
    # each neighbour's crop hangs out of the scan: skipped and said so, two per case
    assert len(data.skipped) == 6
    assert all("outside the scan" in why for _, why in data.skipped)
    assert ("case0001_ct.nii.gz:T12", data.skipped[2][1]) == data.skipped[2]
    rep = data.reports[1]
    assert rep.found == [19, 20, 21] and rep.crops == [20] and [s[0] for s in rep.skipped] == ["T12", "L2"]


def test_crop_copies_voxels_exactly_and_label_is_the_centred_vertebra(tmp_path):
    ct = write_xfit_case(tmp_path, 0, fov=(40, 36, 64), levels=LEVELS5, centre_level="L1")
    hu = nib.load(str(ct)).get_fdata().astype(np.float32)
    seg = np.asarray(nib.load(str(ct).replace("_ct", "_seg")).dataobj)
    data = _load(tmp_path)
    assert data.level_counts() == {"T12": 1, "L1": 1, "L2": 1}  # T11/L3 hang out of the 64-slice scan
    i = data.levels.index(level_label("L2"))
    from scipy import ndimage

    centre = ndimage.center_of_mass(seg == level_label("L2"))
    want_hu = crop_centred(hu, centre, 32, -1000.0)
    want_lab = crop_centred((seg == level_label("L2")).astype(np.float32), centre, 32, 0.0)
    got = data.volumes[i].float().numpy()
    np.testing.assert_allclose(got[0], hu_to_unit_np(want_hu, (-1000, 1500)), atol=1e-3)
    np.testing.assert_array_equal(got[1] > 0, want_lab > 0)
    # the label channel holds only the centred vertebra, not its neighbours
    assert (got[1] > 0).sum() == (seg == level_label("L2")).sum()


def test_levels_choose_the_crops(tmp_path):
    d = write_xfit_collection(tmp_path / "c", 1, fov=(32, 32, 96), levels=LEVELS5)
    assert _load(d).level_counts() == dict.fromkeys(LEVELS5, 1)
    only = DataSettings(32, 2.5, (-1000.0, 1500.0), parse_levels("L1-L5"))
    data = _load(d, only, cache_dir=tmp_path / "cache")
    assert data.level_counts() == {"L1": 1, "L2": 1, "L3": 1}
    assert data.reports[0].found == [level_label(n) for n in LEVELS5]  # found, but not chosen
    none = DataSettings(32, 2.5, (-1000.0, 1500.0), parse_levels("C1-C7"))
    with pytest.raises(InputError, match="no usable vertebra crop"):
        _load(d, none)


@pytest.mark.parametrize(
    "shift,kept", [((0, 0, 0), True), ((1, 0, 0), True), ((0, -1, 0), True), ((1, 1, 0), False), ((0, 0, 3), False)]
)
def test_outside_threshold(tmp_path, shift, kept):
    """A crop may hang at most 5 % out of the scan: one voxel of 32 is 3.1 %, two are 6.2 %
    (at 64^3 one voxel along every axis is 4.6 %)."""
    c = np.array([15.5, 15.5, 15.5]) + np.array(shift)
    hu, seg, aff = spine_volume((32, 32, 32), (2.5,) * 3, "L1", ("L1",), centre_vox=c)
    write_nifti(tmp_path / "a_ct.nii.gz", hu, aff)
    write_nifti(tmp_path / "a_seg.nii.gz", seg, aff)
    coll = find_cases(tmp_path)
    _, rep = prepare_case(coll.cases[0], S32, with_data=False)
    out = 1 - np.prod([(32 - s) / 32 for s in shift])
    assert (rep.crops == [20]) == kept and bool(out <= MAX_OUTSIDE) == kept
    if not kept:
        assert rep.skipped[0][0] == "L1" and f"{100 * out:.0f} %" in rep.skipped[0][1]


def test_nii_and_scaled_int16_give_the_same_crops(tmp_path):
    hu, seg, aff = spine_volume((32, 32, 32), (2.5,) * 3, "L1", ("T12", "L1", "L2"), seed=3)
    a, b = tmp_path / "a", tmp_path / "b"
    write_nifti(a / "x_ct.nii.gz", hu, aff)
    write_nifti(a / "x_seg.nii.gz", seg, aff)
    raw = np.rint((hu + 1024) / 2).astype(np.int16)  # HU = 2 * stored - 1024
    write_nifti(b / "x_ct.nii", raw, aff, slope=2.0, inter=-1024.0)
    write_nifti(b / "x_seg.nii", seg.astype(np.uint8), aff)
    va, vb = _load(a).volumes[0].float(), _load(b).volumes[0].float()
    assert torch.equal(va[1], vb[1])
    assert (va[0] - vb[0]).abs().max() < 2.5 / 1250 + 1e-3  # one stored step = 2 HU


def test_any_orientation_gives_the_same_crop(tmp_path):
    """LPS storage (flipped x, y) and swapped axes describe the same world: same crop."""
    hu, seg, aff = spine_volume((32, 34, 36), (2.5,) * 3, "L1", ("T12", "L1", "L2"), seed=1)
    write_nifti(tmp_path / "ras" / "x_ct.nii.gz", hu, aff)
    write_nifti(tmp_path / "ras" / "x_seg.nii.gz", seg, aff)
    # flip i and j, then store axes as (k, i, j)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:3, 3] = [31, 33, 0]
    perm = np.zeros((4, 4))
    perm[0, 1] = perm[1, 2] = perm[2, 0] = perm[3, 3] = 1  # new index (k, i, j) -> old (i, j, k)
    aff2 = aff @ flip @ perm
    hu2 = np.transpose(hu[::-1, ::-1, :], (2, 0, 1))
    seg2 = np.transpose(seg[::-1, ::-1, :], (2, 0, 1))
    write_nifti(tmp_path / "lps" / "x_ct.nii.gz", hu2, aff2)
    write_nifti(tmp_path / "lps" / "x_seg.nii.gz", seg2, aff2)
    a, b = _load(tmp_path / "ras").volumes[0], _load(tmp_path / "lps").volumes[0]
    assert torch.equal(a, b)


def _mask_centre_offset(vol: torch.Tensor) -> float:
    m = (vol[1] > 0).numpy()
    from scipy import ndimage

    return float(np.abs(np.array(ndimage.center_of_mass(m)) - 15.5).max())


def test_oblique_and_anisotropic_ct(tmp_path):
    """An oblique affine and a 1.25 x 1.25 x 5 mm grid still give a crop centred on its vertebra
    with about the vertebra's volume (world ellipsoid 14 x 12 x 10 mm semi-axes)."""
    want = 4 / 3 * np.pi * 14 * 12 * 10 / 2.5**3
    # anisotropic
    hu, seg, aff = spine_volume((64, 64, 16), (1.25, 1.25, 5.0), "L1", ("T12", "L1", "L2"))
    write_nifti(tmp_path / "an" / "x_ct.nii.gz", hu, aff)
    write_nifti(tmp_path / "an" / "x_seg.nii.gz", seg, aff)
    v = _load(tmp_path / "an").volumes[0]
    assert _mask_centre_offset(v) < 1.0 and abs((v[1] > 0).sum().item() / want - 1) < 0.15
    # oblique: the voxel grid is rotated 20 degrees about z in the world; the vertebra, drawn in
    # voxel space, turns with it, so its crop (world axes) holds the rotated ellipsoid
    hu, seg, aff = spine_volume((40, 40, 40), (2.5,) * 3, "L1", ("L1",))
    t = np.deg2rad(20)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    write_nifti(tmp_path / "ob" / "x_ct.nii.gz", hu, rot @ aff)
    write_nifti(tmp_path / "ob" / "x_seg.nii.gz", seg, rot @ aff)
    v = _load(tmp_path / "ob").volumes[0]
    assert _mask_centre_offset(v) < 0.6 and abs((v[1] > 0).sum().item() / want - 1) < 0.1
    assert (v[0] > hu_to_unit_np(np.float32(500), (-1000, 1500))).any()  # the cortex made it


def test_mask_on_another_grid_and_not_overlapping(tmp_path):
    hu, seg, aff = spine_volume((32, 32, 32), (2.5,) * 3, "L1", ("L1",))
    write_nifti(tmp_path / "g" / "x_ct.nii.gz", hu, aff)
    _fine, fseg, faff = spine_volume((80, 80, 80), (1.25,) * 3, "L1", ("L1",))  # same world, finer
    write_nifti(tmp_path / "g" / "x_seg.nii.gz", fseg, faff)
    same = tmp_path / "same"
    write_nifti(same / "x_ct.nii.gz", hu, aff)
    write_nifti(same / "x_seg.nii.gz", seg, aff)
    a, b = _load(tmp_path / "g").volumes[0], _load(same).volumes[0]
    assert torch.equal(a[0], b[0])
    agree = ((a[1] > 0) == (b[1] > 0)).float().mean().item()
    assert agree > 0.995
    far = faff.copy()
    far[:3, 3] += 500.0
    write_nifti(tmp_path / "far" / "x_ct.nii.gz", hu, aff)
    write_nifti(tmp_path / "far" / "x_seg.nii.gz", fseg, far)
    with pytest.raises(InputError, match="x_ct.nii.gz: mask x_seg.nii.gz does not overlap its CT"):
        _load(tmp_path / "far")


def test_corrupt_and_unlabelled_files_are_reported(tmp_path):
    d = write_xfit_collection(tmp_path / "c", 2)
    (d / "case0009_ct.nii.gz").write_bytes(b"garbage")
    (d / "case0009_seg.nii.gz").write_bytes(b"garbage")
    hu, _, aff = spine_volume((32, 32, 32), (2.5,) * 3, "L1", ("L1",))
    write_nifti(d / "lonely_ct.nii.gz", hu, aff)  # no mask
    write_nifti(d / "empty_ct.nii.gz", hu, aff)
    write_nifti(d / "empty_seg.nii.gz", np.zeros((32, 32, 32), np.int16), aff)
    with pytest.warns(UserWarning, match="skipped 3 of 5"):
        data = _load(d)
    assert len(data.volumes) == 2
    errors = {r.name: r.error for r in data.reports if r.error}
    assert set(errors) == {"case0009_ct.nii.gz", "lonely_ct.nii.gz", "empty_ct.nii.gz"}
    assert "cannot read as NIfTI" in errors["case0009_ct.nii.gz"]
    assert "no vertebra mask" in errors["lonely_ct.nii.gz"]
    assert "mask is empty" in errors["empty_ct.nii.gz"]
    assert {w for w, _ in data.skipped} >= set(errors)


def test_cache_is_reused_and_invalidated(tmp_path):
    d = write_xfit_collection(tmp_path / "c", 2)
    cache = tmp_path / "cache"
    a = _load(d, cache_dir=cache)
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 1 and entries[0].startswith("data-")
    assert sorted(p.name for p in (cache / entries[0]).iterdir()) == ["crops.f16", "index.json"]
    b = _load(d, cache_dir=cache)
    assert torch.equal(a.volumes[:], b.volumes[:]) and a.sources == b.sources and a.levels == b.levels
    ref = a.volumes[:]
    crops = cache / entries[0] / "crops.f16"
    crops.write_bytes(crops.read_bytes()[:1000])  # a damaged entry is prepared again
    c = _load(d, cache_dir=cache)
    assert torch.equal(c.volumes[:], ref)
    write_xfit_case(d, 1, seed=7)  # rewritten file: new key
    _load(d, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2
    meta = json.loads((cache / entries[0] / "index.json").read_text())
    assert meta["n"] == 2 and meta["levels"] == [20, 20]


def test_parallel_preparation_matches_serial(tmp_path):
    d = write_xfit_collection(tmp_path / "c", 4, centres=["L1", "L2"], levels=LEVELS5)
    (d / "case0009_ct.nii.gz").write_bytes(b"garbage")
    with pytest.warns(UserWarning):
        a = _load(d, workers=1)
    with pytest.warns(UserWarning):
        b = _load(d, workers=2)
    assert a.sources == b.sources and torch.equal(a.volumes[:], b.volumes[:])
    assert [r.line() for r in a.reports] == [r.line() for r in b.reports]


def test_crop_store_indexing(tmp_path):
    d = write_xfit_collection(tmp_path / "c", 3, centres=["T12", "L1", "L2"], levels=LEVELS5)
    store = _load(d, cache_dir=tmp_path / "cache").volumes
    assert isinstance(store, CropStore) and len(store) == 3
    full = store[:]
    assert full.dtype == torch.float16 and full.shape == (3, 2, 32, 32, 32)
    assert torch.equal(store[torch.tensor([2, 0, 2])], full[[2, 0, 2]])
    assert torch.equal(store[-1], full[2]) and torch.equal(store[1:3], full[1:3])
    assert torch.equal(store[::2], full[::2]) and torch.equal(store.float(), full.float())
    with pytest.raises(IndexError):
        store[3]
    with pytest.raises(IndexError):
        store[[0, 5]]


def test_bad_folders(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        find_cases(tmp_path / "missing")
    (tmp_path / "e").mkdir()
    with pytest.raises(InputError, match="empty"):
        find_cases(tmp_path / "e")
    with pytest.raises(InputError, match="unknown layout"):
        find_cases(write_xfit_collection(tmp_path / "c", 1), layout="nope")


# ----------------------------------------------------------------------------- public layouts


@pytest.mark.parametrize(
    "layout,mode",
    [("verse", None), ("ctspine1k", None), ("totalsegmentator", "folders"), ("totalsegmentator", "ml-header")],
)
def test_public_layouts_are_detected_and_give_the_same_crops(tmp_path, layout, mode):
    """The same two spines in each layout give the same crops as in xfit's own layout."""
    ref = _load(write_xfit_collection(tmp_path / "xfit", 2, centres=["L1", "T12"]))
    root = write_layout(tmp_path / layout, layout, 2, centres=("L1", "T12"), ts_mode=mode or "folders")
    assert detect_layout(root) == layout
    data = _load(root)
    assert data.layout == layout and data.levels == ref.levels == [20, 19]
    assert torch.equal(data.volumes[:], ref.volumes[:])
    assert len(data.skipped) == 3 and all("outside the scan" in w for _, w in data.skipped)
    assert _load(root, layout=layout).sources == data.sources  # chosen explicitly: the same
    if mode == "ml-header":  # the multilabel file's other classes are named in the report
        assert data.reports[0].ignored_values == [1]
        assert data.reports[0].line().endswith("label values that are not vertebrae, ignored: [1]")


def test_totalsegmentator_numbering_comes_from_the_class_map(tmp_path):
    assert read_class_map("totalseg-v1")[22] == "vertebrae_L1" and read_class_map("totalseg-v2")[31] == "vertebrae_L1"
    assert {k: v[len("vertebrae_") :] for k, v in TOTALSEG_CLASS_MAPS["totalseg-v1"].items()} == TS_V1
    assert {k: v[len("vertebrae_") :] for k, v in TOTALSEG_CLASS_MAPS["totalseg-v2"].items() if k > 26} == TS_V2
    root = write_layout(tmp_path / "v1", "totalsegmentator", 2, centres=("L1", "T12"), ts_mode="ml-v1")
    with pytest.raises(InputError, match="without a class map.*numbering differs"):
        _load(root)  # never guessed
    data = _load(root, class_map="totalseg-v1")
    assert data.levels == [20, 19]
    cm = tmp_path / "classes.json"
    cm.write_text(json.dumps({str(k): f"vertebrae_{v}" for k, v in TS_V1.items()}))
    assert torch.equal(_load(root, class_map=cm).volumes[:], data.volumes[:])
    with pytest.raises(InputError, match="hold no vertebra"):  # the wrong version: v1's L1 is v2's prostate
        _load(root, class_map="totalseg-v2")
    with pytest.raises(InputError, match="neither a file nor"):
        _load(root, class_map="totalseg-v9")


def test_masks_dir(tmp_path):
    hu, seg, aff = spine_volume((32, 32, 32), (2.5,) * 3, "L1", ("T12", "L1", "L2"))
    write_nifti(tmp_path / "ct" / "a.nii.gz", hu, aff)
    write_nifti(tmp_path / "ct" / "b.nii", hu, aff)
    write_nifti(tmp_path / "masks" / "a.nii.gz", seg, aff)  # same name as the CT
    write_nifti(tmp_path / "masks" / "b_seg.nii.gz", seg, aff)
    data = _load(tmp_path / "ct", masks_dir=tmp_path / "masks")
    assert data.sources == ["a.nii.gz:L1", "b.nii:L1"]
    with pytest.raises(InputError, match="mask folder .* does not exist"):
        _load(tmp_path / "ct", masks_dir=tmp_path / "nope")


def test_mixed_folder(tmp_path):
    write_layout(tmp_path / "m" / "verse19", "verse", 1)
    write_xfit_collection(tmp_path / "m" / "phantoms", 2)
    write_layout(tmp_path / "m" / "ts", "totalsegmentator", 1)
    (tmp_path / "m" / "notes").mkdir()
    (tmp_path / "m" / "notes" / "x.txt").write_text("no images here")
    assert detect_layout(tmp_path / "m") == "mixed"
    data = _load(tmp_path / "m")
    assert data.layout == "mixed(phantoms=xfit,ts=totalsegmentator,verse19=verse)"
    assert [s.split(":")[0] for s in data.sources] == [
        "phantoms/case0000_ct.nii.gz",
        "phantoms/case0001_ct.nii.gz",
        "ts/s0000/ct.nii.gz",
        "verse19/01_training/rawdata/sub-verse500/sub-verse500_ct.nii.gz",
    ]
    # a flat folder with a collection below it reads the flat files and reports the subfolder
    write_xfit_collection(tmp_path / "m2", 1)
    write_layout(tmp_path / "m2" / "more", "verse", 1)
    with pytest.warns(UserWarning, match="skipped 2"):  # the subfolder and a stray mask
        (tmp_path / "m2" / "orphan_seg.nii.gz").write_bytes((tmp_path / "m2" / "case0000_seg.nii.gz").read_bytes())
        data = _load(tmp_path / "m2")
    errors = {r.name: r.error for r in data.reports if r.error}
    assert "subfolder not read" in errors["more/"] and "without its CT" in errors["orphan_seg.nii.gz"]


def test_dry_run_explains_and_draws(tmp_path):
    d = write_xfit_collection(
        tmp_path / "c", 3, centres=["T12", "L1"], fov=(32, 32, 64), levels=("T11", "T12", "L1", "L2", "L3")
    )
    (d / "case0009_ct.nii.gz").write_bytes(b"garbage")
    (d / "case0009_seg.nii.gz").write_bytes(b"garbage")
    rep = dry_run(d, S32, montage=tmp_path / "montage.png", n_montage=3, workers=1, progress=False)
    lines = rep.lines()
    assert lines[0] == "layout xfit; crops of 32^3 at 2.5 mm around C1-L6, at most 5 % outside the scan"
    assert lines[1] == (
        "case0000_ct.nii.gz: levels T11-T12,L1-L3; 3 crop(s) (T11-T12,L1); skip L2: 19 % of the "
        "crop lies outside the scan (at most 5 % allowed); skip L3: 47 % of the crop lies outside "
        "the scan (at most 5 % allowed)"
    )
    assert lines[4].startswith("case0009_ct.nii.gz: SKIPPED (cannot read as NIfTI")
    assert rep.level_counts() == {"T11": 2, "T12": 3, "L1": 3, "L2": 1}
    assert lines[5] == "total: 9 crop(s) from 3 file(s), 1 file(s) skipped, 6 vertebra(e) skipped"
    assert lines[6] == "crops per level: T11 2, T12 3, L1 3, L2 1"
    assert rep.montage == tmp_path / "montage.png" and rep.montage.stat().st_size > 10_000
    from PIL import Image

    assert Image.open(rep.montage).size[1] > 3 * 150  # three rows
    # the dry run agrees with what preparation really does
    with pytest.warns(UserWarning):
        assert _load(d).level_counts() == rep.level_counts()


def test_gz_window_reads_match_direct_reads(tmp_path):
    """Compressed files are read through a forward window of whole slices; any order of blocks
    gives the voxels a direct read gives, and .nii.gz and .nii give the same crops."""
    from xfit.prior.data import _Nifti

    levels = ("T10", "T11", "T12", "L1", "L2", "L3", "L4")
    for suffix in (".nii.gz", ".nii"):
        write_xfit_case(tmp_path / suffix.strip("."), 0, fov=(32, 32, 160), levels=levels, suffix=suffix)
    gz = _Nifti(tmp_path / "nii.gz" / "case0000_ct.nii.gz")
    full = np.asarray(nib.load(str(gz.path)).dataobj, dtype=np.float32)
    rng = np.random.default_rng(0)
    for _ in range(30):
        lo = rng.integers(0, [20, 20, 150])
        hi = lo + rng.integers(1, [12, 10, 40])
        hi = np.minimum(hi, full.shape)
        np.testing.assert_array_equal(gz.block(lo, hi), full[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    a, b = _load(tmp_path / "nii.gz"), _load(tmp_path / "nii")
    assert len(a.volumes) == 7 and a.levels == [level_label(n) for n in levels]
    assert torch.equal(a.volumes[:], b.volumes[:])


@hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    angle=st.floats(-40, 40),
    axis=st.sampled_from([0, 1, 2]),
    spacing=st.tuples(st.sampled_from([1.5, 2.0, 2.5, 3.0]), st.sampled_from([1.5, 2.5]), st.sampled_from([2.0, 4.0])),
    flip=st.booleans(),
)
def test_any_affine_gives_a_centred_vertebra(tmp_path_factory, angle, axis, spacing, flip):
    """Whatever the voxel grid's rotation, spacing and handedness, the crop is centred on its
    vertebra and holds about its world volume (ellipsoid 14 x 12 x 10 mm drawn in voxel space)."""
    tmp = tmp_path_factory.mktemp("aff")
    shape = tuple(int(np.ceil(110 / s)) for s in spacing)
    hu, seg, aff = spine_volume(shape, spacing, "L1", ("L1",))
    t = np.deg2rad(angle)
    c, s_ = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    rot = np.eye(4)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s_, s_, c
    if flip:
        rot[0] *= -1  # a left-handed (LAS) grid
    write_nifti(tmp / "x_ct.nii.gz", hu, rot @ aff)
    write_nifti(tmp / "x_seg.nii.gz", seg, rot @ aff)
    v = _load(tmp).volumes[0]
    want = 4 / 3 * np.pi * 14 * 12 * 10 / 2.5**3
    assert _mask_centre_offset(v) < 0.75
    assert abs((v[1] > 0).sum().item() / want - 1) < 0.2


def test_real_phantoms_crops_have_no_air_padding(tmp_path):
    """xfit's own phantoms (grids whose vertebra may touch the edge) give up to one crop each;
    crop voxels outside the scan repeat the nearest voxel instead of air."""
    from xfit.phantoms import write_phantoms

    d = tmp_path / "ph"
    write_phantoms(d, 3, size=32, spacing_mm=2.5, seed=20, progress=False)
    data = _load(d)
    assert len(data.sources) >= 2  # a vertebra cut by its grid may centre more than 5 % off
    x = data.volumes[:].float()
    assert not bool((x[:, 0] == -1.0).any())  # no -1000 HU fill
