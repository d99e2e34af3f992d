"""Intensity units in one place: Hounsfield units (HU), linear attenuation (mu, 1/mm) and the
prior's unit intensity (HU window mapped to ``[-1, 1]``).

Conventions (``docs/architecture.md``, "Intensities"):

* CT intensities are HU; attenuation is ``mu = MU_WATER * max(0, 1 + HU / 1000)`` per mm
  (:func:`hu_to_mu`, inverse :func:`mu_to_hu`), so air (-1000 HU) is 0 and water (0 HU) is
  :data:`MU_WATER`.
* The prior's generator works in unit intensity: HU clamped to a window ``(low, high)``
  (default :data:`HU_WINDOW`) and mapped linearly to ``[-1, 1]`` (:func:`hu_to_unit`, inverse
  :func:`unit_to_hu`).

Every function works on torch tensors (differentiable), numpy arrays and, where stated, Python
numbers; the shape is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

#: Linear attenuation coefficient of water in 1/mm (documented approximation, ~70 keV).
MU_WATER: float = 0.02

#: HU of air (vacuum in the attenuation model: ``hu_to_mu(HU_AIR) == 0``); the fill value
#: outside a CT's field of view.
HU_AIR: float = -1000.0

#: Default HU window ``(low, high)``: air to dense cortical bone. The prior maps it to ``[-1, 1]``
#: (``PriorConfig.hu_window``) and the evaluation metrics clip volumes to it.
HU_WINDOW: tuple[float, float] = (-1000.0, 1500.0)

ArrayLike = TypeVar("ArrayLike", np.ndarray, Tensor, float)


# ----------------------------------------------------------------------------- HU <-> mu


def hu_to_mu(hu: ArrayLike) -> ArrayLike:
    """Hounsfield units to linear attenuation ``mu = MU_WATER * max(0, 1 + HU/1000)`` (1/mm).

    Works on torch tensors (differentiable), numpy arrays and Python numbers; shape is kept.
    """
    if isinstance(hu, Tensor):
        return MU_WATER * torch.clamp(1.0 + hu / 1000.0, min=0.0)
    if isinstance(hu, np.ndarray):
        return MU_WATER * np.maximum(0.0, 1.0 + hu / 1000.0)
    return MU_WATER * max(0.0, 1.0 + float(hu) / 1000.0)


def mu_to_hu(mu: ArrayLike, mu_water: float = MU_WATER) -> ArrayLike:
    """Inverse of :func:`hu_to_mu` for ``mu > 0``; ``mu <= 0`` maps to -1000 HU (air).

    Args:
        mu: linear attenuation (1/mm).
        mu_water: the attenuation of water that defines 0 HU (default :data:`MU_WATER`; another
            value gives the HU of a scan at another energy, e.g. a tissue table at 70 keV).
    """
    if isinstance(mu, Tensor):
        return 1000.0 * (torch.clamp(mu, min=0.0) / mu_water - 1.0)
    if isinstance(mu, np.ndarray):
        return 1000.0 * (np.maximum(mu, 0.0) / mu_water - 1.0)
    return 1000.0 * (max(float(mu), 0.0) / mu_water - 1.0)


# ----------------------------------------------------------------------------- HU window <-> [-1, 1]


def hu_to_unit(hu: ArrayLike, window: Sequence[float]) -> ArrayLike:
    """Clamp HU to ``window`` and map it linearly to ``[-1, 1]``.

    Args:
        hu: any-shape tensor (its dtype is kept) or numpy array (returned as float32) in HU.
        window: ``(low, high)`` HU, ``low < high``.

    Returns:
        The same shape in ``[-1, 1]``.
    """
    lo, hi = float(window[0]), float(window[1])
    if isinstance(hu, Tensor):
        return (hu.clamp(lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0
    return ((np.clip(hu, lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0).astype(np.float32)


def unit_to_hu(x: Tensor, window: Sequence[float]) -> Tensor:
    """Inverse of :func:`hu_to_unit` without clamping (so gradients flow everywhere).

    Args:
        x: any-shape tensor (or numpy array) in unit intensity (nominally ``[-1, 1]``).
        window: ``(low, high)`` HU.

    Returns:
        The same shape in HU.
    """
    lo, hi = float(window[0]), float(window[1])
    return (x + 1.0) * (0.5 * (hi - lo)) + lo
