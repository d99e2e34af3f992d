"""Test-time fitting of a 3D StyleGAN2 prior to X-rays (X2Vision / BRGM style MAP estimate).

:func:`fit` follows stylegan2-ada's ``projector.py``: Adam over W+ (parametrised as
``w_mean + w_std * u``, so the learning rate is in units of ``w_std``) and the per-layer noise
maps, with the stylegan2-ada learning-rate schedule (linear ramp-up, cosine ramp-down).

Structure: every restart is one :class:`Restart` (its parameters, learning-rate scale,
divergences and history); the restarts are batched into one generator call. The fit is a list
of :class:`Stage` s (coarse, fine, optional residual; :func:`plan_stages`) run by one
:class:`StageRunner`, which owns the step loop, divergence guard and early stopping. Extras are
parameters plus a prior term of the objective, never branches of the loop:

* ``background``: a smooth additive background per view;
* ``pose`` (``refine_pose``): per-view angle and shift corrections;
* ``transform``: a global similarity transform of the volume (:mod:`xfit.fitting.transform`);
* ``residual`` (``residual_steps``): a smooth HU residual after W+ has converged
  (:mod:`xfit.fitting.residual`);
* ``intensity_map`` (``intensity_map: monotone``): a per-view monotone intensity map applied to
  the re-projections before the data term (:func:`xfit.fitting.objective.monotone_map`).

Its settings (:class:`~xfit.fitting.config.FitConfig`) are returned with the result so that
they can be saved next to the outputs.

Noise maps start at zero by default: zero is the mode of their standard-normal prior, it keeps
restart 0 deterministic (``w_mean``, zero noise) and avoids an initial penalty that dominates
the data term; restarts 1.. differ by a random perturbation of W+ (``init_perturbation``).
``noise_init: randn`` reproduces stylegan2-ada's random start instead.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..devices import amp_enabled
from ..errors import GeometryError, InputError, XfitError
from ..geometry import View, pixel_inside, view_dict, world_to_pixel
from ..prior.checkpoint import Prior
from ..prior.sample import generate_hu, prior_affine
from ..projector import project, resolved_backend
from ..units import hu_to_mu
from .config import FitConfig, load_fit_config
from .consistency import consistency_skip_reason, consistency_step, step_weights
from .invert import new_lbfgs
from .objective import (
    Objective,
    ViewGroup,
    group_views,
    map_curve,
    match_gain_offset,
    ncc_per_view,
    saturation_mask,
    upsample_background,
)
from .residual import upsample_residual
from .roi import crop_view, rescale_view
from .schedule import lr_schedule
from .transform import NUM_PARAMS as NUM_TRANSFORM_PARAMS
from .transform import describe, moved_affine, resample_to_grid, similarity_matrix

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
        affine: ``[4, 4]`` voxel index -> world mm of the cube, centred at ``centre_mm``.
        w_plus: ``[num_ws, w_dim]`` fitted styles of the best restart.
        noise: fitted noise maps of the best restart, each ``[r, r, r]``.
        history: per step, the loss terms of the best restart (``step``, ``stage``, ``lr``, ...).
        view_ncc: NCC of each input image with its final re-projection (input order), over the
            footprint mask of the data term (all pixels when ``footprint`` is 0).
        projections: re-projections ``[R_v, C_v]`` matched to each input by the least-squares
            gain and offset (the fitted background included when enabled, and after the fitted
            monotone intensity map with ``intensity_map: monotone``; with that map or
            ``mask_saturated`` the gain and offset are fitted over the data term's pixels).
        backgrounds: fitted backgrounds ``[R_v, C_v]`` in line-integral units, or ``None``.
        views: the views used at the end (refined when ``refine_pose``).
        pose: ``{"delta_angle_deg": [V], "delta_shift_mm": [V][3]}`` when ``refine_pose``.
        restarts: per restart ``final_data``, ``final_total``, ``divergences``, ``lr_scale``,
            ``failed``.
        best_restart: index of the restart returned.
        stopped_at: steps run (less than ``config['steps']`` after early stopping).
        perceptual: ``"lpips"``, ``"gradient_ncc"`` or ``None`` (weight 0).
        timings: seconds in ``init`` (the initialising network and its inversion), ``generator``,
            ``projector`` (forward passes), ``optimizer`` (loss, backward and Adam), ``final``,
            ``total``, and ``per_step``.
        config: the :class:`FitConfig` as a dictionary (plus ``seed`` actually used and
            ``amp_resolved``, ``bf16`` or ``off``, and ``projector_resolved``, the projector
            backend that ran: ``fused``, ``reference`` or ``triton``; see
            :func:`xfit.projector.resolved_backend`).
        transform: the fitted similarity transform of the best restart (``rotation_deg``,
            ``translation_mm``, ``scale``) when enabled; the outputs are resampled from the moved
            volume onto the fixed cube.
        residual_rms_hu: RMS of the fitted HU residual (``residual_steps`` > 0), else ``None``.
        centre_mm: world position of the cube's centre.
        mesh: a method's own surface ``{"vertices_mm" [N, 3], "faces" [M, 3]}`` (IGCN), else
            ``None`` (``--mesh`` then runs marching cubes on the labels).
        start: where restart 0 started (``w_mean``, ``w_init``, or the initialising network).
        intensity_maps: with ``intensity_map: monotone``, per view the fitted map's knots
            (:func:`xfit.fitting.objective.map_curve`), else ``None``.
        data_masks: with ``mask_saturated``, per view the ``[R_v, C_v]`` uint8 mask of the pixels
            the data term used (footprint and saturation masks combined), else ``None``.
        consistency: what the data-consistency step did (:class:`~xfit.fitting.consistency.Consistency`
            as a dictionary, with ``weights`` (the kind used: ``edges+gap``, ``edges`` or
            ``flat``), ``weights_from`` and ``seconds``), ``{"skipped":
            why}`` (plus ``view_ncc`` when the X-rays failed the gate), or ``None`` when
            ``consistency_steps`` is 0. ``hu``, ``projections`` and ``view_ncc``
            describe the corrected volume.
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
    transform: dict | None = None
    residual_rms_hu: float | None = None
    centre_mm: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    mesh: dict | None = None
    start: str = ""
    intensity_maps: list[dict] | None = None
    data_masks: list[np.ndarray] | None = None
    consistency: dict | None = None


# ----------------------------------------------------------------------------- input checks


def check_views(views: Sequence[View]) -> list[View]:
    """Validate the views of a fit.

    Raises:
        GeometryError: not Views, or two identical views (same angle modulo 360, pose and
            isocentre).
    """
    views = list(views)
    if not views or not all(isinstance(v, View) for v in views):
        raise GeometryError("views must be a non-empty list of xfit.geometry.View")
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            a, b = views[i], views[j]
            diff = abs((a.angle_deg - b.angle_deg + 180.0) % 360.0 - 180.0)
            same_pose = (a.pose is None and b.pose is None) or (
                a.pose is not None
                and b.pose is not None
                and np.allclose(np.asarray(a.pose), np.asarray(b.pose), atol=1e-6)
            )
            if diff < 1e-3 and same_pose and a.isocenter_mm == b.isocenter_mm:
                raise GeometryError(
                    f"views {i} and {j} are identical (angle {a.angle_deg} deg): a second copy adds no information"
                )
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
            raise InputError(f"image {i} has shape {list(arr.shape)} but its view expects {list(v.shape)}")
        if not np.isfinite(arr).all():
            raise InputError(f"image {i} contains NaN or inf")
        if arr.std() <= 0:
            raise InputError(f"image {i} is constant: nothing to fit")
        out.append(arr)
    return out


# ----------------------------------------------------------------------------- small helpers


def half_resolution(view: View) -> View:
    """The view with half the pixels per side and twice the spacing (same detector area).

    Matches ``avg_pool2d(image, 2)``: an odd last row/column is dropped, then pixel pairs merge
    (:func:`~xfit.fitting.roi.crop_view`, :func:`~xfit.fitting.roi.rescale_view`).
    """
    rows, cols = view.shape
    even = crop_view(view, 0, 0, rows - rows % 2, cols - cols % 2)
    return rescale_view(even, (rows // 2, cols // 2))


def _normalise(img: np.ndarray) -> Tensor:
    """Zero-mean unit-std copy (float32 tensor); NCC does not see the change."""
    return torch.from_numpy(((img - img.mean()) / img.std()).astype(np.float32))


def _groups_targets(views: list[View], images: list[Tensor], coarse: bool) -> tuple[list[ViewGroup], list[Tensor]]:
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


def view_footprints(views: Sequence[View], affine: np.ndarray, resolution: int, fraction: float) -> list[np.ndarray]:
    """Per view, in the views' order, bool ``[R_v, C_v]``: :func:`footprint_masks` of the cube
    ``[resolution]^3`` on ``affine`` (voxel index -> world mm) at ``fraction``."""
    groups = group_views(views)
    aff = torch.as_tensor(affine, dtype=torch.float32)
    out: list[np.ndarray] = [np.zeros(0, bool)] * len(views)
    for g, m in zip(groups, footprint_masks(groups, aff, resolution, fraction)):
        for j, i in enumerate(g.index):
            out[i] = m[j].numpy() > 0.5
    return out


@torch.no_grad()
def best_prior_samples(
    prior: Prior,
    objective: Objective,
    n: int,
    k: int,
    *,
    seed: int = 0,
    resolution: int | None = None,
    batch: int = 4,
    amp: bool = False,
) -> Tensor:
    """The ``k`` of ``n`` random prior samples whose projections best match the targets
    (``amp``: the generator under bf16 autocast).

    Samples are ``w = mapping(z)`` broadcast over W+, with the generator's constant noise; they
    are scored by the objective's data term (at ``resolution``: the coarse generator output when
    the objective is the coarse one).

    Returns:
        ``[k, num_ws, w_dim]`` W+ of the best samples, best first.
    """
    from ..prior.sample import sample_w_plus

    ws = sample_w_plus(prior, n, seed=7_777_777 + seed)  # a pool apart from the study's references
    scores = []
    for i in range(0, n, batch):
        w = ws[i : i + batch]
        hu, _ = generate_hu(prior, w, resolution=resolution, amp=amp)
        preds = objective.render(hu_to_mu(hu)[:, None])
        scores.append(objective.data_per_view(preds).mean(-1))
    order = torch.argsort(torch.cat(scores))
    return ws[order[:k]]


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm  # only when a progress bar is asked for
    except ImportError:
        return None
    return tqdm(total=total, desc="fit", leave=False)


# ----------------------------------------------------------------------------- state


#: Optimised parameters by name: the config setting of their learning rate.
PARAM_LR = {
    "u": "lr",
    "noise": "lr",
    "background": "lr",
    "pose": "lr_pose",
    "transform": "lr_transform",
    "residual": "lr_residual",
    "intensity_map": "lr_intensity_map",
}


def _leaf(x: Tensor) -> Tensor:
    return x.detach().clone().requires_grad_(True)


@dataclass
class Restart:
    """One restart of the fit: its parameters and everything the stages track about it.

    Attributes:
        index: position in the batch.
        params: leaf tensors by name (``u``: ``[1, num_ws, w_dim]`` W+ in ``w_std`` units around
            ``w_mean``; ``noise``: the per-layer maps; ``background``: ``[1, V, g, g]``; ``pose``:
            ``delta_angle_deg [1, V]`` and ``delta_shift_mm [1, V, 3]``; ``transform``: ``[1, 7]``;
            ``residual``: ``[1, 1, g, g, g]``; ``intensity_map``: ``[1, V, knots - 1]``). Only the
            names the config enables are present.
        init: the values a divergence puts them back to (their start, or their values when the
            current learning-rate schedule began).
        lr_scale: learning-rate factor, halved at each divergence.
        lr_start: step at which its learning-rate schedule (re)started.
        divergences: how often it diverged; ``failed`` once more than ``max_divergences``.
        totals: its total loss per step since the stage began or it last diverged.
        history: per step, its loss terms (and divergence events).
    """

    index: int
    params: dict[str, list[Tensor]]
    init: dict[str, list[Tensor]]
    lr_scale: float = 1.0
    lr_start: int = 0
    divergences: int = 0
    failed: bool = False
    totals: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)

    def leaves(self, names: Sequence[str] | None = None) -> list[Tensor]:
        """The leaf tensors of the given parameter names (default: all)."""
        names = self.params if names is None else [n for n in names if n in self.params]
        return [p for n in names for p in self.params[n]]

    def reset(self, names: Sequence[str]) -> None:
        """Put the parameters ``names`` back at their values of :attr:`init`."""
        with torch.no_grad():
            for name in names:
                for p, p0 in zip(self.params.get(name, []), self.init[name]):
                    p.copy_(p0)

    def checkpoint(self, names: Sequence[str]) -> None:
        """Make the current values of ``names`` the ones a divergence goes back to."""
        for name in names:
            if name in self.params:
                self.init[name] = [p.detach().clone() for p in self.params[name]]


def _initial_values(
    prior: Prior, cfg: FitConfig, num_views: int, w_init: Tensor | None, seed: int, w_starts: Tensor | None
) -> list[dict[str, list[Tensor]]]:
    """Per restart, the initial value of every enabled parameter (CPU tensors)."""
    G = prior.G
    b, k, d = cfg.restarts, G.num_ws, G.w_dim
    gen = torch.Generator().manual_seed(seed)
    mean, std = prior.w_mean.float().cpu(), prior.w_std.float().cpu()
    if w_init is None:
        u0 = torch.zeros(b, k, d)
    else:
        w_init = torch.as_tensor(w_init, dtype=torch.float32).cpu()
        if w_init.ndim == 1 and w_init.shape[0] == d:
            w_init = w_init[None, None].expand(1, k, d)
        elif w_init.ndim == 2:
            w_init = w_init[None]
        if w_init.ndim != 3 or tuple(w_init.shape[1:]) != (k, d) or w_init.shape[0] not in (1, b):
            raise InputError(
                f"w_init must be [w_dim], [num_ws, w_dim] or [B, num_ws, w_dim] "
                f"with num_ws={k}, w_dim={d}, B in (1, {b}); got {list(w_init.shape)}"
            )
        u0 = ((w_init - mean) / std).expand(b, k, d).clone()
    if b > 1:  # restart 0 starts exactly at the given / mean W+, the others nearby
        u0[1:] += cfg.init_perturbation * torch.randn(b - 1, 1, d, generator=gen)
    if w_starts is not None and b > 1:  # ... or at the best prior samples
        n = min(b - 1, w_starts.shape[0])
        u0[1 : 1 + n] = (w_starts[:n].float().cpu() - mean) / std
    shapes = G.synthesis.noise_shapes()
    if cfg.noise_init == "randn":
        n0 = [[torch.randn(1, *s[1:], generator=gen) for s in shapes] for _ in range(b)]
    else:
        n0 = [[torch.zeros(1, *s[1:]) for s in shapes] for _ in range(b)]
    out = []
    for r in range(b):
        values = {"u": [u0[r : r + 1]], "noise": n0[r]}
        if cfg.background:
            values["background"] = [torch.zeros(1, num_views, cfg.background_grid, cfg.background_grid)]
        if cfg.refine_pose:
            values["pose"] = [torch.zeros(1, num_views), torch.zeros(1, num_views, 3)]
        if cfg.transform:
            values["transform"] = [torch.zeros(1, NUM_TRANSFORM_PARAMS)]
        if cfg.residual_steps > 0:
            g = cfg.residual_grid
            values["residual"] = [torch.zeros(1, 1, g, g, g)]
        if cfg.intensity_map == "monotone":
            values["intensity_map"] = [torch.zeros(1, num_views, cfg.intensity_knots - 1)]
        out.append(values)
    return out


def make_restarts(
    prior: Prior,
    cfg: FitConfig,
    num_views: int,
    w_init: Tensor | None,
    seed: int,
    device: torch.device,
    w_starts: Tensor | None = None,
) -> list[Restart]:
    """The restarts of a fit with their parameters on ``device`` (see :class:`Restart`)."""
    restarts = []
    for r, values in enumerate(_initial_values(prior, cfg, num_views, w_init, seed, w_starts)):
        init = {n: [x.to(device) for x in xs] for n, xs in values.items()}
        restarts.append(Restart(r, {n: [_leaf(x) for x in xs] for n, xs in init.items()}, init))
    return restarts


def batch_params(restarts: Sequence[Restart], w_mean: Tensor, w_std: Tensor) -> dict[str, Any]:
    """Parameters of all restarts batched along dim 0 (``None`` for names not fitted).

    Returns:
        ``w_plus [B, K, D]``, ``noise`` (list of ``[B, 1, r, r, r]``), ``background``,
        ``delta_angle_deg``, ``delta_shift_mm``, ``transform [B, 7]``, ``residual``,
        ``intensity_map [B, V, knots - 1]``.
    """
    first = restarts[0].params

    def cat(name: str, i: int = 0) -> Tensor | None:
        return torch.cat([r.params[name][i] for r in restarts]) if name in first else None

    return {
        "w_plus": w_mean + w_std * cat("u"),
        "noise": [torch.cat(ns) for ns in zip(*(r.params["noise"] for r in restarts))],
        "background": cat("background"),
        "delta_angle_deg": cat("pose", 0),
        "delta_shift_mm": cat("pose", 1),
        "transform": cat("transform"),
        "residual": cat("residual"),
        "intensity_map": cat("intensity_map"),
    }


# ----------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    """A part of the schedule: which resolution, which parameters, how many steps.

    Stages of one ``schedule`` share one learning-rate ramp; when a stage converges early its
    unused steps go to the next stage of the same schedule.

    Attributes:
        name: ``align``, ``coarse``, ``fine`` or ``residual`` (recorded in the history).
        steps: step budget.
        coarse: half detector resolution (and half generator resolution with
            ``coarse_generator``).
        train: names of the parameters updated (:data:`PARAM_LR`).
        schedule: learning-rate schedule the stage belongs to.
        optimizer: ``adam`` or ``lbfgs`` (:meth:`StageRunner.run_lbfgs`; ``steps`` are then its
            loss evaluations).
    """

    name: str
    steps: int
    coarse: bool
    train: tuple[str, ...]
    schedule: str = "main"
    optimizer: str = "adam"


def plan_stages(cfg: FitConfig, can_coarse: bool) -> list[Stage]:
    """The stages of a fit: align (with ``transform``: the transform alone, W+ frozen), coarse,
    fine (W+, noise and the enabled extras), then residual."""
    main = tuple(
        n
        for n in ("u", "noise", "background", "pose", "transform", "intensity_map")
        if (n != "noise" or cfg.optimize_noise)
        and (n != "background" or cfg.background)
        and (n != "pose" or cfg.refine_pose)
        and (n != "transform" or cfg.transform)
        and (n != "intensity_map" or cfg.intensity_map == "monotone")
    )
    n_coarse = int(round(cfg.coarse_fraction * cfg.steps)) if can_coarse else 0
    stages = []
    if cfg.transform and cfg.align_steps > 0:  # register the volume as a whole before W+ moves
        align = ("transform", "background") if cfg.background else ("transform",)
        stages.append(Stage("align", cfg.align_steps, can_coarse, align, schedule="align"))
    if n_coarse > 0:
        stages.append(Stage("coarse", n_coarse, True, main, optimizer=cfg.optimizer))
    if cfg.steps - n_coarse > 0:
        stages.append(Stage("fine", cfg.steps - n_coarse, False, main, optimizer=cfg.optimizer))
    if cfg.residual_steps > 0:
        extra = ("residual", "background") if cfg.background else ("residual",)
        stages.append(Stage("residual", cfg.residual_steps, False, extra, schedule="residual"))
    return stages


class StageRunner:
    """Runs the stages of a fit over its restarts: the per-step loop, learning rates, divergence
    handling and early stopping, in one place.

    Args:
        prior: the prior being fitted.
        cfg: fit settings.
        restarts: the restarts (see :func:`make_restarts`).
        objectives: ``{False: full resolution, True: coarse}`` objectives.
        centre_mm: ``[3]`` centre of the prior's cube in world mm (the transform's centre).
        coarse_res: generator resolution of coarse stages (``None``: full).
        amp: run the generator under bfloat16 autocast.
    """

    def __init__(
        self,
        prior: Prior,
        cfg: FitConfig,
        restarts: list[Restart],
        objectives: dict[bool, Objective],
        centre_mm: Tensor,
        coarse_res: int | None,
        *,
        bar=None,
        callback: Callback | None = None,
        amp: bool = False,
    ):
        self.prior, self.cfg, self.restarts, self.amp = prior, cfg, restarts, amp
        self.objectives, self.centre_mm, self.coarse_res = objectives, centre_mm, coarse_res
        self.bar, self.callback = bar, callback
        self.sigmas = cfg.transform_sigmas()
        self.mean, self.std = prior.w_mean.float().to(centre_mm.device), prior.w_std.float().to(centre_mm.device)
        self.opt = torch.optim.Adam(
            [
                {"params": r.params[name], "name": name, "restart": r.index}
                for r in restarts
                for name in r.params
                if name in PARAM_LR
            ],
            lr=cfg.lr,
            betas=(0.9, 0.999),
        )
        self.step = 0
        self.times = {"generator": 0.0, "projector": 0.0, "optimizer": 0.0}
        self._frozen_hu: Tensor | None = None

    # -- one step

    def volumes(self, x: dict[str, Any], stage: Stage) -> tuple[Tensor, Tensor]:
        """HU ``[B, r, r, r]`` (generator output plus residual) and label logits of the batch.

        Stages that train neither W+ nor noise reuse the generator output of their first step.
        """
        frozen = "u" not in stage.train and "noise" not in stage.train
        if frozen and self._frozen_hu is not None:
            hu, logit = self._frozen_hu
        else:
            with torch.set_grad_enabled(not frozen and torch.is_grad_enabled()):
                hu, logit = generate_hu(
                    self.prior,
                    x["w_plus"],
                    x["noise"],
                    resolution=self.coarse_res if stage.coarse else None,
                    amp=self.amp,
                )
            if frozen:
                self._frozen_hu = (hu.detach(), logit.detach())
        if x["residual"] is not None:
            hu = hu + upsample_residual(x["residual"], hu.shape[-3:])[:, 0]
        return hu, logit

    def forward(
        self, x: dict[str, Any], stage: Stage, objective: Objective
    ) -> tuple[Tensor, Tensor, Tensor, list[Tensor], dict[str, Tensor]]:
        """HU, label logits, mu ``[B, 1, r, r, r]``, re-projections and loss terms of the batch
        ``x`` (see :func:`batch_params`)."""
        t0 = time.perf_counter()
        hu, logit = self.volumes(x, stage)
        mu = hu_to_mu(hu)[:, None]
        t1 = time.perf_counter()
        affine = None
        if x["transform"] is not None:
            affine = moved_affine(objective.affine, x["transform"], self.centre_mm, self.sigmas)
        preds = objective.render(
            mu,
            background=x["background"],
            delta_angle_deg=x["delta_angle_deg"],
            delta_shift_mm=x["delta_shift_mm"],
            affine=affine,
            intensity_map=x["intensity_map"],
        )
        t2 = time.perf_counter()
        # the priors see only the ws and noise maps this stage's generator reads: a prior alone
        # would move the others (Adam scales any gradient to the full step) away from their start
        n_ws, n_noise = self.prior.G.synthesis.inputs_used(self.coarse_res if stage.coarse else None)
        terms = objective.terms(
            preds,
            w_plus=x["w_plus"][:, :n_ws],
            w_mean=self.mean,
            w_std=self.std,
            noise=x["noise"][:n_noise] if self.cfg.optimize_noise else None,
            background=x["background"],
            delta_angle_deg=x["delta_angle_deg"],
            delta_shift_mm=x["delta_shift_mm"],
            transform=x["transform"],
            residual=x["residual"],
            hu=hu,
            logit=logit,
            intensity_map=x["intensity_map"],
        )
        self.times["generator"] += t1 - t0
        self.times["projector"] += t2 - t1
        return hu, logit, mu, preds, terms

    def set_lrs(self, stage: Stage, span: tuple[int, int]) -> list[float]:
        """Learning rate of every parameter group at the current step; returns, per restart, the
        rate of the stage's first parameter (W+ in the main stages)."""
        cfg, lrs = self.cfg, [0.0] * len(self.restarts)
        for group in self.opt.param_groups:
            r = self.restarts[group["restart"]]
            t = (self.step - r.lr_start + 0.5) / max(1, span[1] - r.lr_start)
            trained = group["name"] in stage.train and not r.failed
            base = getattr(cfg, PARAM_LR[group["name"]])
            group["lr"] = base * r.lr_scale * lr_schedule(t, cfg.lr_rampup, cfg.lr_rampdown) if trained else 0.0
            if group["name"] == stage.train[0]:
                lrs[r.index] = group["lr"]
        return lrs

    def one_step(self, stage: Stage, span: tuple[int, int]) -> dict[str, list[float]]:
        """Forward, backward, divergence guard and Adam update of every live restart."""
        objective = self.objectives[stage.coarse]
        lrs = self.set_lrs(stage, span)
        x = batch_params(self.restarts, self.mean, self.std)
        _, _, mu, _, terms = self.forward(x, stage, objective)
        t2 = time.perf_counter()
        total = terms["total"]
        device = total.device
        ok = torch.isfinite(total) & torch.isfinite(mu.detach()).flatten(1).all(-1)
        ok &= torch.tensor([not r.failed for r in self.restarts], device=device)
        self.opt.zero_grad(set_to_none=True)
        if bool(ok.any()):
            total[ok].sum().backward()
        bad = []
        for r in self.restarts:
            if r.failed:
                continue
            for name in r.params:
                if name not in stage.train:
                    for p in r.params[name]:
                        p.grad = None
            leaves = r.leaves(stage.train)
            grads_ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in leaves)
            if not (bool(ok[r.index]) and grads_ok):
                bad.append(r)
                for p in r.leaves():
                    p.grad = None
        self.opt.step()
        for r in bad:
            self.diverged(r, stage)
        self.times["optimizer"] += time.perf_counter() - t2
        values = {k: v.detach().cpu().tolist() for k, v in terms.items()}
        for r in self.restarts:
            if r.failed or r in bad:
                continue
            r.totals.append(values["total"][r.index])
            entry = {"step": self.step, "stage": stage.name, "lr": lrs[r.index]}
            entry.update({k: v[r.index] for k, v in values.items()})
            r.history.append(entry)
        return {"values": values, "lrs": lrs}

    def diverged(self, r: Restart, stage: Stage) -> None:
        """Restart ``r`` produced a non-finite loss or gradient: its parameters of this stage go
        back to where the stage's schedule began, at half the lr (frozen ones keep their values)."""
        r.divergences += 1
        r.reset(stage.train)
        for p in r.leaves(stage.train):
            self.opt.state.pop(p, None)
        r.lr_scale *= 0.5
        r.lr_start = self.step + 1
        r.totals = []
        r.history.append({"step": self.step, "event": "diverged", "lr_scale": r.lr_scale})
        if r.divergences > self.cfg.max_divergences:
            r.failed = True

    # -- stages

    def run(self, stage: Stage, end: int, span: tuple[int, int]) -> str:
        """Run ``stage`` until step ``end``; returns ``"done"``, ``"converged"`` or ``"stopped"``
        (by the callback)."""
        self._frozen_hu = None
        for r in self.restarts:
            r.totals = []
        if stage.optimizer == "lbfgs":
            outcome = self.run_lbfgs(stage, end)
            if outcome not in ("diverged", "stalled"):
                return outcome
        while self.step < end:
            out = self.one_step(stage, span)
            stop = self.after_step(stage, out["values"], out["lrs"])
            if all(r.failed for r in self.restarts):
                raise XfitError(f"every restart diverged {self.cfg.max_divergences + 1} times; try a smaller lr")
            if stop:
                return "stopped"
            if converged(self.restarts, self.cfg):
                return "converged"
        return "done"

    def after_step(self, stage: Stage, values: dict[str, list[float]], lrs: list[float]) -> bool:
        """Progress bar and callback after one step (or one L-BFGS evaluation); advances the
        step count and returns whether the callback asked to stop."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(data=f"{min(values['data']):.4f}", stage=stage.name)
        stop = False
        if self.callback is not None:
            info = {
                "stage": stage.name,
                "terms": values,
                "lr": lrs,
                "params": {
                    n: [
                        r.params[n][0] if len(r.params[n]) == 1 and n != "noise" else r.params[n] for r in self.restarts
                    ]
                    for n in self.restarts[0].params
                },
                "divergences": [r.divergences for r in self.restarts],
            }
            stop = bool(self.callback(self.step, info))
        self.step += 1
        return stop

    def run_lbfgs(self, stage: Stage, end: int) -> str:
        """Run ``stage`` by L-BFGS over every live restart's trained parameters (their totals
        summed: independent problems) until step ``end``, one step per loss evaluation (one
        generator pass, the cost of an Adam step). Returns ``"done"``, ``"stopped"`` (by the
        callback), ``"diverged"``: a non-finite loss or gradient counts as a divergence of every
        live restart (:meth:`diverged`: parameters back where the stage began, half the lr), or
        ``"stalled"``: L-BFGS stopped before its budget (under bf16 a line search can find no
        decrease, as in :func:`xfit.fitting.invert._lbfgs`). After either the caller runs the rest
        of the stage with Adam. Each restart ends at the lowest total it was evaluated at (the
        line search may be cut off by the budget at a trial point)."""
        live = [r for r in self.restarts if not r.failed]
        budget = end - self.step
        if budget <= 0 or not live:
            return "done"
        leaves = [p for r in live for p in r.leaves(stage.train)]
        opt = new_lbfgs(leaves, budget, budget)
        objective = self.objectives[stage.coarse]
        best: dict[int, tuple[float, list[Tensor]]] = {}

        class _Halt(Exception):
            pass

        def closure() -> Tensor:
            if self.step >= end:
                raise _Halt("done")
            x = batch_params(self.restarts, self.mean, self.std)
            _, _, mu, _, terms = self.forward(x, stage, objective)
            t0 = time.perf_counter()
            total = terms["total"][[r.index for r in live]].sum()
            if not (bool(torch.isfinite(total)) and bool(torch.isfinite(mu.detach()).all())):
                raise _Halt("diverged")
            for r in self.restarts:
                for p in r.leaves():
                    p.grad = None
            total.backward()
            if not all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in leaves):
                raise _Halt("diverged")
            self.times["optimizer"] += time.perf_counter() - t0
            values = {k: v.detach().cpu().tolist() for k, v in terms.items()}
            for r in live:
                r.totals.append(values["total"][r.index])
                if r.index not in best or values["total"][r.index] < best[r.index][0]:
                    best[r.index] = (values["total"][r.index], [p.detach().clone() for p in r.leaves(stage.train)])
                entry = {"step": self.step, "stage": stage.name, "lr": 0.0, "optimizer": "lbfgs"}
                entry.update({k: v[r.index] for k, v in values.items()})
                r.history.append(entry)
            if self.after_step(stage, values, [0.0] * len(self.restarts)):
                raise _Halt("stopped")
            return total.detach()

        outcome = "done"
        try:
            opt.step(closure)
        except _Halt as halt:
            outcome = str(halt)
        if outcome == "diverged":
            for r in live:
                self.diverged(r, stage)
                r.history[-1]["optimizer"] = "lbfgs"
            return outcome
        with torch.no_grad():
            for r in live:
                if r.index in best:
                    for p, v in zip(r.leaves(stage.train), best[r.index][1]):
                        p.copy_(v)
        if outcome == "done" and self.step < end:
            for r in live:
                r.history.append({"step": self.step, "event": "stalled", "optimizer": "lbfgs"})
            return "stalled"
        return outcome

    def run_all(self, stages: Sequence[Stage]) -> None:
        """Run the stages in order (see :class:`Stage` for how schedules and budgets work)."""
        spans: dict[str, tuple[int, int]] = {}
        ends: dict[str, int] = {}
        for stage in stages:
            if stage.schedule not in spans:
                total = sum(s.steps for s in stages if s.schedule == stage.schedule)
                spans[stage.schedule] = (self.step, self.step + total)
                ends[stage.schedule] = self.step
                names = sorted({n for s in stages if s.schedule == stage.schedule for n in s.train})
                for r in self.restarts:
                    r.lr_start = max(r.lr_start, self.step)
                    r.checkpoint(names)
            ends[stage.schedule] += stage.steps
            if self.run(stage, ends[stage.schedule], spans[stage.schedule]) == "stopped":
                return


def converged(restarts: Sequence[Restart], cfg: FitConfig) -> bool:
    """Early stopping: every live restart improved its best total by less than ``tol`` (relative)
    over the last ``window`` of its :attr:`Restart.totals`."""
    if cfg.early_stop_tol <= 0:
        return False
    w = cfg.early_stop_window
    for r in restarts:
        if r.failed:
            continue
        seg = r.totals
        if len(seg) <= w:
            return False
        before, now = min(seg[:-w]), min(seg[-w:])
        if (before - now) / max(abs(before), 1e-8) >= cfg.early_stop_tol:
            return False
    return True


# ----------------------------------------------------------------------------- fit


@torch.no_grad()
def compare_views(
    objective: Objective, preds: Sequence[Tensor], arrays: Sequence[np.ndarray], *, masked_match: bool = False
) -> tuple[list[float], list[np.ndarray]]:
    """Per input view (input order): NCC of its re-projection with the image over the
    objective's footprint mask, and the re-projection matched to the image by the least-squares
    gain and offset (over every pixel, or with ``masked_match`` over the objective's mask: the
    pixels the fit explains, not a processed image's blank borders and saturated pixels).

    Args:
        objective: the objective whose groups and masks the predictions follow.
        preds: per view group ``[1, V_g, R, C]`` re-projections of one volume.
        arrays: the input images ``[R_v, C_v]``.
    """
    n = sum(len(g.index) for g in objective.groups)
    ncc, proj = [0.0] * n, [None] * n
    for g, p, m in zip(objective.groups, preds, objective.masks):
        raw = torch.stack([torch.from_numpy(np.asarray(arrays[i])).to(p) for i in g.index])
        values = ncc_per_view(p, raw, m)[0].cpu().tolist()
        matched = match_gain_offset(p, raw, m if masked_match else None)[0].cpu().numpy()
        for j, i in enumerate(g.index):
            ncc[i], proj[i] = float(values[j]), matched[j].astype(np.float32)
    return ncc, proj


def build_objective(
    views: Sequence[View],
    targets: Sequence[Tensor],
    affine: np.ndarray,
    resolution: int,
    cfg: FitConfig,
    *,
    coarse: bool = False,
    perceptual=None,
    anchor=None,
) -> Objective:
    """The fit's objective for volumes of ``resolution`` voxels per side on ``affine``.

    Args:
        views, targets: the views and their normalised images ``[R_v, C_v]`` (tensors).
        affine: ``[4, 4]`` voxel index -> world mm of the volumes.
        cfg: the weights, scales, footprint and projector step.
        coarse: at half detector resolution (:func:`half_resolution`).
        anchor: optional :class:`~xfit.fitting.objective.Anchor` at ``resolution`` (it carries
            its weights, ``cfg.lambda_anchor`` and ``cfg.lambda_anchor_label``).
    """
    device = targets[0].device
    groups, tg = _groups_targets(list(views), list(targets), coarse)
    aff = torch.as_tensor(affine, dtype=torch.float32, device=device)
    masks = None
    if cfg.footprint > 0:
        shrink = footprint_shrink(cfg, resolution * float(aff[0, 0]))
        seen = torch.as_tensor(shrunk_affine(affine, shrink, resolution), dtype=torch.float32, device=device)
        masks = footprint_masks(groups, seen, resolution, cfg.footprint)
    if cfg.mask_saturated:
        auto = saturation_masks(groups, list(targets), coarse)
        masks = auto if masks is None else [a * m for a, m in zip(auto, masks)]
    return Objective(
        groups,
        tg,
        aff,
        masks=masks,
        lambda_w=cfg.lambda_w,
        lambda_c=cfg.lambda_c,
        lambda_n=cfg.lambda_n,
        lambda_perceptual=cfg.lambda_perceptual,
        lambda_background=cfg.lambda_background,
        lambda_pose=cfg.lambda_pose,
        lambda_transform=cfg.lambda_transform,
        lambda_residual=cfg.lambda_residual,
        scales=cfg.scales,
        pose_sigma_deg=cfg.pose_sigma_deg,
        pose_sigma_mm=cfg.pose_sigma_mm,
        perceptual=perceptual,
        perceptual_net=cfg.perceptual_net,
        anchor=anchor,
        step_mm=cfg.step_mm if cfg.step_mm is not None else float(aff[0, 0]),
        lambda_intensity_map=cfg.lambda_intensity_map,
        data_term=cfg.data_term,
    )


def saturation_masks(groups: list[ViewGroup], images: list[Tensor], coarse: bool) -> list[Tensor]:
    """Per group ``[V_g, R, C]`` :func:`~xfit.fitting.objective.saturation_mask` of the full-
    resolution images; at half resolution (``coarse``) a pixel is kept only when all four of its
    pixels are."""
    out = []
    for g in groups:
        ms = []
        for i in g.index:
            m = saturation_mask(images[i])
            if coarse:
                m = -F.max_pool2d(-m[None, None], 2)[0, 0]
            ms.append(m)
        out.append(torch.stack(ms))
    return out


#: ``background: auto`` fits a background when the X-rays vary outside the cube's shadow by more
#: than this fraction of their variation inside it (std of 4x4-pooled pixels, so pixel noise
#: does not count). Crop-sized X-rays (nothing outside the cube) are about 0; X-rays through a
#: whole torso are far above it.
BACKGROUND_AUTO_RATIO = 0.1


def needs_background(
    views: Sequence[View], arrays: Sequence[np.ndarray], affine: np.ndarray, resolution: int
) -> tuple[bool, float]:
    """Whether the X-rays show anatomy outside the fitted cube, so that a smooth background must
    explain it (``background: auto``).

    Args:
        views, arrays: the views and their images ``[R_v, C_v]``.
        affine: ``[4, 4]`` of the fitted cube; resolution: its voxels per side.
    Returns:
        ``(decision, ratio)``: the largest over views of std outside / std inside the cube's shadow
        (:data:`BACKGROUND_AUTO_RATIO` decides).
    """
    groups = group_views(list(views))
    aff = torch.as_tensor(affine, dtype=torch.float32)
    ratio = 0.0
    for g, shadow in zip(groups, footprint_masks(groups, aff, resolution, 1e-3)):
        for j, i in enumerate(g.index):
            img = F.avg_pool2d(torch.as_tensor(np.asarray(arrays[i], np.float32))[None, None], 4)[0, 0]
            inside = F.avg_pool2d(shadow[j][None, None], 4)[0, 0]
            out, ins = img[inside == 0], img[inside == 1]
            if out.numel() < 4 or ins.numel() < 4:
                continue
            ratio = max(ratio, float(out.std() / ins.std().clamp_min(1e-12)))
    return ratio > BACKGROUND_AUTO_RATIO, ratio


#: Silhouette contrast (:func:`shows_torso`) below which no view shows the cube's own outline.
SILHOUETTE_MIN = 0.9


def shows_torso(
    views: Sequence[View], arrays: Sequence[np.ndarray], affine: np.ndarray, resolution: int
) -> tuple[bool, float]:
    """Whether the X-rays are of a whole torso rather than of the cube alone (which network
    starts the fit, :func:`xfit.fitting.hybrid.start_network`).

    X-rays of a crop show its silhouette: the pixels just outside the cube's shadow (a ring of 6
    px) see air, far darker than the shadow's core (rays with >= 90 % of the longest chord), and
    clinical processing keeps that order. Collimated, blanked and burned-in pixels
    (:func:`~xfit.fitting.objective.saturation_mask`) do not count; a view with too few pixels
    left in the ring tells nothing. In X-rays of a whole torso the anatomy continues across
    the outline. Per view the contrast is ``(median(core) - median(ring)) / (q95(core) -
    q5(core))``; held-out phantoms gave 1.3-6.0 for crops in at least one view (ideal or clinical
    style, AP with lateral, 60 or 130 degrees) and at most 0.5 in every view of whole torsos.

    Args:
        views, arrays: the views and their images ``[R_v, C_v]``, bright = attenuating.
        affine: ``[4, 4]`` of the fitted cube; resolution: its voxels per side.
    Returns:
        ``(decision, contrast)``: no view's contrast reaches :data:`SILHOUETTE_MIN`, and the
        largest contrast (``0`` and False when no view has pixels outside the shadow).
    """
    aff = torch.as_tensor(affine, dtype=torch.float32)
    ones = torch.ones(1, 1, resolution, resolution, resolution)
    best, seen = 0.0, False
    for v, image in zip(views, arrays):
        with torch.no_grad():
            chord = project(ones, aff, [v])[0, 0]
        peak = chord.max().clamp_min(1e-12)
        core, shadow = chord >= 0.9 * peak, chord >= 1e-3 * peak
        x = torch.as_tensor(np.asarray(image, np.float32))
        valid = saturation_mask(x) > 0  # not collimated, blanked or burned in
        ring = (F.max_pool2d(shadow.float()[None, None], 13, 1, 6)[0, 0] > 0) & ~shadow & valid
        core = core & valid
        if int(ring.sum()) < 16 or int(core.sum()) < 16:
            continue
        c = x[core]
        spread = (torch.quantile(c, 0.95) - torch.quantile(c, 0.05)).clamp_min(1e-12)
        best = max(best, float((c.median() - x[ring].median()) / spread))
        seen = True
    return seen and best < SILHOUETTE_MIN, best


def footprint_shrink(cfg: FitConfig, fov_mm: float) -> float:
    """Scale of the cube whose footprint the data term uses: 1, or with ``transform`` the cube a
    moved volume still covers after a shrink and a shift of two sigmas (``exp(-2 sigma_log_scale)
    - 2 sigma_mm / fov``). Otherwise a smaller volume would leave empty, dark borders inside the
    footprint, which the data term punishes: a bias towards larger scales."""
    if not cfg.transform:
        return 1.0
    return max(0.25, math.exp(-2 * cfg.transform_sigma_log_scale) - 2 * cfg.transform_sigma_mm / fov_mm)


def shrunk_affine(affine: np.ndarray, scale: float, resolution: int) -> np.ndarray:
    """The affine ``[4, 4]`` of a ``resolution``-voxel grid scaled by ``scale`` about its centre."""
    a = np.asarray(affine, dtype=np.float64)
    if scale == 1.0:
        return a
    mid = np.full(3, (resolution - 1) / 2.0)
    out = a.copy()
    out[:3, :3] *= scale
    out[:3, 3] = a[:3, :3] @ mid + a[:3, 3] - out[:3, :3] @ mid
    return out


def normalised_targets(arrays: Sequence[np.ndarray], device) -> list[Tensor]:
    """Zero-mean unit-std float32 copies of the images on ``device`` (NCC does not see it)."""
    return [_normalise(a).to(device) for a in arrays]


def check_centre(centre_mm: Sequence[float] | np.ndarray | None, views: Sequence[View]) -> np.ndarray:
    """The world position ``[3]`` (mm) of the fitted cube's centre (default: the views' common
    isocentre), checked to be seen by every view.

    Raises:
        GeometryError: not 3 finite numbers, or a view whose detector does not contain the
            centre's projection.
    """
    if centre_mm is None:  # the views' common isocentre
        isos = {tuple(v.isocenter_mm) for v in views}
        if len(isos) > 1:
            raise GeometryError(
                f"the views have different isocentres {sorted(isos)}: say where the cube goes (centre_mm)"
            )
        centre_mm = isos.pop()
    c = np.asarray(centre_mm, dtype=np.float64).reshape(-1)
    if c.shape != (3,) or not np.isfinite(c).all():
        raise GeometryError(f"centre_mm must be 3 finite numbers, got {centre_mm!r}")
    for i, v in enumerate(views):
        row, col = world_to_pixel(torch.as_tensor(c[None]), v)[0].tolist()
        rows, cols = v.shape
        if not pixel_inside((row, col), (rows, cols)):
            raise GeometryError(
                f"the fitted cube's centre {np.round(c, 1).tolist()} mm projects to "
                f"pixel ({row:.0f}, {col:.0f}), outside view {i} ({rows} x {cols})"
            )
    return c


def fit(
    prior: Prior,
    images: Sequence[np.ndarray | Tensor],
    views: Sequence[View],
    cfg: FitConfig | None = None,
    *,
    seed: int | None = None,
    w_init: np.ndarray | Tensor | None = None,
    centre_mm: Sequence[float] | np.ndarray | None = None,
    progress: bool = True,
    callback: Callback | None = None,
    init_checkpoint: str | None = None,
) -> FitResult:
    """Fit the prior's generator to X-rays (MAP estimate over W+, noise and the enabled extras).

    The stages (:func:`plan_stages`) run through one :class:`StageRunner`; every restart is one
    :class:`Restart`.

    Args:
        prior: loaded prior (generator, ``w_mean``/``w_std``, config).
        images: V images ``[R_v, C_v]``: line integrals or [0, 1] intensities, bright =
            attenuating (any gain/offset: the data term is NCC).
        views: their V views; shapes may differ between views.
        cfg: settings (default: :func:`load_fit_config`).
        seed: seed of restart perturbations / random noise (default ``cfg.seed``).
        w_init: optional start ``[w_dim]``, ``[num_ws, w_dim]`` or ``[restarts, num_ws, w_dim]``.
        centre_mm: world position (mm) of the centre of the prior's cube (default: the views'
            common isocentre, the origin for xfit's sidecars). The outputs' affine says where.
        progress: show a tqdm bar when tqdm is installed.
        callback: ``callback(step, state)`` after every step; ``state`` holds ``stage``,
            ``terms`` (per restart lists), ``lr`` and ``params`` (per name, per restart, the live
            leaf tensors, which a callback may modify). Returning True stops the fit.
        init_checkpoint: checkpoint of ``cfg.init_network`` (``None``: the shipped one).
    Returns:
        :class:`FitResult`.
    Raises:
        InputError: images that do not match the views, bad ``w_init``.
        GeometryError: duplicated views, a cube centre that some view does not see, views with
            different isocentres and no ``centre_mm``.
        XfitError: every restart diverged.
    """
    t_start = time.perf_counter()
    cfg = cfg if cfg is not None else load_fit_config()
    seed = cfg.seed if seed is None else int(seed)
    views = check_views(views)
    arrays = check_images(images, views)
    centre = check_centre(centre_mm, views)
    device = next(iter(prior.G.parameters())).device
    amp = amp_enabled(cfg.amp, device)
    torch.manual_seed(seed)
    targets = normalised_targets(arrays, device)

    full_res = int(prior.config.resolution)
    coarse_res = full_res // 2 if cfg.coarse_generator and full_res >= 8 else None
    from .hybrid import anchors, network_start, start_network

    background_ratio, torso = None, False
    cube = prior_affine(prior, centre_mm=centre)
    if cfg.background == "auto":
        use, background_ratio = needs_background(views, arrays, cube, full_res)
        cfg = dataclasses.replace(cfg, background=use)
    if w_init is None and start_network(cfg, True, init_checkpoint) != cfg.init_network:
        torso = shows_torso(views, arrays, cube, full_res)[0]

    start = "w_init" if w_init is not None else "w_mean"
    t_init = 0.0
    anchor_at: dict[int, Any] = {}
    from_network = False  # the fit starts from a network's volume inverted into W+
    network = start_network(cfg, torso, init_checkpoint, views) if w_init is None else None
    if w_init is None and network is None and cfg.init_network is not None:
        start = "w_mean (no start network of the config was trained at these view angles)"
    if w_init is None and network is not None:
        net = network_start(
            prior,
            arrays,
            views,
            centre,
            network,
            init_checkpoint,
            steps=cfg.init_network_steps,
            resolution=inversion_resolution(cfg, full_res, coarse_res),
            fine_steps=cfg.init_network_fine_steps,
            amp=amp,
            optimizer=cfg.init_network_optimizer,
            label_weight=cfg.init_network_label_weight,
        )
        w_init, start = net.w_init, net.note
        if torso and network == cfg.init_network_whole_body and cfg.blend_start_whole_body is not None:
            cfg = dataclasses.replace(cfg, blend_start=cfg.blend_start_whole_body)
        t_init = time.perf_counter() - t_start
        from_network = w_init is not None
        if from_network:  # a start near the answer: the warm schedule
            cfg = cfg.warm()
        if net.hu is not None and (cfg.lambda_anchor > 0 or cfg.lambda_anchor_label > 0):
            anchor_at = anchors(
                prior,
                net.hu,
                net.labels,
                [full_res] + ([coarse_res] if coarse_res else []),
                cfg.lambda_anchor,
                cfg.lambda_anchor_label,
            )
    elif init_checkpoint is not None:
        raise InputError("an init_checkpoint needs init_network in the fit config")

    def make_objective(coarse: bool, perceptual=None) -> Objective:
        res = coarse_res if coarse and coarse_res else full_res
        aff = prior_affine(prior, res, centre_mm=centre)
        return build_objective(
            views, targets, aff, res, cfg, coarse=coarse, perceptual=perceptual, anchor=anchor_at.get(res)
        )

    fine = make_objective(False)
    stages = plan_stages(cfg, min(min(v.shape) for v in views) >= MIN_COARSE_SIDE)
    coarse = make_objective(True, fine.perceptual) if any(s.coarse for s in stages) else None

    w_starts = None
    # after a network start every restart runs the warm schedule, meant for starts near the answer:
    # restarts 1.. then start near restart 0's (init_perturbation), not at prior samples
    if cfg.init_samples > 0 and cfg.restarts > 1 and not from_network:
        w_starts = best_prior_samples(
            prior,
            coarse if coarse is not None else fine,
            cfg.init_samples,
            cfg.restarts - 1,
            seed=seed,
            resolution=coarse_res if coarse is not None else None,
            amp=amp,
        )
    restarts = make_restarts(prior, cfg, len(views), w_init, seed, device, w_starts=w_starts)
    bar = _progress(sum(s.steps for s in stages), progress)
    runner = StageRunner(
        prior,
        cfg,
        restarts,
        {False: fine, True: coarse},
        torch.as_tensor(centre, dtype=torch.float32, device=device),
        coarse_res,
        bar=bar,
        callback=callback,
        amp=amp,
    )
    try:
        runner.run_all(stages)
    finally:
        if bar is not None:
            bar.close()

    t_opt_end = time.perf_counter()
    result = _finish(runner, fine, views, arrays, centre)
    blended = from_network and cfg.blend_start > 0  # without a network start there is nothing to mix
    if blended:
        result.hu = _blend_start(result.hu, cfg.blend_start, net.hu, prior.hu_window)
        if cfg.blend_labels and net.label_prob is not None:
            result.label_prob = _blend_labels(result.label_prob, cfg.blend_start, net.label_prob)
            result.labels = (result.label_prob > 0.5).astype(np.uint8)
    result.consistency = _consistency(result, cfg, fine, arrays, net.hu if from_network else None, prior.hu_window)
    if blended or (result.consistency is not None and result.consistency.get("skipped") is None):
        _rerender(result, fine, arrays)  # the returned volume is not the generator's: once, for both
    result.stopped_at = runner.step
    result.start = start
    t_end = time.perf_counter()
    result.timings = {
        "init": t_init,
        **runner.times,
        "final": t_end - t_opt_end,
        "total": t_end - t_start,
        "per_step": (t_opt_end - t_start) / max(1, runner.step),
    }
    result.config = {
        **cfg.to_dict(),
        "seed": seed,
        "amp_resolved": "bf16" if amp else "off",
        "projector_resolved": resolved_backend("auto", device),
        "blend_start_applied": cfg.blend_start if blended else 0.0,
        "blend_labels_applied": bool(blended and cfg.blend_labels and net.label_prob is not None),
    }
    if background_ratio is not None:
        result.config["background_auto_ratio"] = background_ratio
    result.perceptual = None if fine.perceptual is None or cfg.lambda_perceptual == 0 else fine.perceptual.kind
    return result


def inversion_resolution(cfg: FitConfig, full_res: int, coarse_res: int | None) -> int | None:
    """Generator resolution of the initialising network's inversion: ``cfg.init_network_resolution``
    (``None``: the coarse stage's); ``None`` means the prior's full resolution.

    Raises:
        InputError: a resolution that is not one of the prior's blocks up to its full one.
    """
    r = cfg.init_network_resolution
    if r is None:
        return coarse_res
    if r > full_res or full_res % r:
        raise InputError(
            f"init_network_resolution {r} is not a generator block of this prior (powers of two from 4 to {full_res})"
        )
    return None if r == full_res else r


def ensemble_members(data: Tensor, alive: Sequence[int], best: int, tol: float) -> list[int]:
    """The restarts averaged into the output: the live ones whose final data term (``data [B]``)
    is at most ``(1 + tol)`` times the best one's (the best always included)."""
    limit = float(data[best]) * (1.0 + tol)
    return sorted({best, *(r for r in alive if float(data[r]) <= limit)})


@torch.no_grad()
def _finish(
    runner: StageRunner, objective: Objective, views: list[View], arrays: list[np.ndarray], centre_mm: np.ndarray
) -> FitResult:
    """Final full-resolution evaluation, best restart, uncertainty and re-projections.

    A moved volume (``transform``) is resampled onto the fixed cube at ``centre_mm``, so every
    output shares one axis-aligned grid with the affine of :attr:`FitResult.affine`.
    """
    prior, cfg, restarts = runner.prior, runner.cfg, runner.restarts
    final = Stage("final", 0, False, ("u",))
    x = batch_params(restarts, runner.mean, runner.std)
    hu, logit, _, preds, terms = runner.forward(x, final, objective)
    data = terms["data"].cpu()
    alive = [r.index for r in restarts if not r.failed and math.isfinite(float(data[r.index]))]
    if not alive:
        raise XfitError("no restart produced a finite result")
    best = min(alive, key=lambda r: float(data[r]))
    lo, hi = prior.hu_window
    prob = torch.sigmoid(logit)
    transform = None
    if x["transform"] is not None:
        T = similarity_matrix(x["transform"], runner.centre_mm, runner.sigmas)
        hu = resample_to_grid(hu[:, None], T, objective.affine, fill=None)[:, 0]
        prob = resample_to_grid(prob[:, None], T, objective.affine, fill=0.0)[:, 0]
        transform = describe(x["transform"][best], runner.sigmas)
    hu_c = hu.clamp(lo, hi)
    uncertainty = None
    if len(alive) > 1:
        uncertainty = hu_c[alive].std(0).cpu().numpy().astype(np.float32)
    members = ensemble_members(data, alive, best, cfg.ensemble_tol) if cfg.ensemble else [best]
    out_hu = hu_c[members].mean(0)
    label_prob = prob[members].mean(0).cpu().numpy().astype(np.float32)

    if len(members) > 1 and x["transform"] is None:  # the report describes the volume returned
        bg = None if x["background"] is None else x["background"][best : best + 1]
        da = None if x["delta_angle_deg"] is None else x["delta_angle_deg"][best : best + 1]
        ds = None if x["delta_shift_mm"] is None else x["delta_shift_mm"][best : best + 1]
        im = None if x["intensity_map"] is None else x["intensity_map"][best : best + 1]
        preds = objective.render(
            hu_to_mu(out_hu)[None, None], background=bg, delta_angle_deg=da, delta_shift_mm=ds, intensity_map=im
        )
        preds_best = preds
    else:
        preds_best = [p[best : best + 1] for p in preds]
    levers = cfg.mask_saturated or cfg.intensity_map == "monotone"
    ncc, proj = compare_views(objective, preds_best, arrays, masked_match=levers)
    backgrounds = [None] * len(views) if cfg.background else None
    if backgrounds is not None:
        for i, v in enumerate(views):
            bg = upsample_background(x["background"][best : best + 1, i], v.shape)[0]
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
        pose = {"delta_angle_deg": da, "delta_shift_mm": ds, "views": [view_dict(v) for v in out_views]}
    residual_hu = None
    if x["residual"] is not None:
        residual_hu = float(upsample_residual(x["residual"][best : best + 1], hu.shape[-3:]).square().mean().sqrt())

    summary = [
        {
            "final_data": float(data[r.index]),
            "final_total": float(terms["total"][r.index]),
            "divergences": r.divergences,
            "lr_scale": r.lr_scale,
            "failed": r.failed,
            "in_output": r.index in members,
        }
        for r in restarts
    ]
    return FitResult(
        hu=out_hu.cpu().numpy().astype(np.float32),
        label_prob=label_prob,
        labels=(label_prob > 0.5).astype(np.uint8),
        uncertainty=uncertainty,
        affine=prior_affine(prior, centre_mm=centre_mm),
        w_plus=x["w_plus"][best].cpu().numpy().astype(np.float32),
        noise=[n[best, 0].cpu().numpy().astype(np.float32) for n in x["noise"]],
        history=restarts[best].history,
        view_ncc=ncc,
        projections=proj,
        backgrounds=backgrounds,
        views=out_views,
        pose=pose,
        restarts=summary,
        best_restart=best,
        stopped_at=0,
        perceptual=None,
        timings={},
        transform=transform,
        residual_rms_hu=residual_hu,
        centre_mm=[float(c) for c in centre_mm],
        intensity_maps=None
        if x["intensity_map"] is None
        else [map_curve(x["intensity_map"][best, i]) for i in range(len(views))],
        data_masks=None if not cfg.mask_saturated else _view_masks(objective, len(views)),
    )


def _consistency(
    result: FitResult,
    cfg: FitConfig,
    objective: Objective,
    arrays: list[np.ndarray],
    reference_hu: np.ndarray | None,
    hu_window: tuple[float, float],
) -> dict[str, Any] | None:
    """Run the data-consistency step on ``result``'s HU in place (clipped to ``hu_window``; its
    re-projections are the caller's to redo, :func:`_rerender`) and say what it did; ``None``
    when it is off, a dict whose ``skipped`` is not ``None`` when it did nothing."""
    if cfg.consistency_steps == 0:
        return None
    why = consistency_skip_reason(cfg)
    if why is not None:
        return {"skipped": why}
    t0 = time.perf_counter()
    weights, used = step_weights(cfg.consistency_weights, result.hu, reference_hu)
    torso = result.backgrounds is not None  # anatomy outside the cube: residual over the footprint, high-passed
    masks = [m > 0 for m in _view_masks(objective, len(arrays))] if torso else None
    hu, info = consistency_step(
        result.hu,
        arrays,
        result.views,
        result.affine,
        cfg.consistency_steps,
        weights,
        backgrounds=result.backgrounds,
        masks=masks,
        highpass_px=cfg.consistency_highpass_px if torso else 0.0,
    )
    if info.skipped is not None:
        return {"skipped": info.skipped, "view_ncc": info.view_ncc}
    lo, hi = hu_window
    result.hu = np.clip(hu, lo, hi).astype(np.float32)
    return {
        **info.to_dict(),
        "weights": used,
        "weights_from": "the fit" if reference_hu is None else "the start network",
        "highpass_px": cfg.consistency_highpass_px if torso else None,
        "seconds": time.perf_counter() - t0,
    }


def _blend_start(hu: np.ndarray, weight: float, start_hu: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """``(1 - weight) * hu + weight * start_hu`` (``blend_start``), float32 ``[R, R, R]`` HU: the
    fitted volume mixed with the start network's (clipped to the prior's window, as the fit's
    volume is)."""
    lo, hi = hu_window
    mix = (1.0 - weight) * hu + weight * np.clip(np.asarray(start_hu, np.float32), lo, hi)
    return np.clip(mix, lo, hi).astype(np.float32)


def _blend_labels(prob: np.ndarray, weight: float, start_prob: np.ndarray) -> np.ndarray:
    """``(1 - weight) * prob + weight * start_prob`` (``blend_labels``), float32 ``[R, R, R]`` in
    [0, 1]: the prior's vertebra probability mixed with the start network's."""
    return ((1.0 - weight) * prob + weight * np.asarray(start_prob, np.float32)).astype(np.float32)


def _rerender(result: FitResult, objective: Objective, arrays: list[np.ndarray]) -> None:
    """Re-render ``result``'s projections of its (changed) volume, plus its fitted backgrounds,
    and their view NCC against ``arrays``, in place."""
    preds = objective.render(hu_to_mu(torch.from_numpy(result.hu).to(objective.affine.device))[None, None])
    if result.backgrounds is not None:
        preds = [
            p + torch.stack([torch.from_numpy(result.backgrounds[i]) for i in g.index]).to(p)[None]
            for g, p in zip(objective.groups, preds)
        ]
    result.view_ncc, result.projections = compare_views(objective, preds, arrays)


def _view_masks(objective: Objective, n: int) -> list[np.ndarray]:
    """The data term's masks per input view (input order) as ``[R_v, C_v]`` uint8 (1 = used)."""
    out: list[np.ndarray] = [None] * n  # type: ignore[list-item]
    for g, t, m in zip(objective.groups, objective.targets, objective.masks):
        for j, i in enumerate(g.index):
            out[i] = np.ones(tuple(t.shape[1:]), np.uint8) if m is None else (m[j] > 0).cpu().numpy().astype(np.uint8)
    return out
