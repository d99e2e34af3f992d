"""Tests of xfit.prior.sample, xfit.prior.evaluate and their CLI commands (tiny untrained prior)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import ndimage

from xfit.cli import main
from xfit.errors import CheckpointError, InputError, OutputExistsError
from xfit.io import read_nifti
from xfit.phantoms import make_phantom, write_phantoms
from xfit.prior.checkpoint import load_prior
from xfit.prior.evaluate import (
    VolumeSet,
    compare_volume_sets,
    evaluate_prior,
    frechet_distance,
    histogram_distances,
    label_check,
    label_check_summary,
    label_extents_mm,
    load_real_set,
    volume_features,
)
from xfit.prior.sample import generate_hu, prior_affine, sample_prior, sample_w_plus

WINDOW = (-1000.0, 1500.0)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_user_error(res, *words):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("xfit: error:"), res.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]


@pytest.fixture(scope="module")
def prior_path(tiny_prior_file):
    return tiny_prior_file(n=256, noise_strength=0.3)


@pytest.fixture(scope="module")
def prior(prior_path):
    return load_prior(prior_path)


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    write_phantoms(out, 3, size=32, spacing_mm=2.5, seed=11, progress=False)
    return out


# ----------------------------------------------------------------------------- sampling


def test_prior_affine_centres_grid(prior):
    a = prior_affine(prior)
    r = prior.config.resolution
    centre = a @ np.array([(r - 1) / 2, (r - 1) / 2, (r - 1) / 2, 1.0])
    assert np.allclose(centre, [0, 0, 0, 1])
    assert np.allclose(np.diag(a)[:3], prior.config.spacing_mm)


@pytest.mark.parametrize("batch", [1, 3])
def test_generate_hu_shapes_and_gradient(prior, batch):
    w = sample_w_plus(prior, batch, seed=1).clone().requires_grad_(True)
    hu, logit = generate_hu(prior, w)
    r = prior.config.resolution
    assert hu.shape == logit.shape == (batch, r, r, r)
    assert torch.isfinite(hu).all() and hu.min() < 0 < hu.max()
    hu.mean().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    # const noise by default: deterministic
    hu2, _ = generate_hu(prior, w.detach())
    assert torch.equal(hu.detach(), hu2)


def test_sample_w_plus_independent_of_n(prior):
    a = sample_w_plus(prior, 1, seed=4)
    b = sample_w_plus(prior, 3, seed=4)
    assert torch.allclose(a[0], b[0], atol=1e-5)  # batch size changes only float rounding
    assert not torch.allclose(b[0], b[1])
    t = sample_w_plus(prior, 3, seed=4, truncation_psi=0.0)  # psi 0: every w is w_avg
    assert torch.allclose(t, prior.G.mapping.w_avg.expand_as(t))
    with pytest.raises(InputError):
        sample_w_plus(prior, 0)


def test_sample_cli_writes_files_and_refuses_overwrite(tmp_path, prior_path, prior):
    out = tmp_path / "samples"
    res = run("sample", prior_path, "-n", 2, "-o", out, "--seed", 3)
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "montage.png",
        "sample000_ct.nii.gz",
        "sample000_seg.nii.gz",
        "sample001_ct.nii.gz",
        "sample001_seg.nii.gz",
        "samples.json",
    ]
    ct, seg = read_nifti(out / "sample001_ct.nii.gz"), read_nifti(out / "sample001_seg.nii.gz", dtype=np.int16)
    r = prior.config.resolution
    assert ct.shape == seg.shape == (r, r, r)
    assert np.allclose(ct.centre_mm, 0) and np.allclose(ct.spacing_mm, prior.config.spacing_mm)
    assert WINDOW[0] <= ct.data.min() and ct.data.max() <= WINDOW[1]
    assert set(np.unique(seg.data)) <= {0, 1}
    # the same seed gives the same volume as the library call (batching changes float rounding)
    hu, logit = generate_hu(prior, sample_w_plus(prior, 2, seed=3)[1:])
    assert np.abs(ct.data - hu[0].clamp(*WINDOW).numpy()).max() < 0.05
    assert (seg.data != (logit[0] > 0).numpy()).mean() < 1e-3
    record = json.loads((out / "samples.json").read_text())
    assert record["prior_sha256"] == prior.sha256 and record["seed"] == 3
    before = (out / "sample000_ct.nii.gz").stat().st_mtime_ns
    assert_user_error(run("sample", prior_path, "-n", 1, "-o", out), "force")
    assert (out / "sample000_ct.nii.gz").stat().st_mtime_ns == before
    assert run("sample", prior_path, "-n", 1, "-o", out, "--force").exit_code == 0


def test_sample_errors(tmp_path, prior_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    assert_user_error(run("sample", bad, "-o", tmp_path / "o"), "safetensors")
    assert_user_error(run("sample", tmp_path / "missing.safetensors", "-o", tmp_path / "o"), "not found")
    with pytest.raises(CheckpointError):
        sample_prior(bad, 1, tmp_path / "o2")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputExistsError):
        sample_prior(prior_path, 1, tmp_path / "afile")


# ----------------------------------------------------------------------------- statistics


def test_histogram_distances_known_values():
    p, q = np.zeros(10), np.zeros(10)
    p[2], q[5] = 1.0, 1.0
    w1, l1 = histogram_distances(p, q, (0.0, 100.0))  # bins of 10: a shift of 3 bins = 30
    assert w1 == pytest.approx(30.0) and l1 == pytest.approx(2.0)
    assert histogram_distances(p, p, (0.0, 100.0)) == (0.0, 0.0)


def test_frechet_distance_known_value():
    f1 = np.array([[0.0], [2.0]])  # mean 1, variance 2
    f2 = np.array([[3.0], [5.0]])  # mean 4, variance 2
    assert frechet_distance(f1, f2) == pytest.approx(9.0)
    f3 = np.array([[0.0], [4.0]])  # mean 2, variance 8: 1 + 2 + 8 - 2 * 4
    assert frechet_distance(f1, f3) == pytest.approx(3.0)
    with pytest.raises(InputError):
        frechet_distance(f1[:1], f2)


def test_label_extents():
    m = np.zeros((2, 10, 10, 10), bool)
    m[0, 2:5, 1:9, 4] = True
    ext = label_extents_mm(m, 2.0)
    assert np.allclose(ext[0], [6.0, 16.0, 2.0])
    assert np.isnan(ext[1]).all()


def test_label_check_flags_two_blobs():
    m = np.zeros((3, 16, 16, 16), bool)
    m[0, 4:10, 4:10, 4:10] = True  # one vertebra
    m[1, 4:10, 4:10, 2:6] = True  # two blobs stacked along z: a piece of a neighbour
    m[1, 4:10, 4:10, 10:14] = True
    m[1, 5:7, 5:7, 10] = True  # (and one more voxel, so that one blob is the largest)
    c = label_check(m, 2.0)
    assert c["components"].tolist() == [1, 2, 0]
    assert c["crisp"].tolist() == [True, False, False]
    assert c["largest_fraction"][0] == 1.0 and 0.45 < c["largest_fraction"][1] < 0.55
    assert c["beyond_z_fraction"][0] == 0.0 and c["beyond_z_fraction"][1] == pytest.approx(1 - c["largest_fraction"][1])
    assert c["extent_excess_mm"][0].tolist() == [0, 0, 0]
    assert c["extent_excess_mm"][1].tolist() == [0, 0, 16.0]  # z 2..13 (24 mm) against 4 slices (8 mm)
    assert np.isnan(c["largest_fraction"][2]) and np.isnan(c["neighbour_overlap"]).all()
    s = label_check_summary(c)
    assert s["not_crisp"] == 1 and s["empty"] == 1 and s["components"] == 1.5
    assert [v["crisp"] for v in s["per_volume"]] == [True, False, False]
    json.dumps(s, allow_nan=False)
    with pytest.raises(InputError):
        label_check(m[0], 2.0)


def test_label_check_on_phantom_levels():
    """A phantom's centred label is crisp; a mask that takes in its neighbours' levels is not."""
    ph = make_phantom(3, size=48, spacing_mm=1.25, noise_hu=0.0)
    others = (ph.seg > 0) & ~ph.vertebra_mask
    assert others.any()  # the neighbours are in the crop
    masks = np.stack([ph.vertebra_mask, ph.seg > 0])
    c = label_check(masks, 1.25, neighbours=np.stack([others, others]))
    assert c["components"][0] == 1 and c["neighbour_overlap"][0] == 0.0 and c["crisp"][0]
    assert c["neighbour_overlap"][1] > 0.2 and not c["crisp"][1]
    # a neighbour's piece touching the centred vertebra is one component, but not crisp
    touching = ph.vertebra_mask | ndimage.binary_dilation(ph.vertebra_mask, iterations=5) & others
    c2 = label_check(touching[None], 1.25, neighbours=others[None])
    assert 0 < c2["neighbour_overlap"][0] and not c2["crisp"][0]


def test_real_vs_real_is_zero_and_perturbed_is_not(ct_dir, prior):
    real = load_real_set(ct_dir, prior.config)
    assert len(real) == 3 and real.hu.shape[1:] == (32, 32, 32)
    same = compare_volume_sets(real, real, spacing_mm=2.5, hu_window=WINDOW, train=real)
    assert same["hu_w1"] == 0.0 and same["hu_hist_l1"] == 0.0
    assert same["feature_fd"] == pytest.approx(0.0, abs=1e-6)
    assert same["diversity_ssim"]["real"] == same["diversity_ssim"]["fake"] < 1.0
    assert same["nearest_train_mse"]["fake"]["mean"] == pytest.approx(0.0, abs=1e-9)
    noisy_hu = np.clip(real.hu + np.random.default_rng(0).normal(0, 150, real.hu.shape), *WINDOW)
    noisy = VolumeSet(noisy_hu.astype(np.float32), real.labels, real.sources)
    other = compare_volume_sets(real, noisy, spacing_mm=2.5, hu_window=WINDOW, train=real)
    assert other["hu_w1"] > 10 and other["feature_fd"] > 1e-3
    assert other["diversity_ssim"]["fake"] < same["diversity_ssim"]["fake"]
    assert other["nearest_train_mse"]["fake"]["mean"] > 1e-3
    assert volume_features(real.hu, WINDOW).shape == (3, 36)


def test_evaluate_prior_report(tmp_path, ct_dir, prior_path):
    out = tmp_path / "report.json"
    report = evaluate_prior(prior_path, ct_dir, n_samples=4, train_dir=ct_dir, out=out)
    on_disk = json.loads(out.read_text())
    assert on_disk["n_fake"] == 4 and on_disk["n_real"] == 3
    for key in ("hu_w1", "hu_hist_l1", "feature_fd"):
        assert math.isfinite(report[key]) and report[key] > 0, key
    for side in ("real", "fake"):
        assert 0 <= report["bone_fraction"][side]["mean"] <= 1
        assert math.isfinite(report["diversity_ssim"][side])
    # training crops hold the centred vertebra only: one crisp piece each
    assert report["label_check"]["real"]["not_crisp"] == 0
    assert report["label_check"]["real"]["largest_fraction"] == 1.0
    assert len(report["label_check"]["fake"]["per_volume"]) == 4
    # held-out == training folder here, so the real set's nearest distance is exactly zero
    assert report["nearest_train_mse"]["real"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert report["nearest_train_mse"]["fake"]["mean"] > 0
    with pytest.raises(OutputExistsError):
        evaluate_prior(prior_path, ct_dir, n_samples=2, out=out)
    with pytest.raises(InputError, match="n_samples"):
        evaluate_prior(prior_path, ct_dir, n_samples=0)


def test_evaluate_cli(tmp_path, ct_dir, prior_path):
    res = run("evaluate-prior", prior_path, "--data", ct_dir, "-n", 3, "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert "bone fraction" in res.output and "feature FD" in res.output
    assert "labels not crisp" in res.output and "0/3" in res.output
    assert json.loads((tmp_path / "r.json").read_text())["n_fake"] == 3
    assert_user_error(run("evaluate-prior", prior_path, "--data", ct_dir, "-o", tmp_path / "r.json"), "force")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(run("evaluate-prior", prior_path, "--data", empty), "empty")
