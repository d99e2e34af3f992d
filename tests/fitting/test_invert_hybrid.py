"""Tests of the fit's newer parts: volume inversion (the ceiling), the posterior-mean ensemble,
``background: auto``, the network anchor and the network start (xfit.fitting.invert, .hybrid).

The tiny prior architecture (32^3 at 2.5 mm), randomly initialised with a fixed seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from xfit.errors import InputError
from xfit.fitting import fit, load_fit_config
from xfit.fitting.invert import invert_volume
from xfit.fitting.objective import Anchor, anchor_term
from xfit.fitting.optimize import ensemble_members, needs_background
from xfit.geometry import View
from xfit.io import hu_to_mu
from xfit.prior.checkpoint import Prior
from xfit.prior.config import hu_to_unit
from xfit.prior.sample import generate_hu, prior_affine
from xfit.projector import project

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems gain nothing from more threads


@pytest.fixture(scope="module")
def prior(tiny_prior) -> Prior:
    return tiny_prior


def views(n: int = 32) -> list[View]:
    return [
        View(angle_deg=a, sdd_mm=1000.0, sod_mm=800.0, shape=(n, n), pixel_spacing_mm=(3.0, 3.0)) for a in (0.0, 90.0)
    ]


def sample(prior: Prior, seed: int):
    gen = torch.Generator().manual_seed(seed)
    w = prior.G.mapping(torch.randn(1, prior.G.z_dim, generator=gen))
    hu, logit = generate_hu(prior, w)
    lo, hi = prior.hu_window
    return w, hu[0].clamp(lo, hi).numpy(), (logit[0] > 0).numpy()


# ----------------------------------------------------------------------------- inversion


def test_invert_volume_recovers_a_prior_sample(prior):
    """A volume the prior made is inverted much closer than the prior's mean volume is."""
    _, hu, label = sample(prior, seed=3)
    mean_hu, _ = generate_hu(prior, prior.w_mean.view(1, 1, -1).expand(1, prior.G.num_ws, -1))
    lo, hi = prior.hu_window
    before = float(np.abs(mean_hu[0].clamp(lo, hi).numpy() - hu).mean())
    inv = invert_volume(prior, hu, label, steps=60, lr=0.1)
    after = float(np.abs(inv.hu - hu).mean())
    assert after < 0.5 * before
    assert inv.w_plus.shape == (prior.G.num_ws, prior.G.w_dim)
    assert inv.loss["mse"] < 0.5 * float(
        hu_to_unit(torch.from_numpy(hu), prior.hu_window).sub(hu_to_unit(mean_hu[0], prior.hu_window)).square().mean()
    )


def test_invert_volume_by_lbfgs_recovers_a_prior_sample_within_its_budget(prior, monkeypatch):
    """L-BFGS inverts a prior sample as well as Adam's test asks, with at most 1.25 generator
    passes per iteration (plus the final one); an unknown optimiser is refused."""
    from xfit.fitting import invert

    _, hu, label = sample(prior, seed=3)
    mean_hu, _ = generate_hu(prior, prior.w_mean.view(1, 1, -1).expand(1, prior.G.num_ws, -1))
    lo, hi = prior.hu_window
    before = float(np.abs(mean_hu[0].clamp(lo, hi).numpy() - hu).mean())
    calls = []
    real = invert.synthesize
    monkeypatch.setattr(invert, "synthesize", lambda *a, **k: calls.append(1) or real(*a, **k))
    inv = invert_volume(prior, hu, label, steps=20, optimizer="lbfgs")
    assert float(np.abs(inv.hu - hu).mean()) < 0.5 * before
    assert len(calls) <= 20 * 5 // 4 + 1 + 1  # the iterations' passes and the final loss
    with pytest.raises(InputError, match="optimizer"):
        invert_volume(prior, hu, steps=1, optimizer="sgd")
    with pytest.raises(InputError, match="init_network_optimizer"):
        load_fit_config(init_network_optimizer="sgd")


def test_invert_volume_at_coarse_resolution_and_errors(prior):
    _, hu, label = sample(prior, seed=4)
    r = int(prior.config.resolution)
    inv = invert_volume(prior, hu, label, steps=5, resolution=r // 2)
    assert inv.hu.shape == (r, r, r)  # the outputs stay at full resolution
    with pytest.raises(InputError, match="resolution"):
        invert_volume(prior, hu, label, steps=1, resolution=r // 2 + 1)
    with pytest.raises(InputError, match=r"\^3"):
        invert_volume(prior, hu[:-1], steps=1)
    bad = hu.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        invert_volume(prior, bad, steps=1)
    with pytest.raises(InputError, match="steps"):
        invert_volume(prior, hu, steps=0)


def test_invert_volume_for_w_plus_alone_skips_the_volume_not_the_fit(prior):
    _, hu, label = sample(prior, seed=5)
    r = int(prior.config.resolution)
    full = invert_volume(prior, hu, label, steps=3, resolution=r // 2, optimizer="lbfgs")
    alone = invert_volume(prior, hu, label, steps=3, resolution=r // 2, optimizer="lbfgs", outputs=False)
    np.testing.assert_array_equal(alone.w_plus, full.w_plus)
    assert alone.hu is None and alone.label_prob is None and alone.loss == {}
    assert full.hu.shape == (r, r, r) and set(full.loss) == {"mse", "bce", "w_gauss", "noise", "total"}


def test_coarse_stage_leaves_the_ws_and_noise_it_does_not_read(prior):
    """In a coarse stage the generator stops at half resolution; the W+ and noise priors then see
    only the ws and maps it reads, so the finer layers' ws keep their start exactly (a prior alone
    would move them: Adam turns any gradient into a full step)."""
    _, hu, _ = sample(prior, seed=5)
    v = views()
    images = [im.numpy() for im in project(hu_to_mu(torch.from_numpy(hu))[None, None], prior_affine(prior), v)[0]]
    gen = torch.Generator().manual_seed(1)
    w0 = prior.w_mean + prior.w_std * torch.randn(prior.G.num_ws, prior.G.w_dim, generator=gen)
    cfg = load_fit_config(
        steps=6, coarse_fraction=1.0, restarts=1, init_network=None, background=False, early_stop_tol=0.0
    )
    res = fit(prior, images, v, cfg, w_init=w0, progress=False)
    n_ws, _ = prior.G.synthesis.inputs_used(int(prior.config.resolution) // 2)
    assert n_ws < prior.G.num_ws
    assert np.array_equal(res.w_plus[n_ws:], w0[n_ws:].numpy())  # not read: untouched
    assert not np.allclose(res.w_plus[:n_ws], w0[:n_ws].numpy())  # read: fitted


# ----------------------------------------------------------------------------- ensemble, background, anchor


def test_ensemble_members_keeps_restarts_close_to_the_best():
    data = torch.tensor([0.10, 0.05, 0.059, 0.2])
    assert ensemble_members(data, [0, 1, 2, 3], best=1, tol=0.2) == [1, 2]
    assert ensemble_members(data, [0, 1, 2, 3], best=1, tol=3.0) == [0, 1, 2, 3]
    assert ensemble_members(data, [1, 3], best=1, tol=3.0) == [1, 3]  # dead restarts never join


def test_fit_ensemble_returns_the_mean_of_its_members(prior):
    _, hu, _ = sample(prior, seed=5)
    images = [im.numpy() for im in project(hu_to_mu(torch.from_numpy(hu))[None, None], prior_affine(prior), views())[0]]
    common = dict(steps=6, restarts=3, background=False, early_stop_tol=0.0, init_samples=0)
    single = fit(prior, images, views(), load_fit_config(**common), progress=False)
    mean = fit(prior, images, views(), load_fit_config(ensemble=True, ensemble_tol=100.0, **common), progress=False)
    assert all(r["in_output"] for r in mean.restarts)
    assert sum(r["in_output"] for r in single.restarts) == 1
    # same restarts, so the ensemble differs from the best one alone, and its uncertainty is the same
    assert not np.allclose(mean.hu, single.hu)
    np.testing.assert_allclose(mean.uncertainty, single.uncertainty, atol=1e-3)


def test_needs_background_tells_crops_from_whole_bodies(prior):
    """Images of the cube alone need no background; the same plus anatomy around it do."""
    _, hu, _ = sample(prior, seed=6)
    v = views(48)
    aff = prior_affine(prior)
    crop = [im.numpy() for im in project(hu_to_mu(torch.from_numpy(hu))[None, None], aff, v)[0]]
    r = np.linspace(-1, 1, 48)
    yy, xx = np.meshgrid(r, r, indexing="ij")
    body = [c + 5.0 * np.exp(-(xx**2) / 0.5) * (1 + 0.3 * np.sin(6 * yy)) for c in crop]
    res = int(prior.config.resolution)
    assert needs_background(v, crop, aff, res) == (False, pytest.approx(0.0, abs=0.05))
    assert needs_background(v, body, aff, res)[0]
    cfg = load_fit_config(steps=2, restarts=1, background="auto", coarse_fraction=0.0)
    assert fit(prior, crop, v, cfg, progress=False).backgrounds is None
    assert fit(prior, body, v, cfg, progress=False).backgrounds is not None


def test_anchor_term_is_zero_at_the_anchor_and_pulls_toward_it(prior):
    _, hu, label = sample(prior, seed=7)
    unit = hu_to_unit(torch.from_numpy(hu), prior.hu_window)
    anchor = Anchor(unit, torch.from_numpy(label.astype(np.float32)), prior.hu_window, hu_weight=1.0, label_weight=0.0)
    x = torch.from_numpy(hu)[None].clone().requires_grad_(True)
    logit = torch.zeros_like(x)
    assert float(anchor_term(anchor, x, logit).detach()) == pytest.approx(0.0, abs=1e-10)
    shifted = (x + 100.0).detach().requires_grad_(True)
    loss = anchor_term(anchor, shifted, logit).sum()
    loss.backward()
    assert float(loss) > 0 and float(shifted.grad.sum()) > 0  # the gradient points back down


def test_fit_config_new_keys_are_checked():
    for bad in (
        dict(background="yes"),
        dict(init_network="igcn"),
        dict(init_network="nope"),
        dict(ensemble="true"),
        dict(lambda_anchor=-1.0),
        dict(init_network_steps=-1),
    ):
        with pytest.raises(InputError):
            load_fit_config(**bad)
    assert load_fit_config(background="auto").background == "auto"


def test_inversion_resolution_defaults_to_the_coarse_stage():
    from xfit.fitting.optimize import inversion_resolution

    assert inversion_resolution(load_fit_config(), 64, 32) == 32
    assert inversion_resolution(load_fit_config(init_network_resolution=16), 64, 32) == 16
    assert inversion_resolution(load_fit_config(init_network_resolution=64), 64, 32) is None  # full
    with pytest.raises(InputError, match="not a generator block"):
        inversion_resolution(load_fit_config(init_network_resolution=128), 64, 32)
    for bad in (3, 12, "16", True):
        with pytest.raises(InputError, match="init_network_resolution"):
            load_fit_config(init_network_resolution=bad)


def test_init_checkpoint_without_init_network_is_refused(prior):
    _, hu, _ = sample(prior, seed=8)
    images = [im.numpy() for im in project(hu_to_mu(torch.from_numpy(hu))[None, None], prior_affine(prior), views())[0]]
    with pytest.raises(InputError, match="init_network"):
        fit(
            prior,
            images,
            views(),
            dataclasses.replace(load_fit_config(steps=1, restarts=1), init_network=None),
            progress=False,
            init_checkpoint="x.safetensors",
        )


def test_init_network_off_the_prior_grid_is_refused(prior):
    """The shipped networks reconstruct 64^3 at 1.25 mm; the tiny prior is 32^3 at 2.5 mm."""
    from xfit.fitting.hybrid import check_init_network

    with pytest.raises(InputError, match="cannot start this fit"):
        check_init_network(prior, "xctrsnet")
    with pytest.raises(InputError, match="CT output"):
        check_init_network(prior, "transvert")


def test_a_tagged_init_network_names_its_shipped_variant(tmp_path):
    from xfit.baselines.common import split_tag
    from xfit.baselines.infer import shipped_checkpoint
    from xfit.errors import CheckpointError
    from xfit.fitting.hybrid import grid_mismatch, network_checkpoint

    assert split_tag("xctrsnet@style") == ("xctrsnet", "style") and split_tag("ear") == ("ear", None)
    assert network_checkpoint("xctrsnet@style") == ("xctrsnet", shipped_checkpoint("xctrsnet", "style"))
    assert network_checkpoint("xctrsnet@style", tmp_path / "a.safetensors") == ("xctrsnet", tmp_path / "a.safetensors")
    assert network_checkpoint("ear") == ("ear", None)
    assert load_fit_config(init_network="x2ct-cnn@jitter").init_network == "x2ct-cnn@jitter"
    for bad in ("igcn@style", "xctrsnet@", "xctrsnet@a/b", "transvert"):
        with pytest.raises(InputError, match="init_network"):
            load_fit_config(init_network=bad)
    from xfit.prior.checkpoint import load_prior
    from xfit.reconstruct import DEFAULT_PRIOR

    with pytest.raises(CheckpointError, match="nosuchtag"):  # a tag with no shipped file names it
        grid_mismatch(load_prior(DEFAULT_PRIOR), "xctrsnet@nosuchtag")
    assert grid_mismatch(load_prior(DEFAULT_PRIOR), "x2ct-cnn@jitter") is None


# ----------------------------------------------------------------------------- with the shipped prior and network


@pytest.fixture(scope="module")
def shipped():
    """The shipped 64^3 prior, a held-out phantom and its noiseless AP + lateral X-rays."""
    from xfit.prior.checkpoint import load_prior
    from xfit.reconstruct import DEFAULT_PRIOR
    from xfit.studies.evaluate import default_views, make_case

    prior = load_prior(DEFAULT_PRIOR)
    v = default_views((0.0, 90.0), 64, 2.0)
    return prior, make_case(3, prior, v), v


def test_network_start_and_anchor_pull_the_fit_toward_the_network(shipped):
    """A fit started from X-CTRSNet's volume (inverted into W+) and anchored to it ends closer to
    that volume than a fit from the prior's mean; both run end to end and say how they started."""
    from xfit.baselines.infer import predict

    prior, case, v = shipped
    net_hu, _, _, _ = predict("xctrsnet", None, case.images, v)
    common = dict(
        steps=4,
        warm_steps=4,
        restarts=1,
        background=False,
        init_network_steps=4,
        init_network_fine_steps=2,
        init_network_optimizer="adam",  # 4 Adam steps move W+; 4 L-BFGS iterations barely do (no curvature yet)
        early_stop_tol=0.0,
    )
    plain = fit(
        prior, case.images, v, dataclasses.replace(load_fit_config(**common), init_network=None), progress=False
    )
    hybrid = fit(
        prior,
        case.images,
        v,
        load_fit_config(init_network="xctrsnet", lambda_anchor=50.0, lambda_anchor_label=5.0, **common),
        progress=False,
    )
    assert plain.start == "w_mean" and hybrid.start.startswith("xctrsnet")
    assert float(np.abs(hybrid.hu - net_hu).mean()) < float(np.abs(plain.hu - net_hu).mean())
    # no inversion: the fit starts at the mean and the network's volume only anchors it
    anchored = fit(
        prior,
        case.images,
        v,
        load_fit_config(
            init_network="xctrsnet", lambda_anchor=50.0, lambda_anchor_label=5.0, **{**common, "init_network_steps": 0}
        ),
        progress=False,
    )
    assert (
        anchored.start == "w_mean (xctrsnet volume as anchor only)"
        and anchored.timings["init"] < hybrid.timings["init"]
    )
    assert float(np.abs(anchored.hu - net_hu).mean()) < float(np.abs(plain.hu - net_hu).mean())


def test_a_network_start_takes_the_warm_schedule(shipped):
    """``warm_steps``, ``warm_lr`` and ``warm_coarse_fraction`` replace the cold values when the fit
    starts from a network's volume, and only then; ``null`` keeps the cold ones."""
    prior, case, v = shipped
    common = dict(steps=4, lr=0.05, coarse_fraction=0.5, restarts=1, background=False, early_stop_tol=0.0)
    warm = dict(warm_steps=2, warm_lr=0.01, warm_coarse_fraction=0.0, init_network_steps=2, init_network_fine_steps=2)
    hybrid = fit(prior, case.images, v, load_fit_config(init_network="xctrsnet", **common, **warm), progress=False)
    assert hybrid.start.startswith("xctrsnet") and hybrid.stopped_at == 2
    assert (hybrid.config["steps"], hybrid.config["lr"], hybrid.config["coarse_fraction"]) == (2, 0.01, 0.0)
    assert {h["stage"] for h in hybrid.history if "stage" in h} == {"fine"}
    cold = dataclasses.replace(load_fit_config(**common, **warm), init_network=None)
    plain = fit(prior, case.images, v, cold, progress=False)
    assert plain.start == "w_mean" and plain.stopped_at == 4 and plain.config["lr"] == 0.05
    cfg = dataclasses.replace(load_fit_config(**common), warm_steps=None, warm_lr=None, warm_coarse_fraction=None)
    assert cfg.warm() == cfg
    for bad in (dict(warm_steps=0), dict(warm_steps=2.5), dict(warm_lr=0.0), dict(warm_coarse_fraction=1.5)):
        with pytest.raises(InputError, match="warm_"):
            load_fit_config(**bad)


def test_restarts_after_a_network_start_start_near_it(shipped, monkeypatch):
    """After a network start every restart runs the warm schedule, so restarts 1.. start near
    restart 0 (a perturbation of the network's W+), not at prior samples; from the mean they
    still start at the best prior samples."""
    from xfit.fitting import optimize

    prior, case, v = shipped
    drawn = []
    real = optimize.best_prior_samples
    monkeypatch.setattr(optimize, "best_prior_samples", lambda *a, **k: drawn.append(1) or real(*a, **k))
    common = dict(steps=2, warm_steps=2, restarts=2, init_samples=4, background=False, early_stop_tol=0.0)
    warm = load_fit_config(init_network="xctrsnet", init_network_steps=2, init_network_fine_steps=2, **common)
    res = fit(prior, case.images, v, warm, progress=False)
    assert res.start.startswith("xctrsnet") and len(res.restarts) == 2 and drawn == []
    cold = dataclasses.replace(warm, init_network=None)
    assert fit(prior, case.images, v, cold, progress=False).start == "w_mean" and drawn == [1]


def test_network_start_continues_the_inversion_at_full_resolution(shipped):
    """``init_network_fine_steps`` continues the coarse inversion with the full generator: its
    full-resolution volume is closer to the network's than the coarse inversion's, and the start
    note says so."""
    from xfit.fitting.hybrid import network_start

    prior, case, v = shipped
    args = (prior, case.images, v, [0.0, 0.0, 0.0], "xctrsnet")
    coarse = network_start(*args, steps=6, resolution=32)
    fine = network_start(*args, steps=6, resolution=32, fine_steps=6)
    assert coarse.note == "xctrsnet volume inverted into W+ (6 steps)"
    assert fine.note == "xctrsnet volume inverted into W+ (6 steps, then 6 at full resolution)"
    lo, hi = prior.hu_window

    def error(start) -> float:
        hu, _ = generate_hu(prior, start.w_init[None])
        return float(np.abs(hu[0].clamp(lo, hi).numpy() - start.hu.clip(lo, hi)).mean())

    assert error(fine) < 0.95 * error(coarse)
    with pytest.raises(InputError, match="init_network_fine_steps"):
        load_fit_config(init_network_fine_steps=-1)
    with pytest.raises(InputError, match="init_network_label_weight"):
        load_fit_config(init_network_label_weight=-0.1)


def test_network_start_inverts_w_plus_alone_with_the_given_optimizer(shipped, monkeypatch):
    """The start's inversion fits W+ alone (the fit starts from W+ and zero noise; L-BFGS would
    keep a history of every noise voxel) with the optimiser it is given, and says which."""
    from xfit.fitting import hybrid

    prior, case, v = shipped
    calls = []
    real = hybrid.invert_volume
    monkeypatch.setattr(hybrid, "invert_volume", lambda *a, **k: calls.append(k) or real(*a, **k))
    start = hybrid.network_start(
        prior, case.images, v, [0.0, 0.0, 0.0], "xctrsnet", steps=2, resolution=32, fine_steps=2, optimizer="lbfgs"
    )
    assert start.note == "xctrsnet volume inverted into W+ (2 L-BFGS steps, then 2 at full resolution)"
    assert [(k["optimizer"], k["optimize_noise"], k["outputs"]) for k in calls] == [("lbfgs", False, False)] * 2


def test_blend_start_mixes_the_start_networks_volume_into_the_output(shipped):
    """``blend_start``: the output is the fitted volume mixed with the start network's (before the
    data-consistency step), re-projected; the labels stay the fit's unless ``blend_labels`` mixes
    the label probabilities too; no network start, no mix."""
    from xfit.baselines.infer import predict

    prior, case, v = shipped
    net_hu, _, _, notes = predict("xctrsnet", None, case.images, v, label_prob=True)
    common = dict(
        warm_steps=2,
        restarts=1,
        background=False,
        init_network="xctrsnet",
        init_network_steps=2,
        init_network_fine_steps=0,
        consistency_steps=0,
        early_stop_tol=0.0,
    )
    alone = fit(prior, case.images, v, load_fit_config(blend_start=0.0, **common), progress=False)
    mixed = fit(prior, case.images, v, load_fit_config(blend_start=0.25, blend_labels=False, **common), progress=False)
    lo, hi = prior.hu_window
    np.testing.assert_allclose(mixed.hu, 0.75 * alone.hu + 0.25 * net_hu.clip(lo, hi), atol=0.5)
    assert np.array_equal(mixed.labels, alone.labels) and mixed.config["blend_start_applied"] == 0.25
    assert not np.allclose(mixed.projections[0], alone.projections[0])
    assert not mixed.config["blend_labels_applied"]
    both = fit(prior, case.images, v, load_fit_config(blend_start=0.25, blend_labels=True, **common), progress=False)
    np.testing.assert_allclose(both.hu, mixed.hu)
    np.testing.assert_allclose(both.label_prob, 0.75 * alone.label_prob + 0.25 * notes["label_prob"], atol=1e-6)
    assert np.array_equal(both.labels, both.label_prob > 0.5) and both.config["blend_labels_applied"]
    assert not np.array_equal(both.labels, alone.labels)
    cold_cfg = dataclasses.replace(load_fit_config(steps=2, blend_start=0.5, **common), init_network=None)
    cold = fit(prior, case.images, v, cold_cfg, progress=False)
    assert cold.config["blend_start_applied"] == 0.0
    for bad in (-0.1, 1.5):
        with pytest.raises(InputError, match="blend_start"):
            load_fit_config(blend_start=bad)
    with pytest.raises(InputError, match="blend_labels must be true or false"):
        load_fit_config(blend_labels="yes")


def test_a_joined_init_network_starts_from_the_mean_of_the_volumes(shipped, monkeypatch):
    """``A+B`` inverts the mean of the two networks' volumes with the first one's mask; each part
    is checked like a single network, and a user's checkpoint needs a single one."""
    from xfit.baselines.infer import predict
    from xfit.fitting import hybrid

    prior, case, v = shipped
    a = predict("xctrsnet", None, case.images, v)
    b = predict("x2ct-cnn", None, case.images, v)
    seen = []
    monkeypatch.setattr(hybrid, "invert_volume", lambda _p, hu, lab, **k: seen.append((hu, lab)) or None)
    start = hybrid.network_start(prior, case.images, v, [0.0, 0.0, 0.0], "xctrsnet+x2ct-cnn", steps=0)
    assert start.note == "w_mean (xctrsnet+x2ct-cnn volume as anchor only)" and seen == []
    np.testing.assert_allclose(start.hu, (a[0] + b[0]) / 2, atol=1e-3)
    assert np.array_equal(start.labels, a[1].astype(bool)) and not np.array_equal(start.hu, a[0])
    assert load_fit_config(init_network="xctrsnet@style+x2ct-cnn").init_network == "xctrsnet@style+x2ct-cnn"
    for bad in ("xctrsnet+igcn", "xctrsnet+xctrsnet", "xctrsnet+", "+ear"):
        with pytest.raises(InputError, match="init_network"):
            load_fit_config(init_network=bad)
    assert hybrid.grid_mismatch(prior, "xctrsnet@style+x2ct-cnn") is None
    from xfit.studies.evaluate import default_views

    assert hybrid.trained_at("xctrsnet@style+x2ct-cnn", v) and not hybrid.trained_at(
        "xctrsnet@jitter+x2ct-cnn", default_views((0.0, 60.0), 64, 2.0)
    )
    with pytest.raises(InputError, match="one init_network"):
        hybrid.grid_mismatch(prior, "xctrsnet+x2ct-cnn", "net.safetensors")


def test_views_off_the_networks_angles_start_from_another_or_none(shipped, monkeypatch):
    """Views at angles the start network was not trained at (beyond its jitter and the tolerance)
    start the fit from ``init_network_other_angles`` when that one covers them, else from
    ``w_mean`` with no anchor; a user's own network always decides."""
    from xfit.baselines.infer import angles_off, load_baseline
    from xfit.fitting import hybrid
    from xfit.fitting.hybrid import NetworkStart, start_network
    from xfit.studies.evaluate import default_views

    cfg = load_fit_config()
    assert (cfg.init_network_other_angles, cfg.init_network_angle_tolerance_deg) == (
        "xctrsnet@jitter+x2ct-cnn@jitter",
        3.0,
    )
    other = cfg.init_network_other_angles

    def at(angle: float) -> list[View]:
        return default_views((0.0, angle), 64, 2.0)

    style = load_baseline("xctrsnet", hybrid.network_checkpoint("xctrsnet@style")[1])
    assert angles_off(at(90.0), style) == [] and angles_off(at(88.0), style) == [1]
    assert angles_off(at(88.0), style, 3.0) == [] and angles_off(at(-270.0), style) == []  # the same angle
    for angle, torso, want in (
        (90.0, False, cfg.init_network),
        (88.0, False, cfg.init_network),  # within the tolerance
        (88.0, True, cfg.init_network_whole_body),
        (86.0, False, other),
        (60.0, True, other),
        (140.0, False, other),  # the jitter's edge: 90 + 50
        (150.0, False, None),
    ):
        assert start_network(cfg, torso, None, at(angle)) == want, (angle, torso)
    assert start_network(dataclasses.replace(cfg, init_network_angle_tolerance_deg=0.0), False, None, at(88.0)) == other
    assert start_network(dataclasses.replace(cfg, init_network_other_angles=None), False, None, at(60.0)) is None
    assert start_network(cfg, False, "mine.safetensors", at(60.0)) == cfg.init_network
    with pytest.raises(InputError, match="init_network_other_angles"):
        load_fit_config(init_network_other_angles="igcn")
    with pytest.raises(InputError, match="init_network_angle_tolerance_deg"):
        load_fit_config(init_network_angle_tolerance_deg=-1.0)

    # the fit asks for the network its views call for, and says when none starts it
    prior, case, _ = shipped
    asked = []

    def fake_start(prior, images, views, centre, method, *a, **k):
        asked.append(method)
        return NetworkStart(None, f"w_mean ({method} not run in this test)")

    monkeypatch.setattr(hybrid, "network_start", fake_start)
    quick = load_fit_config(steps=1, early_stop_tol=0.0, background=False, init_samples=0)
    for angle in (60.0, 150.0):
        res = fit(prior, case.images, at(angle), quick, progress=False)
        assert res.start.startswith("w_mean")
    assert asked == [other]  # none at 150 degrees
    assert res.start == "w_mean (no start network of the config was trained at these view angles)"


def test_whole_torso_x_rays_start_from_the_whole_body_network(shipped):
    """X-rays with anatomy outside the cube start the fit from ``init_network_whole_body`` and
    blend its volume at ``blend_start_whole_body``; crop-sized ones, a user's own checkpoint or
    ``null`` keep ``init_network``."""
    from xfit.fitting.hybrid import start_network
    from xfit.studies.evaluate import make_case

    cfg = load_fit_config()
    pair = "xctrsnet@style+x2ct-cnn@style"
    assert (cfg.init_network, cfg.init_network_whole_body) == (pair, "xctrsnet@wholebody")
    assert start_network(cfg, False) == pair and start_network(cfg, True) == "xctrsnet@wholebody"
    assert start_network(cfg, True, "mine.safetensors") == pair  # the user's network decides
    assert start_network(dataclasses.replace(cfg, init_network_whole_body=None), True) == pair
    assert start_network(dataclasses.replace(cfg, init_network=None), True) is None
    with pytest.raises(InputError, match="init_network_whole_body"):
        load_fit_config(init_network_whole_body="transvert")

    prior, crop, v = shipped
    torso = make_case(3, prior, v, whole_body_fov_mm=160.0)
    from xfit.fitting.optimize import shows_torso
    from xfit.studies.evaluate import observe

    aff = prior_affine(prior)
    for style in (None, 1.0):  # a crop shows its silhouette, processed or not; a torso does not
        assert not shows_torso(v, observe(crop, v, style_strength=style).images, aff, 64)[0]
        assert shows_torso(v, observe(torso, v, style_strength=style).images, aff, 64)[0]
    quick = load_fit_config(
        steps=2, warm_steps=2, restarts=1, init_network_steps=2, init_network_fine_steps=2, early_stop_tol=0.0
    )
    body = fit(prior, torso.images, v, quick, progress=False)
    assert body.start.startswith("xctrsnet@wholebody") and body.backgrounds is not None
    assert body.config["blend_start_applied"] == quick.blend_start_whole_body == 0.75  # the network weighs more
    cropped = fit(prior, crop.images, v, quick, progress=False)
    assert cropped.start.startswith("xctrsnet@style") and cropped.backgrounds is None
    assert cropped.config["blend_start_applied"] == quick.blend_start == 0.75
    for bad in (-0.1, 1.5, "high"):
        with pytest.raises(InputError, match="blend_start_whole_body must be null or a number"):
            load_fit_config(blend_start_whole_body=bad)
