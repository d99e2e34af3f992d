"""A smooth residual volume: the last, optional stage that lets a fit leave the prior's range.

The prior can only produce what it has learned. After W+ and noise have converged, an optional
stage (``residual_steps`` > 0 in the fit config) freezes them and fits a coarse grid of HU
control points, upsampled trilinearly to the volume and added to the generated HU. A Gaussian
prior on its values and on their curvature (:func:`residual_penalty`, weight
``lambda_residual``) keeps it smooth and small, so it corrects intensities and shapes at the
scale of a few voxels without painting structure the two views cannot see.

Control points are in units of :data:`HU_UNIT` so that the fit's learning rates stay O(0.01-0.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

#: HU per unit of a residual control point.
HU_UNIT = 100.0


def upsample_residual(grid: Tensor, shape: Sequence[int]) -> Tensor:
    """HU residual on the volume grid.

    Args:
        grid: ``[B, 1, g, g, g]`` control points (units of :data:`HU_UNIT`).
        shape: volume (I, J, K).
    Returns:
        ``[B, 1, I, J, K]`` HU; corner control points sit on the corner voxels.
    """
    return HU_UNIT * F.interpolate(grid, size=tuple(shape), mode="trilinear", align_corners=True)


def smoothness_penalty(grid: Tensor, dims: Sequence[int]) -> Tensor:
    """``mean(x^2)`` plus ``mean`` squared second differences along ``dims``, per batch item.

    A zero-mean Gaussian prior on the values and on their curvature (negative log-prior up to
    constants). Args: ``grid [B, ...]``. Returns ``[B]``.
    """
    curvature = grid.new_zeros(grid.shape[0])
    for d in dims:
        n = grid.shape[d]
        if n < 3:
            continue
        d2 = grid.narrow(d, 2, n - 2) - 2 * grid.narrow(d, 1, n - 2) + grid.narrow(d, 0, n - 2)
        curvature = curvature + d2.square().flatten(1).mean(-1)
    return grid.square().flatten(1).mean(-1) + curvature


def residual_penalty(grid: Tensor) -> Tensor:
    """Size + curvature penalty of residual control points ``[B, 1, g, g, g]`` -> ``[B]``."""
    return smoothness_penalty(grid, (2, 3, 4))
