"""Sampling grids and the canvas that composites tissues, bone, labels and tissue classes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .labels import TISSUE


class Grid:
    """A box of ``shape`` voxels of ``spacing`` mm whose centre is the world point ``centre``.

    Voxel ``(i, j, k)`` sits at ``centre + (index - (shape - 1) / 2) * spacing``.
    """

    def __init__(self, shape: Sequence[int], spacing: float, centre: Sequence[float] = (0, 0, 0)):
        self.shape = tuple(int(s) for s in shape)
        self.spacing = float(spacing)
        self.centre = np.asarray(centre, np.float64)
        self.axes = [
            ((np.arange(n) - (n - 1) / 2.0) * spacing + c).astype(np.float32) for n, c in zip(self.shape, self.centre)
        ]

    @property
    def affine(self) -> np.ndarray:
        """``[4, 4]`` voxel index -> world mm."""
        a = np.diag([self.spacing] * 3 + [1.0])
        a[:3, 3] = [float(ax[0]) for ax in self.axes]
        return a

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices covering the world box ``[lo, hi]`` (mm), or None when outside."""
        out = []
        for d in range(3):
            o = float(self.axes[d][0])
            i0 = max(int(math.floor((lo[d] - o) / self.spacing)), 0)
            i1 = min(int(math.ceil((hi[d] - o) / self.spacing)) + 1, self.shape[d])
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)  # type: ignore[return-value]

    def full(self) -> tuple[slice, slice, slice]:
        return tuple(slice(0, n) for n in self.shape)  # type: ignore[return-value]

    def points(self, sl: tuple[slice, slice, slice]) -> list[np.ndarray]:
        """World coordinates (broadcastable ``[i,1,1]``, ``[1,j,1]``, ``[1,1,k]``) of a box."""
        return [
            self.axes[0][sl[0]][:, None, None],
            self.axes[1][sl[1]][None, :, None],
            self.axes[2][sl[2]][None, None, :],
        ]


def to_local(pts: Sequence[np.ndarray], c: np.ndarray, r: np.ndarray) -> list[np.ndarray]:
    """Local coordinates ``R^T (p - c)`` of broadcastable world points."""
    d = [pts[i] - np.float32(c[i]) for i in range(3)]
    return [(d[0] * np.float32(r[0, m]) + d[1] * np.float32(r[1, m]) + d[2] * np.float32(r[2, m])) for m in range(3)]


class Canvas:
    """Accumulates soft-tissue HU, bone (occupancy, HU), the vertebra labels and tissue classes."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.tissue_hu = np.full(grid.shape, -1000.0, np.float32)
        self.tissue = np.full(grid.shape, TISSUE["air"], np.int16)
        self.seg = np.zeros(grid.shape, np.int16)
        self.bone_occ = np.zeros(grid.shape, np.float32)
        self.bone_hu = np.zeros(grid.shape, np.float32)
        self.overlay_occ: np.ndarray | None = None  # metal, drawn over everything else
        self.overlay_hu = 0.0

    def soft(self, sl, occ: np.ndarray, hu: np.ndarray | float, tissue: str | None) -> None:
        """Blend a soft structure of occupancy ``occ`` (broadcastable to the box) into the map."""
        t = self.tissue_hu[sl]
        occ = np.broadcast_to(occ, t.shape)
        t += occ * (np.asarray(hu, np.float32) - t)
        if tissue is not None:
            self.tissue[sl][occ >= 0.5] = TISSUE[tissue]

    def bone(self, sl, occ: np.ndarray, hu: np.ndarray, tissue: str, label: int = 0) -> None:
        """Composite a bone of occupancy ``occ`` and HU ``hu`` (larger occupancy wins)."""
        bo, bh = self.bone_occ[sl], self.bone_hu[sl]
        occ = np.broadcast_to(occ, bo.shape)
        hu = np.broadcast_to(hu, bo.shape)
        m = occ > bo
        bh[m] = hu[m]
        bo[m] = occ[m]
        inside = occ >= 0.5
        self.tissue[sl][inside] = TISSUE[tissue]
        if label:
            self.seg[sl][inside] = label

    def overlay(self, sl, occ: np.ndarray, hu: float, tissue: str) -> None:
        """Draw a structure over everything (metal); vertebra labels are kept."""
        if self.overlay_occ is None:
            self.overlay_occ = np.zeros(self.grid.shape, np.float32)
        o = self.overlay_occ[sl]
        occ = np.broadcast_to(occ, o.shape)
        np.maximum(o, occ, out=o)
        self.overlay_hu = float(hu)
        self.tissue[sl][occ >= 0.5] = TISSUE[tissue]

    def hu(self) -> np.ndarray:
        """``[I, J, K]`` composite HU."""
        out = self.bone_occ * self.bone_hu + (1.0 - self.bone_occ) * self.tissue_hu
        if self.overlay_occ is not None:
            out += self.overlay_occ * (np.float32(self.overlay_hu) - out)
        return out
