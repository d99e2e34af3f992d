"""Fused Triton kernels for the X-ray projector: forward (DRR) and adjoint (backprojection).

Same discretisation as :mod:`xfit.projector.reference` (the oracle; its setup functions are
reused here so there is one definition), evaluated ray by ray in one kernel instead of a large
``grid_sample``:

* world rays ``o + t d`` (``d`` unit, ``t`` in mm) go to voxel-index space with the inverse
  affine, ``o' = A^-1 o``, ``d' = A^-1[:3, :3] d`` (any affine, one per volume or shared);
* the slab method clips them to the support of the trilinear interpolant, the box
  ``[-1, I] x [-1, J] x [-1, K]``, and to ``0 <= t <= length`` (rays that miss give 0);
* one ``N = max(1, ceil(longest chord / step_mm))`` for all rays of the call, per-ray
  ``dt = (t_far - t_near) / N`` and midpoint samples ``t_near + (n + 1/2) dt``;
* trilinear interpolation with zero padding (as ``grid_sample(align_corners=True,
  padding_mode='zeros')``) and ``p = dt * sum``.

The forward kernel runs one program per block of :data:`BLOCK_RAYS` rays and per volume, and
loops over the N samples with an 8-corner masked gather. The adjoint kernel walks the same
samples and scatters ``weight * dt * y`` into the volume with ``tl.atomic_add`` (so GPU results
may differ in the last bits between runs). Both are wrapped in autograd functions that are each
other's backward, so ``project`` is differentiable w.r.t. ``mu`` to any order.

The kernels do **not** differentiate the geometry. Rule: when the rays, ``angle_deg``,
``pose`` or a tensor ``affine`` require grad, the public functions fall back to the reference,
which does.

Computation is float32 (float64 when the input is float64, e.g. for ``gradcheck``). The kernels
need CUDA tensors, or CPU tensors when ``TRITON_INTERPRET=1`` was set before triton was first
imported (the Triton interpreter: exact but slow; the tests use it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import GeometryError, InputError
from ..geometry import Rays, View, make_rays
from . import reference

__all__ = [
    "BLOCK_RAYS",
    "INTERPRET",
    "TritonBackproject",
    "TritonProject",
    "VoxelRays",
    "available",
    "backproject_rays",
    "backproject_triton",
    "project_rays",
    "project_triton",
    "voxel_rays",
]

try:  # optional dependency: the module must import (and report unavailable) without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None

#: True when triton was imported in interpreter mode (kernels then run on CPU tensors).
_TRUE = ("1", "true", "on", "yes")
INTERPRET: bool = triton is not None and os.environ.get("TRITON_INTERPRET", "0").lower() in _TRUE

#: Rays per program of the kernels.
BLOCK_RAYS = 128


def available() -> bool:
    """True if the Triton backend can run here (triton importable and CUDA or the interpreter)."""
    return triton is not None and (INTERPRET or torch.cuda.is_available())


# ----------------------------------------------------------------------------- ray setup


@dataclass
class VoxelRays:
    """Rays in voxel-index space, clipped to the volume's support, flattened over the rays.

    ``G`` is 1 when every volume of the batch shares one affine, else B (per-volume affines).

    Attributes:
        origins: ``[G, M, 3]`` ray origins in voxel indices.
        directions: ``[G, M, 3]`` ``A^-1[:3, :3] d`` (voxels per world mm along the ray).
        t_near: ``[G, M]`` entry distance into the support box (world mm).
        dt: ``[G, M]`` sample spacing (world mm); 0 for rays that miss the volume.
        n_samples: the number N of samples shared by every ray of the call.
        shape: leading shape of the rays (``(V, R, C)`` for views); ``M = prod(shape)``.
    """

    origins: Tensor
    directions: Tensor
    t_near: Tensor
    dt: Tensor
    n_samples: int
    shape: tuple[int, ...]


def _check_rays(rays: Rays) -> tuple[int, ...]:
    """Leading shape of ``rays``; raise GeometryError for inconsistent tensors."""
    if not isinstance(rays, Rays):
        raise GeometryError(f"rays must be xfit.geometry.Rays, got {type(rays).__name__}")
    lead = tuple(rays.origins.shape[:-1])
    if rays.origins.shape[-1] != 3 or rays.directions.shape != rays.origins.shape or tuple(rays.lengths.shape) != lead:
        raise GeometryError("rays must have origins/directions [..., 3] and lengths [...] of one shape")
    return lead


def voxel_rays(
    rays: Rays,
    affine: Tensor | np.ndarray | Sequence,
    volume_shape: Sequence[int],
    *,
    batch: int = 1,
    step_mm: float | None = None,
    n_samples: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> VoxelRays:
    """Map world rays to voxel space, clip them and choose the samples, as the reference does.

    Uses :mod:`xfit.projector.reference`'s own functions (``as_affine``, ``rays_to_index``,
    ``box_intersection``, ``num_samples``, ``default_step_mm``) so that both backends share one
    definition of the support box, N and dt. No gradients flow through the result.

    Args:
        rays: world rays, tensors ``[..., 3]`` (unit directions) and lengths ``[...]``.
        affine: ``[4, 4]`` or ``[B, 4, 4]`` voxel index -> world mm.
        volume_shape: ``(I, J, K)``.
        batch: B, the number of volumes.
        step_mm: sample step on the longest chord (default half the smallest voxel spacing).
        n_samples: the sample count N directly (overrides ``step_mm``).
        dtype: dtype of the setup and the returned tensors.
        device: device of the returned tensors (default: the rays').
    Returns:
        :class:`VoxelRays`.
    """
    lead = _check_rays(rays)
    device = rays.origins.device if device is None else torch.device(device)
    with torch.no_grad():
        affine_t = reference.as_affine(affine, batch, dtype=dtype, device=device)
        if affine_t.stride(0) == 0:  # one affine shared by the batch: set the rays up once
            affine_t = affine_t[:1]
        kw = dict(dtype=dtype, device=device)
        origins = rays.origins.detach().to(**kw).reshape(-1, 3)
        directions = rays.directions.detach().to(**kw).reshape(-1, 3)
        lengths = rays.lengths.detach().to(**kw).reshape(-1)
        o_idx, d_idx = reference.rays_to_index(origins, directions, affine_t)
        t_near, t_far = reference.box_intersection(o_idx, d_idx, lengths, volume_shape)
        if n_samples is None:
            step = reference.default_step_mm(affine_t) if step_mm is None else float(step_mm)
            n_samples = reference.num_samples(t_near, t_far, step)
        elif int(n_samples) < 1:
            raise InputError(f"n_samples must be >= 1, got {n_samples}")
        n = int(n_samples)
        dt = (t_far - t_near) / n
    return VoxelRays(
        origins=o_idx.contiguous(),
        directions=d_idx.contiguous(),
        t_near=t_near.contiguous(),
        dt=dt.contiguous(),
        n_samples=n,
        shape=lead,
    )


# ----------------------------------------------------------------------------- kernels

if triton is not None:

    @triton.jit
    def _corner_offset(i, j, k, live, size_i, size_j, size_k):
        """Flat offset of voxel (i, j, k) and whether it lies inside the volume."""
        ok = live & (i >= 0) & (i < size_i) & (j >= 0) & (j < size_j) & (k >= 0) & (k < size_k)
        return (i * size_j + j) * size_k + k, ok

    @triton.jit
    def _sample_point(ox, oy, oz, dx, dy, dz, t, size_i, size_j, size_k):
        """Lower corner indices and fractional offsets of the sample ``o + t d``.

        Coordinates are clamped to ``[-2, size]`` first: all corners of such points are outside
        (weight on zero padding) and the float -> int cast can never overflow.
        """
        x = tl.minimum(tl.maximum(ox + t * dx, -2.0), size_i * 1.0)
        y = tl.minimum(tl.maximum(oy + t * dy, -2.0), size_j * 1.0)
        z = tl.minimum(tl.maximum(oz + t * dz, -2.0), size_k * 1.0)
        x0 = tl.floor(x)
        y0 = tl.floor(y)
        z0 = tl.floor(z)
        return x0.to(tl.int32), y0.to(tl.int32), z0.to(tl.int32), x - x0, y - y0, z - z0

    @triton.jit
    def _gather(vol_ptr, i, j, k, w, live, size_i, size_j, size_k):
        """``w * mu[i, j, k]`` with zeros outside the volume."""
        off, ok = _corner_offset(i, j, k, live, size_i, size_j, size_k)
        return w * tl.load(vol_ptr + off, mask=ok, other=0.0)

    @triton.jit
    def _scatter(grad_ptr, i, j, k, value, live, size_i, size_j, size_k):
        """``grad[i, j, k] += value`` for corners inside the volume."""
        off, ok = _corner_offset(i, j, k, live, size_i, size_j, size_k)
        tl.atomic_add(grad_ptr + off, value, mask=ok, sem="relaxed")

    @triton.jit
    def _forward_kernel(
        mu_ptr, out_ptr, org_ptr, dir_ptr, tnear_ptr, dt_ptr,
        n_rays, n_samples, size_i, size_j, size_k, per_volume_geometry,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Line integrals of one block of rays through volume ``program_id(1)``."""
        ray = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        b = tl.program_id(1).to(tl.int64)
        live = ray < n_rays
        geo = b * per_volume_geometry * n_rays + ray  # geometry row: shared (0) or per volume
        ox = tl.load(org_ptr + geo * 3 + 0, mask=live, other=0.0)
        oy = tl.load(org_ptr + geo * 3 + 1, mask=live, other=0.0)
        oz = tl.load(org_ptr + geo * 3 + 2, mask=live, other=0.0)
        dx = tl.load(dir_ptr + geo * 3 + 0, mask=live, other=0.0)
        dy = tl.load(dir_ptr + geo * 3 + 1, mask=live, other=0.0)
        dz = tl.load(dir_ptr + geo * 3 + 2, mask=live, other=0.0)
        t0 = tl.load(tnear_ptr + geo, mask=live, other=0.0)
        dt = tl.load(dt_ptr + geo, mask=live, other=0.0)
        vol = mu_ptr + b * size_i * size_j * size_k
        acc = tl.zeros([BLOCK], dtype=out_ptr.dtype.element_ty)
        for n in range(n_samples):
            t = t0 + (n + 0.5) * dt
            i, j, k, fx, fy, fz = _sample_point(ox, oy, oz, dx, dy, dz, t, size_i, size_j, size_k)
            gx = 1.0 - fx
            gy = 1.0 - fy
            gz = 1.0 - fz
            acc += _gather(vol, i, j, k, gx * gy * gz, live, size_i, size_j, size_k)
            acc += _gather(vol, i, j, k + 1, gx * gy * fz, live, size_i, size_j, size_k)
            acc += _gather(vol, i, j + 1, k, gx * fy * gz, live, size_i, size_j, size_k)
            acc += _gather(vol, i, j + 1, k + 1, gx * fy * fz, live, size_i, size_j, size_k)
            acc += _gather(vol, i + 1, j, k, fx * gy * gz, live, size_i, size_j, size_k)
            acc += _gather(vol, i + 1, j, k + 1, fx * gy * fz, live, size_i, size_j, size_k)
            acc += _gather(vol, i + 1, j + 1, k, fx * fy * gz, live, size_i, size_j, size_k)
            acc += _gather(vol, i + 1, j + 1, k + 1, fx * fy * fz, live, size_i, size_j, size_k)
        tl.store(out_ptr + b * n_rays + ray, acc * dt, mask=live)

    @triton.jit
    def _adjoint_kernel(
        img_ptr, grad_ptr, org_ptr, dir_ptr, tnear_ptr, dt_ptr,
        n_rays, n_samples, size_i, size_j, size_k, per_volume_geometry,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Backprojection of one block of pixel values into volume ``program_id(1)``."""
        ray = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        b = tl.program_id(1).to(tl.int64)
        live = ray < n_rays
        geo = b * per_volume_geometry * n_rays + ray  # geometry row: shared (0) or per volume
        ox = tl.load(org_ptr + geo * 3 + 0, mask=live, other=0.0)
        oy = tl.load(org_ptr + geo * 3 + 1, mask=live, other=0.0)
        oz = tl.load(org_ptr + geo * 3 + 2, mask=live, other=0.0)
        dx = tl.load(dir_ptr + geo * 3 + 0, mask=live, other=0.0)
        dy = tl.load(dir_ptr + geo * 3 + 1, mask=live, other=0.0)
        dz = tl.load(dir_ptr + geo * 3 + 2, mask=live, other=0.0)
        t0 = tl.load(tnear_ptr + geo, mask=live, other=0.0)
        dt = tl.load(dt_ptr + geo, mask=live, other=0.0)
        g = tl.load(img_ptr + b * n_rays + ray, mask=live, other=0.0) * dt
        live = live & (g != 0.0)  # rays that miss or carry no gradient scatter nothing
        vol = grad_ptr + b * size_i * size_j * size_k
        for n in range(n_samples):
            t = t0 + (n + 0.5) * dt
            i, j, k, fx, fy, fz = _sample_point(ox, oy, oz, dx, dy, dz, t, size_i, size_j, size_k)
            gx = 1.0 - fx
            gy = 1.0 - fy
            gz = 1.0 - fz
            _scatter(vol, i, j, k, g * gx * gy * gz, live, size_i, size_j, size_k)
            _scatter(vol, i, j, k + 1, g * gx * gy * fz, live, size_i, size_j, size_k)
            _scatter(vol, i, j + 1, k, g * gx * fy * gz, live, size_i, size_j, size_k)
            _scatter(vol, i, j + 1, k + 1, g * gx * fy * fz, live, size_i, size_j, size_k)
            _scatter(vol, i + 1, j, k, g * fx * gy * gz, live, size_i, size_j, size_k)
            _scatter(vol, i + 1, j, k + 1, g * fx * gy * fz, live, size_i, size_j, size_k)
            _scatter(vol, i + 1, j + 1, k, g * fx * fy * gz, live, size_i, size_j, size_k)
            _scatter(vol, i + 1, j + 1, k + 1, g * fx * fy * fz, live, size_i, size_j, size_k)


def _check_runnable(t: Tensor) -> None:
    """Raise InputError unless the kernels can run on tensors of ``t``'s device."""
    if triton is None:
        raise InputError("the triton backend needs the 'triton' package (pip install triton)")
    if not INTERPRET and not t.is_cuda:
        raise InputError(
            "the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 set before importing "
            "triton, for CPU); use the reference backend on CPU"
        )


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64 (gradcheck); everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _launch(kernel, data: Tensor, result: Tensor, vr: VoxelRays, volume_shape: Sequence[int]) -> None:
    """Launch ``kernel`` over (ray blocks, volumes) with the geometry of ``vr``."""
    batch = data.shape[0]
    n_rays = vr.t_near.shape[-1]
    if batch == 0 or n_rays == 0:
        return
    g = vr.t_near.shape[0]
    if g not in (1, batch):
        raise InputError(f"geometry for {g} volumes cannot serve a batch of {batch}")
    dtype, device = result.dtype, result.device
    geometry = [t.to(device=device, dtype=dtype).contiguous() for t in (vr.origins, vr.directions, vr.t_near, vr.dt)]
    si, sj, sk = (int(s) for s in volume_shape)
    if si * sj * sk >= 2**31:
        raise InputError(f"volume {si}x{sj}x{sk} is too large for the kernels' int32 voxel offsets")
    grid = (triton.cdiv(n_rays, BLOCK_RAYS), batch)
    kernel[grid](data, result, *geometry, n_rays, vr.n_samples, si, sj, sk, int(g > 1), BLOCK=BLOCK_RAYS)


def forward_kernel(mu: Tensor, vr: VoxelRays) -> Tensor:
    """Run the forward kernel (no autograd): ``A mu``.

    Args:
        mu: ``[B, I, J, K]`` attenuation per mm.
        vr: voxel-space rays (M rays).
    Returns:
        ``[B, M]`` line integrals (dimensionless), in the compute dtype of ``mu``.
    """
    _check_runnable(mu)
    mu = mu.to(_compute_dtype(mu.dtype)).contiguous()
    out = torch.zeros(mu.shape[0], vr.t_near.shape[-1], dtype=mu.dtype, device=mu.device)
    _launch(_forward_kernel, mu, out, vr, mu.shape[1:])
    return out


def adjoint_kernel(images: Tensor, vr: VoxelRays, volume_shape: Sequence[int]) -> Tensor:
    """Run the adjoint (backprojection) kernel (no autograd): ``A^T y``.

    Args:
        images: ``[B, M]`` values on the rays (e.g. the gradient of a loss w.r.t. the DRR).
        vr: voxel-space rays (M rays).
        volume_shape: ``(I, J, K)``.
    Returns:
        ``[B, I, J, K]`` backprojection (units of images x mm), in the compute dtype of ``images``.
    """
    _check_runnable(images)
    images = images.to(_compute_dtype(images.dtype)).contiguous()
    shape = tuple(int(s) for s in volume_shape)
    grad = torch.zeros(images.shape[0], *shape, dtype=images.dtype, device=images.device)
    _launch(_adjoint_kernel, images, grad, vr, shape)
    return grad


# ----------------------------------------------------------------------------- autograd


class TritonProject(torch.autograd.Function):
    """``mu [B, I, J, K] -> [B, M]``; backward w.r.t. ``mu`` by the adjoint kernel.

    The geometry (``vr``) is a constant: no gradient flows to rays, angles, poses or affines.
    """

    @staticmethod
    def forward(ctx, mu: Tensor, vr: VoxelRays) -> Tensor:  # type: ignore[override]
        ctx.vr = vr
        ctx.volume_shape = tuple(mu.shape[1:])
        ctx.dtype = mu.dtype
        return forward_kernel(mu, vr).to(mu.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, None]:  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None
        grad = TritonBackproject.apply(grad_out, ctx.vr, ctx.volume_shape)
        return grad.to(ctx.dtype), None


class TritonBackproject(torch.autograd.Function):
    """``y [B, M] -> A^T y [B, I, J, K]``; its backward is the forward kernel (exact adjoint)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, images: Tensor, vr: VoxelRays, volume_shape: tuple[int, int, int]
    ) -> Tensor:
        ctx.vr = vr
        ctx.dtype = images.dtype
        return adjoint_kernel(images, vr, volume_shape).to(images.dtype)

    @staticmethod
    def backward(ctx, grad_vol: Tensor) -> tuple[Tensor | None, None, None]:  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return TritonProject.apply(grad_vol, ctx.vr).to(ctx.dtype), None, None


# ----------------------------------------------------------------------------- public API


def geometry_requires_grad(*tensors: object) -> bool:
    """True when any geometry input (tensor, Rays or None) carries gradients.

    The kernels do not differentiate the geometry, so such calls go to the reference backend.
    """
    flat: list[object] = []
    for t in tensors:
        flat += [t.origins, t.directions, t.lengths] if isinstance(t, Rays) else [t]
    return any(isinstance(t, Tensor) and t.requires_grad for t in flat)


def project_rays(
    mu: Tensor | np.ndarray,
    affine: Tensor | np.ndarray,
    rays: Rays,
    *,
    step_mm: float | None = None,
    chunk_rays: int | None = None,
    n_samples: int | None = None,
) -> Tensor:
    """Line integrals of ``mu`` along arbitrary rays with the fused forward kernel.

    Same signature and results as :func:`xfit.projector.reference.project_rays`. Differentiable
    w.r.t. ``mu`` (backward = adjoint kernel). **Fallback rule:** when the rays or a tensor
    ``affine`` require grad, the call is delegated to the reference (which differentiates the
    geometry); ``n_samples`` must then be None.

    Args:
        mu: attenuation in 1/mm, ``[B, 1, I, J, K]`` (or ``[I, J, K]`` / ``[B, I, J, K]``).
        affine: ``[4, 4]`` or ``[B, 4, 4]`` voxel index -> world mm.
        rays: world :class:`~xfit.geometry.Rays`, tensors ``[..., 3]`` / ``[...]``.
        step_mm: sampling step on the longest chord (default half the smallest voxel spacing).
        chunk_rays: accepted for signature compatibility; the kernel needs no chunking.
        n_samples: sample count N per ray (overrides ``step_mm``).
    Returns:
        ``[B, ...]`` line integrals (dimensionless) in ``mu``'s dtype.
    """
    mu = reference.as_volume(mu)
    if geometry_requires_grad(rays, affine):
        if n_samples is not None:
            raise InputError("n_samples is not supported when the geometry requires grad; give step_mm")
        return reference.project_rays(mu, affine, rays, step_mm=step_mm, chunk_rays=chunk_rays)
    _check_runnable(mu)
    vr = voxel_rays(
        rays, affine, mu.shape[2:], batch=mu.shape[0], step_mm=step_mm, n_samples=n_samples,
        dtype=_compute_dtype(mu.dtype), device=mu.device,
    )  # fmt: skip
    out = TritonProject.apply(mu[:, 0], vr)
    return out.reshape(mu.shape[0], *vr.shape)


def backproject_rays(
    images: Tensor,
    affine: Tensor | np.ndarray,
    rays: Rays,
    volume_shape: Sequence[int],
    *,
    step_mm: float | None = None,
    chunk_rays: int | None = None,
    n_samples: int | None = None,
) -> Tensor:
    """Exact adjoint of :func:`project_rays` w.r.t. the volume: ``A^T images``.

    ``<project_rays(x), y> == <x, backproject_rays(y)>`` up to float rounding (the kernels
    accumulate with atomics, so the last bits may vary between GPU runs). Differentiable w.r.t.
    ``images`` (backward = forward kernel), not w.r.t. the geometry.

    Args:
        images: ``[B, ...]`` values on the rays (leading shape of ``rays``).
        affine: ``[4, 4]`` or ``[B, 4, 4]`` voxel index -> world mm.
        rays: the rays of the forward projection.
        volume_shape: ``(I, J, K)``.
        step_mm, chunk_rays, n_samples: as in :func:`project_rays`.
    Returns:
        ``[B, 1, I, J, K]`` back-projection (units of images x mm) in ``images``' dtype.
    """
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim < 1:
        raise InputError("images must be a floating-point tensor [B, ...]")
    shape = tuple(int(s) for s in volume_shape)
    if len(shape) != 3 or min(shape) < 2:
        raise InputError(f"volume_shape must be (I, J, K) with every axis >= 2, got {volume_shape!r}")
    lead = _check_rays(rays)
    if tuple(images.shape[1:]) != lead or images.shape[0] < 1:
        raise InputError(f"images must be [B, {', '.join(map(str, lead))}], got {tuple(images.shape)}")
    _check_runnable(images)
    batch = images.shape[0]
    vr = voxel_rays(
        rays, affine, shape, batch=batch, step_mm=step_mm, n_samples=n_samples,
        dtype=_compute_dtype(images.dtype), device=images.device,
    )  # fmt: skip
    vol = TritonBackproject.apply(images.reshape(batch, -1), vr, shape)
    return vol[:, None]


def _rays_of(
    views: View | Sequence[View] | Rays,
    angle_deg: Tensor | None,
    pose: Tensor | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Rays:
    """World rays of ``views`` (or the given rays unchanged)."""
    if isinstance(views, Rays):
        if angle_deg is not None or pose is not None:
            raise GeometryError("angle_deg / pose override views; they cannot be used with Rays")
        return views
    views = [views] if isinstance(views, View) else list(views)
    if not views or not all(isinstance(v, View) for v in views):
        raise GeometryError("views must be a non-empty list of xfit.geometry.View (or Rays)")
    return make_rays(views, angle_deg=angle_deg, pose=pose, device=device, dtype=dtype)


def project_triton(
    mu: Tensor | np.ndarray,
    affine: Tensor | np.ndarray,
    views: View | Sequence[View] | Rays,
    *,
    angle_deg: Tensor | None = None,
    pose: Tensor | None = None,
    step_mm: float | None = None,
    n_samples: int | None = None,
) -> Tensor:
    """DRRs (line integrals of mu) of a batch of volumes for views, with the fused kernel.

    Matches :func:`xfit.projector.project` (reference backend). Differentiable w.r.t. ``mu``.
    **Fallback rule:** if ``angle_deg``, ``pose``, the rays or a tensor ``affine`` require grad,
    the reference computes the result (the kernels do not differentiate the geometry).

    Args:
        mu: ``[B, 1, I, J, K]`` attenuation per mm (``[I, J, K]``, ``[B, I, J, K]`` accepted).
        affine: ``[4, 4]`` or ``[B, 4, 4]`` voxel index -> world mm (flips, anisotropy allowed).
        views: V views sharing detector shape and projection, or precomputed world :class:`Rays`.
        angle_deg: optional ``[V]`` angles (degrees) overriding the views'.
        pose: optional ``[V, 4, 4]`` poses overriding the views'.
        step_mm: sample step on the longest chord (default half the smallest voxel spacing).
        n_samples: sample count N per ray (overrides ``step_mm``).
    Returns:
        ``[B, V, R, C]`` line integrals (dimensionless), in ``mu``'s dtype.
    """
    mu = reference.as_volume(mu)
    rays = _rays_of(views, angle_deg, pose, mu.device, mu.dtype)
    return project_rays(mu, affine, rays, step_mm=step_mm, n_samples=n_samples)


def backproject_triton(
    images: Tensor,
    affine: Tensor | np.ndarray,
    views: View | Sequence[View] | Rays,
    volume_shape: Sequence[int],
    *,
    angle_deg: Tensor | None = None,
    pose: Tensor | None = None,
    step_mm: float | None = None,
    n_samples: int | None = None,
) -> Tensor:
    """Exact adjoint of :func:`project_triton` for the same geometry (unfiltered backprojection).

    Args:
        images: ``[B, V, R, C]`` pixel values.
        affine: ``[4, 4]`` or ``[B, 4, 4]`` voxel index -> world mm.
        views: the V views (or world :class:`Rays`) of ``images``.
        volume_shape: ``(I, J, K)`` of the output volume.
        angle_deg, pose, step_mm, n_samples: as in :func:`project_triton`.
    Returns:
        ``[B, 1, I, J, K]`` back-projection, in ``images``' dtype; differentiable w.r.t. images.
    """
    if not isinstance(images, Tensor):
        raise InputError(f"images must be a [B, V, R, C] tensor, got {type(images).__name__}")
    rays = _rays_of(views, angle_deg, pose, images.device, images.dtype)
    return backproject_rays(images, affine, rays, volume_shape, step_mm=step_mm, n_samples=n_samples)
