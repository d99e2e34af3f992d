"""Tests of xfit.fitting.consistency: the data-consistency step after the fit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from xfit.errors import InputError
from xfit.fitting import FitConfig, fit, load_fit_config
from xfit.fitting.consistency import (
    MIN_VIEW_NCC,
    MIN_VIEW_NCC_BACKGROUND,
    consistency_skip_reason,
    consistency_step,
    edge_weights,
    gap_weights,
    highpass,
    noise_sigma,
    residuals,
    step_weights,
)
from xfit.geometry import View
from xfit.projector import project
from xfit.units import hu_to_mu

R = 16


@pytest.fixture(autouse=True)
def one_thread(one_thread):
    yield


def cube_affine(spacing: float = 2.0) -> np.ndarray:
    a = np.diag([spacing, spacing, spacing, 1.0])
    a[:3, 3] = -spacing * (R - 1) / 2
    return a


def views(angles=(0.0, 90.0)) -> list[View]:
    return [View(a, sdd_mm=1000.0, sod_mm=800.0, shape=(24, 24), pixel_spacing_mm=(2.0, 2.0)) for a in angles]


def volume(seed: int) -> np.ndarray:
    """A smooth random ``[R, R, R]`` HU volume with an edge (a bright block), above air."""
    rng = np.random.default_rng(seed)
    hu = ndimage.gaussian_filter(rng.normal(0, 300, (R, R, R)), 2.0)
    hu[5:11, 6:10, 4:12] += 600.0
    return hu.astype(np.float32)


def drr(hu: np.ndarray, vs: list[View]) -> list[np.ndarray]:
    mu = hu_to_mu(torch.from_numpy(hu))[None, None]
    with torch.no_grad():
        return [project(mu, cube_affine(), [v])[0, 0].numpy() for v in vs]


def err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.mark.parametrize("weighted", [False, True])
def test_step_moves_toward_any_volume_that_explains_the_xrays(weighted):
    # on the projector's own line integrals the step is a projection onto the volumes that explain
    # them (in the W-weighted norm), so it cannot move away from the truth in that norm
    truth, start = volume(0), volume(1)
    vs = views()
    w = edge_weights(start) if weighted else None
    out, info = consistency_step(start, drr(truth, vs), vs, cube_affine(), 8, w, tau=None)
    norm = (lambda d: err(d / np.sqrt(w), 0)) if weighted else (lambda d: err(d, 0))
    assert norm(out - truth) < norm(start - truth)
    assert info.iterations == 8 and info.residual_after < 0.3 * info.residual_before
    assert err(out, truth) < err(start, truth)
    again = drr(out, vs)
    assert max(err(a, b) for a, b in zip(again, drr(truth, vs))) < 0.3 * max(
        err(a, b) for a, b in zip(drr(start, vs), drr(truth, vs))
    )


def test_step_ignores_gain_and_offset_and_stops_at_zero_residual():
    truth, start = volume(2), volume(3)
    vs = views((0.0, 70.0))
    images = drr(truth, vs)
    a, _ = consistency_step(start, images, vs, cube_affine(), 3)
    b, _ = consistency_step(start, [3.0 * im + 7.0 for im in images], vs, cube_affine(), 3)
    assert err(a, b) < 1e-2 * err(a, start)
    # a volume that already explains its X-rays stays where it is
    same, info = consistency_step(truth, images, vs, cube_affine(), 3)
    assert err(same, truth) < 1.0 and info.rms_hu < 1.0
    r, gains, nccs = residuals(torch.from_numpy(truth), images, cube_affine(), vs)
    assert max(float(x.abs().max()) for x in r) < 1e-4 and np.allclose(gains, 1.0, atol=1e-4)
    assert np.allclose(nccs, 1.0, atol=1e-6)
    # an X-ray that is not a line integral of the volume (a strong contrast curve): left alone
    bent = [np.tanh(4 * (im - im.mean()) / im.std()) for im in images]
    out, info = consistency_step(start, bent, vs, cube_affine(), 3)
    assert info.skipped is not None and "NCC" in info.skipped and info.iterations == 0
    assert np.array_equal(out, start) and min(info.view_ncc) < MIN_VIEW_NCC


def test_noise_estimate_and_discrepancy_stop():
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.normal(size=(64, 64)), 6.0) * 10
    assert noise_sigma(smooth) < 0.02 * smooth.std()
    assert noise_sigma(smooth + rng.normal(0, 0.3, smooth.shape)) == pytest.approx(0.3, rel=0.1)
    truth, start = volume(4), volume(5)
    vs = views()
    clean = drr(truth, vs)
    _, run = consistency_step(start, clean, vs, cube_affine(), 3)
    assert (run.iterations >= 1 and run.residual_after <= 1.5 * run.noise_sigma) or run.iterations == 3
    # noise about as large as the start's residual: nothing left to explain, nothing done
    noisy = [im + rng.normal(0, 1.2 * run.residual_before, im.shape).astype(np.float32) for im in clean]
    out, info = consistency_step(start, noisy, vs, cube_affine(), 3)
    assert info.iterations == 0 and info.rms_hu == 0.0 and np.array_equal(out, start)
    assert info.skipped is None and min(info.view_ncc) >= MIN_VIEW_NCC
    assert info.noise_sigma > 0.5 * info.residual_before


def test_edge_weights_are_high_at_edges_and_positive():
    hu = np.zeros((R, R, R), np.float32)
    hu[:, :, R // 2 :] = 1000.0
    w = edge_weights(hu, floor=0.05)
    assert w.min() >= 0.05 and abs(w.mean() - 1.05) < 1e-6
    assert w[R // 2, R // 2, R // 2] > 10 * w[R // 2, R // 2, 1]
    flat = edge_weights(np.zeros((R, R, R)))
    assert np.allclose(flat, 1.05)


def test_gap_and_step_weights():
    ref = np.zeros((R, R, R), np.float32)
    ref[:, :, R // 2 :] = 1000.0
    fit_hu = ref.copy()
    fit_hu[2:5, 2:5, 2:5] += 300.0  # the fit disagrees with the reference in one corner only
    g = gap_weights(fit_hu, ref)
    assert abs(g.mean() - 1.0) < 1e-6 and g[3, 3, 3] > 20 * g[R - 3, R - 3, 3]
    assert np.allclose(gap_weights(ref, ref), 1.0)
    assert step_weights("flat", fit_hu, ref) == (None, "flat")
    w, used = step_weights("edges", fit_hu, ref)
    assert used == "edges" and np.array_equal(w, edge_weights(ref))
    w, used = step_weights("edges", fit_hu, None)
    assert used == "edges" and np.array_equal(w, edge_weights(fit_hu))
    w, used = step_weights("edges+gap", fit_hu, ref)
    assert used == "edges+gap" and np.allclose(w, edge_weights(ref) + g)
    # no reference (no start network): the fit's own edges, no gap
    w, used = step_weights("edges+gap", fit_hu, None)
    assert used == "edges" and np.array_equal(w, edge_weights(fit_hu))


def test_skip_reasons_and_config():
    assert consistency_skip_reason(FitConfig(background=False)) is None
    assert consistency_skip_reason(FitConfig(background=True)) is None  # whole torso: footprint, high-passed
    assert "processed" in consistency_skip_reason(FitConfig(background=False, intensity_map="monotone"))
    assert "processed" in consistency_skip_reason(FitConfig(background=False, mask_saturated=True))
    assert "pose" in consistency_skip_reason(FitConfig(background=False, refine_pose=True))
    assert FitConfig().consistency_steps == 3 and FitConfig().consistency_weights == "edges+gap"
    with pytest.raises(InputError, match="consistency_weights"):
        FitConfig(consistency_weights="sharp")
    with pytest.raises(InputError, match="consistency_steps"):
        FitConfig(consistency_steps=-1)
    assert FitConfig().consistency_highpass_px == 3.0
    with pytest.raises(InputError, match="consistency_highpass_px"):
        FitConfig(consistency_highpass_px=-1.0)


def test_highpass_takes_out_slow_fields_inside_the_mask_only():
    yy, xx = np.mgrid[:24, :24].astype(np.float64)
    mask = np.zeros((24, 24), bool)
    mask[4:20, 6:18] = True
    slow = 0.3 + 0.01 * xx - 0.02 * yy  # a plane: what a smooth background leaves
    hp = highpass(slow, mask, 3.0)
    assert np.all(hp[~mask] == 0) and np.abs(hp[mask]).max() < 0.2 * np.ptp(slow[mask])
    assert np.abs(highpass(np.full((24, 24), 7.0), mask, 3.0)).max() < 1e-9  # an offset, exactly
    spike = np.zeros((24, 24))
    spike[12, 12] = 1.0
    assert highpass(spike, mask, 3.0)[12, 12] > 0.9  # an edge-sized detail stays


def test_step_with_a_background_explains_the_footprint_after_it():
    # whole-torso X-rays: the cube's line integrals plus a smooth field of anatomy outside it
    truth, start = volume(6), volume(7)
    vs = views()
    yy, xx = np.mgrid[:24, :24].astype(np.float32)
    fields = [0.5 + 0.02 * xx + 0.01 * yy, 0.8 - 0.015 * yy + 0.0005 * xx * yy]
    images = [d + f for d, f in zip(drr(truth, vs), fields)]
    masks = [np.ones((24, 24), bool)] * 2
    masks = [m.copy() for m in masks]
    for m in masks:
        m[:, :2] = m[:, -2:] = False
    # the truth with the true fields explains its X-rays: a zero residual and no move
    r, _, nccs = residuals(torch.from_numpy(truth), images, cube_affine(), vs, fields, masks, 3.0)
    assert max(float(x.abs().max()) for x in r) < 1e-4 and np.allclose(nccs, 1.0, atol=1e-6)
    same, _ = consistency_step(truth, images, vs, cube_affine(), 3, backgrounds=fields, masks=masks, highpass_px=3.0)
    assert err(same, truth) < 1.0
    # from another volume, with fields only roughly known (their slow part off), it moves toward the truth
    rough = [f + 0.05 for f in fields]
    out, info = consistency_step(
        start,
        images,
        vs,
        cube_affine(),
        5,
        edge_weights(start),
        tau=None,
        backgrounds=rough,
        masks=masks,
        highpass_px=3.0,
    )
    assert info.iterations == 5 and info.skipped is None and err(out, truth) < err(start, truth)
    # without the background the same X-rays are far from line integrals of the cube
    _, _, plain = residuals(torch.from_numpy(start), images, cube_affine(), vs)
    _, _, with_bg = residuals(torch.from_numpy(start), images, cube_affine(), vs, fields, masks)
    assert min(with_bg) > min(plain)
    # the gate with a background is its own, over the footprint (and weaker: a strong contrast
    # curve passes it, X-rays of something else do not)
    other = [np.random.default_rng(i).normal(size=(24, 24)).astype(np.float32) for i in range(2)]
    _, info = consistency_step(start, other, vs, cube_affine(), 3, backgrounds=fields, masks=masks, highpass_px=3.0)
    assert info.skipped is not None and "background" in info.skipped and min(info.view_ncc) < MIN_VIEW_NCC_BACKGROUND


def test_fit_runs_the_step_and_reports_it(tiny_prior, monkeypatch):
    from xfit.prior.sample import generate_hu, prior_affine

    prior = tiny_prior
    gen = torch.Generator().manual_seed(5)
    w = prior.G.mapping(torch.randn(1, prior.G.z_dim, generator=gen))
    hu, _ = generate_hu(prior, w, prior.G.synthesis.make_noise(1, generator=gen))
    vs = [View(a, sdd_mm=1000.0, sod_mm=800.0, shape=(32, 32), pixel_spacing_mm=(3.0, 3.0)) for a in (0.0, 90.0)]
    with torch.no_grad():
        images = [im.numpy() for im in project(hu_to_mu(hu)[:, None], prior_affine(prior), vs)[0]]
    base = load_fit_config(steps=10, restarts=1, background=False, init_network=None, consistency_steps=0)
    off = fit(prior, images, vs, base, progress=False)
    assert off.consistency is None
    # a 10-step fit of a random tiny prior explains its X-rays with NCC 0.84-0.92: below the gate
    gated = fit(prior, images, vs, dataclasses.replace(base, consistency_steps=3), progress=False)
    assert "NCC" in gated.consistency["skipped"] and np.array_equal(gated.hu, off.hu)
    monkeypatch.setattr("xfit.fitting.consistency.MIN_VIEW_NCC", 0.5)
    on = fit(prior, images, vs, dataclasses.replace(base, consistency_steps=3), progress=False)
    assert on.consistency["iterations"] >= 1 and on.consistency["weights_from"] == "the fit"
    assert on.consistency["weights"] == "edges"  # the default edges+gap has no gap without a network
    assert on.consistency["residual_after"] < on.consistency["residual_before"]
    assert min(on.view_ncc) > min(off.view_ncc)
    lo, hi = prior.hu_window
    assert on.hu.min() >= lo and on.hu.max() <= hi and not np.array_equal(on.hu, off.hu)
    np.testing.assert_array_equal(on.labels, off.labels)  # the label channel is the prior's
    # with a background (whole-torso X-rays) the step runs on the footprint, high-passed
    monkeypatch.setattr("xfit.fitting.consistency.MIN_VIEW_NCC_BACKGROUND", 0.5)
    torso = fit(prior, images, vs, dataclasses.replace(base, consistency_steps=3, background=True), progress=False)
    assert torso.consistency["highpass_px"] == 3.0 and torso.consistency["iterations"] >= 1
    assert on.consistency["highpass_px"] is None and torso.backgrounds is not None
