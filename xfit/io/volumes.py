"""NIfTI volumes: :class:`Volume` (data ``[I, J, K]`` with its voxel index -> world mm affine),
reading (reoriented to the closest canonical RAS+), writing, resampling and centred crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..errors import InputError
from ..units import HU_AIR
from .files import PathLike, _one_line, _to_numpy, atomic_write


@dataclass
class Volume:
    """A 3D volume with its voxel-index -> world (RAS+ mm) affine.

    Attributes:
        data: ``[I, J, K]`` voxel values (float32 HU for CT, integers for label maps).
        affine: ``[4, 4]`` float64 voxel index -> world mm.
    """

    data: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise InputError(f"affine must be 4x4, got shape {self.affine.shape}")
        if np.asarray(self.data).ndim != 3:
            raise InputError(f"volume data must be 3D [I, J, K], got shape {np.shape(self.data)}")

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size (mm) along I, J, K: the column norms of the affine."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid size ``(I, J, K)``."""
        i, j, k = self.data.shape
        return (int(i), int(j), int(k))

    @property
    def centre_mm(self) -> np.ndarray:
        """World position ``[3]`` (mm) of the volume centre (midpoint of the corner voxels)."""
        centre_idx = (np.asarray(self.shape, dtype=np.float64) - 1.0) / 2.0
        return self.affine[:3, :3] @ centre_idx + self.affine[:3, 3]


def read_nifti(path: PathLike, *, dtype: Any = np.float32) -> Volume:
    """Read a NIfTI (``.nii`` / ``.nii.gz``) volume reoriented to the closest canonical RAS+.

    A 4D image with a trailing singleton dimension is squeezed to 3D. Float dtypes get the
    header scaling applied; integer dtypes (label maps) are rounded.

    Raises:
        InputError: missing or unreadable file, not 3D, empty (a zero-size axis), non-finite
            values. The message names the file.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{path}: not a NIfTI file ({type(img).__name__})")
        shape = tuple(img.shape)
        while len(shape) > 3 and shape[-1] == 1:
            img = img.slicer[(Ellipsis, 0)]
            shape = tuple(img.shape)
        if len(shape) != 3:
            raise InputError(f"{path}: expected a 3D volume, got shape {shape}")
        if 0 in shape:
            raise InputError(f"{path}: the volume is empty (shape {shape})")
        img = nib.as_closest_canonical(img)
        if np.issubdtype(np.dtype(dtype), np.floating):
            data = img.get_fdata(dtype=np.float64).astype(dtype, copy=False)
        else:
            raw = np.asanyarray(img.dataobj)
            if not np.all(np.isfinite(raw)):
                raise InputError(f"{path}: the volume holds NaN or infinite values")
            data = np.rint(raw).astype(dtype) if np.issubdtype(raw.dtype, np.floating) else raw.astype(dtype)
        affine = np.asarray(img.affine, dtype=np.float64)
    except InputError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt/foreign files
        raise InputError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {_one_line(exc)})") from exc
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise InputError(f"{path}: the volume holds NaN or infinite values")
    if not np.all(np.isfinite(affine)):
        raise InputError(f"{path}: the affine is not finite")
    return Volume(data=np.ascontiguousarray(data), affine=affine)


def write_nifti(
    path: PathLike,
    data: np.ndarray | Tensor,
    affine: np.ndarray | Tensor,
    *,
    force: bool = False,
    dtype: Any = None,
) -> Path:
    """Write a 3D volume ``[I, J, K]`` as NIfTI (``.nii`` or ``.nii.gz`` from the suffix), atomically.

    With ``dtype=None`` integer/bool arrays (label maps) are stored as int16 and floats as
    float32. qform and sform both hold ``affine`` (scanner code), units are mm.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false.
        InputError: wrong shape/affine, or integers outside the int16 range.
    """
    import nibabel as nib

    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise InputError(f"{path}: a NIfTI file name must end with .nii or .nii.gz")
    arr = _to_numpy(data)
    aff = _to_numpy(affine).astype(np.float64)
    if arr.ndim != 3:
        raise InputError(f"{path}: volume data must be 3D [I, J, K], got shape {arr.shape}")
    if aff.shape != (4, 4):
        raise InputError(f"{path}: affine must be 4x4, got shape {aff.shape}")
    if dtype is None:
        if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
            if arr.size and (arr.min() < np.iinfo(np.int16).min or arr.max() > np.iinfo(np.int16).max):
                raise InputError(f"{path}: label values do not fit int16")
            dtype = np.int16
        else:
            dtype = np.float32
    arr = np.ascontiguousarray(arr.astype(dtype))
    img = nib.Nifti1Image(arr, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_write(path, force=force) as tmp:
        nib.save(img, str(tmp))
    return path


def _spacing3(spacing_mm: float | Sequence[float]) -> np.ndarray:
    s = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if s.size == 1:
        s = np.repeat(s, 3)
    if s.size != 3 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(f"spacing_mm must be one positive number or three, got {spacing_mm!r}")
    return s


def resample(
    volume: Volume,
    spacing_mm: float | Sequence[float],
    *,
    order: int = 1,
    shape: Sequence[int] | None = None,
    cval: float = HU_AIR,
) -> Volume:
    """Resample a volume to a new voxel spacing, keeping its axis directions and world centre.

    The output grid keeps the physical extent (``shape_out ~ shape_in * spacing_in /
    spacing_out``) and its centre voxel position coincides with the input's. ``shape`` forces the
    output grid size (crop/pad about the same centre); points outside the input get ``cval``.

    Args:
        volume: input volume ``[I, J, K]``.
        spacing_mm: new voxel size in mm, one number (isotropic) or three.
        order: spline order, 1 = trilinear (intensities), 0 = nearest (label maps).
        shape: optional output grid ``(I, J, K)``.
        cval: fill value outside the input (-1000 = air in HU; use 0 for label maps).
    Returns:
        A new :class:`Volume` of the input dtype.
    """
    s_out = _spacing3(spacing_mm)
    a_in = volume.affine
    s_in = np.asarray(volume.spacing_mm)
    n_in = np.asarray(volume.shape, dtype=np.float64)
    if shape is None:
        n_out = np.maximum(1, np.rint(n_in * s_in / s_out)).astype(int)
    else:
        n_out = np.asarray(shape, dtype=int).reshape(-1)
        if n_out.size != 3 or np.any(n_out < 1):
            raise InputError(f"shape must be three positive sizes, got {shape!r}")
    directions = a_in[:3, :3] / s_in[None, :]
    a_out = np.eye(4)
    a_out[:3, :3] = directions * s_out[None, :]
    a_out[:3, 3] = volume.centre_mm - a_out[:3, :3] @ ((n_out - 1.0) / 2.0)
    return resample_onto(volume, a_out, n_out, order=order, cval=cval)


def resample_onto(
    volume: Volume, affine: np.ndarray, shape: Sequence[int], *, order: int = 1, cval: float = HU_AIR
) -> Volume:
    """Resample a volume onto any grid: voxel index -> world mm ``affine`` ``[4, 4]`` and ``shape``.

    Both volumes live in one world frame; output voxels whose world point lies outside the input
    get ``cval`` (-1000 = air in HU; 0 for label maps). ``order``: 1 trilinear, 0 nearest.
    """
    from scipy import ndimage

    n_out = np.asarray(shape, dtype=int).reshape(-1)
    if n_out.size != 3 or np.any(n_out < 1):
        raise InputError(f"shape must be three positive sizes, got {shape!r}")
    a_out = np.asarray(affine, dtype=np.float64)
    n_in = np.asarray(volume.shape, dtype=np.float64)
    out_to_in = np.linalg.inv(volume.affine) @ a_out  # output index -> input index
    matrix, offset = out_to_in[:3, :3], out_to_in[:3, 3]

    src = volume.data
    work = src if np.issubdtype(src.dtype, np.floating) or order == 0 else src.astype(np.float32)
    out = ndimage.affine_transform(
        work, matrix, offset=offset, output_shape=tuple(int(x) for x in n_out), order=order, mode="nearest"
    )
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in n_out], indexing="ij")).reshape(3, -1)
    corners_in = matrix @ corners + offset[:, None]
    eps = 1e-6
    if np.any(corners_in < -0.5 - eps) or np.any(corners_in > (n_in - 0.5 + eps)[:, None]):
        inside = ndimage.affine_transform(
            np.ones(volume.shape, np.uint8),
            matrix,
            offset=offset,
            output_shape=tuple(int(x) for x in n_out),
            order=0,
            mode="constant",
            cval=0,
        )
        out = np.where(inside.astype(bool), out, np.asarray(cval, dtype=out.dtype))
    if out.dtype != src.dtype:
        out = np.rint(out) if not np.issubdtype(src.dtype, np.floating) else out
        out = out.astype(src.dtype)
    return Volume(data=np.ascontiguousarray(out), affine=a_out)


def crop_start(centre_vox: Sequence[float], size: int) -> list[int]:
    """First voxel index per axis of the ``size^3`` cube :func:`crop_centred` cuts around
    ``centre_vox`` (rounded to whole voxels)."""
    return [int(round(c - (size - 1) / 2)) for c in centre_vox]


def crop_centred(data: np.ndarray, centre_vox: Sequence[float], size: int, fill: float) -> np.ndarray:
    """Cut a ``size^3`` cube centred on a voxel position, padding with ``fill`` outside.

    Args:
        data: ``[I, J, K]`` array.
        centre_vox: fractional voxel index of the cube centre (rounded to the nearest voxel grid
            position that keeps the cube centre at ``(size-1)/2``, see :func:`crop_start`).
    """
    out = np.full((size,) * 3, fill, dtype=data.dtype)
    start = crop_start(centre_vox, size)
    src, dst = [], []
    for ax, s0 in enumerate(start):
        a0, a1 = max(s0, 0), min(s0 + size, data.shape[ax])
        if a1 <= a0:
            return out
        src.append(slice(a0, a1))
        dst.append(slice(a0 - s0, a1 - s0))
    out[tuple(dst)] = data[tuple(src)]
    return out
