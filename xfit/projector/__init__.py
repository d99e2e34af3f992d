"""Differentiable X-ray projector: DRRs (line integrals of mu) of volumes for xfit views.

``project(mu, affine, views)`` returns ``[B, V, R, C]`` line integrals; ``backproject`` is its
exact adjoint w.r.t. the volume. The math lives in :mod:`xfit.projector.reference` (pure torch,
trilinear ray marching, the oracle). :mod:`xfit.projector.triton` (fused GPU kernels, optional)
must expose the same two functions with the same signatures and results::

    project_rays(mu, affine, rays, *, step_mm=None, chunk_rays=None) -> Tensor [B, ...]
    backproject_rays(images, affine, rays, volume_shape, *, step_mm=None, chunk_rays=None)
        -> Tensor [B, 1, I, J, K]

``backend="auto"`` picks Triton for CUDA tensors when that module imports; on the CPU it picks
:mod:`xfit.projector.fused` (numba kernels, the same discretisation, optional extra ``fast``) when
numba imports, else the reference. The environment variable ``XFIT_PROJECTOR`` (``auto``,
``reference``, ``fused`` or ``triton``) replaces what ``"auto"`` means, e.g. ``XFIT_PROJECTOR=reference``
to run the oracle everywhere; an explicit backend argument is never overridden.
:func:`resolved_backend` names what ``"auto"`` runs on a device (the fit records it).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from ..errors import GeometryError, InputError
from ..geometry import Rays, View, make_rays
from . import reference
from .reference import as_volume

BACKENDS = ("auto", "reference", "fused", "triton")

#: environment variable that replaces what ``backend="auto"`` means (one of :data:`BACKENDS`)
BACKEND_ENV = "XFIT_PROJECTOR"

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "backproject",
    "backproject_rays",
    "get_backend",
    "project",
    "project_rays",
    "reference",
    "resolved_backend",
]


@functools.lru_cache(maxsize=1)
def _triton() -> ModuleType | None:
    """The Triton backend module, or None when it (or triton, or a GPU stack) is unavailable."""
    try:
        from . import triton as module  # the optional backend
    except Exception:  # noqa: BLE001 (ImportError, or a broken GPU stack raising at import)
        return None
    return module


def _fused() -> ModuleType | None:
    """The fused CPU backend module when numba imports, else None."""
    from . import fused as module  # imports numba lazily itself

    return module if module.available() else None


def get_backend(backend: str, device: torch.device) -> ModuleType:
    """Module implementing ``project_rays`` / ``backproject_rays`` for a backend name.

    Args:
        backend: ``"reference"``, ``"fused"`` (numba, CPU), ``"triton"`` or ``"auto"`` (Triton on CUDA
            when importable, the fused kernels on the CPU when numba imports, else the reference;
            ``$XFIT_PROJECTOR`` replaces ``"auto"`` when set).
        device: device of the tensors to be projected.
    Raises:
        InputError: unknown backend (argument or ``$XFIT_PROJECTOR``), or ``"triton"`` / ``"fused"``
            requested but unavailable.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = os.environ.get(BACKEND_ENV, "").strip() or "auto"
        if backend not in BACKENDS:
            raise InputError(f"${BACKEND_ENV} must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return reference
    if backend == "fused":
        module = _fused()
        if module is None:
            raise InputError("backend 'fused' is unavailable (needs numba: pip install numba)")
        return module
    cuda = torch.device(device).type == "cuda"
    module = _triton() if cuda or backend == "triton" else None
    if backend == "triton" and module is None:
        raise InputError("backend 'triton' is unavailable (needs triton and xfit.projector.triton)")
    if module is None and cuda:
        _warn_fallback()
    if module is None and torch.device(device).type == "cpu":
        module = _fused()
    return module if module is not None else reference


def resolved_backend(backend: str, device: torch.device) -> str:
    """Name of the backend that :func:`get_backend` picks: ``"reference"``, ``"fused"`` or ``"triton"``.

    ``"fused"`` runs its kernels when only ``mu`` needs a gradient and hands calls with geometry
    gradients (pose refinement) to the reference.
    """
    return get_backend(backend, device).__name__.rsplit(".", 1)[-1]


@functools.lru_cache(maxsize=1)
def _warn_fallback() -> None:
    """Warn once per process that CUDA tensors are projected by the (slower) reference backend."""
    import warnings

    warnings.warn(
        "the Triton projector is unavailable (triton missing or failed to import): CUDA tensors are "
        "projected by the pure-PyTorch reference backend, which is slower",
        stacklevel=3,
    )


def _views(views: View | Sequence[View]) -> list[View]:
    views = [views] if isinstance(views, View) else list(views)
    if not views or not all(isinstance(v, View) for v in views):
        raise GeometryError("views must be a non-empty list of xfit.geometry.View")
    if len({v.shape for v in views}) != 1 or len({v.projection for v in views}) != 1:
        raise GeometryError(
            "views in one call must share detector shape and projection; project them in separate calls"
        )
    return views


def project_rays(
    mu: Tensor | np.ndarray,
    affine: Tensor | np.ndarray,
    rays: Rays,
    *,
    step_mm: float | None = None,
    chunk_rays: int | None = None,
    backend: str = "auto",
) -> Tensor:
    """Line integrals of ``mu`` along arbitrary rays; see :func:`reference.project_rays`.

    Returns:
        ``[B, ...]`` for rays with tensors ``[..., 3]``.
    """
    mu = as_volume(mu)
    impl = get_backend(backend, mu.device)
    return impl.project_rays(mu, affine, rays, step_mm=step_mm, chunk_rays=chunk_rays)


def project(
    mu: Tensor | np.ndarray,
    affine: Tensor | np.ndarray,
    views: View | Sequence[View],
    *,
    angle_deg: Tensor | None = None,
    pose: Tensor | None = None,
    step_mm: float | None = None,
    chunk_rays: int | None = None,
    backend: str = "auto",
) -> Tensor:
    """Digitally reconstructed radiographs (line integrals of mu) of volumes for views.

    Args:
        mu: attenuation in 1/mm, ``[B, 1, I, J, K]``; ``[I, J, K]`` and ``[B, I, J, K]`` are
            accepted and treated as B = 1 / one channel.
        affine: ``[4, 4]`` or ``[B, 4, 4]`` voxel index -> world mm (tensor or numpy).
        views: V views sharing detector shape ``(R, C)`` and projection type.
        angle_deg: optional ``[V]`` differentiable angles overriding the views' (degrees).
        pose: optional ``[V, 4, 4]`` differentiable poses overriding the views'.
        step_mm: ray-marching step in mm (default half the smallest voxel spacing).
        chunk_rays: rays per chunk (default: about 2^22 samples per chunk).
        backend: ``"auto"``, ``"reference"``, ``"fused"`` or ``"triton"`` (see :func:`get_backend`).
    Returns:
        ``[B, V, R, C]`` line integrals (dimensionless), in ``mu``'s dtype and device;
        differentiable w.r.t. ``mu``, ``angle_deg``, ``pose`` and a tensor ``affine``.
    Raises:
        InputError: bad volume shape or backend. GeometryError: bad affine or views.
    """
    mu = as_volume(mu)
    views = _views(views)
    rays = make_rays(views, angle_deg=angle_deg, pose=pose, device=mu.device, dtype=mu.dtype)
    return project_rays(mu, affine, rays, step_mm=step_mm, chunk_rays=chunk_rays, backend=backend)


def backproject_rays(
    images: Tensor,
    affine: Tensor | np.ndarray,
    rays: Rays,
    volume_shape: Sequence[int],
    *,
    step_mm: float | None = None,
    chunk_rays: int | None = None,
    backend: str = "auto",
) -> Tensor:
    """Adjoint of :func:`project_rays` w.r.t. the volume; see :func:`reference.backproject_rays`."""
    impl = get_backend(backend, images.device)
    return impl.backproject_rays(images, affine, rays, volume_shape, step_mm=step_mm, chunk_rays=chunk_rays)


def backproject(
    images: Tensor,
    affine: Tensor | np.ndarray,
    views: View | Sequence[View],
    volume_shape: Sequence[int],
    *,
    angle_deg: Tensor | None = None,
    pose: Tensor | None = None,
    step_mm: float | None = None,
    chunk_rays: int | None = None,
    backend: str = "auto",
) -> Tensor:
    """Exact adjoint ``A^T`` of :func:`project` w.r.t. the volume (same discretisation).

    ``<project(x), y> == <x, backproject(y)>`` up to rounding for the same arguments.

    Args:
        images: ``[B, V, R, C]`` (units of line integrals).
        affine: ``[4, 4]`` or ``[B, 4, 4]`` voxel index -> world mm.
        views: the V views of ``images``.
        volume_shape: (I, J, K) of the volume to back-project into.
    Returns:
        ``[B, 1, I, J, K]`` in ``images``' dtype and device (units of images x mm),
        differentiable w.r.t. ``images``.
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise InputError(f"images must be a [B, V, R, C] tensor, got {getattr(images, 'shape', type(images))}")
    views = _views(views)
    rays = make_rays(views, angle_deg=angle_deg, pose=pose, device=images.device, dtype=images.dtype)
    return backproject_rays(images, affine, rays, volume_shape, step_mm=step_mm, chunk_rays=chunk_rays, backend=backend)
