"""Data consistency: an optional last step that moves the fitted volume off the prior's range,
toward agreement with the X-rays (``consistency_steps`` in the fit config; ``docs/fit.md``,
"Data consistency").

A volume of the prior's range explains the X-rays only up to a residual ``r`` (each X-ray mapped
onto the re-projection's line-integral units by least squares, :func:`residuals`). The step solves,
by a few iterations of CGLS (conjugate gradients on the normal equations), the weighted
minimum-norm correction ``d`` (HU) with ``A d = r``::

    d = W A^T (A W A^T)^-1 r        (A: the projector, HU -> line integrals; W: voxel weights)

so each ray's residual is spread along the ray in proportion to ``W``. With ``W = 1`` it would be
smeared evenly and draw streaks; :func:`edge_weights` puts it where a smooth estimate errs most,
at the edges of a reference volume (the start network's, or the fit's own). Stopping early is
the regularisation, after a few iterations or once the residual is down to the images' noise
(Morozov's discrepancy principle): later iterations fit noise and the mismatch between a real
X-ray and the discrete projector.

Its place: on noise-free line integrals of the projector's own grid the step is an orthogonal
projection onto the volumes that explain the X-rays, and so cannot move away from the truth;
on finer-grid X-rays, with quantum noise or with a vendor's processing it can, which is why it is
measured under each of these (``bench/data_consistency.py``) and skipped where its model does not
hold (:func:`consistency_skip_reason`: a monotone intensity map or masked pixels, or a
re-projection that explains an X-ray with NCC below :data:`MIN_VIEW_NCC`, units that are not line
integrals; refined poses).

X-rays of a whole torso hold anatomy outside the cube, which the fit models as a smooth additive
background per view. There the residual is taken against the re-projection plus that background,
over the pixels whose rays cross the cube (the data term's footprint), and high-passed
(:func:`highpass`, a Gaussian of ``highpass_px`` pixels removed): its slow part is the
background's misfit, not the cube's, while the edges left are mostly the vertebra's, whose error
the X-ray fit leaves largest (``docs/fit.md``, "Data consistency through a whole torso"). The gate is
then :data:`MIN_VIEW_NCC_BACKGROUND` over the footprint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from ..geometry import View
from ..projector import backproject, project
from ..units import MU_WATER, hu_to_mu

#: mu per HU above air (1/mm): the projector is linear in HU above -1000.
MU_PER_HU = MU_WATER / 1000.0
#: Morozov's discrepancy factor: stop once the residual is within this many noise stds.
DISCREPANCY_TAU = 1.5
#: The step runs only when every view's re-projection explains the X-ray this well (NCC over all
#: pixels): line integrals, noisy or not, give >= 0.996 with the start network's volume (and
#: about 0.99 with the fit's on the hardest held-out phantom), processed radiographs <= 0.91 even
#: at a tenth of the clinical presets' strength (phantoms 100-103, docs/fit.md "Data consistency").
MIN_VIEW_NCC = 0.95
#: ... and with a fitted background (whole-torso X-rays), the same NCC of X-ray and re-projection
#: plus background over the footprint: ideal whole-torso DRRs give 0.89-0.99 with the fit's volume
#: (phantoms 100-109); it guards against fits that explain little, not against processed images
#: (the clinical presets give 0.89-0.99 there too).
MIN_VIEW_NCC_BACKGROUND = 0.85


@dataclass
class Consistency:
    """What the step did.

    Attributes:
        iterations: CGLS iterations run.
        rms_hu: RMS of the correction over the volume (HU).
        residual_before, residual_after: RMS of the line-integral residual over all pixels.
        noise_sigma: the images' estimated noise in the same units (:func:`noise_sigma`).
        view_ncc: per view, NCC of the X-ray and the volume's re-projection before the step,
            over all pixels (the gate: :data:`MIN_VIEW_NCC`).
        skipped: why the step did nothing, or ``None``.
    """

    iterations: int
    rms_hu: float
    residual_before: float
    residual_after: float
    noise_sigma: float
    view_ncc: list[float]
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def consistency_skip_reason(cfg) -> str | None:
    """Why the step cannot run with these fit settings (a :class:`~xfit.fitting.FitConfig`), or
    ``None``: its model needs the X-rays to be line integrals of the cube (plus, with a fitted
    background, a smooth field), up to gain and offset, on the views as given
    (:func:`consistency_step` also checks the X-rays themselves)."""
    if cfg.intensity_map != "affine" or cfg.mask_saturated:
        return "a processed radiograph (monotone intensity map or masked pixels): not line integrals"
    if cfg.refine_pose or cfg.transform:
        return "refined poses or a moved volume"
    return None


def _mean_one(w: np.ndarray) -> np.ndarray:
    """``w`` scaled to mean 1 (all ones where ``w`` is zero everywhere)."""
    mean = float(w.mean())
    return w / mean if mean > 0 else np.ones_like(w)


def edge_weights(
    reference_hu: np.ndarray, blur_vox: float = 1.0, spread_vox: float = 1.5, floor: float = 0.05
) -> np.ndarray:
    """Voxel weights ``[R, R, R]`` (mean 1 + ``floor``): the squared gradient magnitude of the
    reference volume (HU) smoothed by ``blur_vox``, spread by a Gaussian of ``spread_vox`` voxels.
    ``floor`` keeps every voxel correctable."""
    v = ndimage.gaussian_filter(np.asarray(reference_hu, np.float64), blur_vox, mode="nearest")
    g = sum(ndimage.sobel(v, axis=a, mode="nearest") ** 2 for a in range(3))
    return _mean_one(ndimage.gaussian_filter(g, spread_vox, mode="nearest")) + floor


def gap_weights(fit_hu: np.ndarray, reference_hu: np.ndarray, spread_vox: float = 1.5) -> np.ndarray:
    """Voxel weights ``[R, R, R]`` (mean 1) where two estimates disagree: the squared difference of
    the fit's and the reference's HU, smoothed by ``spread_vox`` voxels. A proxy for where either
    errs that needs no truth (all ones where they agree everywhere)."""
    return _mean_one(
        ndimage.gaussian_filter((np.asarray(fit_hu, np.float64) - reference_hu) ** 2, spread_vox, mode="nearest")
    )


def step_weights(kind: str, fit_hu: np.ndarray, reference_hu: np.ndarray | None) -> tuple[np.ndarray | None, str]:
    """The step's voxel weights ``W`` ``[R, R, R]`` of a ``consistency_weights`` setting, and the
    kind actually used: ``flat`` (``None``: ``W = 1``), ``edges`` (:func:`edge_weights` of the
    reference, the start network's volume, or of the fit's own volume without one) or
    ``edges+gap`` (plus :func:`gap_weights` of the fit and the reference; without a reference
    there is no gap, and the kind used is ``edges`` of the fit)."""
    if kind == "flat":
        return None, "flat"
    w = edge_weights(fit_hu if reference_hu is None else reference_hu)
    if kind == "edges+gap" and reference_hu is not None:
        return w + gap_weights(fit_hu, reference_hu), "edges+gap"
    return w, "edges"


def _forward(d_hu: Tensor, affine: np.ndarray, views: Sequence[View]) -> list[Tensor]:
    """Line integrals ``[R_v, C_v]`` per view of an HU offset volume ``[R, R, R]`` (linear)."""
    mu = MU_PER_HU * d_hu[None, None]
    return [project(mu, affine, [v])[0, 0] for v in views]


def _adjoint(r: Sequence[Tensor], affine: np.ndarray, views: Sequence[View], shape: torch.Size) -> Tensor:
    """``A^T r``: the back-projection ``[R, R, R]`` (HU units) of per-view residuals ``[R_v, C_v]``
    (:func:`~xfit.projector.backproject`, the projector's exact adjoint)."""
    out = torch.zeros(shape)
    for ri, v in zip(r, views):
        out += backproject(ri[None, None], affine, [v], tuple(shape))[0, 0]
    return MU_PER_HU * out


def noise_sigma(image: np.ndarray) -> float:
    """Robust estimate of the white-noise std of an image ``[R, C]`` (its units): the median
    absolute deviation of its second differences along rows and columns, divided by
    ``sqrt(6)`` (the std of ``x[i-1] - 2 x[i] + x[i+1]`` for white noise of std 1). Smooth
    structure barely enters it; on noise-free DRRs it gives a small floor. Correlated noise
    (detector blur) is underestimated."""
    im = np.asarray(image, np.float64)
    if min(im.shape) < 3:
        return 0.0
    d = np.concatenate([(im[:, 2:] - 2 * im[:, 1:-1] + im[:, :-2]).ravel(), (im[2:] - 2 * im[1:-1] + im[:-2]).ravel()])
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(6.0))


def highpass(r: np.ndarray, mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """``r`` ``[R_v, C_v]`` minus its local mean over ``mask`` (bool ``[R_v, C_v]``): a Gaussian of
    ``sigma_px`` pixels, normalised by the mask's own smoothing so the mask's border adds no edge;
    zero outside the mask."""
    m = np.asarray(mask, np.float64)
    num = ndimage.gaussian_filter(np.asarray(r, np.float64) * m, sigma_px, mode="nearest")
    den = ndimage.gaussian_filter(m, sigma_px, mode="nearest")
    return (r - num / np.maximum(den, 1e-6)) * m


def residuals(
    hu: Tensor,
    images: Sequence[np.ndarray],
    affine: np.ndarray,
    views: Sequence[View],
    backgrounds: Sequence[np.ndarray] | None = None,
    masks: Sequence[np.ndarray] | None = None,
    highpass_px: float = 0.0,
) -> tuple[list[Tensor], list[float], list[float]]:
    """Per view ``[R_v, C_v]``: the X-ray mapped onto the re-projection's units minus the
    re-projection of ``hu``; the gain ``c`` of that map; and the NCC of image and re-projection
    over all pixels. The map ``c * image + b`` is the least-squares fit of the re-projection on
    the image, which is unbiased when the volume's error is uncorrelated with the image (the fit
    of the image on the re-projection would shrink ``c``).

    With ``backgrounds`` (per view ``[R_v, C_v]``, line-integral units) the re-projection is taken
    with its background added; with ``masks`` (per view bool ``[R_v, C_v]``) the map and the NCC
    use those pixels alone and the residual is zero elsewhere; ``highpass_px`` > 0 then removes the
    residual's slow part (:func:`highpass`; needs ``masks``)."""
    with torch.no_grad():
        mu = hu_to_mu(hu)[None, None]
        out, gains, nccs = [], [], []
        for i, (im, v) in enumerate(zip(images, views)):
            p = project(mu, affine, [v])[0, 0].double()
            if backgrounds is not None:
                p = p + torch.as_tensor(np.asarray(backgrounds[i]), dtype=torch.float64)
            y = torch.as_tensor(np.asarray(im), dtype=torch.float64)
            m = None if masks is None else torch.as_tensor(np.asarray(masks[i], bool))
            on = (lambda t: t) if m is None else (lambda t, m=m: t[m])
            ym, pm = on(y).mean(), on(p).mean()
            yc = y - ym
            var = float((on(yc) * on(yc)).sum())
            pc = p - pm
            cov = float((on(yc) * on(pc)).sum())
            c = cov / var if var > 0 else 0.0
            r = c * yc + pm - p
            if m is not None:
                r = r * m
                if highpass_px > 0:
                    r = torch.from_numpy(highpass(r.numpy(), m.numpy(), highpass_px))
            out.append(r.float())
            gains.append(c)
            nccs.append(cov / max(float(np.sqrt(var * float((on(pc) * on(pc)).sum()))), 1e-30))
    return out, gains, nccs


def consistency_step(
    hu: np.ndarray,
    images: Sequence[np.ndarray],
    views: Sequence[View],
    affine: np.ndarray,
    iterations: int,
    weights: np.ndarray | None = None,
    tau: float | None = DISCREPANCY_TAU,
    min_view_ncc: float | None = None,
    backgrounds: Sequence[np.ndarray] | None = None,
    masks: Sequence[np.ndarray] | None = None,
    highpass_px: float = 0.0,
) -> tuple[np.ndarray, Consistency]:
    """The corrected volume ``hu + d`` (``[R, R, R]`` HU) after at most ``iterations`` of
    weighted CGLS.

    Args:
        hu: ``[R, R, R]`` HU on the grid of ``affine``.
        images: the X-rays ``[R_v, C_v]`` (any gain and offset), one per view.
        views: their views.
        affine: ``[4, 4]`` voxel index -> world mm of ``hu``.
        iterations: most CGLS iterations (each: one forward and one back-projection per view).
        weights: ``[R, R, R]`` positive voxel weights ``W`` (``None``: flat).
        tau: Morozov's discrepancy principle: stop once the RMS residual is within ``tau`` times
            the images' noise (:func:`noise_sigma`, in the re-projection's units); ``None``:
            run every iteration. With quantum noise of 1000 photons per pixel it stops before
            the first, and the volume is returned unchanged.
        min_view_ncc: the gate: the step does nothing when a view's re-projection explains its
            X-ray with an NCC (all pixels) below this (``None``: :data:`MIN_VIEW_NCC`, or
            :data:`MIN_VIEW_NCC_BACKGROUND` with ``backgrounds``; ``-inf``: no gate).
        backgrounds: per view ``[R_v, C_v]`` a fitted background (line-integral units) that the
            X-ray holds besides the cube (whole-torso X-rays; :func:`residuals`).
        masks: per view bool ``[R_v, C_v]``: the pixels the step explains (the rays that cross
            the cube); the others are left out of the residual, the gate and the noise floor.
        highpass_px: with ``masks``, remove the residual's slow part (:func:`highpass`), which
            is the background's misfit rather than the cube's.
    Returns:
        ``(hu + d, info)``; float32.
    """
    x0 = torch.from_numpy(np.ascontiguousarray(hu, np.float32))
    sw = torch.ones_like(x0) if weights is None else torch.from_numpy(np.sqrt(np.asarray(weights, np.float32)))
    r, gains, nccs = residuals(x0, images, affine, views, backgrounds, masks, highpass_px)
    sizes = [ri.numel() for ri in r] if masks is None else [int(np.count_nonzero(m)) for m in masks]
    count = max(sum(sizes), 1)
    norm = lambda rs: float(torch.sqrt(sum((ri * ri).sum() for ri in rs) / count))  # noqa: E731
    before = norm(r)
    default_gate = MIN_VIEW_NCC if backgrounds is None else MIN_VIEW_NCC_BACKGROUND
    gate = default_gate if min_view_ncc is None else min_view_ncc
    if min(nccs) < gate:
        what = "the volume's re-projection" if backgrounds is None else "the re-projection plus background"
        why = (
            f"{what} explains an X-ray with NCC {min(nccs):.3f} < {gate}: not line integrals (a processed radiograph?)"
        )
        return x0.numpy(), Consistency(0, 0.0, before, before, 0.0, nccs, why)
    sigma = float(
        np.sqrt(sum((c * noise_sigma(im)) ** 2 * n for c, im, n in zip(gains, map(np.asarray, images), sizes)) / count)
    )
    floor = 0.0 if tau is None else tau * sigma
    keep = None if masks is None else [torch.from_numpy(np.asarray(m, np.float32)) for m in masks]
    e = torch.zeros_like(x0)  # d = sqrt(W) e: CGLS on B = A sqrt(W) gives the W-weighted min norm
    s = _adjoint(r, affine, views, x0.shape) * sw
    p, gamma = s.clone(), float((s * s).sum())
    done, residual = 0, before
    while done < iterations and residual > floor and gamma > 0:
        with torch.no_grad():
            q = _forward(p * sw, affine, views)
        if keep is not None:
            q = [qi * ki for qi, ki in zip(q, keep)]
        qq = float(sum((qi * qi).sum() for qi in q))
        if qq <= 0:
            break
        alpha = gamma / qq
        e = e + alpha * p
        r = [ri - alpha * qi for ri, qi in zip(r, q)]
        residual = norm(r)
        done += 1
        if done < iterations and residual > floor:
            s = _adjoint(r, affine, views, x0.shape) * sw
            g2 = float((s * s).sum())
            p, gamma = s + (g2 / gamma) * p, g2
    d = e * sw
    info = Consistency(done, float(d.square().mean().sqrt()), before, residual, sigma, nccs)
    return (x0 + d).numpy(), info


__all__ = [
    "DISCREPANCY_TAU",
    "MIN_VIEW_NCC",
    "MIN_VIEW_NCC_BACKGROUND",
    "MU_PER_HU",
    "Consistency",
    "consistency_skip_reason",
    "consistency_step",
    "edge_weights",
    "gap_weights",
    "highpass",
    "noise_sigma",
    "residuals",
    "step_weights",
]
