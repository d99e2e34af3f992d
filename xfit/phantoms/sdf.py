"""Signed-distance primitives (mm, negative inside), rotations and partial-volume occupancy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def rot(axis: int, deg: float) -> np.ndarray:
    """``[3, 3]`` rotation by ``deg`` about the world axis ``axis`` (0 x, 1 y, 2 z)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum (fillet radius ~``k`` mm) of two signed distances."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def ellcapsule(
    q: Sequence[np.ndarray], p0: np.ndarray, p1: np.ndarray, n1: np.ndarray, r1: float, r2: float
) -> np.ndarray:
    """Approximate signed distance to a capsule with elliptic cross-section.

    Args:
        q: three broadcastable arrays of point coordinates (mm).
        p0, p1: ``[3]`` segment ends. n1: ``[3]`` direction of the ``r1`` half-axis (made
            perpendicular to the segment); ``r2`` lies along ``(p1 - p0) x n1``.
    """
    d = np.asarray(p1, float) - np.asarray(p0, float)
    length = float(np.linalg.norm(d))
    e = d / max(length, 1e-9)
    n1 = np.asarray(n1, float) - float(np.dot(n1, e)) * e
    n1 /= max(float(np.linalg.norm(n1)), 1e-9)
    n2 = np.cross(e, n1)
    rel = [q[i] - np.float32(p0[i]) for i in range(3)]
    t = sum(rel[i] * np.float32(e[i]) for i in range(3))
    ex = t - np.clip(t, 0.0, length)
    a = sum(rel[i] * np.float32(n1[i]) for i in range(3))
    b = sum(rel[i] * np.float32(n2[i]) for i in range(3))
    rc = min(r1, r2)
    k0 = np.sqrt((ex / rc) ** 2 + (a / r1) ** 2 + (b / r2) ** 2)
    k1 = np.sqrt((ex / rc**2) ** 2 + (a / r1**2) ** 2 + (b / r2**2) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def ellipse2d(u: np.ndarray, v: np.ndarray, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Approximate signed distance to the ellipse ``(u/a)^2 + (v/b)^2 = 1``."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    k1 = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def ellipsoid(q: Sequence[np.ndarray], c: Sequence[float], r: Sequence[float]) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipsoid of centre ``c`` and radii ``r``."""
    k0 = np.sqrt(sum(((q[i] - np.float32(c[i])) / r[i]) ** 2 for i in range(3)))
    k1 = np.sqrt(sum(((q[i] - np.float32(c[i])) / r[i] ** 2) ** 2 for i in range(3)))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def occupancy(sdf: np.ndarray, spacing: float) -> np.ndarray:
    """Partial-volume fraction in [0, 1] of a signed distance (one-voxel linear ramp)."""
    return np.clip(0.5 - sdf / spacing, 0.0, 1.0)
