"""Global similarity transform of the generated volume ("anatomy that moves").

A real vertebra is tilted, rotated and sized differently from the prior's average. Rather than
asking the latent space to express that, the fit moves the generated volume as a whole: a
rotation about the cube's centre, a translation and an isotropic scale,

    p_world = c + t + s R (p - c),    for p on the generated volume's grid (affine A0),

so the projected volume has the affine ``T @ A0``. The projector marches rays in world mm, so a
larger scale also lengthens the paths (line integrals scale with size, as they should).

Parameters are a ``[B, 7]`` tensor ``v`` in units of their prior's standard deviations:

* ``v[:, 0:3] * sigma_deg``: rotation vector (axis x angle, degrees; for small angles about the
  rotations about x, y and z),
* ``v[:, 3:6] * sigma_mm``: translation (mm, world RAS),
* ``v[:, 6] * sigma_log_scale``: log of the isotropic scale,

so one learning rate suits all seven and their Gaussian prior is simply ``mean(v^2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..geometry import rotation_matrix

#: Number of parameters of a similarity transform (3 rotation, 3 translation, 1 log-scale).
NUM_PARAMS = 7


@dataclass(frozen=True)
class TransformSigmas:
    """Standard deviations of the Gaussian prior on the transform.

    Attributes:
        deg: rotation (each rotation-vector component), degrees.
        mm: translation (each axis), mm.
        log_scale: natural log of the isotropic scale.
    """

    deg: float = 10.0
    mm: float = 5.0
    log_scale: float = 0.1

    def vector(self, device=None, dtype=torch.float32) -> Tensor:
        """``[7]`` per-parameter sigmas (rotation in radians)."""
        r = math.radians(self.deg)
        return torch.tensor([r, r, r, self.mm, self.mm, self.mm, self.log_scale], device=device, dtype=dtype)


def check_params(v: Tensor) -> None:
    if v.ndim != 2 or v.shape[1] != NUM_PARAMS:
        raise InputError(f"transform parameters must be [B, {NUM_PARAMS}], got {list(v.shape)}")


def similarity_matrix(v: Tensor, centre_mm: Tensor, sigmas: TransformSigmas) -> Tensor:
    """World-to-world similarity transforms about ``centre_mm``.

    Args:
        v: ``[B, 7]`` parameters in sigma units (see the module docstring).
        centre_mm: ``[3]`` rotation and scaling centre (the cube's centre), world mm.
        sigmas: standard deviations that scale ``v``.
    Returns:
        ``[B, 4, 4]`` matrices ``T`` with ``T p = c + t + s R (p - c)``; differentiable in ``v``.
    """
    check_params(v)
    x = v * sigmas.vector(v.device, v.dtype)
    rot = rotation_matrix(x[:, :3]) * torch.exp(x[:, 6])[:, None, None]  # s R
    c = centre_mm.to(v)
    trans = c + x[:, 3:6] - (rot @ c[:, None])[..., 0]
    top = torch.cat([rot, trans[:, :, None]], -1)
    bottom = torch.zeros(v.shape[0], 1, 4, dtype=v.dtype, device=v.device)
    bottom[:, 0, 3] = 1
    return torch.cat([top, bottom], -2)


def moved_affine(affine: Tensor, v: Tensor, centre_mm: Tensor, sigmas: TransformSigmas) -> Tensor:
    """Affines ``[B, 4, 4]`` of the moved volumes: ``T(v) @ affine``.

    Args:
        affine: ``[4, 4]`` voxel index -> world mm of the generated grid.
        v: ``[B, 7]`` transform parameters.
        centre_mm: ``[3]`` the grid's centre (rotation and scaling centre).
    """
    return similarity_matrix(v, centre_mm, sigmas) @ affine.to(v)


def transform_prior(v: Tensor) -> Tensor:
    """Gaussian negative log-prior of the transform, ``mean(v^2)`` over its 7 parameters: ``[B]``."""
    check_params(v)
    return v.square().mean(-1)


def resample_to_grid(volume: Tensor, transform: Tensor, affine: Tensor, fill: float | None) -> Tensor:
    """Values of moved volumes on the fixed grid of ``affine`` (trilinear).

    The moved volume ``b`` has voxel ``x`` at world ``T_b A x``; the fixed grid's voxel ``y``
    (world ``A y``) takes its value at index ``A^-1 T_b^-1 A y``.

    Args:
        volume: ``[B, 1, I, J, K]`` values on the generated grid.
        transform: ``[B, 4, 4]`` world-to-world transforms ``T``.
        affine: ``[4, 4]`` voxel index -> world mm of both grids.
        fill: value outside the moved volume (e.g. 0 for a label probability), or ``None`` to
            repeat its border voxels (HU: the tissue at the cube's faces goes on, as it does in
            the patient).
    Returns:
        ``[B, 1, I, J, K]``.
    """
    b, _, i, j, k = volume.shape
    a = affine.to(volume)
    index_map = torch.linalg.inv(a) @ torch.linalg.inv(transform.to(volume)) @ a  # [B, 4, 4]
    axes = [torch.arange(n, dtype=volume.dtype, device=volume.device) for n in (i, j, k)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # [N, 3]
    src = grid @ index_map[:, :3, :3].transpose(1, 2) + index_map[:, None, :3, 3]  # [B, N, 3]
    size = torch.tensor([i, j, k], dtype=volume.dtype, device=volume.device)
    norm = (2 * src / (size - 1) - 1).flip(-1).reshape(b, i, j, k, 3)  # grid_sample wants (k, j, i)
    if fill is None:
        return F.grid_sample(volume, norm, mode="bilinear", padding_mode="border", align_corners=True)
    out = F.grid_sample(volume - fill, norm, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out + fill


def describe(v: Tensor, sigmas: TransformSigmas) -> dict[str, list[float] | float]:
    """Report entry of one transform ``[7]``: rotation vector (deg), translation (mm), scale."""
    x = v.detach().double().cpu() * sigmas.vector(dtype=torch.float64)
    return {
        "rotation_deg": [math.degrees(float(a)) for a in x[:3]],
        "translation_mm": [float(t) for t in x[3:6]],
        "scale": math.exp(float(x[6])),
    }
