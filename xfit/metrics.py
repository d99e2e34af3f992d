"""Image and volume agreement metrics: PSNR, 3D SSIM, MAE, NCC, Dice, HD95, ASD, EAR's frequency
distance and LPIPS on slices.

Every function accepts NumPy arrays or torch tensors (any device; they are read, never
modified, and no gradient flows) and returns a Python ``float`` (:func:`lpips_slices`: a
``(value, method)`` pair). Computation is in float64 (the LPIPS network in float32).

Conventions:

* ``psnr`` / ``ssim3d`` need the ``data_range`` (max - min of the intensity scale, e.g. 2500 HU
  for the window (-1000, 1500)); :func:`volume_metrics` clips both volumes to that window first.
* ``ssim3d`` is true 3D SSIM (Wang et al. 2004 with a separable 3D Gaussian window, size 7,
  sigma 1.5, K1 = 0.01, K2 = 0.03), averaged over the "valid" window positions (no padding).
  With ``win=11`` it equals ``skimage.metrics.structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False)`` (which truncates its Gaussian at 3.5 sigma = 11 taps
  and averages over the same interior); the default 7 taps truncate at 2 sigma.
* Surface distances (``hausdorff`` / ``hd95``) use the boundary voxels of each mask (voxels of the
  mask with a 6-neighbour outside it; the grid border counts as outside) and Euclidean distance
  transforms with the voxel ``spacing_mm``. HD95 is the 95th percentile of the pooled directed
  distances A->B and B->A (medpy's definition); ASD (:func:`asd`) is their mean (Heimann et al.
  2009; medpy's ``assd`` instead averages the two directed means).
* :func:`frequency_distance` is EAR's training loss on one volume; :func:`lpips_slices` is LPIPS
  (AlexNet) averaged over 2D slices, or a documented SSIM substitute when no weights are present.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .errors import InputError
from .units import HU_WINDOW

ArrayLike = np.ndarray | Tensor

#: SSIM constants (Wang et al. 2004).
SSIM_K1, SSIM_K2 = 0.01, 0.03
#: The constant EAR's frequency distance adds inside its log10.
FREQ_EPS = 1e-8


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


def _check_axis(axis: int, name: str) -> int:
    if not isinstance(axis, (int, np.integer)) or not -3 <= axis < 3:
        raise InputError(f"{name}: axis must be 0, 1 or 2 (or -3..-1), got {axis!r}")
    return int(axis) % 3


# ----------------------------------------------------------------------------- intensity metrics


def psnr(pred: ArrayLike, target: ArrayLike, data_range: float) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB.

    :func:`volume_metrics` clips both volumes to the HU window (default (-1000, 1500)) and passes
    the window's width (2500 HU) as ``data_range``, so a PSNR there is relative to that window,
    not to the volumes' own min/max (as ``skimage`` assumes when ``data_range`` is not given).

    Args:
        pred, target: same-shape arrays (any dims), in the same unit as ``data_range`` (HU).
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

    Args:
        pred, target: same-shape arrays (any dims); mask: optional same-shape boolean array.

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


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Valid separable filtering of ``[N, 1, *spatial]`` (2 or 3 spatial dims) with ``g`` per axis."""
    k, nd = g.numel(), x.ndim - 2
    conv = torch.nn.functional.conv3d if nd == 3 else torch.nn.functional.conv2d
    for axis in range(nd):
        shape = [1, 1] + [k if a == axis else 1 for a in range(nd)]
        x = conv(x, g.view(shape))
    return x


def _blur3d(x: Tensor, g: Tensor) -> Tensor:
    """Valid separable filtering of ``[N, 1, I, J, K]`` with the 1D kernel ``g`` on each axis."""
    return _blur(x, g)


def _fit_win(win: int, shape: Sequence[int], name: str) -> int:
    """Check ``win`` is odd and shrink it to the smallest odd size that fits ``shape``."""
    if win < 1 or win % 2 == 0:
        raise InputError(f"{name}: win must be a positive odd integer, got {win}")
    return min(win, *[s if s % 2 else s - 1 for s in shape])


def _ssim_map(p: np.ndarray, t: np.ndarray, data_range: float, win: int, sigma: float) -> Tensor:
    """SSIM at every valid window position of ``[N, *spatial]`` stacks -> ``[N, *valid]``."""
    g = gaussian_window(win, sigma)
    x = torch.from_numpy(np.stack([p, t, p * p, t * t, p * t], 1).reshape(-1, 1, *p.shape[1:]))
    m = _blur(x, g).view(p.shape[0], 5, *[s - win + 1 for s in p.shape[1:]])
    mu_p, mu_t, e_pp, e_tt, e_pt = m.unbind(1)
    var_p, var_t = e_pp - mu_p**2, e_tt - mu_t**2
    cov = e_pt - mu_p * mu_t
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))


def ssim3d(pred: ArrayLike, target: ArrayLike, data_range: float, *, win: int = 7, sigma: float = 1.5) -> float:
    """Structural similarity of two 3D volumes with a 3D Gaussian window.

    Borders: the mean is over the window positions that fit inside the volume (no padding), i.e.
    ``(win - 1) / 2`` voxels are dropped on each side, as ``skimage`` crops after filtering. With
    ``win=11, sigma=1.5`` the result equals ``skimage.metrics.structural_similarity(p, t,
    data_range=..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``; the default
    ``win=7`` is the same Gaussian truncated at 2 sigma (renormalised).

    Args:
        pred, target: ``[I, J, K]`` volumes.
        data_range: intensity range of the volumes (same unit, e.g. HU).
        win: odd window size (shrunk to the smallest odd size that fits a smaller volume).
        sigma: Gaussian standard deviation in voxels.

    Returns:
        Mean SSIM over the valid window positions, in [-1, 1]; 1 for identical volumes.
    """
    p, t = _np(pred), _np(target)
    _check_pair(p, t, "ssim3d", ndim=3)
    data_range = _check_range(data_range, "ssim3d")
    win = _fit_win(win, p.shape, "ssim3d")
    return float(_ssim_map(p[None], t[None], data_range, win, sigma).mean())


def ssim2d_slices(
    pred: ArrayLike, target: ArrayLike, data_range: float, *, axis: int = 2, win: int = 7, sigma: float = 1.5
) -> float:
    """Mean 2D SSIM of the slices of two volumes taken along ``axis`` (same window as ssim3d).

    Args:
        pred, target: ``[I, J, K]`` volumes; axis: the axis the slices are normal to.
        data_range: intensity range; win, sigma: as :func:`ssim3d` (pixels).

    Returns:
        Mean over slices of each slice's mean SSIM (valid positions), in [-1, 1].
    """
    p, t = _np(pred), _np(target)
    _check_pair(p, t, "ssim2d_slices", ndim=3)
    data_range = _check_range(data_range, "ssim2d_slices")
    axis = _check_axis(axis, "ssim2d_slices")
    p, t = np.moveaxis(p, axis, 0), np.moveaxis(t, axis, 0)
    win = _fit_win(win, p.shape[1:], "ssim2d_slices")
    return float(_ssim_map(p, t, data_range, win, sigma).mean())


def frequency_distance(pred: ArrayLike, target: ArrayLike) -> float:
    """EAR's frequency distance ``log10(D_real + D_imag + 1e-8)`` of two volumes (no unit: log10).

    ``F = fftn(target - pred, norm="ortho")`` over the three axes and ``D_real`` / ``D_imag`` are
    the RMS of its real / imaginary parts (``||.||_2 / sqrt(N)``). This equals the training loss
    :func:`xfit.baselines.ear.frequency_distance` for one ``[1, 1, I, J, K]`` sample (computed
    here in float64, there in float32), including its ``1e-8``: identical volumes give -8. The
    value depends on the intensity scale (x10 adds 1); :func:`volume_metrics` uses the unit
    intensities of the HU window ([-1, 1]) as the networks do.

    Args:
        pred, target: ``[I, J, K]`` volumes.

    Returns:
        The frequency distance (log10 of the input's unit).
    """
    p, t = _np(pred), _np(target)
    _check_pair(p, t, "frequency_distance", ndim=3)
    f = np.fft.fftn(t - p, norm="ortho")
    d_real = math.sqrt(float(np.mean(f.real**2)))
    d_imag = math.sqrt(float(np.mean(f.imag**2)))
    return math.log10(d_real + d_imag + FREQ_EPS)


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


def surface_distances(a: ArrayLike, b: ArrayLike, spacing_mm: float | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
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


def _pooled_distances(a: ArrayLike, b: ArrayLike, spacing_mm: float | Sequence[float], name: str) -> np.ndarray | float:
    """The pooled A->B and B->A surface distances (mm), or the answer itself when a mask is
    empty: 0.0 for both, ``inf`` for one."""
    x, y = _np(a, bool), _np(b, bool)
    if not x.any() and not y.any():
        _check_pair(x, y, name)
        return 0.0
    d_ab, d_ba = surface_distances(x, y, spacing_mm)
    if d_ab.size == 0:
        return math.inf
    return np.concatenate([d_ab, d_ba])


def hausdorff(a: ArrayLike, b: ArrayLike, spacing_mm: float | Sequence[float], percentile: float = 100.0) -> float:
    """Symmetric (percentile) Hausdorff distance between two masks' surfaces, in mm.

    Args:
        a, b: same-shape boolean masks.
        spacing_mm: voxel size, one number or one per axis.
        percentile: 100 = classic Hausdorff; 95 = HD95 (pooled A->B and B->A distances).

    Returns:
        Distance in mm; 0.0 when both masks are empty, ``inf`` when exactly one is empty.
    """
    if not 0 <= percentile <= 100:
        raise InputError(f"percentile must be in [0, 100], got {percentile}")
    d = _pooled_distances(a, b, spacing_mm, "hausdorff")
    return d if isinstance(d, float) else float(np.percentile(d, percentile))


def hd95(a: ArrayLike, b: ArrayLike, spacing_mm: float | Sequence[float]) -> float:
    """95th-percentile symmetric surface distance in mm (see :func:`hausdorff`).

    Returns:
        HD95 in mm; 0.0 when both masks are empty, ``inf`` when exactly one is empty.
    """
    return hausdorff(a, b, spacing_mm, percentile=95.0)


def asd(a: ArrayLike, b: ArrayLike, spacing_mm: float | Sequence[float]) -> float:
    """Average symmetric surface distance in mm: the mean of the pooled A->B and B->A distances.

    ``(sum d_ab + sum d_ba) / (|S_A| + |S_B|)`` (Heimann et al. 2009), with the boundary voxels and
    distances of :func:`surface_distances`.

    Args:
        a, b: same-shape boolean masks; spacing_mm: voxel size, one number or one per axis (mm).

    Returns:
        ASD in mm; 0.0 when both masks are empty, ``inf`` when exactly one is empty.
    """
    d = _pooled_distances(a, b, spacing_mm, "asd")
    return d if isinstance(d, float) else float(d.mean())


# ----------------------------------------------------------------------------- LPIPS on slices

#: Environment variable naming the LPIPS safetensors file when ``weights`` is not given.
LPIPS_WEIGHTS_ENV = "XFIT_LPIPS_WEIGHTS"
#: LPIPS v0.1 input scaling (``(x - shift) / scale`` per RGB channel, x in [-1, 1]).
LPIPS_SHIFT, LPIPS_SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)
#: AlexNet conv layers ``(tensor prefix, out channels, kernel, stride, padding, max-pool first)``
#: as in ``torchvision.models.alexnet().features`` (indices 0, 3, 6, 8, 10), named as in the
#: ``lpips`` package's ``LPIPS(net="alex").state_dict()``.
_ALEX = (
    ("net.slice1.0", 64, 11, 4, 2, False),
    ("net.slice2.3", 192, 5, 1, 2, True),
    ("net.slice3.6", 384, 3, 1, 1, True),
    ("net.slice4.8", 256, 3, 1, 1, False),
    ("net.slice5.10", 256, 3, 1, 1, False),
)
#: Smallest slice side the AlexNet trunk accepts.
LPIPS_MIN_SIZE = 31
_warned_lpips_fallback = False


class LPIPSFallbackWarning(UserWarning):
    """No LPIPS weights were found, so :func:`lpips_slices` used its SSIM substitute."""


class PerceptualScore(NamedTuple):
    """Result of :func:`lpips_slices`: ``value`` (lower = more alike) and the ``method`` used:
    ``"lpips-alex"`` (LPIPS v0.1, AlexNet) or ``"1-ssim2d"`` (the substitute)."""

    value: float
    method: str


def lpips_tensor_shapes() -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors an LPIPS weights file must hold (others are ignored).

    ``net.sliceN.i.weight`` / ``.bias``: AlexNet convs (torchvision ``features.i``);
    ``linL.model.1.weight`` ``[1, C, 1, 1]``: the five LPIPS linear heads. These are the names of
    ``lpips.LPIPS(net="alex").state_dict()``, so ``safetensors.torch.save_file(that, path)``
    makes a valid file.
    """
    shapes, cin = {}, 3
    for i, (name, cout, k, _, _, _) in enumerate(_ALEX):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)
        shapes[f"lin{i}.model.1.weight"] = (1, cout, 1, 1)
        cin = cout
    return shapes


def load_lpips_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read and check an LPIPS AlexNet safetensors file (see :func:`lpips_tensor_shapes`).

    Returns:
        The required tensors as float32 CPU tensors.

    Raises:
        InputError: missing or unreadable file, missing tensor or wrong shape.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"LPIPS weights file not found: {path}")
    try:
        raw = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"LPIPS weights {path} is not a readable safetensors file: {e}") from e
    out = {}
    for name, shape in lpips_tensor_shapes().items():
        if name not in raw:
            raise InputError(f"LPIPS weights {path}: tensor {name!r} missing")
        if tuple(raw[name].shape) != shape:
            raise InputError(
                f"LPIPS weights {path}: {name!r} has shape {list(raw[name].shape)}, expected {list(shape)}"
            )
        out[name] = raw[name].float()
    return out


def lpips_weights_path(path: str | os.PathLike | None = None) -> Path | None:
    """The local LPIPS safetensors file: ``path``, else ``$XFIT_LPIPS_WEIGHTS``, else ``None``
    (never downloaded). The one lookup of the metric and of the fit's perceptual term."""
    found = path if path is not None else os.environ.get(LPIPS_WEIGHTS_ENV) or None
    return Path(found) if found is not None else None


def lpips_alex(x: Tensor, y: Tensor, w: dict[str, Tensor]) -> Tensor:
    """LPIPS v0.1 (AlexNet) of ``[N, 3, H, W]`` images in [-1, 1] -> ``[N]`` (differentiable;
    ``w`` from :func:`load_lpips_weights`)."""
    shift = torch.tensor(LPIPS_SHIFT, device=x.device).view(1, 3, 1, 1)
    scale = torch.tensor(LPIPS_SCALE, device=x.device).view(1, 3, 1, 1)
    h = (torch.cat([x, y]) - shift) / scale
    total = torch.zeros(x.shape[0], device=x.device)
    for i, (name, _, _, stride, pad, pool) in enumerate(_ALEX):
        if pool:
            h = torch.nn.functional.max_pool2d(h, 3, 2)
        h = torch.relu(torch.nn.functional.conv2d(h, w[f"{name}.weight"], w[f"{name}.bias"], stride, pad))
        f = h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10)
        d = (f[: x.shape[0]] - f[x.shape[0] :]).square()
        total += torch.nn.functional.conv2d(d, w[f"lin{i}.model.1.weight"]).mean((1, 2, 3))
    return total


def lpips_slices(
    pred_hu: ArrayLike,
    target_hu: ArrayLike,
    window: tuple[float, float] = HU_WINDOW,
    axis: int = 2,
    weights: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    batch: int = 32,
) -> PerceptualScore:
    """Perceptual distance of two CT volumes: LPIPS averaged over the 2D slices along ``axis``.

    Slices are clipped to ``window`` (HU), mapped to [-1, 1] and repeated to 3 channels. Weights
    come only from a local safetensors file (``weights``, else ``$XFIT_LPIPS_WEIGHTS``; never
    downloaded, never ``torch.load``). Without either, the substitute ``1 - ssim2d_slices`` on
    the same windowed slices (Gaussian 7 px, sigma 1.5) is returned, with one
    :class:`LPIPSFallbackWarning` per process: like LPIPS it is 0 for identical slices and grows
    with structural difference, but its values are not comparable with LPIPS values.

    Args:
        pred_hu, target_hu: ``[I, J, K]`` volumes in HU.
        window: (low, high) HU window.
        axis: axis the slices are normal to (2 = axial in the RAS voxel order).
        weights: path of the LPIPS AlexNet safetensors file (see :func:`lpips_tensor_shapes`).
        device, batch: where and how many slices at a time the network runs.

    Returns:
        ``PerceptualScore(value, method)``: the mean over slices, and ``"lpips-alex"`` or
        ``"1-ssim2d"``.

    Raises:
        InputError: bad volumes, window or axis; a given weights file that is missing or invalid;
            slices smaller than 31 pixels on the LPIPS path.
    """
    global _warned_lpips_fallback  # noqa: PLW0603 (warn once per process)
    p, t = _np(pred_hu), _np(target_hu)
    _check_pair(p, t, "lpips_slices", ndim=3)
    axis = _check_axis(axis, "lpips_slices")
    lo, hi = float(window[0]), float(window[1])
    if not lo < hi:
        raise InputError(f"lpips_slices: window must be (low, high) with low < high, got {window}")
    p = np.moveaxis((np.clip(p, lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0, axis, 0)
    t = np.moveaxis((np.clip(t, lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0, axis, 0)
    path = lpips_weights_path(weights)
    if path is None:
        if not _warned_lpips_fallback:
            _warned_lpips_fallback = True
            warnings.warn(
                f"lpips_slices: no LPIPS weights (pass weights= or set {LPIPS_WEIGHTS_ENV} "
                "to a safetensors file); using 1 - mean 2D SSIM instead (method "
                "'1-ssim2d'), not comparable with LPIPS values",
                LPIPSFallbackWarning,
                stacklevel=2,
            )
        return PerceptualScore(1.0 - ssim2d_slices(p, t, 2.0, axis=0), "1-ssim2d")
    if min(p.shape[1:]) < LPIPS_MIN_SIZE:
        raise InputError(
            f"lpips_slices: slices of {list(p.shape[1:])} pixels are smaller than AlexNet's {LPIPS_MIN_SIZE}"
        )
    w = {k: v.to(device) for k, v in load_lpips_weights(path).items()}
    vals = []
    with torch.no_grad():
        for i in range(0, p.shape[0], max(1, int(batch))):
            x, y = (
                torch.from_numpy(a[i : i + batch]).float().to(device)[:, None].expand(-1, 3, -1, -1) for a in (p, t)
            )
            vals.append(lpips_alex(x, y, w).double().cpu())
    return PerceptualScore(float(torch.cat(vals).mean()), "lpips-alex")


# ----------------------------------------------------------------------------- all at once


def volume_metrics(
    pred_hu: ArrayLike,
    gt_hu: ArrayLike,
    pred_mask: ArrayLike | None = None,
    gt_mask: ArrayLike | None = None,
    spacing_mm: float | Sequence[float] = 1.0,
    hu_range: tuple[float, float] = HU_WINDOW,
    *,
    with_asd: bool = False,
    with_freq: bool = False,
) -> dict[str, float]:
    """Standard reconstruction metrics of a CT volume against the ground truth.

    Both volumes are clipped to ``hu_range`` first; PSNR and SSIM use its width as data range.

    Args:
        pred_hu, gt_hu: ``[I, J, K]`` volumes in HU on the same grid.
        pred_mask, gt_mask: optional ``[I, J, K]`` masks (both or neither) for Dice/HD95.
        spacing_mm: voxel size (mm) for HD95.
        hu_range: (low, high) HU window.
        with_asd: also report ``"asd_mm"`` (needs the masks).
        with_freq: also report ``"freq_dist"``, :func:`frequency_distance` of the volumes in unit
            intensity (the clipped window mapped to [-1, 1], as the networks see them).

    Returns:
        ``{"psnr_db", "ssim", "mae_hu"}`` plus ``"mae_mask_hu"``, ``"dice"`` and ``"hd95_mm"``
        when masks are given (``mae_mask_hu`` is over the ground-truth mask), plus the keys asked
        for by ``with_asd`` / ``with_freq``.
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
        if with_asd:
            out["asd_mm"] = asd(pm, gm, spacing_mm)
    elif with_asd:
        raise InputError("volume_metrics: with_asd needs pred_mask and gt_mask")
    if with_freq:
        unit = 2.0 / (hi - lo)
        out["freq_dist"] = frequency_distance((p - lo) * unit - 1.0, (t - lo) * unit - 1.0)
    return out
