"""TransVert: Bayat, Sekuboyina et al., "Inferring the 3D standing spine posture from 2D
radiographs", MICCAI 2020 ([TransVert], ``docs/references.md``).

Input: the coronal (AP) and sagittal (lateral) vertebra patches and, for each, an annotation
image of the vertebra of interest (VOI): a disc of radius 1 px around the projected vertebral
centroid. Network: one 2D encoder per view whose input image and annotation are combined by a
self-attention layer, the "map&fuse" block (each view's 2D code mapped into a 3D latent by
anisotropic convolutions with strides along the dimension to be expanded, the two 3D latents
fused by channel concatenation) and a 3D decoder. Output: the vertebra's voxel map ``y`` with
values ``{0, i}``, ``i`` the vertebral index (VerSe numbering, T1..L5 = 8..24), so the network
also predicts the level. Losses (eq. 2-3, ``alpha_G = 10``, ``alpha_D = 0.1``):
``L_G = 10 |y - G|_1 + 0.1 (D(G) - 1)^2`` and ``L_D = (D(y) - 1)^2 + D(G)^2`` (LSGAN), Adam 1e-4.

Deviations:

* **Resolution** 64^2 footprints (as the paper's 64 x 64 patches) and a 64^3 output at 1.25 mm;
  the paper's output resolution is not given.
* **Patches** are xfit's standardised footprints of the cube (:func:`xfit.baselines.common
  .footprint`), centred on the target, not patches cut around the centroid; the annotation disc
  sits where the centroid projects in the footprint (:func:`annotation_pixels`). In training the
  centroid is the centroid of the crop's vertebra mask (the prior's crops are centred on it, so
  the disc lies within about a voxel of the footprint centre); at inference it is the ``--target``
  pixel of each view, or the projected cube centre without a target.
* **Self-attention**: image and annotation are stacked as two channels, mixed by a stride-2 conv,
  then one SAGAN self-attention layer (1x1 query / key / value, softmax over positions, residual
  with a learned gain started at 0) at R/2 (at R = 64 the 4096^2 attention of the input grid
  would dominate the CPU cost). The paper gives no details.
* **Widths**: encoder 16-32-64 (R/2 ... R/8, one 3x3 conv each, instance norm, LeakyReLU 0.2),
  map 32 channels, decoder 32-16-8 (R/8 ... R/1); about 0.25 M parameters (G).
* **Map**: the R/8 code ``[C, h, w]`` gets a depth of 1 and is grown to depth h by stride-(2,1,1)
  transposed convolutions (kernel (2,1,1)) each followed by a (3,1,1) convolution: anisotropic
  along the beam only. The view-aligned latent ``[C, depth, rows, cols]`` is placed in the cube
  by :meth:`xfit.baselines.common.Lifter.lift_volume`, which for orthogonal parallel views is
  the paper's orthogonal arrangement (beam = y for AP, x for the lateral) and follows the rays of
  the cone beam.
* **Discriminator**: the paper's is in its supplement (not available); the 3D PatchGAN of
  :mod:`xfit.baselines.x2ct` (16-32-64) on the voxel map divided by 24 (the largest index), one
  step per generator step, Adam 1e-4 betas (0.5, 0.999).
* **Levels** outside T1..L5 (the prior's data also holds cervical vertebrae, L6, T13) keep their
  VerSe value (1..28), which the L1 regression handles alike.
* **Labels**: the predicted shape is ``y > i/2`` with ``i`` the rounded median of the output over
  the voxels above 4 (half of T1's 8), its component nearest the centre, holes filled (value 1,
  the fit's convention); the predicted level goes to the notes. There is **no CT output**:
  :func:`xfit.baselines.infer.predict` writes the shape as a two-level volume (see there), so CT
  metrics of TransVert mean nothing; compare it on label metrics (Dice, HD95, ASD).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..geometry import View, world_to_pixel
from .common import (
    DEFAULT_ARCHS,
    BaselineConfig,
    Conv3d,
    Lifter,
    annotation_disc,
    centred_component,
    check_shape,
    footprint_pixels,
)

DEFAULT_ARCH = DEFAULT_ARCHS["transvert"]
#: The paper's weights: alpha_G = 10 (L1), alpha_D = 0.1 (LSGAN).
WEIGHTS = {"recon": 10.0, "adv": 0.1}
#: The largest VerSe value (the discriminator sees the voxel map divided by it).
MAX_LEVEL = 28.0
#: Output voxels above this count as vertebra when the level is estimated (half of T1 = 8).
LEVEL_FLOOR = 4.0


def _block2d(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2))


def _block3d(cin: int, cout: int, kernel=(3, 3, 3)) -> nn.Sequential:
    pad = tuple(k // 2 for k in kernel)
    return nn.Sequential(Conv3d(cin, cout, kernel, 1, pad), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.2))


class SelfAttention2D(nn.Module):
    """SAGAN self-attention: ``x + gamma * softmax(q^T k) v`` over the ``h * w`` positions.

    Shape: ``[B, C, h, w]`` -> ``[B, C, h, w]``; ``gamma`` starts at 0 (identity).
    """

    def __init__(self, c: int) -> None:
        super().__init__()
        k = max(c // 4, 1)
        self.q, self.k, self.v = nn.Conv2d(c, k, 1), nn.Conv2d(c, k, 1), nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = self.q(x).flatten(2).transpose(1, 2)  # [B, N, k]
        att = torch.softmax(q @ self.k(x).flatten(2) / q.shape[-1] ** 0.5, -1)  # [B, N, N]
        out = (self.v(x).flatten(2) @ att.transpose(1, 2)).view(b, c, h, w)
        return x + self.gamma * out


class ViewEncoder(nn.Module):
    """Footprint and annotation ``[B, 2, R, R]`` -> code ``[B, enc[-1], R/2^L, R/2^L]``."""

    def __init__(self, enc: list[int]) -> None:
        super().__init__()
        self.mix = _block2d(2, enc[0], 2)
        self.attention = SelfAttention2D(enc[0])
        self.down = nn.Sequential(*[_block2d(a, b, 2) for a, b in zip(enc[:-1], enc[1:])])

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.attention(self.mix(x)))


class MapBlock(nn.Module):
    """Map of map&fuse: a 2D code ``[B, C, h, w]`` -> a view-aligned latent ``[B, M, h, h, w]``
    (depth along the beam) by anisotropic stride-(2,1,1) transposed convolutions."""

    def __init__(self, cin: int, cout: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, d = cin, 1
        while d < depth:
            layers += [nn.ConvTranspose3d(c, cout, (2, 1, 1), (2, 1, 1)), _block3d(cout, cout, (3, 1, 1))]
            c, d = cout, 2 * d
        if not layers:
            layers = [_block3d(cin, cout, (1, 1, 1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x[:, :, None])


class TransVert(nn.Module):
    """Two view encoders with self-attention, map&fuse, a 3D decoder.

    Args:
        resolution: cube side R (footprints R x R).
        enc: encoder widths at R/2 ... R/2^L; dec: decoder widths at R/2^(L-1) ... R (same L).
        map_width: channels of each view's 3D latent.
        num_views: X-rays (2: AP = coronal, lateral = sagittal).
    Shape:
        forward(x ``[B, V, R, R]``, lifter, annotation ``[B, V, R, R]``) -> ``{"shape":
        [B, 1, R, R, R]}`` (about ``{0, level}``).
    """

    def __init__(self, resolution: int, enc: list[int], map_width: int, dec: list[int], num_views: int = 2) -> None:
        super().__init__()
        if len(enc) != len(dec):
            raise ValueError("enc and dec need one width per level")
        self.resolution, self.num_views = resolution, num_views
        self.bottom = resolution >> len(enc)
        self.encoders = nn.ModuleList(ViewEncoder(enc) for _ in range(num_views))
        self.maps = nn.ModuleList(MapBlock(enc[-1], map_width, self.bottom) for _ in range(num_views))
        widths = [num_views * map_width] + list(dec)
        self.fuse = _block3d(widths[0], widths[0])
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose3d(a, b, 2, 2), _block3d(b, b)) for a, b in zip(widths[:-1], widths[1:])
        )
        self.out = Conv3d(dec[-1], 1, 1)

    @classmethod
    def from_config(cls, cfg: BaselineConfig) -> TransVert:
        a = {**DEFAULT_ARCH, **cfg.arch}
        return cls(cfg.resolution, list(a["enc"]), int(a["map"]), list(a["dec"]), len(cfg.views.angles_deg))

    def forward(self, x: Tensor, lifter: Lifter, annotation: Tensor) -> dict[str, Tensor]:
        r = self.resolution
        check_shape(x, [None, self.num_views, r, r], "footprints")
        check_shape(annotation, [x.shape[0], self.num_views, r, r], "annotation")
        lat = [
            lifter.lift_volume(
                self.maps[v](self.encoders[v](torch.stack([x[:, v], annotation[:, v]], 1))), v, self.bottom
            )
            for v in range(self.num_views)
        ]
        h = self.fuse(torch.cat(lat, 1))
        for up in self.up:
            h = up(h)
        return {"shape": self.out(h)}


# ----------------------------------------------------------------------------------------------
# Targets, losses, decoding


def shape_target(label: Tensor, levels: Tensor) -> Tensor:
    """The paper's voxel map: ``levels[b]`` inside the vertebra mask (``label > 0``), 0 outside.

    Args:
        label: ``[B, 1, R, R, R]`` mask (-1 / +1 or 0 / 1); levels: ``[B]`` VerSe values.
    """
    return (label > 0).float() * levels.float().view(-1, 1, 1, 1, 1).to(label.device)


def mask_centroids(label: Tensor, spacing_mm: float) -> Tensor:
    """World centroids ``[B, 3]`` (mm, the cube centred at the origin) of ``label > 0``; the cube
    centre for an empty mask."""
    m = (label[:, 0] > 0).double()
    r = m.shape[-1]
    ax = (torch.arange(r, dtype=torch.float64, device=m.device) - (r - 1) / 2) * spacing_mm
    n = m.sum((1, 2, 3)).clamp_min(1e-9)
    c = (
        torch.stack(
            [
                (m * ax.view(-1, 1, 1)).sum((1, 2, 3)),
                (m * ax.view(1, -1, 1)).sum((1, 2, 3)),
                (m * ax.view(1, 1, -1)).sum((1, 2, 3)),
            ],
            -1,
        )
        / n[:, None]
    )
    return c.cpu()


def annotation_pixels(rc: list[tuple[float, float]], views: list[View], centre_mm, fov_mm: float, res: int) -> Tensor:
    """Per view, a detector pixel (row, col) -> the annotation disc ``[1, V, res, res]``."""
    return torch.stack(
        [
            annotation_disc(footprint_pixels(torch.tensor([p], dtype=torch.float64), v, centre_mm, fov_mm, res)[0], res)
            for p, v in zip(rc, views)
        ]
    )[None]


def annotation_points(points_mm: Tensor, views: list[list[View]], centre_mm, fov_mm: float, res: int) -> Tensor:
    """World points ``[B, 3]`` (one centroid per example) -> annotation discs ``[B, V, res, res]``
    around their projections in each example's views ``views[b][v]``."""
    out = []
    for b, vs in enumerate(views):
        rc = [tuple(world_to_pixel(points_mm[b : b + 1].double(), v)[0].tolist()) for v in vs]
        out.append(annotation_pixels(rc, vs, centre_mm, fov_mm, res)[0])
    return torch.stack(out)


def generator_losses(
    pred: Tensor, target: Tensor, weights: dict[str, float], d_fake: Tensor | None = None
) -> dict[str, Tensor]:
    """Terms and weighted ``total`` of eq. 2: ``recon`` = mean |y - G|, ``adv`` = mean (D(G) - 1)^2."""
    out = {"recon": (pred - target).abs().mean()}
    if d_fake is not None:
        out["adv"] = (d_fake - 1).square().mean()
    out["total"] = sum(weights.get(k, 0.0) * v for k, v in out.items())
    return out


def discriminator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Eq. 3: ``mean (D(y) - 1)^2 + mean D(G)^2`` (no factor 1/2, unlike X2CT-GAN's)."""
    return (d_real - 1).square().mean() + d_fake.square().mean()


def decode_shape(shape: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Output voxel map ``[R, R, R]`` -> (labels uint8 0/1, predicted VerSe level or None).

    The level is the rounded median of the voxels above :data:`LEVEL_FLOOR`; the shape is the
    component of ``shape > level / 2`` nearest the centre, holes filled.
    """
    above = shape[shape > LEVEL_FLOOR]
    if above.size == 0:
        return np.zeros(shape.shape, np.uint8), None
    level = int(np.clip(np.rint(np.median(above)), 1, MAX_LEVEL))
    return centred_component(shape > level / 2), level


def default_weights(method: str = "transvert") -> dict[str, Any]:
    return dict(WEIGHTS)
