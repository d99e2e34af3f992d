"""Image and volume agreement metrics: PSNR, 3D SSIM, MAE, Dice, HD95, NCC.

Every function accepts NumPy arrays or torch tensors (any device; they are read, never
modified, and no gradient flows) and returns a Python ``float``. Computation is in float64.

Conventions:

* ``psnr`` / ``ssim3d`` need the ``data_range`` (max - min of the intensity scale, e.g. 2500 HU
  for the window (-1000, 1500)); :func:`volume_metrics` clips both volumes to that window first.
* ``ssim3d`` is true 3D SSIM (Wang et al. 2004 with a separable 3D Gaussian window, size 7,
  sigma 1.5, K1 = 0.01, K2 = 0.03), averaged over the "valid" window positions (no padding).
* Surface distances (``hausdorff`` / ``hd95``) use the boundary voxels of each mask (voxels of the
  mask with a 6-neighbour outside it; the grid border counts as outside) and Euclidean distance
  transforms with the voxel ``spacing_mm``. HD95 is the 95th percentile of the pooled directed
  distances A->B and B->A (medpy's definition).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import InputError

ArrayLike = np.ndarray | Tensor

#: SSIM constants (Wang et al. 2004).
SSIM_K1, SSIM_K2 = 0.01, 0.03


# ----------------------------------------------------------------------------- helpers


def _np(x: ArrayLike, dtype=np.float64) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check_pair(a: np.ndarray, b: np.ndarray, name: str, ndim: int | None = None) -> None:
    """Raise InputError unless ``a`` and ``b`` share a shape (of ``ndim`` dims when given)."""
    if a.shape != b.shape:
        raise InputError(f"{name}: shapes differ: {list(a.shape)} vs {list(b.shape)}")
    if ndim is not None and a.ndim != ndim:
        raise InputError(f"{name}: expected {ndim}D arrays, got shape {list(a.shape)}")
    if a.size == 0:
        raise InputError(f"{name}: empty arrays")


def _check_range(data_range: float, name: str) -> float:
    data_range = float(data_range)
    if not (math.isfinite(data_range) and data_range > 0):
        raise InputError(f"{name}: data_range must be a positive number, got {data_range}")
    return data_range


# ----------------------------------------------------------------------------- intensity metrics


def psnr(pred: ArrayLike, target: ArrayLike, data_range: float) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB.

    Args:
        pred, target: same-shape arrays (any dims).
        data_range: intensity range (e.g. 2500 for HU in (-1000, 1500)).

    Returns:
        PSNR in dB; ``inf`` when the arrays are identical.
    """
    p, t = _np(pred), _np(target)
    _check_pair(p, t, "psnr")
    data_range = _check_range(data_range, "psnr")
    mse = float(np.mean((p - t) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def mae(pred: ArrayLike, target: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Mean absolute error, optionally over the voxels where ``mask`` is true.

    Returns:
        MAE in the input's unit (HU for CT); ``nan`` for an empty mask.
    """
    p, t = _np(pred), _np(target)
    _check_pair(p, t, "mae")
    err = np.abs(p - t)
    if mask is None:
        return float(err.mean())
    m = _np(mask, bool)
    if m.shape != p.shape:
        raise InputError(f"mae: mask shape {list(m.shape)} differs from {list(p.shape)}")
    return float(err[m].mean()) if m.any() else math.nan


def gaussian_window(size: int = 7, sigma: float = 1.5) -> Tensor:
    """Normalised 1D Gaussian ``[size]`` float64 (the separable SSIM window)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur3d(x: Tensor, g: Tensor) -> Tensor:
    """Valid separable filtering of ``[N, 1, I, J, K]`` with the 1D kernel ``g`` on each axis."""
    k = g.numel()
    x = torch.nn.functional.conv3d(x, g.view(1, 1, k, 1, 1))
    x = torch.nn.functional.conv3d(x, g.view(1, 1, 1, k, 1))
    return torch.nn.functional.conv3d(x, g.view(1, 1, 1, 1, k))


def ssim3d(pred: ArrayLike, target: ArrayLike, data_range: float, *, win: int = 7,
           sigma: float = 1.5) -> float:
    """Structural similarity of two 3D volumes with a 3D Gaussian window.

    Args:
        pred, target: ``[I, J, K]`` volumes.
        data_range: intensity range of the volumes.
        win: odd window size (shrunk to the smallest odd size that fits a smaller volume).
        sigma: Gaussian standard deviation in voxels.

    Returns:
        Mean SSIM over the valid window positions, in [-1, 1]; 1 for identical volumes.
    """
    p, t = _np(pred), _np(target)
    _check_pair(p, t, "ssim3d", ndim=3)
    data_range = _check_range(data_range, "ssim3d")
    if win < 1 or win % 2 == 0:
        raise InputError(f"ssim3d: win must be a positive odd integer, got {win}")
    win = min(win, *[s if s % 2 else s - 1 for s in p.shape])
    g = gaussian_window(win, sigma)
    x = torch.from_numpy(np.stack([p, t, p * p, t * t, p * t]))[:, None]
    mu_p, mu_t, e_pp, e_tt, e_pt = _blur3d(x, g)[:, 0]
    var_p, var_t = e_pp - mu_p**2, e_tt - mu_t**2
    cov = e_pt - mu_p * mu_t
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return float(s.mean())


def ncc(a: ArrayLike, b: ArrayLike) -> float:
    """Normalised cross-correlation (Pearson) of two same-shape arrays (2D images or any).

    Returns:
        NCC in [-1, 1]; ``nan`` when either array is constant.
    """
    x, y = _np(a), _np(b)
    _check_pair(x, y, "ncc")
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / den if den > 0 else math.nan


# ----------------------------------------------------------------------------- mask metrics


def dice(a: ArrayLike, b: ArrayLike) -> float:
    """Dice overlap ``2|A & B| / (|A| + |B|)`` of two boolean masks (nonzero = true).

    Returns:
        Dice in [0, 1]; 1.0 when both masks are empty.
    """
    x, y = _np(a, bool), _np(b, bool)
    _check_pair(x, y, "dice")
    total = int(x.sum()) + int(y.sum())
    return 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total


def _spacing3(spacing_mm: float | Sequence[float], ndim: int) -> np.ndarray:
    s = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if s.size == 1:
        s = np.repeat(s, ndim)
    if s.size != ndim or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(f"spacing_mm must be one positive number or {ndim}, got {spacing_mm!r}")
    return s


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean mask: in the mask with a 6-neighbour outside (or off-grid)."""
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(a: ArrayLike, b: ArrayLike, spacing_mm: float | Sequence[float]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: from each boundary voxel of A to B's boundary, and back.

    Returns:
        ``(d_ab, d_ba)`` 1D arrays (empty when the corresponding mask is empty).
    """
    from scipy import ndimage

    x, y = _np(a, bool), _np(b, bool)
    _check_pair(x, y, "surface_distances")
    s = _spacing3(spacing_mm, x.ndim)
    sx, sy = surface(x), surface(y)
    if not sx.any() or not sy.any():
        return np.zeros(0), np.zeros(0)
    d_to_y = ndimage.distance_transform_edt(~sy, sampling=s)
    d_to_x = ndimage.distance_transform_edt(~sx, sampling=s)
    return d_to_y[sx], d_to_x[sy]


def hausdorff(a: ArrayLike, b: ArrayLike, spacing_mm: float | Sequence[float],
              percentile: float = 100.0) -> float:
    """Symmetric (percentile) Hausdorff distance between two masks' surfaces, in mm.

    Args:
        a, b: same-shape boolean masks.
        spacing_mm: voxel size, one number or one per axis.
        percentile: 100 = classic Hausdorff; 95 = HD95 (pooled A->B and B->A distances).

    Returns:
        Distance in mm; 0.0 when both masks are empty, ``inf`` when exactly one is empty.
    """
    x, y = _np(a, bool), _np(b, bool)
    if not 0 <= percentile <= 100:
        raise InputError(f"percentile must be in [0, 100], got {percentile}")
    if not x.any() and not y.any():
        _check_pair(x, y, "hausdorff")
        return 0.0
    d_ab, d_ba = surface_distances(x, y, spacing_mm)
    if d_ab.size == 0:
        return math.inf
    return float(np.percentile(np.concatenate([d_ab, d_ba]), percentile))


def hd95(a: ArrayLike, b: ArrayLike, spacing_mm: float | Sequence[float]) -> float:
    """95th-percentile symmetric surface distance in mm (see :func:`hausdorff`).

    Returns:
        HD95 in mm; 0.0 when both masks are empty, ``inf`` when exactly one is empty.
    """
    return hausdorff(a, b, spacing_mm, percentile=95.0)


# ----------------------------------------------------------------------------- all at once


def volume_metrics(
    pred_hu: ArrayLike,
    gt_hu: ArrayLike,
    pred_mask: ArrayLike | None = None,
    gt_mask: ArrayLike | None = None,
    spacing_mm: float | Sequence[float] = 1.0,
    hu_range: tuple[float, float] = (-1000.0, 1500.0),
) -> dict[str, float]:
    """Standard reconstruction metrics of a CT volume against the ground truth.

    Both volumes are clipped to ``hu_range`` first; PSNR and SSIM use its width as data range.

    Args:
        pred_hu, gt_hu: ``[I, J, K]`` volumes in HU on the same grid.
        pred_mask, gt_mask: optional ``[I, J, K]`` masks (both or neither) for Dice/HD95.
        spacing_mm: voxel size (mm) for HD95.
        hu_range: (low, high) HU window.

    Returns:
        ``{"psnr_db", "ssim", "mae_hu"}`` plus ``"mae_mask_hu"``, ``"dice"`` and ``"hd95_mm"``
        when masks are given (``mae_mask_hu`` is over the ground-truth mask).
    """
    lo, hi = float(hu_range[0]), float(hu_range[1])
    if not lo < hi:
        raise InputError(f"hu_range must be (low, high) with low < high, got {hu_range}")
    p, t = np.clip(_np(pred_hu), lo, hi), np.clip(_np(gt_hu), lo, hi)
    _check_pair(p, t, "volume_metrics", ndim=3)
    out = {"psnr_db": psnr(p, t, hi - lo), "ssim": ssim3d(p, t, hi - lo), "mae_hu": mae(p, t)}
    if (pred_mask is None) != (gt_mask is None):
        raise InputError("volume_metrics: give both pred_mask and gt_mask, or neither")
    if pred_mask is not None:
        pm, gm = _np(pred_mask, bool), _np(gt_mask, bool)
        out["mae_mask_hu"] = mae(p, t, gm)
        out["dice"] = dice(pm, gm)
        out["hd95_mm"] = hd95(pm, gm, spacing_mm)
    return out
