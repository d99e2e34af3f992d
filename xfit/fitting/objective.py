"""Objective of test-time fitting: data terms, latent priors and a smooth background model.

Following X2Vision / BRGM, the fit is a MAP estimate: ``total = data + lambda_perceptual *
perceptual + regularizers``, where every regularizer is a negative log-prior up to constants and
a positive scale folded into its weight. Functions return one value per batch element ``[B]``
(the batch is the set of restarts), so restarts stay independent when their totals are summed.

Data term: ``1 - NCC`` per view, averaged over views and over an avg-pool pyramid. NCC is
invariant to a per-view gain and offset, so images may be line integrals or [0, 1] intensities
of unknown calibration (bright = attenuating).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..geometry import View
from ..projector import project
from .residual import residual_penalty, smoothness_penalty
from .transform import transform_prior

_EPS = 1e-8
_TINY_VAR = 1e-20  # squared per-pixel variance floor of NCC (keeps constant images finite)


# ----------------------------------------------------------------------------- data terms


def _check_pred_target(pred: Tensor, target: Tensor) -> None:
    if pred.ndim != 4 or target.ndim != 3 or tuple(pred.shape[1:]) != tuple(target.shape):
        raise InputError(
            f"pred must be [B, V, R, C] and target [V, R, C] of the same views, "
            f"got {list(pred.shape)} and {list(target.shape)}"
        )


def ncc_per_view(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Normalised cross-correlation of each predicted view with its target.

    Args:
        pred: ``[B, V, R, C]`` predicted images.
        target: ``[V, R, C]`` target images.
        mask: optional ``[V, R, C]`` weights (1 = use the pixel).
    Returns:
        ``[B, V]`` NCC in [-1, 1]; 0 where an image is constant.
    """
    _check_pred_target(pred, target)
    t = target[None].to(pred.dtype)
    w = torch.ones_like(t) if mask is None else mask[None].to(pred.dtype).expand_as(t)
    n = w.sum((-2, -1)).clamp_min(_EPS)
    mp = (w * pred).sum((-2, -1)) / n
    mt = (w * t).sum((-2, -1)) / n
    dp = pred - mp[..., None, None]
    dt = t - mt[..., None, None]
    cov = (w * dp * dt).sum((-2, -1))
    var_p = (w * dp * dp).sum((-2, -1))
    var_t = (w * dt * dt).sum((-2, -1))
    return cov / torch.sqrt(var_p * var_t + _TINY_VAR * n * n)


def ncc_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """``1 - NCC`` averaged over views.

    Args:
        pred: ``[B, V, R, C]``; target: ``[V, R, C]``; mask: optional ``[V, R, C]``.
    Returns:
        ``[B]`` loss in [0, 2]; 0 for images equal up to a positive gain and an offset.
    """
    return 1.0 - ncc_per_view(pred, target, mask).mean(-1)


def _pool(x: Tensor, s: int) -> Tensor:
    """Average-pool the last two axes of ``[..., R, C]`` by ``s`` (no-op for s = 1)."""
    if s == 1:
        return x
    lead = x.shape[:-2]
    y = F.avg_pool2d(x.reshape(-1, 1, *x.shape[-2:]), s)
    return y.reshape(*lead, *y.shape[-2:])


def multiscale_ncc_per_view(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, scales: Sequence[int] = (1, 2, 4)
) -> Tensor:
    """``1 - NCC`` per view averaged over an avg-pool pyramid.

    Scales that would leave fewer than 4 pixels per side are skipped (scale 1 is always used).

    Args:
        pred: ``[B, V, R, C]``; target: ``[V, R, C]``; mask: optional ``[V, R, C]``.
        scales: pooling factors.
    Returns:
        ``[B, V]`` loss.
    """
    _check_pred_target(pred, target)
    used = [s for s in scales if s == 1 or min(target.shape[-2:]) // s >= 4] or [1]
    terms = [
        1.0 - ncc_per_view(_pool(pred, s), _pool(target, s), None if mask is None else _pool(mask.to(pred.dtype), s))
        for s in used
    ]
    return torch.stack(terms).mean(0)


def multiscale_ncc_loss(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, scales: Sequence[int] = (1, 2, 4)
) -> Tensor:
    """Multi-scale ``1 - NCC`` (see :func:`multiscale_ncc_per_view`) averaged over views: ``[B]``."""
    return multiscale_ncc_per_view(pred, target, mask, scales).mean(-1)


def gradient_magnitude(x: Tensor) -> Tensor:
    """Central-difference gradient magnitude of images ``[..., R, C]`` (same shape, replicate edges)."""
    lead = x.shape[:-2]
    y = F.pad(x.reshape(-1, 1, *x.shape[-2:]), (1, 1, 1, 1), mode="replicate")
    gr = 0.5 * (y[..., 2:, 1:-1] - y[..., :-2, 1:-1])
    gc = 0.5 * (y[..., 1:-1, 2:] - y[..., 1:-1, :-2])
    return torch.sqrt(gr * gr + gc * gc + 1e-12).reshape(*lead, *x.shape[-2:])


def gradient_ncc_per_view(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, scales: Sequence[int] = (1, 2, 4)
) -> Tensor:
    """Edge agreement per view: multi-scale ``1 - NCC`` of gradient magnitudes.

    The images are pooled first, then differentiated, so coarse scales compare coarse edges.

    Args:
        pred: ``[B, V, R, C]``; target: ``[V, R, C]``; mask: optional ``[V, R, C]``.
    Returns:
        ``[B, V]`` loss in [0, 2].
    """
    _check_pred_target(pred, target)
    used = [s for s in scales if s == 1 or min(target.shape[-2:]) // s >= 4] or [1]
    terms = [
        1.0
        - ncc_per_view(
            gradient_magnitude(_pool(pred, s)),
            gradient_magnitude(_pool(target, s)),
            None if mask is None else _pool(mask.to(pred.dtype), s),
        )
        for s in used
    ]
    return torch.stack(terms).mean(0)


def gradient_ncc_loss(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, scales: Sequence[int] = (1, 2, 4)
) -> Tensor:
    """:func:`gradient_ncc_per_view` averaged over views (the LPIPS fallback).

    Returns:
        ``[B]`` loss in [0, 2].
    """
    return gradient_ncc_per_view(pred, target, mask, scales).mean(-1)


# ----------------------------------------------------------------------------- intensity model

#: Span of the monotone map's knots, in standard deviations of the re-projection.
MAP_SPAN = 3.0
_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) = 1: zero log-slopes = identity


def monotone_map(pred: Tensor, slopes: Tensor, mask: Tensor | None = None) -> Tensor:
    """A monotone (increasing) piecewise-linear intensity map of each view, applied to its
    standardised re-projection: a vendor's contrast curve that a gain and offset cannot express.

    Each view's image is standardised (mean and std over ``mask``), then mapped through
    ``K = slopes.shape[-1] + 1`` knots equally spaced over ``[-MAP_SPAN, MAP_SPAN]``; segment ``j``
    has slope ``softplus(slopes[..., j] + c)`` (``c``: zero slopes give the identity), the first and
    last segments extend beyond the knots. Differentiable in ``pred`` and ``slopes``.

    Args:
        pred: ``[B, V, R, C]`` re-projections (any units).
        slopes: ``[B, V, K - 1]`` log-slope parameters (0 = identity).
        mask: optional ``[V, R, C]`` weights of the standardising statistics.
    Returns:
        ``[B, V, R, C]`` mapped images (standardised units at the identity).
    """
    if slopes.ndim != 3 or tuple(slopes.shape[:2]) != tuple(pred.shape[:2]) or slopes.shape[-1] < 2:
        raise InputError(
            f"slopes must be [B, V, K-1] with K >= 3 for pred {list(pred.shape)}, got {list(slopes.shape)}"
        )
    w = torch.ones_like(pred[:1]) if mask is None else mask[None].to(pred.dtype)
    n = w.sum((-2, -1), keepdim=True).clamp_min(_EPS)
    mean = (w * pred).sum((-2, -1), keepdim=True) / n
    var = (w * (pred - mean).square()).sum((-2, -1), keepdim=True) / n
    z = (pred - mean) / torch.sqrt(var + 1e-12)
    k = slopes.shape[-1] + 1
    dx = 2.0 * MAP_SPAN / (k - 1)
    d = F.softplus(slopes + _SOFTPLUS_ONE)  # [B, V, K-1] segment slopes
    y_knots = torch.cat([torch.full_like(d[..., :1], -MAP_SPAN), -MAP_SPAN + torch.cumsum(d * dx, -1)], -1)
    flat = z.flatten(-2)  # [B, V, R*C]
    j = ((flat.detach() + MAP_SPAN) / dx).floor().clamp(0, k - 2).long()
    x_j = -MAP_SPAN + j.to(z.dtype) * dx
    y = torch.gather(y_knots, -1, j) + torch.gather(d, -1, j) * (flat - x_j)
    return y.reshape(pred.shape)


def map_curve(slopes: Tensor) -> dict[str, list]:
    """The knots of :func:`monotone_map` for one view's ``slopes [K - 1]``: ``{"z": [K], "y": [K]}``
    (input and output in standard deviations of the re-projection), for reports."""
    k = slopes.shape[-1] + 1
    dx = 2.0 * MAP_SPAN / (k - 1)
    d = F.softplus(slopes.detach().float().cpu() + _SOFTPLUS_ONE)
    y = torch.cat([torch.tensor([-MAP_SPAN]), -MAP_SPAN + torch.cumsum(d * dx, -1)])
    return {"z": [-MAP_SPAN + i * dx for i in range(k)], "y": y.tolist()}


def saturation_mask(image: Tensor, *, dilate: int = 1, min_kept: float = 0.1) -> Tensor:
    """Pixels of one X-ray that carry information for the data term (1) or not (0).

    Dropped: pixels at the image's lowest or highest value (saturated anatomy, collimated borders
    blanked to black or white, burned-in markers at full white) with ``dilate`` pixels around
    them (a processed image's edge enhancement rings there), and constant border rows and
    columns (blanked borders at any value). When less than ``min_kept`` of the pixels would
    remain, nothing is dropped (the image is then mostly flat, and the mask would only hide it).

    Args:
        image: ``[R, C]`` the X-ray as given (or any increasing affine map of it).
    Returns:
        ``[R, C]`` float mask of 0 and 1, in ``image``'s dtype.
    """
    if image.ndim != 2:
        raise InputError(f"image must be [R, C], got {list(image.shape)}")
    lo, hi = image.min(), image.max()
    drop = (image == lo) | (image == hi)
    if dilate > 0:
        drop = F.max_pool2d(drop[None, None].float(), 2 * dilate + 1, stride=1, padding=dilate)[0, 0] > 0
    r0, r1, c0, c1 = 0, image.shape[0], 0, image.shape[1]
    peeled = True
    while peeled and r1 - r0 > 1 and c1 - c0 > 1:  # peel constant border lines, corners shared
        peeled = False
        for line, side in (
            (image[r0, c0:c1], "top"),
            (image[r1 - 1, c0:c1], "bottom"),
            (image[r0:r1, c0], "left"),
            (image[r0:r1, c1 - 1], "right"),
        ):
            if bool(line.max() == line.min()):
                r0, r1 = r0 + (side == "top"), r1 - (side == "bottom")
                c0, c1 = c0 + (side == "left"), c1 - (side == "right")
                peeled = True
                break
    inner = torch.zeros_like(drop)
    inner[r0:r1, c0:c1] = True
    drop = drop | ~inner
    keep = (~drop).to(image.dtype)
    if float(keep.mean()) < min_kept:
        return torch.ones_like(image)
    return keep


def match_gain_offset(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Least-squares gain/offset fit of ``pred`` to ``target`` per image (differentiable).

    Args:
        pred: ``[B, V, R, C]``; target: ``[V, R, C]``.
        mask: optional ``[V, R, C]`` weights of the fit (every pixel is still mapped).
    Returns:
        ``[B, V, R, C]`` ``a * pred + b`` with ``a, b`` minimising ``||a pred + b - target||^2``
        (weighted by ``mask``).
    """
    t = target[None].to(pred.dtype)
    if mask is None:
        mp, mt = pred.mean((-2, -1), keepdim=True), t.mean((-2, -1), keepdim=True)
        dp = pred - mp
        a = (dp * (t - mt)).sum((-2, -1), keepdim=True) / (dp * dp).sum((-2, -1), keepdim=True).clamp_min(_EPS)
        return a * dp + mt
    w = mask[None].to(pred.dtype).expand_as(pred)
    n = w.sum((-2, -1), keepdim=True).clamp_min(_EPS)
    mp, mt = (w * pred).sum((-2, -1), keepdim=True) / n, (w * t).sum((-2, -1), keepdim=True) / n
    dp = pred - mp
    a = (w * dp * (t - mt)).sum((-2, -1), keepdim=True) / (w * dp * dp).sum((-2, -1), keepdim=True).clamp_min(_EPS)
    return a * dp + mt


# ----------------------------------------------------------------------------- perceptual term


class PerceptualLoss(nn.Module):
    """LPIPS between predicted and target views, or an edge-agreement substitute.

    LPIPS (v0.1, AlexNet: :func:`xfit.metrics.lpips_alex`, the same network as the metric
    :func:`xfit.metrics.lpips_slices`) is used when its weights are on disk as safetensors
    (``weights``, else ``$XFIT_LPIPS_WEIGHTS``; :func:`xfit.metrics.lpips_weights_path`); they
    are never downloaded. Otherwise the loss falls back, with one warning per process, to
    :func:`gradient_ncc_loss` (multi-scale NCC of gradient magnitudes), which like LPIPS rewards
    matching edges and textures and ignores gain/offset. ``self.kind`` says which is in use.

    Before LPIPS, ``pred`` is gain/offset-matched to the target and both are mapped to [-1, 1]
    with the target's range, replicated to 3 channels and upsampled to at least 64 pixels.
    """

    _warned = False

    def __init__(self, net: str = "alex", weights: str | Path | None = None, scales: Sequence[int] = (1, 2, 4)):
        from ..metrics import LPIPS_WEIGHTS_ENV, load_lpips_weights, lpips_weights_path

        super().__init__()
        if net != "alex":
            raise InputError(f"perceptual_net must be 'alex' (the LPIPS network xfit implements), got {net!r}")
        self.scales = tuple(scales)
        path = lpips_weights_path(weights)
        self.weights = load_lpips_weights(path) if path is not None else None
        self.kind = "lpips" if self.weights is not None else "gradient_ncc"
        if self.weights is None and not PerceptualLoss._warned:
            PerceptualLoss._warned = True
            warnings.warn(
                f"LPIPS weights not found (set ${LPIPS_WEIGHTS_ENV} to a safetensors file of "
                "lpips.LPIPS(net='alex').state_dict()); the perceptual term falls back to "
                "multi-scale gradient-magnitude NCC",
                stacklevel=2,
            )

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """``pred [B, V, R, C]``, ``target [V, R, C]`` -> ``[B]`` loss."""
        if self.weights is None:
            return gradient_ncc_loss(pred, target, mask, self.scales)
        _check_pred_target(pred, target)
        b, v, r, c = pred.shape
        p = match_gain_offset(pred, target)
        t = target[None].to(pred.dtype).expand_as(p)
        lo = t.amin((-2, -1), keepdim=True)
        span = (t.amax((-2, -1), keepdim=True) - lo).clamp_min(_EPS)
        p, t = 2 * (p - lo) / span - 1, 2 * (t - lo) / span - 1
        size = (max(64, r), max(64, c))

        def prep(x: Tensor) -> Tensor:
            return F.interpolate(x.reshape(b * v, 1, r, c), size=size, mode="bilinear", align_corners=False).expand(
                -1, 3, -1, -1
            )

        from ..metrics import lpips_alex

        w = {k: x.to(device=p.device, dtype=p.dtype) for k, x in self.weights.items()}
        return lpips_alex(prep(p), prep(t), w).reshape(b, v).mean(-1)


# ----------------------------------------------------------------------------- latent priors


def w_gaussian_prior(w_plus: Tensor, w_mean: Tensor, w_std: Tensor) -> Tensor:
    """Gaussian negative log-prior of every w of W+: ``mean_k ||(w_k - w_mean) / w_std||^2 / w_dim``.

    Equals ``(2 / (num_ws * w_dim)) * -log N(w_plus; w_mean, diag(w_std^2))`` + const.

    Args:
        w_plus: ``[B, num_ws, w_dim]``; w_mean, w_std: ``[w_dim]``.
    Returns:
        ``[B]``; 0 at ``w_mean``, about 1 for typical samples of the mapping network.
    """
    z = (w_plus - w_mean) / w_std
    return z.square().sum(-1).mean(-1) / w_plus.shape[-1]


def w_cosine_prior(w_plus: Tensor, w_mean: Tensor) -> Tensor:
    """von Mises negative log-prior on the angles between pairs of centred ws (BRGM).

    ``mean_{i<j} (1 - cos angle(w_i - w_mean, w_j - w_mean))``; the von Mises concentration
    kappa is folded into the weight: ``-log vM = -kappa cos + const``.

    Args:
        w_plus: ``[B, num_ws, w_dim]``; w_mean: ``[w_dim]``.
    Returns:
        ``[B]`` in [0, 2]; 0 when all centred ws point the same way (or num_ws == 1).
    """
    k = w_plus.shape[1]
    if k < 2:
        return w_plus.new_zeros(w_plus.shape[0])
    d = w_plus - w_mean
    d = d / torch.sqrt(d.square().sum(-1, keepdim=True) + 1e-12)
    cos = d @ d.transpose(1, 2)  # [B, K, K]
    i, j = torch.triu_indices(k, k, offset=1, device=w_plus.device)
    return (1.0 - cos[:, i, j]).mean(-1)


def noise_prior(noise: Sequence[Tensor]) -> Tensor:
    """Standard-normal negative log-prior on the noise maps: mean over maps of ``mean(n^2)``.

    Equals ``sum_maps (2 / numel) * -log N(n; 0, I)`` / maps + const (each map counts alike,
    whatever its resolution).

    Args:
        noise: list of ``[B, 1, r, r, r]`` maps.
    Returns:
        ``[B]``; 0 for zero maps, about 1 for standard-normal maps.
    """
    if len(noise) == 0:
        raise InputError("noise_prior needs at least one noise map")
    return torch.stack([n.square().flatten(1).mean(-1) for n in noise]).mean(0)


def pose_prior(delta_angle_deg: Tensor, delta_shift_mm: Tensor, sigma_deg: float, sigma_mm: float) -> Tensor:
    """Gaussian negative log-prior on pose corrections (mean of squared z-scores).

    Args:
        delta_angle_deg: ``[B, V]``; delta_shift_mm: ``[B, V, 3]``.
    Returns:
        ``[B]``.
    """
    za = (delta_angle_deg / sigma_deg).square().mean(-1)
    zt = (delta_shift_mm / sigma_mm).square().flatten(1).mean(-1)
    return za + zt


# ----------------------------------------------------------------------------- background


def upsample_background(grid: Tensor, shape: Sequence[int]) -> Tensor:
    """Bilinear upsampling of control points to a detector.

    Args:
        grid: ``[B, g, g]`` (or ``[B, V, g, g]``) control-point values (line-integral units).
        shape: detector (rows, cols).
    Returns:
        ``[B, R, C]`` (or ``[B, V, R, C]``); corner control points sit on the corner pixels.
    """
    lead = grid.shape[:-2]
    up = F.interpolate(grid.reshape(-1, 1, *grid.shape[-2:]), size=tuple(shape), mode="bilinear", align_corners=True)
    return up.reshape(*lead, *up.shape[-2:])


def background_penalty(grid: Tensor) -> Tensor:
    """Size + smoothness penalty of background control points ``[B, V, g, g]`` -> ``[B]``.

    ``mean(b^2) + mean(second differences^2)`` along rows and columns: a zero-mean Gaussian
    prior on the values and on their curvature (negative log-prior up to constants). Only the
    non-constant part matters to the NCC data term; the size term keeps the offset from drifting.
    """
    return smoothness_penalty(grid, (-2, -1))


# ----------------------------------------------------------------------------- objective


@dataclass(frozen=True)
class ViewGroup:
    """Views sharing detector shape and projection, projected in one call.

    Attributes:
        index: positions of these views in the full list (``[V_g]``).
        views: the views themselves.
    """

    index: tuple[int, ...]
    views: tuple[View, ...]

    @property
    def shape(self) -> tuple[int, int]:
        """Detector (rows, cols) of the group."""
        return self.views[0].shape


def group_views(views: Sequence[View]) -> list[ViewGroup]:
    """Split views into groups of equal detector shape and projection (first-seen order)."""
    groups: dict[tuple, list[int]] = {}
    for i, v in enumerate(views):
        groups.setdefault((v.shape, v.projection), []).append(i)
    return [ViewGroup(tuple(ix), tuple(views[i] for i in ix)) for ix in groups.values()]


class Objective:
    """Forward model (projection + background) and the weighted MAP objective.

    Args:
        groups: view groups (see :func:`group_views`); V views in all.
        targets: per group ``[V_g, R_g, C_g]`` target images.
        affine: ``[4, 4]`` voxel index -> world mm of the fitted volumes.
        lambda_w, lambda_c, lambda_n, lambda_perceptual, lambda_background, lambda_pose,
            lambda_transform, lambda_residual: weights (see :data:`PRIOR_TERMS`).
        scales: pyramid of the NCC data term.
        pose_sigma_deg, pose_sigma_mm: std of the pose prior.
        perceptual: a :class:`PerceptualLoss` (built when ``lambda_perceptual > 0`` and not given).
        masks: optional per group ``[V_g, R_g, C_g]`` pixel weights.
        step_mm: projector step (``None``: half a voxel).
        anchor: optional :class:`Anchor` (a network's volume at the objective's resolution, with
            its own weights; :func:`anchor_term`).
        lambda_intensity_map: weight of the prior on the monotone intensity map's log-slopes.
        data_term: ``"ncc"`` or ``"ncc+gradient"`` (:meth:`data_per_view`).
    """

    def __init__(
        self,
        groups: Sequence[ViewGroup],
        targets: Sequence[Tensor],
        affine: Tensor,
        *,
        lambda_w: float = 0.1,
        lambda_c: float = 0.05,
        lambda_n: float = 10.0,
        lambda_perceptual: float = 0.0,
        lambda_background: float = 0.01,
        lambda_pose: float = 0.01,
        lambda_transform: float = 0.01,
        lambda_residual: float = 1.0,
        scales: Sequence[int] = (1, 2, 4),
        pose_sigma_deg: float = 5.0,
        pose_sigma_mm: float = 5.0,
        perceptual: PerceptualLoss | None = None,
        perceptual_net: str = "alex",
        masks: Sequence[Tensor | None] | None = None,
        step_mm: float | None = None,
        anchor: Anchor | None = None,
        lambda_intensity_map: float = 0.001,
        data_term: str = "ncc",
    ):
        if data_term not in ("ncc", "ncc+gradient"):
            raise InputError(f"data_term must be ncc or ncc+gradient, got {data_term!r}")
        self.groups, self.targets = list(groups), list(targets)
        if len(self.groups) != len(self.targets):
            raise InputError(f"{len(self.groups)} view groups but {len(self.targets)} target groups")
        for g, t in zip(self.groups, self.targets):
            if tuple(t.shape) != (len(g.views), *g.shape):
                raise InputError(f"targets {list(t.shape)} do not match views of shape {g.shape}")
        self.masks = list(masks) if masks is not None else [None] * len(self.targets)
        if len(self.masks) != len(self.targets):
            raise InputError("masks must match targets")
        self.affine = affine
        self.num_views = sum(len(g.views) for g in self.groups)
        self.step_mm = step_mm
        self.lambda_w, self.lambda_c, self.lambda_n = lambda_w, lambda_c, lambda_n
        self.lambda_perceptual, self.lambda_background = lambda_perceptual, lambda_background
        self.lambda_pose, self.lambda_transform = lambda_pose, lambda_transform
        self.lambda_residual = lambda_residual
        self.lambda_intensity_map, self.data_term = lambda_intensity_map, data_term
        self.scales = tuple(scales)
        self.pose_sigma_deg, self.pose_sigma_mm = pose_sigma_deg, pose_sigma_mm
        if perceptual is None and lambda_perceptual > 0:
            perceptual = PerceptualLoss(perceptual_net, scales=self.scales)
        self.perceptual = perceptual
        self.anchor = anchor
        self.lambda_anchor = 1.0 if anchor is not None else 0.0  # the anchor carries its weights

    # -- forward model

    def render(
        self,
        mu: Tensor,
        *,
        background: Tensor | None = None,
        delta_angle_deg: Tensor | None = None,
        delta_shift_mm: Tensor | None = None,
        affine: Tensor | None = None,
        intensity_map: Tensor | None = None,
    ) -> list[Tensor]:
        """Re-projections of volumes for every view group.

        Args:
            mu: ``[B, 1, I, J, K]`` attenuation (1/mm).
            affine: optional ``[B, 4, 4]`` affines of the volumes (a moved volume,
                :func:`xfit.fitting.transform.moved_affine`); default :attr:`affine`.
            background: optional ``[B, V, g, g]`` control points added after projection.
            delta_angle_deg, delta_shift_mm: optional ``[B, V]`` / ``[B, V, 3]`` pose corrections
                (angle added to each view's, shift applied after each view's pose).
            intensity_map: optional ``[B, V, K - 1]`` log-slopes of a monotone map applied last
                (:func:`monotone_map`, standardised over the group's mask).
        Returns:
            per group ``[B, V_g, R_g, C_g]`` line integrals (+ background), or their mapped
            intensities with ``intensity_map``.
        """
        out = []
        affine = self.affine if affine is None else affine
        for g in self.groups:
            ix = list(g.index)
            if delta_angle_deg is None and delta_shift_mm is None:
                pred = project(mu, affine, list(g.views), step_mm=self.step_mm)
            else:
                pred = torch.cat(
                    [
                        self._project_posed(
                            mu[b : b + 1], _batch_item(affine, b), g, ix, delta_angle_deg, delta_shift_mm, b
                        )
                        for b in range(mu.shape[0])
                    ]
                )
            if background is not None:
                pred = pred + upsample_background(background[:, ix], g.shape)
            if intensity_map is not None:
                pred = monotone_map(pred, intensity_map[:, ix], self.masks[len(out)])
            out.append(pred)
        return out

    def _project_posed(
        self,
        mu: Tensor,
        affine: Tensor,
        g: ViewGroup,
        ix: list[int],
        d_angle: Tensor | None,
        d_shift: Tensor | None,
        b: int,
    ) -> Tensor:
        kw = dict(dtype=mu.dtype, device=mu.device)
        angle = torch.tensor([v.angle_deg for v in g.views], **kw)
        if d_angle is not None:
            angle = angle + d_angle[b, ix]
        pose = None
        if d_shift is not None:
            base = torch.stack(
                [torch.tensor(v.pose, **kw) if v.pose is not None else torch.eye(4, **kw) for v in g.views]
            )
            pose = _translate(base, d_shift[b, ix])
        return project(mu, affine, list(g.views), angle_deg=angle, pose=pose, step_mm=self.step_mm)

    # -- loss

    def data_per_view(self, preds: Sequence[Tensor]) -> Tensor:
        """Multi-scale ``1 - NCC`` of each view: per group ``[B, V_g, R, C]`` -> ``[B, V]``
        (in group order; see :attr:`groups` for the view indices). With ``data_term``
        ``ncc+gradient``, the mean of that and :func:`gradient_ncc_per_view`."""
        if len(preds) != len(self.targets):
            raise InputError(f"expected {len(self.targets)} groups of predictions, got {len(preds)}")
        out = torch.cat(
            [multiscale_ncc_per_view(p, t, m, self.scales) for p, t, m in zip(preds, self.targets, self.masks)], dim=1
        )
        if self.data_term == "ncc+gradient":
            grad = torch.cat(
                [gradient_ncc_per_view(p, t, m, self.scales) for p, t, m in zip(preds, self.targets, self.masks)], dim=1
            )
            out = 0.5 * (out + grad)
        return out

    def terms(
        self,
        preds: Sequence[Tensor],
        *,
        w_plus: Tensor,
        w_mean: Tensor,
        w_std: Tensor,
        noise: Sequence[Tensor] | None = None,
        background: Tensor | None = None,
        delta_angle_deg: Tensor | None = None,
        delta_shift_mm: Tensor | None = None,
        transform: Tensor | None = None,
        residual: Tensor | None = None,
        hu: Tensor | None = None,
        logit: Tensor | None = None,
        intensity_map: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """All loss terms, each ``[B]``, and their weighted sum ``total``.

        Args:
            preds: per view group ``[B, V_g, R, C]`` (from :meth:`render`).
            w_plus: ``[B, num_ws, w_dim]``; w_mean, w_std: ``[w_dim]``.
            noise: optional list of ``[B, 1, r, r, r]`` noise maps being fitted.
            background: optional ``[B, V, g, g]`` background control points.
            delta_angle_deg, delta_shift_mm: optional ``[B, V]`` / ``[B, V, 3]`` pose corrections.
            transform: optional ``[B, 7]`` similarity transform (sigma units,
                :mod:`xfit.fitting.transform`).
            residual: optional ``[B, 1, g, g, g]`` residual volume control points
                (:mod:`xfit.fitting.residual`).
            hu, logit: optional ``[B, r, r, r]`` generated HU and label logits (the anchor term).
            intensity_map: optional ``[B, V, K - 1]`` log-slopes of the monotone map (its prior).
        Returns:
            dict with ``data``, ``perceptual`` and one entry per prior term of :data:`PRIOR_TERMS`
            (unweighted, ``[B]``; zero when its input is absent) and ``total`` (weighted sum).
        """
        zero = w_plus.new_zeros(w_plus.shape[0])
        inputs = {
            "w_plus": w_plus,
            "w_mean": w_mean,
            "w_std": w_std,
            "noise": noise or None,
            "background": background,
            "delta_angle_deg": delta_angle_deg,
            "delta_shift_mm": delta_shift_mm,
            "transform": transform,
            "residual": residual,
            "hu": hu if self.anchor is not None else None,
            "logit": logit,
            "intensity_map": intensity_map,
        }
        terms: dict[str, Tensor] = {"data": self.data_per_view(preds).mean(-1)}
        if self.lambda_perceptual > 0 and self.perceptual is not None:
            per = [self.perceptual(p, t, m) * p.shape[1] for p, t, m in zip(preds, self.targets, self.masks)]
            terms["perceptual"] = torch.stack(per).sum(0) / sum(p.shape[1] for p in preds)
        else:
            terms["perceptual"] = zero
        for term in PRIOR_TERMS:
            present = any(inputs[k] is not None for k in term.needs)
            terms[term.name] = term.fn(self, inputs) if present else zero
        weights = {
            "data": 1.0,
            "perceptual": self.lambda_perceptual,
            **{t.name: getattr(self, t.weight) for t in PRIOR_TERMS},
        }
        terms["total"] = sum(weights[k] * terms[k] for k in weights)
        return terms

    def evaluate(
        self,
        mu: Tensor,
        *,
        w_plus: Tensor,
        w_mean: Tensor,
        w_std: Tensor,
        noise: Sequence[Tensor] | None = None,
        background: Tensor | None = None,
        delta_angle_deg: Tensor | None = None,
        delta_shift_mm: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """:meth:`render` then :meth:`terms`: volumes ``mu [B, 1, I, J, K]`` (1/mm) -> terms ``[B]``."""
        preds = self.render(mu, background=background, delta_angle_deg=delta_angle_deg, delta_shift_mm=delta_shift_mm)
        return self.terms(
            preds,
            w_plus=w_plus,
            w_mean=w_mean,
            w_std=w_std,
            noise=noise,
            background=background,
            delta_angle_deg=delta_angle_deg,
            delta_shift_mm=delta_shift_mm,
        )


def _pose_term(obj: Objective, x: dict) -> Tensor:
    zero = x["w_plus"].new_zeros(x["w_plus"].shape[0])
    da = x["delta_angle_deg"] if x["delta_angle_deg"] is not None else zero[:, None]
    ds = x["delta_shift_mm"] if x["delta_shift_mm"] is not None else zero[:, None, None]
    return pose_prior(da, ds, obj.pose_sigma_deg, obj.pose_sigma_mm)


@dataclass(frozen=True)
class PriorTerm:
    """A regularizer of the objective: its name, weight attribute, inputs and function.

    ``fn(objective, inputs) -> [B]`` is evaluated when any of ``needs`` is given.
    """

    name: str
    weight: str
    needs: tuple[str, ...]
    fn: Callable[[Objective, dict], Tensor]


def _transform_prior(obj: Objective, x: dict) -> Tensor:
    return transform_prior(x["transform"])


def _residual_prior(obj: Objective, x: dict) -> Tensor:
    return residual_penalty(x["residual"])


#: The regularizers (negative log-priors up to constants), in report order.
PRIOR_TERMS = (
    PriorTerm("w_gauss", "lambda_w", ("w_plus",), lambda o, x: w_gaussian_prior(x["w_plus"], x["w_mean"], x["w_std"])),
    PriorTerm("w_cos", "lambda_c", ("w_plus",), lambda o, x: w_cosine_prior(x["w_plus"], x["w_mean"])),
    PriorTerm("noise", "lambda_n", ("noise",), lambda o, x: noise_prior(x["noise"])),
    PriorTerm("background", "lambda_background", ("background",), lambda o, x: background_penalty(x["background"])),
    PriorTerm("pose", "lambda_pose", ("delta_angle_deg", "delta_shift_mm"), _pose_term),
    PriorTerm("transform", "lambda_transform", ("transform",), _transform_prior),
    PriorTerm("residual", "lambda_residual", ("residual",), _residual_prior),
    PriorTerm("anchor", "lambda_anchor", ("hu",), lambda o, x: anchor_term(o.anchor, x["hu"], x["logit"])),
    PriorTerm(
        "intensity_map",
        "lambda_intensity_map",
        ("intensity_map",),
        lambda o, x: x["intensity_map"].square().flatten(1).mean(-1),
    ),
)


@dataclass(frozen=True)
class Anchor:
    """A network's reconstruction that the fitted volume is pulled toward (``lambda_anchor``).

    Attributes:
        unit: ``[r, r, r]`` its HU on the prior's unit scale (window mapped to [-1, 1]).
        label: ``[r, r, r]`` its vertebra mask (soft at coarse resolutions).
        window: the prior's HU window.
        hu_weight, label_weight: weights of the intensity MSE and of the label BCE.
    """

    unit: Tensor
    label: Tensor
    window: tuple[float, float]
    hu_weight: float = 1.0
    label_weight: float = 1.0


def anchor_term(anchor: Anchor, hu: Tensor, logit: Tensor) -> Tensor:
    """``hu_weight * mean((unit(hu) - anchor)^2) + label_weight * BCE(logit, anchor label)`` per
    volume: ``[B]``.

    The negative log-likelihood (up to constants) of the generated volume under a Gaussian
    centred on the network's estimate: the network's learned knowledge of what such X-rays
    show, weighed against the X-rays themselves and the prior's manifold.
    """
    lo, hi = anchor.window
    unit = (hu - lo) / (hi - lo) * 2.0 - 1.0  # the generator's raw output (unclamped: gradients flow)
    mse = (unit - anchor.unit).square().flatten(1).mean(-1)
    bce = F.binary_cross_entropy_with_logits(logit, anchor.label.expand_as(logit), reduction="none").flatten(1).mean(-1)
    return anchor.hu_weight * mse + anchor.label_weight * bce


def _batch_item(affine: Tensor, b: int) -> Tensor:
    """The affine of batch element ``b``: ``[4, 4]`` shared, or row ``b`` of ``[B, 4, 4]``."""
    return affine if affine.ndim == 2 else affine[b]


def _translate(pose: Tensor, shift_mm: Tensor) -> Tensor:
    """Compose ``[V, 4, 4]`` poses with translations ``[V, 3]`` applied after them."""
    top = torch.cat([pose[:, :3, :3], pose[:, :3, 3:] + shift_mm[:, :, None]], -1)
    return torch.cat([top, pose[:, 3:]], -2)
