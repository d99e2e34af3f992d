"""Test-time fitting of a 3D StyleGAN2 prior to X-rays (X2Vision / BRGM style MAP estimate).

:func:`fit` is a plain function in the manner of stylegan2-ada's ``projector.py``: Adam over W+
(parametrised as ``w_mean + w_std * u``, so the learning rate is in units of ``w_std``) and the
per-layer noise maps, the stylegan2-ada learning-rate schedule (linear ramp-up, cosine
ramp-down), several restarts batched into one generator call, coarse-to-fine detector
resolution, early stopping, a divergence guard and optional per-view pose refinement. Its
settings (:class:`~xfit.fitting.config.FitConfig`) are returned with the result so that they can
be saved next to the outputs.

Noise maps start at zero by default: zero is the mode of their standard-normal prior, it keeps
restart 0 deterministic (``w_mean``, zero noise) and avoids an initial penalty that dominates
the data term; restarts 1.. differ by a random perturbation of W+ (``init_perturbation``).
``noise_init: randn`` reproduces stylegan2-ada's random start instead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import GeometryError, InputError, XfitError
from ..geometry import View, view_dict
from ..io import hu_to_mu
from ..prior.checkpoint import Prior
from ..prior.sample import generate_hu, prior_affine
from ..projector import project
from .config import FitConfig, load_fit_config
from .objective import (Objective, ViewGroup, group_views, match_gain_offset, ncc_per_view,
                        upsample_background)

#: Smallest detector side (pixels) for which a half-resolution coarse stage is used.
MIN_COARSE_SIDE = 16

Callback = Callable[[int, dict], Any]


@dataclass
class FitResult:
    """Outputs of :func:`fit`.

    Attributes:
        hu: ``[R, R, R]`` float32 HU of the best restart (clamped to the prior's HU window).
        label_prob: ``[R, R, R]`` float32 sigmoid of the label logit.
        labels: ``[R, R, R]`` uint8, ``label_prob > 0.5``.
        uncertainty: ``[R, R, R]`` float32 per-voxel std of HU over the successful restarts
            (``None`` with fewer than two).
        affine: ``[4, 4]`` voxel index -> world mm (isocentre at the origin).
        w_plus: ``[num_ws, w_dim]`` fitted styles of the best restart.
        noise: fitted noise maps of the best restart, each ``[r, r, r]``.
        history: per step, the loss terms of the best restart (``step``, ``stage``, ``lr``, ...).
        view_ncc: NCC of each input image with its final re-projection (input order), over the
            footprint mask of the data term (all pixels when ``footprint`` is 0).
        projections: re-projections ``[R_v, C_v]`` matched to each input by the least-squares
            gain and offset (the fitted background included when enabled).
        backgrounds: fitted backgrounds ``[R_v, C_v]`` in line-integral units, or ``None``.
        views: the views used at the end (refined when ``refine_pose``).
        pose: ``{"delta_angle_deg": [V], "delta_shift_mm": [V][3]}`` when ``refine_pose``.
        restarts: per restart ``final_data``, ``final_total``, ``divergences``, ``lr_scale``,
            ``failed``.
        best_restart: index of the restart returned.
        stopped_at: steps run (less than ``config['steps']`` after early stopping).
        perceptual: ``"lpips"``, ``"gradient_ncc"`` or ``None`` (weight 0).
        timings: seconds in ``generator``, ``projector`` (forward passes), ``optimizer`` (loss,
            backward and Adam), ``total``, and ``per_step``.
        config: the :class:`FitConfig` as a dictionary (plus ``seed`` actually used).
    """

    hu: np.ndarray
    label_prob: np.ndarray
    labels: np.ndarray
    uncertainty: np.ndarray | None
    affine: np.ndarray
    w_plus: np.ndarray
    noise: list[np.ndarray]
    history: list[dict]
    view_ncc: list[float]
    projections: list[np.ndarray]
    backgrounds: list[np.ndarray] | None
    views: list[View]
    pose: dict | None
    restarts: list[dict]
    best_restart: int
    stopped_at: int
    perceptual: str | None
    timings: dict[str, float]
    config: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- input checks


def check_views(views: Sequence[View]) -> list[View]:
    """Validate the views of a fit.

    Raises:
        GeometryError: not Views, an isocentre away from the world origin (the prior grid's
            centre), or two identical views (same angle modulo 360 and pose).
    """
    views = list(views)
    if not views or not all(isinstance(v, View) for v in views):
        raise GeometryError("views must be a non-empty list of xfit.geometry.View")
    for i, v in enumerate(views):
        if any(abs(x) > 1e-6 for x in v.isocenter_mm):
            raise GeometryError(f"view {i} has isocenter_mm {v.isocenter_mm}: fitting needs the "
                                "isocentre at the world origin (the centre of the prior's grid)")
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            a, b = views[i], views[j]
            diff = abs((a.angle_deg - b.angle_deg + 180.0) % 360.0 - 180.0)
            same_pose = (a.pose is None and b.pose is None) or (
                a.pose is not None and b.pose is not None
                and np.allclose(np.asarray(a.pose), np.asarray(b.pose), atol=1e-6))
            if diff < 1e-3 and same_pose:
                raise GeometryError(f"views {i} and {j} are identical (angle {a.angle_deg} deg): "
                                    "a second copy adds no information")
    return views


def check_images(images: Sequence[np.ndarray | Tensor], views: Sequence[View]) -> list[np.ndarray]:
    """Images as float64 arrays ``[R, C]`` matching their views.

    Raises:
        InputError: count mismatch, wrong shape, non-finite or constant image.
    """
    images = list(images)
    if len(images) != len(views):
        raise InputError(f"got {len(images)} images for {len(views)} views")
    out = []
    for i, (img, v) in enumerate(zip(images, views)):
        arr = img.detach().cpu().numpy() if isinstance(img, Tensor) else np.asarray(img)
        arr = arr.astype(np.float64)
        if arr.ndim != 2:
            raise InputError(f"image {i} must be 2D [rows, cols], got shape {list(arr.shape)}")
        if tuple(arr.shape) != tuple(v.shape):
            raise InputError(f"image {i} has shape {list(arr.shape)} but its view expects "
                             f"{list(v.shape)}")
        if not np.isfinite(arr).all():
            raise InputError(f"image {i} contains NaN or inf")
        if arr.std() <= 0:
            raise InputError(f"image {i} is constant: nothing to fit")
        out.append(arr)
    return out


# ----------------------------------------------------------------------------- small helpers


def lr_schedule(t: float, rampup: float, rampdown: float) -> float:
    """stylegan2-ada projector's learning-rate factor at progress ``t`` in [0, 1].

    Linear ramp-up over the first ``rampup`` fraction, cosine ramp-down over the last
    ``rampdown`` fraction, 1 in between.
    """
    t = min(max(t, 0.0), 1.0)
    ramp = 1.0 if rampdown <= 0 else min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if rampup > 0:
        ramp *= min(1.0, t / rampup)
    return ramp


def half_resolution(view: View) -> View:
    """The view with half the pixels per side and twice the spacing (same detector area).

    Matches ``avg_pool2d(image, 2)`` (an odd last row/column is dropped; the principal point
    offset is adjusted so that pixel centres stay where the pooled pixels are).
    """
    (rows, cols), (dr, dc) = view.shape, view.pixel_spacing_mm
    off = tuple(o / 2 - 0.25 * (n % 2) for o, n in zip(view.offset_px, (rows, cols)))
    return view.with_(shape=(rows // 2, cols // 2), pixel_spacing_mm=(2 * dr, 2 * dc), offset_px=off)


def _normalise(img: np.ndarray) -> Tensor:
    """Zero-mean unit-std copy (float32 tensor); NCC does not see the change."""
    return torch.from_numpy(((img - img.mean()) / img.std()).astype(np.float32))


def _groups_targets(views: list[View], images: list[Tensor], coarse: bool
                    ) -> tuple[list[ViewGroup], list[Tensor]]:
    """View groups and stacked targets, optionally at half resolution."""
    if coarse:
        views = [half_resolution(v) for v in views]
        images = [F.avg_pool2d(im[None, None], 2)[0, 0] for im in images]
    groups = group_views(views)
    return groups, [torch.stack([images[i] for i in g.index]) for g in groups]


def footprint_masks(groups: list[ViewGroup], affine: Tensor, resolution: int, fraction: float) -> list[Tensor]:
    """Per group ``[V_g, R, C]`` masks of the pixels whose ray crosses the field of view.

    A pixel is kept when its chord through the prior's cube is at least ``fraction`` of the
    longest chord of its view.
    """
    ones = torch.ones(1, 1, resolution, resolution, resolution, dtype=affine.dtype, device=affine.device)
    masks = []
    for g in groups:
        with torch.no_grad():
            chord = project(ones, affine, list(g.views))[0]  # [V_g, R, C] in voxel-mm units
        peak = chord.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        masks.append((chord >= fraction * peak).to(affine.dtype))
    return masks


@torch.no_grad()
def best_prior_samples(prior: Prior, objective: Objective, n: int, k: int, *, seed: int = 0,
                       resolution: int | None = None, batch: int = 4) -> Tensor:
    """The ``k`` of ``n`` random prior samples whose projections best match the targets.

    Samples are ``w = mapping(z)`` broadcast over W+, with the generator's constant noise; they
    are scored by the objective's data term (at ``resolution``: the coarse generator output when
    the objective is the coarse one).

    Returns:
        ``[k, num_ws, w_dim]`` W+ of the best samples, best first.
    """
    from ..prior.sample import sample_w_plus  # noqa: PLC0415

    ws = sample_w_plus(prior, n, seed=7_777_777 + seed)  # a pool apart from the study's references
    scores = []
    for i in range(0, n, batch):
        w = ws[i:i + batch]
        hu, _ = generate_hu(prior, w, resolution=resolution)
        preds = objective.render(hu_to_mu(hu)[:, None])
        scores.append(objective.data_per_view(preds).mean(-1))
    order = torch.argsort(torch.cat(scores))
    return ws[order[:k]]


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm  # noqa: PLC0415 (optional)
    except ImportError:
        return None
    return tqdm(total=total, desc="fit", leave=False)


# ----------------------------------------------------------------------------- state


class _Restarts:
    """Leaf parameters of every restart (one set per restart so each has its own Adam lr)."""

    def __init__(self, prior: Prior, cfg: FitConfig, num_views: int, w_init: Tensor | None,
                 seed: int, device: torch.device, w_starts: Tensor | None = None):
        G = prior.G
        b, k, d = cfg.restarts, G.num_ws, G.w_dim
        gen = torch.Generator().manual_seed(seed)
        mean, std = prior.w_mean.float(), prior.w_std.float()
        if w_init is None:
            u0 = torch.zeros(b, k, d)
        else:
            w_init = torch.as_tensor(w_init, dtype=torch.float32).cpu()
            if w_init.ndim == 1 and w_init.shape[0] == d:
                w_init = w_init[None, None].expand(1, k, d)
            elif w_init.ndim == 2:
                w_init = w_init[None]
            if w_init.ndim != 3 or tuple(w_init.shape[1:]) != (k, d) or w_init.shape[0] not in (1, b):
                raise InputError(f"w_init must be [w_dim], [num_ws, w_dim] or [B, num_ws, w_dim] "
                                 f"with num_ws={k}, w_dim={d}, B in (1, {b}); got {list(w_init.shape)}")
            u0 = ((w_init - mean.cpu()) / std.cpu()).expand(b, k, d).clone()
        if b > 1:  # restart 0 starts exactly at the given / mean W+, the others nearby
            u0[1:] += cfg.init_perturbation * torch.randn(b - 1, 1, d, generator=gen)
        if w_starts is not None and b > 1:  # ... or at the best prior samples
            k = min(b - 1, w_starts.shape[0])
            u0[1:1 + k] = (w_starts[:k].float().cpu() - mean.cpu()) / std.cpu()
        shapes = G.synthesis.noise_shapes()
        if cfg.noise_init == "randn":
            n0 = [[torch.randn(1, *s[1:], generator=gen) for s in shapes] for _ in range(b)]
        else:
            n0 = [[torch.zeros(1, *s[1:]) for s in shapes] for _ in range(b)]
        g = cfg.background_grid
        self.init = {
            "u": [u0[i:i + 1].to(device) for i in range(b)],
            "noise": [[n.to(device) for n in ns] for ns in n0],
            "background": [torch.zeros(1, num_views, g, g, device=device) for _ in range(b)],
            "delta_angle_deg": [torch.zeros(1, num_views, device=device) for _ in range(b)],
            "delta_shift_mm": [torch.zeros(1, num_views, 3, device=device) for _ in range(b)],
        }
        self.params = {key: [_leaf(x) for x in value] if key != "noise"
                       else [[_leaf(n) for n in ns] for ns in value]
                       for key, value in self.init.items()}
        self.cfg = cfg
        self.mean, self.std = mean.to(device), std.to(device)

    def latent_params(self, r: int) -> list[Tensor]:
        """Parameters optimised with the W+ learning rate for restart ``r``."""
        out = [self.params["u"][r]]
        if self.cfg.optimize_noise:
            out += self.params["noise"][r]
        if self.cfg.background:
            out.append(self.params["background"][r])
        return out

    def pose_params(self, r: int) -> list[Tensor]:
        """Pose corrections of restart ``r`` (empty unless ``refine_pose``)."""
        if not self.cfg.refine_pose:
            return []
        return [self.params["delta_angle_deg"][r], self.params["delta_shift_mm"][r]]

    def all_params(self, r: int) -> list[Tensor]:
        return self.latent_params(r) + self.pose_params(r)

    def reset(self, r: int) -> None:
        """Put restart ``r`` back at its initial values."""
        with torch.no_grad():
            for key in ("u", "background", "delta_angle_deg", "delta_shift_mm"):
                self.params[key][r].copy_(self.init[key][r])
            for p, p0 in zip(self.params["noise"][r], self.init["noise"][r]):
                p.copy_(p0)

    def batch(self) -> dict[str, Any]:
        """Batched tensors over restarts: ``w_plus [B, K, D]``, noise list, background, pose."""
        p = self.params
        cat = lambda xs: torch.cat(list(xs))  # noqa: E731
        out = {
            "w_plus": self.mean + self.std * cat(p["u"]),
            "noise": [cat(ns) for ns in zip(*p["noise"])],
            "background": cat(p["background"]) if self.cfg.background else None,
            "delta_angle_deg": cat(p["delta_angle_deg"]) if self.cfg.refine_pose else None,
            "delta_shift_mm": cat(p["delta_shift_mm"]) if self.cfg.refine_pose else None,
        }
        return out


def _leaf(x: Tensor) -> Tensor:
    return x.detach().clone().requires_grad_(True)


# ----------------------------------------------------------------------------- fit


def fit(
    prior: Prior,
    images: Sequence[np.ndarray | Tensor],
    views: Sequence[View],
    cfg: FitConfig | None = None,
    *,
    seed: int | None = None,
    w_init: np.ndarray | Tensor | None = None,
    progress: bool = True,
    callback: Callback | None = None,
) -> FitResult:
    """Fit the prior's generator to X-rays (MAP estimate over W+ and noise).

    Args:
        prior: loaded prior (generator, ``w_mean``/``w_std``, config).
        images: V images ``[R_v, C_v]``: line integrals or [0, 1] intensities, bright =
            attenuating (any gain/offset: the data term is NCC).
        views: their V views, isocentre at the world origin; shapes may differ between views.
        cfg: settings (default: :func:`load_fit_config`).
        seed: seed of restart perturbations / random noise (default ``cfg.seed``).
        w_init: optional start ``[w_dim]``, ``[num_ws, w_dim]`` or ``[restarts, num_ws, w_dim]``.
        progress: show a tqdm bar when tqdm is installed.
        callback: ``callback(step, state)`` after every step; ``state`` holds ``stage``,
            ``terms`` (per restart lists), ``lr`` and ``params`` (the live leaf tensors, which a
            callback may modify). Returning True stops the fit.
    Returns:
        :class:`FitResult`.
    Raises:
        InputError: images that do not match the views, bad ``w_init``.
        GeometryError: views off the origin or duplicated.
        XfitError: every restart diverged.
    """
    t_start = time.perf_counter()
    cfg = cfg if cfg is not None else load_fit_config()
    seed = cfg.seed if seed is None else int(seed)
    views = check_views(views)
    arrays = check_images(images, views)
    device = next(iter(prior.G.parameters())).device
    torch.manual_seed(seed)
    targets = [_normalise(a).to(device) for a in arrays]

    full_res = int(prior.config.resolution)
    coarse_res = full_res // 2 if cfg.coarse_generator and full_res >= 8 else None

    def make_objective(coarse: bool, perceptual=None) -> Objective:
        groups, tg = _groups_targets(views, targets, coarse)
        res = coarse_res if coarse and coarse_res else full_res
        aff = torch.as_tensor(prior_affine(prior, res), dtype=torch.float32, device=device)
        masks = footprint_masks(groups, aff, res, cfg.footprint) if cfg.footprint > 0 else None
        return Objective(groups, tg, aff, masks=masks, lambda_w=cfg.lambda_w, lambda_c=cfg.lambda_c,
                         lambda_n=cfg.lambda_n, lambda_perceptual=cfg.lambda_perceptual,
                         lambda_background=cfg.lambda_background, lambda_pose=cfg.lambda_pose,
                         scales=cfg.scales, pose_sigma_deg=cfg.pose_sigma_deg,
                         pose_sigma_mm=cfg.pose_sigma_mm, perceptual=perceptual,
                         perceptual_net=cfg.perceptual_net,
                         step_mm=cfg.step_mm if cfg.step_mm is not None else float(aff[0, 0]))

    fine = make_objective(False)
    can_coarse = min(min(v.shape) for v in views) >= MIN_COARSE_SIDE
    n_coarse = int(round(cfg.coarse_fraction * cfg.steps)) if can_coarse else 0
    coarse = make_objective(True, fine.perceptual) if n_coarse > 0 else None

    w_starts = None
    if cfg.init_samples > 0 and cfg.restarts > 1:
        w_starts = best_prior_samples(prior, coarse if coarse is not None else fine,
                                      cfg.init_samples, cfg.restarts - 1, seed=seed,
                                      resolution=coarse_res if coarse is not None else None)
    state = _Restarts(prior, cfg, len(views), w_init, seed, device, w_starts=w_starts)
    b = cfg.restarts
    opt = torch.optim.Adam(
        [{"params": state.latent_params(r), "kind": "latent", "restart": r} for r in range(b)]
        + [{"params": state.pose_params(r), "kind": "pose", "restart": r}
           for r in range(b) if cfg.refine_pose],
        lr=cfg.lr, betas=(0.9, 0.999))
    lr_scale, start = [1.0] * b, [0] * b
    divergences, failed = [0] * b, [False] * b
    seg_start = [0] * b
    totals: list[list[float]] = [[] for _ in range(b)]
    history: list[list[dict]] = [[] for _ in range(b)]
    times = {"generator": 0.0, "projector": 0.0, "optimizer": 0.0}
    bar = _progress(cfg.steps, progress)
    stage = "coarse" if n_coarse > 0 else "fine"
    step = 0
    try:
        for step in range(cfg.steps):
            if stage == "coarse" and step >= n_coarse:
                stage, seg_start = "fine", [step] * b
            objective = coarse if stage == "coarse" else fine
            lrs = []
            for group in opt.param_groups:
                r = group["restart"]
                t = (step - start[r] + 0.5) / max(1, cfg.steps - start[r])
                base = cfg.lr if group["kind"] == "latent" else cfg.lr_pose
                group["lr"] = 0.0 if failed[r] else base * lr_scale[r] * lr_schedule(
                    t, cfg.lr_rampup, cfg.lr_rampdown)
                if group["kind"] == "latent":
                    lrs.append(group["lr"])

            t0 = time.perf_counter()
            x = state.batch()
            hu, _ = generate_hu(prior, x["w_plus"], x["noise"],
                                resolution=coarse_res if stage == "coarse" else None)
            mu = hu_to_mu(hu)[:, None]
            t1 = time.perf_counter()
            preds = objective.render(mu, background=x["background"],
                                     delta_angle_deg=x["delta_angle_deg"],
                                     delta_shift_mm=x["delta_shift_mm"])
            t2 = time.perf_counter()
            terms = objective.terms(preds, w_plus=x["w_plus"], w_mean=state.mean, w_std=state.std,
                                    noise=x["noise"] if cfg.optimize_noise else None,
                                    background=x["background"],
                                    delta_angle_deg=x["delta_angle_deg"],
                                    delta_shift_mm=x["delta_shift_mm"])
            total = terms["total"]
            ok = torch.isfinite(total) & torch.isfinite(mu.detach()).flatten(1).all(-1)
            ok &= torch.tensor([not f for f in failed], device=device)
            opt.zero_grad(set_to_none=True)
            if bool(ok.any()):
                total[ok].sum().backward()
            bad = []
            for r in range(b):
                if failed[r]:
                    continue
                grads_ok = all(p.grad is None or bool(torch.isfinite(p.grad).all())
                               for p in state.all_params(r))
                if not (bool(ok[r]) and grads_ok):
                    bad.append(r)
                    for p in state.all_params(r):
                        p.grad = None
            opt.step()
            for r in bad:
                divergences[r] += 1
                state.reset(r)
                for p in state.all_params(r):
                    opt.state.pop(p, None)
                lr_scale[r] *= 0.5
                start[r] = seg_start[r] = step + 1
                totals[r] = []
                history[r].append({"step": step, "event": "diverged", "lr_scale": lr_scale[r]})
                if divergences[r] > cfg.max_divergences:
                    failed[r] = True
            t3 = time.perf_counter()
            times["generator"] += t1 - t0
            times["projector"] += t2 - t1
            times["optimizer"] += t3 - t2

            values = {k: v.detach().cpu().tolist() for k, v in terms.items()}
            for r in range(b):
                if failed[r] or r in bad:
                    continue
                totals[r].append(values["total"][r])
                entry = {"step": step, "stage": stage, "lr": lrs[r]}
                entry.update({k: v[r] for k, v in values.items()})
                history[r].append(entry)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(data=f"{min(values['data']):.4f}")
            if callback is not None:
                info = {"stage": stage, "terms": values, "lr": lrs, "params": state.params,
                        "divergences": list(divergences)}
                if callback(step, info):
                    break
            if all(failed):
                raise XfitError(f"every restart diverged {cfg.max_divergences + 1} times; try a "
                                "smaller lr")
            if _converged(totals, seg_start, failed, step, cfg):
                if stage == "coarse":
                    n_coarse = step + 1  # go to full resolution now
                else:
                    break
    finally:
        if bar is not None:
            bar.close()

    t_opt_end = time.perf_counter()
    result = _finish(prior, state, fine, views, arrays, cfg, failed, divergences, lr_scale, history)
    result.stopped_at = step + 1
    t_end = time.perf_counter()
    result.timings = {
        **times,
        "final": t_end - t_opt_end,
        "total": t_end - t_start,
        "per_step": (t_opt_end - t_start) / max(1, step + 1),
    }
    result.config = {**cfg.to_dict(), "seed": seed}
    result.perceptual = None if fine.perceptual is None or cfg.lambda_perceptual == 0 \
        else fine.perceptual.kind
    return result


def _converged(totals: list[list[float]], seg_start: list[int], failed: list[bool], step: int,
               cfg: FitConfig) -> bool:
    """Early stopping: every live restart improved its best total by less than ``tol`` (relative)
    over the last ``window`` steps of its current stage."""
    if cfg.early_stop_tol <= 0:
        return False
    w = cfg.early_stop_window
    for r, values in enumerate(totals):
        if failed[r]:
            continue
        seg = values[-(step + 1 - seg_start[r]):] if step + 1 > seg_start[r] else []
        if len(seg) <= w:
            return False
        before, now = min(seg[:-w]), min(seg[-w:])
        if (before - now) / max(abs(before), 1e-8) >= cfg.early_stop_tol:
            return False
    return True


@torch.no_grad()
def _finish(prior: Prior, state: _Restarts, objective: Objective, views: list[View],
            arrays: list[np.ndarray], cfg: FitConfig, failed: list[bool], divergences: list[int],
            lr_scale: list[float], history: list[list[dict]]) -> FitResult:
    """Final full-resolution evaluation, best restart, uncertainty and re-projections."""
    x = state.batch()
    hu, logit = generate_hu(prior, x["w_plus"], x["noise"])
    mu = hu_to_mu(hu)[:, None]
    preds = objective.render(mu, background=x["background"], delta_angle_deg=x["delta_angle_deg"],
                             delta_shift_mm=x["delta_shift_mm"])
    terms = objective.terms(preds, w_plus=x["w_plus"], w_mean=state.mean, w_std=state.std,
                            noise=x["noise"] if cfg.optimize_noise else None,
                            background=x["background"], delta_angle_deg=x["delta_angle_deg"],
                            delta_shift_mm=x["delta_shift_mm"])
    data = terms["data"].cpu()
    alive = [r for r in range(cfg.restarts) if not failed[r] and math.isfinite(float(data[r]))]
    if not alive:
        raise XfitError("no restart produced a finite result")
    best = min(alive, key=lambda r: float(data[r]))
    lo, hi = prior.hu_window
    hu_c = hu.clamp(lo, hi)
    uncertainty = None
    if len(alive) > 1:
        uncertainty = hu_c[alive].std(0).cpu().numpy().astype(np.float32)
    label_prob = torch.sigmoid(logit[best]).cpu().numpy().astype(np.float32)

    # per-view outputs in input order
    ncc, proj = [0.0] * len(views), [None] * len(views)
    backgrounds = [None] * len(views) if cfg.background else None
    for g, p, m in zip(objective.groups, preds, objective.masks):
        pb = p[best:best + 1]
        raw = torch.stack([torch.from_numpy(arrays[i]).to(pb) for i in g.index])
        values = ncc_per_view(pb, raw, m)[0].cpu().tolist()
        matched = match_gain_offset(pb, raw)[0].cpu().numpy()
        for j, i in enumerate(g.index):
            ncc[i], proj[i] = float(values[j]), matched[j].astype(np.float32)
    if backgrounds is not None:
        for i, v in enumerate(views):
            bg = upsample_background(x["background"][best:best + 1, i], v.shape)[0]
            backgrounds[i] = bg.cpu().numpy().astype(np.float32)

    out_views, pose = views, None
    if cfg.refine_pose:
        da = x["delta_angle_deg"][best].cpu().tolist()
        ds = x["delta_shift_mm"][best].cpu().tolist()
        out_views = []
        for v, a, s in zip(views, da, ds):
            base = np.asarray(v.pose) if v.pose is not None else np.eye(4)
            base = base.copy()
            base[:3, 3] += np.asarray(s)
            out_views.append(v.with_(angle_deg=v.angle_deg + a, pose=base.tolist()))
        pose = {"delta_angle_deg": da, "delta_shift_mm": ds,
                "views": [view_dict(v) for v in out_views]}

    restarts = [{"final_data": float(data[r]), "final_total": float(terms["total"][r]),
                 "divergences": divergences[r], "lr_scale": lr_scale[r], "failed": failed[r]}
                for r in range(cfg.restarts)]
    return FitResult(
        hu=hu_c[best].cpu().numpy().astype(np.float32),
        label_prob=label_prob,
        labels=(label_prob > 0.5).astype(np.uint8),
        uncertainty=uncertainty,
        affine=prior_affine(prior),
        w_plus=x["w_plus"][best].cpu().numpy().astype(np.float32),
        noise=[n[best, 0].cpu().numpy().astype(np.float32) for n in x["noise"]],
        history=history[best],
        view_ncc=ncc,
        projections=proj,
        backgrounds=backgrounds,
        views=out_views,
        pose=pose,
        restarts=restarts,
        best_restart=best,
        stopped_at=0,
        perceptual=None,
        timings={},
    )
