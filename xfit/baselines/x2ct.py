"""X2CT-CNN and X2CT-GAN: Ying et al., "X2CT-GAN: Reconstructing CT from Biplanar X-Rays with
Generative Adversarial Networks", CVPR 2019 (read through a survey and
the spine application [Saravi]; ``docs/references.md``).

Generator: one 2D encoder per view, connection A (the deepest 2D features flattened, a fully
connected layer, reshaped into the first 3D feature volume), connection B (2D encoder features
expanded along the beam axis into 3D skip features at every decoder level), connection C (the
views' 3D features fused by averaging) and a 3D decoder. X2CT-CNN trains it with the voxel-wise
reconstruction loss alone; X2CT-GAN adds an LSGAN 3D patch discriminator and the projection loss:
``L_G = 0.1 * L_LSGAN + 10 * L_re (MSE) + 10 * L_pl (L1 of the three orthogonal projections)``.

Deviations (all forced by a 2-core CPU budget or by xfit's geometry):

* **Resolution** 64^3 at 1.25 mm (the prior's cube, 80 mm) instead of 128^3; input footprints of
  64^2 (see :mod:`xfit.baselines.common`) instead of 128^2 X-rays.
* **Widths**: 2D encoder 8-16-32-64-64 channels (64^2 ... 4^2) with one conv per level instead of
  the paper's DenseNet blocks; 3D decoder 8-16-32-64-64; connection A through a 128-wide hidden
  layer (the paper's single FC layer would need 4 M weights per view). About 2.6 M parameters.
* **Decoders**: one fused 3D decoder receiving at each level the average of the two views' lifted
  skip features (connection C), instead of two view-specific 3D decoders plus a fusion decoder.
* **Expansion** along the true rays of each view (:class:`xfit.baselines.common.Lifter`), which is
  the paper's copy along the beam axis for orthogonal parallel views.
* **Normalisation**: instance norm everywhere (batch size 1-2 on the CPU); ReLU.
* **Projection loss**: mean intensity along each of the three volume axes (parallel projections),
  as in the public code; the paper's X2CT-CNN is the generator with the MSE loss only.
* **Discriminator** sees the volume only (the condition enters through the generator); 3D
  PatchGAN with 4^3 stride-2 convolutions, 16-32-64 channels, instance norm, LeakyReLU 0.2.
* **Optimiser**: Adam, lr 2e-4, betas (0.5, 0.999), constant (the paper decays it linearly).
* Output: unit intensity (the HU window mapped to [-1, 1]), no final activation; the CycleGAN
  adaptation of real X-rays is omitted.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import DEFAULT_ARCHS, BaselineConfig, Conv3d, Lifter, check_shape

DEFAULT_ARCH = DEFAULT_ARCHS["x2ct-cnn"]
#: Loss weights of the paper: adversarial 0.1, reconstruction 10, projection 10.
GAN_WEIGHTS = {"adv": 0.1, "recon": 10.0, "proj": 10.0}
CNN_WEIGHTS = {"recon": 10.0, "proj": 0.0}


def _block2d(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.InstanceNorm2d(cout, affine=True), nn.ReLU())


def _block3d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(Conv3d(cin, cout, 3, 1, 1), nn.InstanceNorm3d(cout, affine=True), nn.ReLU())


class Encoder2D(nn.Module):
    """Footprint ``[B, 1, R, R]`` -> features at R, R/2, ..., 4 (``len(widths)`` levels)."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.stem = _block2d(1, widths[0])
        self.down = nn.ModuleList(_block2d(a, b, 2) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.stem(x)]
        for d in self.down:
            feats.append(d(feats[-1]))
        return feats


class X2CTGenerator(nn.Module):
    """Two 2D encoders, connections A/B/C and a fused 3D decoder.

    Args:
        resolution: cube side R (footprints are R x R); levels R, R/2, ..., R/2^(L-1).
        enc, dec: 2D encoder / 3D decoder widths per level (finest first), equal lengths L.
        fc_hidden: width of connection A's hidden layer.
        num_views: number of X-rays (2).
    Shape:
        forward(x ``[B, V, R, R]``, lifter) -> ``{"volume": [B, 1, R, R, R]}``.
    """

    def __init__(self, resolution: int, enc: list[int], dec: list[int], fc_hidden: int, num_views: int = 2) -> None:
        super().__init__()
        if len(enc) != len(dec):
            raise ValueError("enc and dec need one width per level")
        self.resolution, self.num_views = resolution, num_views
        self.levels = [resolution >> i for i in range(len(enc))]
        b = self.levels[-1]
        self.bottom = b
        self.encoders = nn.ModuleList(Encoder2D(enc) for _ in range(num_views))
        self.fc = nn.ModuleList(
            nn.Sequential(
                nn.Flatten(),
                nn.Linear(enc[-1] * b * b, fc_hidden),
                nn.ReLU(),
                nn.Linear(fc_hidden, dec[-1] * b**3),
                nn.ReLU(),
            )
            for _ in range(num_views)
        )
        self.head = _block3d(dec[-1], dec[-1])
        # connection B: 2D 1x1 conv to the decoder width, lifting, a 3D conv (per view and level)
        self.skip2d = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(enc[i], dec[i], 1) for i in range(len(enc) - 1)) for _ in range(num_views)
        )
        self.skip3d = nn.ModuleList(
            nn.ModuleList(_block3d(dec[i], dec[i]) for i in range(len(enc) - 1)) for _ in range(num_views)
        )
        self.up = nn.ModuleList(nn.ConvTranspose3d(dec[i + 1], dec[i], 2, 2) for i in range(len(enc) - 1))
        self.fuse = nn.ModuleList(_block3d(2 * dec[i], dec[i]) for i in range(len(enc) - 1))
        self.out = Conv3d(dec[0], 1, 1)
        self.dec = dec

    @classmethod
    def from_config(cls, cfg: BaselineConfig) -> X2CTGenerator:
        a = {**DEFAULT_ARCH, **cfg.arch}
        return cls(cfg.resolution, list(a["enc"]), list(a["dec"]), int(a["fc_hidden"]), len(cfg.views.angles_deg))

    def forward(self, x: Tensor, lifter: Lifter) -> dict[str, Tensor]:
        check_shape(x, [None, self.num_views, self.resolution, self.resolution], "footprints")
        feats = [enc(x[:, v : v + 1]) for v, enc in enumerate(self.encoders)]
        b = self.bottom
        h = torch.stack([fc(f[-1]).view(x.shape[0], self.dec[-1], b, b, b) for fc, f in zip(self.fc, feats)]).mean(0)
        h = self.head(h)
        for i in reversed(range(len(self.levels) - 1)):
            r = self.levels[i]
            h = self.up[i](h)
            skip = torch.stack(
                [self.skip3d[v][i](lifter.lift(self.skip2d[v][i](feats[v][i]), v, r)) for v in range(self.num_views)]
            ).mean(0)  # connection C
            h = self.fuse[i](torch.cat([h, skip], 1))
        return {"volume": self.out(h)}


class PatchDiscriminator3D(nn.Module):
    """3D PatchGAN: ``[B, 1, R, R, R]`` -> patch scores ``[B, 1, r, r, r]`` (LSGAN targets 1/0)."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i, c in enumerate(widths):
            layers.append(Conv3d(cin, c, 4, 2, 1))
            if i > 0:
                layers.append(nn.InstanceNorm3d(c, affine=True))
            layers.append(nn.LeakyReLU(0.2))
            cin = c
        layers.append(Conv3d(cin, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, cfg: BaselineConfig) -> PatchDiscriminator3D:
        return cls(list({**DEFAULT_ARCH, **cfg.arch}["disc"]))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# ----------------------------------------------------------------------------------------------
# Losses


def projection_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over the three volume axes of the L1 distance of the mean projections along it."""
    return sum((pred.mean(d) - target.mean(d)).abs().mean() for d in (2, 3, 4)) / 3


def generator_losses(
    pred: Tensor, target: Tensor, weights: dict[str, float], d_fake: Tensor | None = None
) -> dict[str, Tensor]:
    """Terms and weighted ``total`` of the generator loss.

    Args:
        pred, target: ``[B, 1, R, R, R]`` unit intensities.
        weights: ``recon`` (MSE), ``proj`` (projection L1), ``adv`` (LSGAN, needs ``d_fake``).
        d_fake: discriminator scores of ``pred`` (X2CT-GAN).
    """
    out = {"recon": F.mse_loss(pred, target), "proj": projection_loss(pred, target)}
    if d_fake is not None:
        out["adv"] = 0.5 * (d_fake - 1).square().mean()
    out["total"] = sum(weights.get(k, 0.0) * v for k, v in out.items())
    return out


def discriminator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """LSGAN: ``0.5 * [(D(real) - 1)^2 + D(fake)^2]``."""
    return 0.5 * ((d_real - 1).square().mean() + d_fake.square().mean())


def default_weights(method: str) -> dict[str, Any]:
    return dict(GAN_WEIGHTS if method == "x2ct-gan" else CNN_WEIGHTS)
