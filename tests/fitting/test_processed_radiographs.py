"""Tests of the fit's levers for processed (clinical-style) radiographs: the monotone intensity
map, the saturation / collimation / marker masks and the gradient-correlation data term
(issue 28). Tiny prior (32^3 at 2.5 mm), 32x32 px detectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xfit.errors import InputError
from xfit.fitting import fit, load_fit_config
from xfit.fitting.config import FitConfig
from xfit.fitting.objective import (
    gradient_ncc_per_view,
    monotone_map,
    multiscale_ncc_per_view,
    ncc_per_view,
    saturation_mask,
)
from xfit.fitting.optimize import build_objective, normalised_targets, plan_stages
from xfit.geometry import View
from xfit.io import hu_to_mu
from xfit.prior.sample import generate_hu, prior_affine
from xfit.projector import project


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def make_views(angles=(0.0, 90.0), n: int = 32) -> list[View]:
    return [View(angle_deg=a, sdd_mm=1000.0, sod_mm=800.0, shape=(n, n), pixel_spacing_mm=(3.0, 3.0)) for a in angles]


def sample(prior, seed: int):
    gen = torch.Generator().manual_seed(seed)
    w = prior.G.mapping(torch.randn(1, prior.G.z_dim, generator=gen))
    noise = [torch.zeros_like(n) for n in prior.G.synthesis.make_noise(1, generator=gen)]
    hu, _ = generate_hu(prior, w, noise)
    return w, hu


def drr(prior, hu, views) -> list[np.ndarray]:
    with torch.no_grad():
        return [im.numpy() for im in project(hu_to_mu(hu)[:, None], prior_affine(prior), views)[0]]


def sigmoid_lut(p: np.ndarray, slope: float = 8.0) -> np.ndarray:
    """A vendor-like S curve of the line integrals, then 12-bit codes."""
    y = (p - p.min()) / (p.max() - p.min())
    s = 1.0 / (1.0 + np.exp(-slope * (y - 0.5)))
    return np.rint(s / s.max() * 4095.0).astype(np.float64)


# ----------------------------------------------------------------------------- the map itself


def test_monotone_map_identity_monotone_and_differentiable():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64) * 4 + 7
    z = (pred - pred.mean((-2, -1), keepdim=True)) / pred.std((-2, -1), unbiased=False, keepdim=True)
    ident = monotone_map(pred, torch.zeros(2, 3, 7, dtype=torch.float64))
    assert torch.allclose(ident, z, atol=1e-6)
    slopes = torch.randn(2, 3, 7, generator=gen, dtype=torch.float64).mul(2).requires_grad_(True)
    ramp = torch.linspace(-20, 20, 400, dtype=torch.float64).reshape(1, 1, 20, 20).expand(2, 3, 20, 20)
    out = monotone_map(ramp, slopes)
    assert bool((out.flatten(-2).diff(dim=-1) > 0).all())  # strictly increasing, beyond the knots too
    out.sum().backward()
    assert slopes.grad is not None and bool(slopes.grad.abs().sum() > 0)
    with pytest.raises(InputError):
        monotone_map(pred, torch.zeros(2, 3, 1))


def test_monotone_map_recovers_a_sigmoid_lut_better_than_affine(tiny_prior):
    """A fitted monotone map of a DRR reaches the NCC of its LUT-processed image; gain/offset cannot."""
    views = make_views()
    _, hu = sample(tiny_prior, 3)
    p = drr(tiny_prior, hu, views)
    target = torch.from_numpy(np.stack([sigmoid_lut(x) for x in p])).float()
    pred = torch.from_numpy(np.stack(p)).float()[None]
    affine_ncc = ncc_per_view(pred, target)
    slopes = torch.zeros(1, 2, 7, requires_grad=True)
    opt = torch.optim.Adam([slopes], lr=0.1)
    for _ in range(150):
        opt.zero_grad()
        loss = (1 - ncc_per_view(monotone_map(pred, slopes), target)).sum()
        loss.backward()
        opt.step()
    mapped_ncc = ncc_per_view(monotone_map(pred, slopes.detach()), target)
    assert bool((mapped_ncc > 0.995).all()), mapped_ncc
    assert bool(((1 - mapped_ncc) < 0.3 * (1 - affine_ncc)).all()), (affine_ncc, mapped_ncc)


# ----------------------------------------------------------------------------- masks


def test_saturation_mask_drops_markers_saturation_and_blank_borders():
    gen = np.random.default_rng(0)
    img = gen.normal(size=(40, 40)) + np.linspace(0, 3, 40)[None]
    lo, hi = img.min() - 1, img.max() + 1
    img[3:5, :] = 0.3  # a constant (blanked) border band ...
    img[0:3, :] = 0.3  # ... from the top edge
    img[:, -4:] = lo  # collimated to black on the right
    img[20:26, 10:14] = hi  # a burned-in marker at full white
    m = saturation_mask(torch.from_numpy(img))
    assert m.shape == (40, 40) and set(np.unique(m.numpy())) <= {0.0, 1.0}
    assert m[:5].sum() == 0 and m[:, -4:].sum() == 0  # borders
    assert m[19:27, 9:15].sum() == 0  # the marker and one pixel around it
    assert m[10:18, 2:30].min() == 1 and m.mean() > 0.6  # the anatomy stays
    # an ideal image keeps (almost) everything; a mostly flat one is not masked away
    ideal = torch.from_numpy(gen.normal(size=(40, 40)))
    assert saturation_mask(ideal).mean() > 0.98
    flat = torch.zeros(40, 40)
    flat[5, 5] = 1.0
    assert bool((saturation_mask(flat) == 1).all())


def test_mask_saturated_excludes_a_burned_in_block_from_the_data_term(tiny_prior):
    views = make_views()
    w, hu = sample(tiny_prior, 4)
    images = drr(tiny_prior, hu, views)
    images[0] = images[0].copy()
    images[0][4:10, 20:26] = images[0].max() * 1.5  # burned-in marker
    cfg = load_fit_config(mask_saturated=True, init_network=None, steps=4, coarse_fraction=0.5, background=False)
    aff = prior_affine(tiny_prior)
    obj = build_objective(views, normalised_targets(images, "cpu"), aff, tiny_prior.resolution, cfg)
    off = build_objective(
        views, normalised_targets(images, "cpu"), aff, tiny_prior.resolution, load_fit_config(init_network=None)
    )
    assert obj.masks[0][0, 4:10, 20:26].sum() == 0 and off.masks[0][0, 4:10, 20:26].sum() > 0
    # the true volume scores better once the marker is masked
    preds = obj.render(hu_to_mu(hu)[:, None])
    assert float(obj.data_per_view(preds)[0, 0]) < 0.5 * float(off.data_per_view(preds)[0, 0])
    coarse = build_objective(views, normalised_targets(images, "cpu"), aff, tiny_prior.resolution, cfg, coarse=True)
    assert coarse.masks[0][0, 2:5, 10:13].sum() == 0
    res = fit(tiny_prior, images, views, cfg, w_init=w[0], progress=False)
    assert res.data_masks is not None and res.data_masks[0][4:10, 20:26].sum() == 0
    assert res.data_masks[1].dtype == np.uint8 and res.intensity_maps is None


# ----------------------------------------------------------------------------- in the fit


def test_fit_with_monotone_map_explains_a_processed_image(tiny_prior):
    """From the true W+, a fit to LUT-processed X-rays keeps the volume nearer the truth and its
    re-projection (after the map) nearer the X-rays with the monotone map than with affine."""
    views = make_views()
    w, hu = sample(tiny_prior, 5)
    images = [sigmoid_lut(p) for p in drr(tiny_prior, hu, views)]
    common = dict(
        init_network=None, steps=30, coarse_fraction=0.0, early_stop_tol=0.0, background=False, optimize_noise=False
    )
    mono = fit(
        tiny_prior, images, views, load_fit_config(intensity_map="monotone", **common), w_init=w[0], progress=False
    )
    aff = fit(tiny_prior, images, views, load_fit_config(**common), w_init=w[0], progress=False)
    assert min(mono.view_ncc) > min(aff.view_ncc)
    lo, hi = tiny_prior.hu_window
    truth = hu.clamp(lo, hi)[0].numpy()
    assert np.abs(mono.hu - truth).mean() < np.abs(aff.hu - truth).mean()
    assert mono.intensity_maps is not None and len(mono.intensity_maps) == 2
    curve = mono.intensity_maps[0]
    assert len(curve["z"]) == len(curve["y"]) == 8 and np.all(np.diff(curve["y"]) > 0)
    assert "intensity_map" in mono.history[-1] and mono.history[-1]["intensity_map"] > 0
    assert aff.intensity_maps is None and aff.data_masks is None


def test_gradient_data_term_is_the_mean_of_both(tiny_prior):
    views = make_views()
    _, hu = sample(tiny_prior, 6)
    _, other = sample(tiny_prior, 7)
    images = drr(tiny_prior, hu, views)
    aff = prior_affine(tiny_prior)
    targets = normalised_targets(images, "cpu")
    cfg = load_fit_config(data_term="ncc+gradient", init_network=None)
    obj = build_objective(views, targets, aff, tiny_prior.resolution, cfg)
    preds = obj.render(hu_to_mu(other)[:, None])
    t, m = obj.targets[0], obj.masks[0]
    expect = 0.5 * (multiscale_ncc_per_view(preds[0], t, m) + gradient_ncc_per_view(preds[0], t, m))
    assert torch.allclose(obj.data_per_view(preds), expect)
    plain = build_objective(views, targets, aff, tiny_prior.resolution, load_fit_config(init_network=None))
    assert torch.allclose(plain.data_per_view(preds), multiscale_ncc_per_view(preds[0], t, m))


# ----------------------------------------------------------------------------- config


def test_levers_default_off_and_config_errors():
    cfg = FitConfig()
    assert (cfg.intensity_map, cfg.mask_saturated, cfg.data_term) == ("affine", False, "ncc")
    assert all("intensity_map" not in s.train for s in plan_stages(cfg, True))
    mono = FitConfig(intensity_map="monotone")
    assert all("intensity_map" in s.train for s in plan_stages(mono, True))
    for bad in (
        {"intensity_map": "sigmoid"},
        {"intensity_map": True},
        {"data_term": "ssim"},
        {"intensity_knots": 2},
        {"intensity_knots": 8.0},
        {"mask_saturated": "yes"},
        {"lr_intensity_map": -1.0},
        {"lambda_intensity_map": float("nan")},
    ):
        with pytest.raises(InputError):
            load_fit_config(**bad)


# ----------------------------------------------------------------------------- reconstruct


def test_reconstruct_clinical_style_reports_the_map_and_masks(tmp_path, tiny_prior_file):
    """A clinical-style pair fitted with the levers on: the report holds each view's map and the
    share of pixels the data term used; preview.png shows the re-projection after the map."""
    from cli_helpers import run

    from xfit.reconstruct import preview_projection_title

    prior = tiny_prior_file()
    assert run("phantoms", tmp_path / "ct", "-n", 1, "--size", 32, "--spacing", 2.5, "--seed", 5).exit_code == 0
    ct = tmp_path / "ct" / "case0000_ct.nii.gz"
    res = run(
        "simulate",
        ct,
        "--angles",
        "0,90",
        "-o",
        tmp_path / "xr",
        "--detector",
        32,
        "--pixel-spacing",
        3.0,
        "--style",
        "clinical",
    )
    assert res.exit_code == 0, res.output
    (tmp_path / "fit.yaml").write_text("intensity_map: monotone\nmask_saturated: true\ninit_network: null\n")
    out = tmp_path / "out"
    res = run(
        "reconstruct",
        tmp_path / "xr" / "ap.png",
        tmp_path / "xr" / "lat.png",
        "-o",
        out,
        "--prior",
        prior,
        "--config",
        tmp_path / "fit.yaml",
        "--steps",
        "4",
        "--restarts",
        "1",
        "--quiet",
    )
    assert res.exit_code == 0, (res.output, res.stderr)
    import json

    report = json.loads((out / "report.json").read_text())
    for v in report["views"]:
        assert len(v["intensity_map"]["y"]) == 8 and np.all(np.diff(v["intensity_map"]["y"]) > 0)
        assert 0.05 < v["data_term_pixels"] < 0.9  # footprint, collimated border, marker and saturation dropped
    assert (out / "preview.png").stat().st_size > 0

    class _F:
        intensity_maps, data_masks, view_ncc = [{}], None, [0.9]

    assert preview_projection_title(_F, 0).startswith("re-projection, fitted intensity map")
    _F.intensity_maps = None
    assert preview_projection_title(_F, 0) == "re-projection (NCC 0.900)"


def test_masked_gain_offset_match_ignores_blank_borders():
    from xfit.fitting.objective import match_gain_offset

    gen = torch.Generator().manual_seed(1)
    target = torch.rand(1, 16, 16, generator=gen, dtype=torch.float64)
    pred = (3.0 * target - 1.0)[None].clone()
    mask = torch.zeros(1, 16, 16, dtype=torch.float64)
    mask[:, 3:13, 3:13] = 1
    target_blank = target.clone()
    target_blank[mask == 0] = 0.0  # a black collimated border
    masked = match_gain_offset(pred, target_blank, mask)[0]
    assert torch.allclose(masked[mask == 1], target[mask == 1])
    plain = match_gain_offset(pred, target_blank)[0]
    assert not torch.allclose(plain[mask == 1], target[mask == 1], atol=1e-3)
    assert torch.equal(match_gain_offset(pred, target), match_gain_offset(pred, target, None))
