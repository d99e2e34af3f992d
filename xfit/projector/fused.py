"""Fused CPU projector (numba): the reference's line integrals and their adjoint in one pass per ray.

Needs ``numba`` (a dependency of xfit; an install without it falls back to the reference). Without it,
:func:`available` is false and ``backend="auto"`` uses :mod:`xfit.projector.reference`, which stays the
oracle; the tests compare the two.

What it computes
----------------
Exactly the reference's discretisation (see :mod:`xfit.projector.reference`): the same chord
ends, the same number of midpoint samples ``n`` per call, the same sample positions (from
:func:`reference.ray_steps`, in ``grid_sample``'s normalised units) and the same trilinear weights
of ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=True)``. The forward kernel
marches each ray in registers (no ``[B, M, n, 3]`` grid, no sampled values in memory); the adjoint
kernel scatters ``grad * dt * weight`` into one private volume per worker and the workers' volumes
are summed afterwards, so there are no races and the result does not depend on scheduling (for a
given number of threads). Positions and weights are computed in float64 inside the kernels; the
volume and its gradient keep ``mu``'s dtype. Results agree with the reference to float32 rounding
(relative ~1e-6).

When it is used
---------------
Only for CPU float32/float64 volumes when no gradient w.r.t. the geometry is needed (ray origins,
directions, a tensor affine: ``angle_deg`` / ``pose`` refinement). Otherwise :func:`project_rays`
hands the call to the reference (whose backward recomputes samples with autograd).

Threads follow ``torch.get_num_threads()`` (capped at numba's pool size), on numba's ``workqueue``
threading layer unless ``NUMBA_THREADING_LAYER`` says otherwise (see :func:`_kernels`). Kernels are compiled on
first use, not at import; compiled code is cached under the user's cache directory
(``$NUMBA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/xfit/numba`` or ``~/.cache/xfit/numba``;
``XFIT_NUMBA_CACHE=0`` turns the cache off).
"""

from __future__ import annotations

import functools
import importlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..errors import InputError
from ..geometry import Rays
from . import reference
from .reference import _prepare, as_affine, as_volume, ray_steps

#: dtypes the kernels accept (the volume's; geometry is cast to it as in the reference)
DTYPES = (torch.float32, torch.float64)

__all__ = ["DTYPES", "available", "backproject_rays", "march", "march_adjoint", "project_rays"]


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether numba imports (the kernels themselves compile on first use)."""
    try:
        importlib.import_module("numba")  # imported only to see that it loads (an optional dependency)
    except Exception:  # noqa: BLE001 (ImportError, or a numba/llvmlite/numpy mismatch raising at import)
        return False
    return True


def _cache_dir() -> str | None:
    """Directory for numba's compiled-code cache, or None to compile without caching."""
    if os.environ.get("XFIT_NUMBA_CACHE", "1") == "0":
        return None
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "xfit" / "numba"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(path) if os.access(path, os.W_OK) else None


@functools.lru_cache(maxsize=1)
def _kernels():
    """``(numba, forward, adjoint)``: import the kernels (:mod:`._fused_kernels`) with numba's cache
    pointed at :func:`_cache_dir` while they register; each compiles (or loads) on first call."""
    if not available():
        raise InputError("the fused CPU projector needs numba (pip install numba)")
    import numba

    if not os.environ.get("NUMBA_THREADING_LAYER") and numba.config.THREADING_LAYER == "default":
        # numba's default OpenMP layer spins its idle workers on the libgomp that torch uses too:
        # measured 10x slower torch ops around the kernels on 2 cores. The workqueue layer sleeps
        # (not thread-safe: _LOCK serialises the calls; fork-safe). Takes effect unless numba
        # already started its threads in this process.
        numba.config.THREADING_LAYER = "workqueue"
    cache_dir = _cache_dir()
    saved = numba.config.CACHE_DIR
    try:  # numba picks the cache locator when a cached function is defined: point it at our folder
        numba.config.CACHE_DIR = cache_dir or ""
        from . import _fused_kernels as k
    finally:
        numba.config.CACHE_DIR = saved
    return numba, k.forward, k.adjoint


_LOCK = threading.Lock()  # one kernel call at a time (numba's workqueue layer is not thread-safe)


def _threads(numba) -> int:
    """Use torch's thread count (the project's one thread setting), within numba's pool."""
    want = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(want)
    return want


def _np(x: Tensor) -> np.ndarray:
    return x.detach().contiguous().numpy()


def march(mu: Tensor, first: Tensor, stride: Tensor, dt: Tensor, n: int) -> Tensor:
    """Line integrals (no autograd): ``mu [B, 1, I, J, K]``, ``first, stride [B, M, 3]`` and
    ``dt [B, M]`` from :func:`reference.ray_steps`, ``n`` samples -> ``[B, M]``."""
    numba, forward, _ = _kernels()
    out = torch.empty(dt.shape, dtype=mu.dtype)
    with _LOCK:
        _threads(numba)
        forward(
            _np(mu).reshape(mu.shape[0], -1), tuple(mu.shape[2:]), _np(first), _np(stride), _np(dt), int(n), out.numpy()
        )
    return out


def march_adjoint(
    grad: Tensor, volume_shape: Sequence[int], first: Tensor, stride: Tensor, dt: Tensor, n: int
) -> Tensor:
    """Adjoint of :func:`march` w.r.t. ``mu``: ``grad [B, M]`` -> ``[B, 1, I, J, K]``."""
    numba, _, adjoint = _kernels()
    with _LOCK:
        workers = _threads(numba)
        shape = tuple(int(x) for x in volume_shape)
        buf = np.zeros((workers, grad.shape[0], int(np.prod(shape))), dtype=_np(grad).dtype)
        adjoint(_np(grad), shape, _np(first), _np(stride), _np(dt), int(n), buf)
    total = buf[0] if workers == 1 else buf.sum(axis=0)
    return torch.from_numpy(total).reshape(grad.shape[0], 1, *shape)


class _FusedMarch(torch.autograd.Function):
    """Line integrals with the fused adjoint as backward (gradient w.r.t. ``mu`` only)."""

    @staticmethod
    def forward(ctx, mu, first, stride, dt, n: int):  # type: ignore[override]
        ctx.save_for_backward(first, stride, dt)
        ctx.n, ctx.shape = n, tuple(mu.shape[2:])
        return march(mu, first, stride, dt, n)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        first, stride, dt = ctx.saved_tensors
        grad_mu = march_adjoint(grad_out, ctx.shape, first, stride, dt, ctx.n) if ctx.needs_input_grad[0] else None
        return grad_mu, None, None, None, None


class _FusedBackproject(torch.autograd.Function):
    """``A^T y``; its backward is the fused forward projection."""

    @staticmethod
    def forward(ctx, images, first, stride, dt, n: int, shape: tuple):  # type: ignore[override]
        ctx.save_for_backward(first, stride, dt)
        ctx.n = n
        return march_adjoint(images, shape, first, stride, dt, n)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_volume):  # type: ignore[override]
        first, stride, dt = ctx.saved_tensors
        grad = march(grad_volume, first, stride, dt, ctx.n) if ctx.needs_input_grad[0] else None
        return grad, None, None, None, None, None


def _fusable(volume: Tensor, *geometry: Tensor) -> bool:
    """The fused kernels apply: a CPU float32/float64 volume and no gradient w.r.t. the geometry."""
    return (
        volume.device.type == "cpu"
        and volume.dtype in DTYPES
        and not any(g.requires_grad for g in geometry)
        and available()
    )


def project_rays(
    mu: Tensor | np.ndarray,
    affine: Tensor | np.ndarray,
    rays: Rays,
    *,
    step_mm: float | None = None,
    chunk_rays: int | None = None,
) -> Tensor:
    """Line integrals of ``mu`` along rays; same arguments and result as
    :func:`reference.project_rays` (``chunk_rays`` only matters when the reference runs).

    Runs the fused kernels when :func:`_fusable` (gradients w.r.t. ``mu`` only), else the reference.
    """
    mu = as_volume(mu)
    affine_t = as_affine(affine, mu.shape[0], dtype=mu.dtype, device=mu.device)
    lead, o_idx, d_idx, t_near, t_far, n, chunk = _prepare(
        rays, affine_t, mu.shape[2:], step_mm, chunk_rays, mu.shape[0]
    )
    if not _fusable(mu, o_idx, d_idx, t_near, t_far):
        out = reference._RayMarch.apply(mu, o_idx, d_idx, t_near, t_far, n, chunk)
    else:
        first, stride, dt = ray_steps(o_idx, d_idx, t_near, t_far, n, mu.shape[2:])
        out = _FusedMarch.apply(mu, first, stride, dt, n)
    return out.reshape(mu.shape[0], *lead)


def backproject_rays(
    images: Tensor,
    affine: Tensor | np.ndarray,
    rays: Rays,
    volume_shape: Sequence[int],
    *,
    step_mm: float | None = None,
    chunk_rays: int | None = None,
) -> Tensor:
    """Exact adjoint of :func:`project_rays` w.r.t. the volume; same arguments and result as
    :func:`reference.backproject_rays`."""
    if not isinstance(images, Tensor) or not _fusable(images):
        return reference.backproject_rays(images, affine, rays, volume_shape, step_mm=step_mm, chunk_rays=chunk_rays)
    shape, batch = reference.check_backprojection(images, rays, volume_shape)
    affine_t = as_affine(affine, batch, dtype=images.dtype, device=images.device)
    _, o_idx, d_idx, t_near, t_far, n, _ = _prepare(rays, affine_t.detach(), shape, step_mm, chunk_rays, batch)
    first, stride, dt = ray_steps(o_idx.detach(), d_idx.detach(), t_near.detach(), t_far.detach(), n, shape)
    return _FusedBackproject.apply(images.reshape(batch, -1), first, stride, dt, n, shape)
