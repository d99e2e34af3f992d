"""World-consistent random fields: hashed lattice values, B-spline smooth fields, voxel noise.

Every value is a function of a world position (mm) and a key, never of the grid that samples it,
so a crop of a large phantom equals the small phantom of the same seed (``xfit.phantoms``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def hash_u32(x: np.ndarray) -> np.ndarray:
    """lowbias32 integer hash of a uint32 array."""
    x = np.array(x, dtype=np.uint32, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    return x


def _u32(a: np.ndarray | int) -> np.ndarray:
    return (np.asarray(a, dtype=np.int64) % (1 << 32)).astype(np.uint32)


def _mix(mx: np.ndarray, my: np.ndarray, mz: np.ndarray, key: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (
            _u32(mx)[:, None, None] * np.uint32(0x9E3779B1)
            + _u32(my)[None, :, None] * np.uint32(0x85EBCA77)
            + _u32(mz)[None, None, :] * np.uint32(0xC2B2AE3D)
            + hash_u32(_u32(key))
        )


def lattice_values(mx: np.ndarray, my: np.ndarray, mz: np.ndarray, key: int) -> np.ndarray:
    """Unit-variance uniform pseudo-random values ``[Mx, My, Mz]`` at integer lattice nodes."""
    h = hash_u32(hash_u32(_mix(mx, my, mz, key)))
    return ((h.astype(np.float64) / 4294967296.0) * 2.0 - 1.0).astype(np.float32) * np.float32(math.sqrt(3.0))


def _bspline_weights(coords: np.ndarray, cell_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Cubic B-spline weights ``[n, M]`` of world coordinates on lattice nodes ``m * cell_mm``."""
    u = coords / cell_mm
    ms = np.arange(math.floor(u.min()) - 2, math.floor(u.max()) + 3)
    t = np.abs(u[:, None] - ms[None, :])
    w = np.where(t < 1, 2 / 3 - t**2 + t**3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))
    return ms, w.astype(np.float32)


def smooth_field(
    xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, key: int, cell_mm: float | Sequence[float]
) -> np.ndarray:
    """Smooth zero-mean, ~unit-std random field ``[I, J, K]`` at the world axes ``xs, ys, zs`` (mm).

    Args:
        cell_mm: lattice spacing (mm), one value or one per axis (an anisotropic texture, e.g.
            trabeculae elongated along the body axis).
    """
    cx, cy, cz = (cell_mm,) * 3 if np.isscalar(cell_mm) else tuple(cell_mm)  # type: ignore[misc]
    mx, wx = _bspline_weights(np.asarray(xs, np.float64), float(cx))
    my, wy = _bspline_weights(np.asarray(ys, np.float64), float(cy))
    mz, wz = _bspline_weights(np.asarray(zs, np.float64), float(cz))
    v = lattice_values(mx, my, mz, key)
    f = v @ wz.T  # [Mx, My, K]
    f = np.einsum("jb,abk->ajk", wy, f, optimize=True)  # [Mx, J, K]
    f = np.tensordot(wx, f, axes=(1, 0))  # [I, J, K]
    return f * np.float32(1.0 / 0.479**1.5)


def voxel_noise(axes: Sequence[np.ndarray], spacing_mm: float, key: int) -> np.ndarray:
    """Approximately standard normal white noise ``[I, J, K]`` keyed by world voxel positions.

    Args:
        axes: the grid's world coordinates per axis (mm), on a lattice of ``spacing_mm``
            (whole or half voxels from the origin).
    """
    g = [np.rint(2.0 * np.asarray(a, np.float64) / spacing_mm).astype(np.int64) for a in axes]
    h = hash_u32(_mix(g[0], g[1], g[2], key))
    s = (h & np.uint32(255)).astype(np.float32)
    for sh in (8, 16, 24):
        s += ((h >> np.uint32(sh)) & np.uint32(255)).astype(np.float32)
    return (s - np.float32(510.0)) * np.float32(1.0 / 147.8)
