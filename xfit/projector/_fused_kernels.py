"""numba kernels of :mod:`xfit.projector.fused` (imported only by it, on first use: importing this
module imports numba and registers the kernels; each compiles on its first call per dtype, or loads
from numba's cache, whose folder :func:`xfit.projector.fused._kernels` chooses).

Module-level functions (not closures) so that numba's on-disk cache can find them again in the
next process. Layouts: ``vol [B, I*J*K]`` with ``shape = (I, J, K)``; ``first, stride [B, M, 3]`` in ``grid_sample``'s
normalised units and (k, j, i) order (:func:`xfit.projector.reference.ray_steps`); ``dt [B, M]``
in mm; ``n`` samples per ray.
"""

import numba
import numpy as np
from numba import njit, prange

_OPTS = dict(fastmath=False, nogil=True, cache=bool(numba.config.CACHE_DIR))


@njit(inline="always", **_OPTS)
def _corner(v, ix, iy, iz, n_i, n_j, n_k):
    # trilinear interpolation with zero padding of the flat volume v [I*J*K] at the index-space
    # point (iz, iy, ix) = (i, j, k)
    x0f, y0f, z0f = np.floor(ix), np.floor(iy), np.floor(iz)
    x0, y0, z0 = int(x0f), int(y0f), int(z0f)
    fx, fy, fz = ix - x0f, iy - y0f, iz - z0f
    gx, gy, gz = 1.0 - fx, 1.0 - fy, 1.0 - fz
    if x0 >= 0 and y0 >= 0 and z0 >= 0 and x0 + 1 < n_k and y0 + 1 < n_j and z0 + 1 < n_i:
        c = (z0 * n_j + y0) * n_k + x0
        d = c + n_j * n_k
        return gz * (gy * (gx * v[c] + fx * v[c + 1]) + fy * (gx * v[c + n_k] + fx * v[c + n_k + 1])) + fz * (
            gy * (gx * v[d] + fx * v[d + 1]) + fy * (gx * v[d + n_k] + fx * v[d + n_k + 1])
        )
    acc = 0.0
    for dz in range(2):
        zi = z0 + dz
        if zi < 0 or zi >= n_i:
            continue
        wz = fz if dz else gz
        for dy in range(2):
            yi = y0 + dy
            if yi < 0 or yi >= n_j:
                continue
            wy = wz * (fy if dy else gy)
            row = (zi * n_j + yi) * n_k
            for dx in range(2):
                xi = x0 + dx
                if xi < 0 or xi >= n_k:
                    continue
                acc += wy * (fx if dx else gx) * v[row + xi]
    return acc


@njit(inline="always", **_OPTS)
def _scatter(v, g, ix, iy, iz, n_i, n_j, n_k):
    # adjoint of _corner: v[corner] += g * weight(corner)
    x0f, y0f, z0f = np.floor(ix), np.floor(iy), np.floor(iz)
    x0, y0, z0 = int(x0f), int(y0f), int(z0f)
    fx, fy, fz = ix - x0f, iy - y0f, iz - z0f
    gx, gy, gz = 1.0 - fx, 1.0 - fy, 1.0 - fz
    if x0 >= 0 and y0 >= 0 and z0 >= 0 and x0 + 1 < n_k and y0 + 1 < n_j and z0 + 1 < n_i:
        c = (z0 * n_j + y0) * n_k + x0
        d = c + n_j * n_k
        w = g * gz * gy
        v[c] += w * gx
        v[c + 1] += w * fx
        w = g * gz * fy
        v[c + n_k] += w * gx
        v[c + n_k + 1] += w * fx
        w = g * fz * gy
        v[d] += w * gx
        v[d + 1] += w * fx
        w = g * fz * fy
        v[d + n_k] += w * gx
        v[d + n_k + 1] += w * fx
        return
    for dz in range(2):
        zi = z0 + dz
        if zi < 0 or zi >= n_i:
            continue
        wz = g * (fz if dz else gz)
        for dy in range(2):
            yi = y0 + dy
            if yi < 0 or yi >= n_j:
                continue
            wy = wz * (fy if dy else gy)
            row = (zi * n_j + yi) * n_k
            if 0 <= x0 < n_k:
                v[row + x0] += wy * gx
            if -1 <= x0 < n_k - 1:
                v[row + x0 + 1] += wy * fx


@njit(parallel=True, **_OPTS)
def forward(vol, shape, first, stride, dt, n, out):
    # vol [B, I*J*K] (shape = (I, J, K)); first, stride [B, M, 3] (normalised, (k, j, i) order);
    # dt, out [B, M]
    n_i, n_j, n_k = shape
    n_b, n_m = dt.shape
    sk, sj, si = 0.5 * (n_k - 1), 0.5 * (n_j - 1), 0.5 * (n_i - 1)
    for r in prange(n_b * n_m):
        b = r // n_m
        m = r - b * n_m
        step = dt[b, m]
        if step == 0.0:
            out[b, m] = 0.0
            continue
        v = vol[b]
        a0, a1, a2 = (first[b, m, 0] + 1.0) * sk, (first[b, m, 1] + 1.0) * sj, (first[b, m, 2] + 1.0) * si
        s0, s1, s2 = stride[b, m, 0] * sk, stride[b, m, 1] * sj, stride[b, m, 2] * si
        acc = 0.0
        for s in range(n):
            acc += _corner(v, a0 + s * s0, a1 + s * s1, a2 + s * s2, n_i, n_j, n_k)
        out[b, m] = acc * step


@njit(parallel=True, **_OPTS)
def adjoint(grad, shape, first, stride, dt, n, buf):
    # grad, dt [B, M]; buf [T, B, I*J*K] zeros: worker t scatters rays t, t + T, ... into buf[t]
    n_i, n_j, n_k = shape
    n_t = buf.shape[0]
    n_b, n_m = dt.shape
    sk, sj, si = 0.5 * (n_k - 1), 0.5 * (n_j - 1), 0.5 * (n_i - 1)
    for t in prange(n_t):
        for r in range(t, n_b * n_m, n_t):
            b = r // n_m
            m = r - b * n_m
            g = grad[b, m] * dt[b, m]
            if g == 0.0:
                continue
            v = buf[t, b]
            a0, a1, a2 = (first[b, m, 0] + 1.0) * sk, (first[b, m, 1] + 1.0) * sj, (first[b, m, 2] + 1.0) * si
            s0, s1, s2 = stride[b, m, 0] * sk, stride[b, m, 1] * sj, stride[b, m, 2] * si
            for s in range(n):
                _scatter(v, g, a0 + s * s0, a1 + s * s1, a2 + s * s2, n_i, n_j, n_k)
