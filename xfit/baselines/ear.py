"""EAR: Tan et al., "Edge-aware reconstruction of 3-D vertebrae structures from bi-planar X-ray
images" ([EAR], ``docs/references.md``).

Input: each X-ray replicated along its beam axis into a volume (two channels). Network: a
symmetric 3D U-Net (each encoder layer: 3^3 stride-2 conv, 3^3 conv, BN, LeakyReLU; each decoder
layer: 2^3 stride-2 transposed conv and a 3^3 conv, BN, LeakyReLU), the frequency enhancement
module (FEM: instance norm, FFT, parallel convolutions on the real and imaginary parts, inverse
FFT, magnitude, concatenation with the input, conv + IN + ReLU) after the first three encoder
layers, the 3D edge attention module (EAM: residual blocks and modified gated-convolution blocks
``alpha = F * sigmoid(BN(conv(F (+) F_g))) + F`` over the FEM outputs e1, e2, e3) whose attention
map weights every decoder layer and whose edge map is supervised, and 3D CBAM (channel then
spatial attention) on every shortcut. Losses (eq. 5-10) with the paper's weights 1 / 0.1 / 0.1 /
0.1: reconstruction MAE, edge BCE, frequency distance ``log10(D_real + D_imag)`` and the L1 of the
maximum intensity projections along the three axes.

Deviations:

* **Resolution** 64^3 at 1.25 mm instead of 128^3, hence four encoder layers (64 -> 4) instead of
  five (128 -> 4), plus a full-resolution stem conv whose output is the last shortcut.
* **Widths** 8 (stem) and 16-32-64-96 (encoder), mirrored in the decoder; about 2.5 M parameters.
* **Replication** along the true rays of each view (:class:`xfit.baselines.common.Lifter`), which
  is the paper's copy along the AP / lateral axes for orthogonal parallel views.
* **FEM**: the kernel of the parallel convolutions is not given; 1^3 (as in Fourier units).
* **EAM**: e2 and e3 are projected to e1's width with 1^3 convs and upsampled to e1's grid; the
  gate uses two conv blocks (conv + BN + ReLU, conv + BN + sigmoid) as the text says; one
  residual block before and after each gate; the attention map A multiplies each decoder layer
  as ``x * (1 + A)`` (resampled), the paper does not give the operation.
* **Edges of the ground truth** ``E(G)``: the morphological gradient (3^3) of the mask of the
  vertebra the crop is centred on (the prior's label channel); the paper's edge extractor is
  not named. ``E(V)`` is the EAM's edge map (the paper's "output of the edge-aware attention
  module").
* **Frequency distance**: orthonormal 3D FFT; ``D = ||X(G) - X(V)||_2 / sqrt(N)`` per example,
  averaged over the batch, plus 1e-8 inside the logarithm.
* **Optimiser** as in the paper (Adam lr 0.01, weight decay 1e-5, cosine annealing after a linear
  warm-up) but counted in steps, not epochs.
* Output: unit intensity, no final activation; no segmentation output (labels by threshold).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import DEFAULT_ARCHS, BaselineConfig, Conv3d, Lifter, check_shape, conv3

DEFAULT_ARCH = DEFAULT_ARCHS["ear"]
#: The paper's weights lambda_1..4.
WEIGHTS = {"recon": 1.0, "edge": 0.1, "freq": 0.1, "proj": 0.1}


def _cbl(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv3(cin, cout, stride), nn.BatchNorm3d(cout), nn.LeakyReLU(0.2))


class FEM(nn.Module):
    """Frequency enhancement module (channels preserved)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm3d(c)
        self.real = Conv3d(c, c, 1)
        self.imag = Conv3d(c, c, 1)
        self.out = nn.Sequential(conv3(2 * c, c), nn.InstanceNorm3d(c, affine=True), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):  # no bf16 FFT
            xf = x.float()
            spec = torch.fft.fftn(self.norm(xf), dim=(2, 3, 4), norm="ortho")
            spec = torch.complex(self.real(spec.real), self.imag(spec.imag))
            freq = torch.fft.ifftn(spec, dim=(2, 3, 4), norm="ortho").abs()
        return self.out(torch.cat([x, freq.to(x.dtype)], 1))


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3(c, c), nn.BatchNorm3d(c), nn.ReLU(), conv3(c, c), nn.BatchNorm3d(c))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


class GatedConv(nn.Module):
    """Modified gated-convolution block: ``F * sigmoid(gate(F (+) F_g)) + F``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            conv3(2 * c, c), nn.BatchNorm3d(c), nn.ReLU(), conv3(c, c), nn.BatchNorm3d(c), nn.Sigmoid()
        )

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        return f * self.gate(torch.cat([f, g], 1)) + f


class EAM(nn.Module):
    """Edge attention module over e1 (finest), e2, e3 -> edge logits on e1's grid."""

    def __init__(self, c1: int, c2: int, c3: int) -> None:
        super().__init__()
        self.p2, self.p3 = Conv3d(c2, c1, 1), Conv3d(c3, c1, 1)
        self.res = nn.ModuleList(ResBlock(c1) for _ in range(3))
        self.gc = nn.ModuleList(GatedConv(c1) for _ in range(2))
        self.edge = Conv3d(c1, 1, 1)

    def forward(self, e1: Tensor, e2: Tensor, e3: Tensor) -> Tensor:
        size = e1.shape[2:]
        g2 = F.interpolate(self.p2(e2), size=size, mode="trilinear", align_corners=False)
        g3 = F.interpolate(self.p3(e3), size=size, mode="trilinear", align_corners=False)
        r = self.res[0](e1)
        r = self.res[1](self.gc[0](r, g2))
        r = self.res[2](self.gc[1](r, g3))
        return self.edge(r)


class CBAM3D(nn.Module):
    """3D convolutional block attention: channel attention, then spatial attention (7^3)."""

    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        h = max(c // reduction, 1)
        self.mlp = nn.Sequential(Conv3d(c, h, 1), nn.ReLU(), Conv3d(h, c, 1))
        self.spatial = Conv3d(2, 1, 7, 1, 3)

    def forward(self, x: Tensor) -> Tensor:
        a = torch.sigmoid(self.mlp(x.mean((2, 3, 4), keepdim=True)) + self.mlp(x.amax((2, 3, 4), keepdim=True)))
        x = x * a
        s = torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
        return x * s


class EAR(nn.Module):
    """Edge-aware reconstruction network.

    Args:
        resolution: cube side R (input footprints R x R, replicated into R^3 volumes).
        stem: width of the full-resolution stem; enc: widths of the encoder layers (R/2 ...).
        num_views: X-rays (input channels).
    Shape:
        forward(x ``[B, V, R, R]``, lifter) -> ``{"volume": [B, 1, R, R, R], "edge_logit":
        [B, 1, R, R, R]}``.
    """

    def __init__(self, resolution: int, stem: int, enc: list[int], num_views: int = 2, cbam_reduction: int = 4) -> None:
        super().__init__()
        if len(enc) < 3:
            raise ValueError("EAR needs at least three encoder layers (FEM and EAM use e1..e3)")
        self.resolution, self.num_views = resolution, num_views
        self.stem = _cbl(num_views, stem)
        widths = [stem] + list(enc)
        self.down = nn.ModuleList(nn.Sequential(conv3(a, b, 2), _cbl(b, b)) for a, b in zip(widths[:-1], widths[1:]))
        self.fem = nn.ModuleList(FEM(c) for c in enc[:3])
        self.eam = EAM(enc[0], enc[1], enc[2])
        n = len(enc)
        self.cbam = nn.ModuleList(CBAM3D(widths[i], cbam_reduction) for i in range(n))
        self.up = nn.ModuleList(nn.ConvTranspose3d(widths[i + 1], widths[i], 2, 2) for i in range(n))
        self.dec = nn.ModuleList(_cbl(2 * widths[i], widths[i]) for i in range(n))
        self.out = Conv3d(stem, 1, 1)

    @classmethod
    def from_config(cls, cfg: BaselineConfig) -> EAR:
        a = {**DEFAULT_ARCH, **cfg.arch}
        return cls(cfg.resolution, int(a["stem"]), list(a["enc"]), len(cfg.views.angles_deg), int(a["cbam_reduction"]))

    def forward(self, x: Tensor, lifter: Lifter) -> dict[str, Tensor]:
        check_shape(x, [None, self.num_views, self.resolution, self.resolution], "footprints")
        r = self.resolution
        vol = torch.cat([lifter.lift(x[:, v : v + 1], v, r) for v in range(self.num_views)], 1)
        skips = [self.stem(vol)]
        h = skips[0]
        for i, d in enumerate(self.down):
            h = d(h)
            if i < 3:
                h = self.fem[i](h)
            skips.append(h)
        edge = self.eam(skips[1], skips[2], skips[3])
        att = torch.sigmoid(edge)
        for i in reversed(range(len(self.down))):
            h = self.up[i](h)
            h = self.dec[i](torch.cat([h, self.cbam[i](skips[i])], 1))
            a = F.interpolate(att, size=h.shape[2:], mode="trilinear", align_corners=False)
            h = h * (1 + a)
        edge_full = F.interpolate(edge, size=(r, r, r), mode="trilinear", align_corners=False)
        return {"volume": self.out(h), "edge_logit": edge_full}


# ----------------------------------------------------------------------------------------------
# Losses


def edges_of(mask: Tensor) -> Tensor:
    """Morphological gradient (3^3 dilation minus erosion) of a binary ``[B, 1, R, R, R]`` mask."""
    m = mask.float()
    dil = F.max_pool3d(m, 3, 1, 1)
    ero = -F.max_pool3d(-m, 3, 1, 1)
    return dil - ero


def frequency_distance(pred: Tensor, target: Tensor) -> Tensor:
    """``log10(D_real + D_imag)`` with ``D = ||X(G) - X(V)||_2 / sqrt(N)`` (orthonormal FFT)."""
    with torch.autocast(pred.device.type, enabled=False):
        dg = torch.fft.fftn(target.float() - pred.float(), dim=(2, 3, 4), norm="ortho")
        n = dg[0].numel()
        d_real = (dg.real.flatten(1).square().sum(1) / n).sqrt().mean()
        d_imag = (dg.imag.flatten(1).square().sum(1) / n).sqrt().mean()
        return torch.log10(d_real + d_imag + 1e-8)


def mip_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over the three axes of the L1 distance of the maximum intensity projections."""
    return sum((pred.amax(d) - target.amax(d)).abs().mean() for d in (2, 3, 4)) / 3


def losses(out: dict[str, Tensor], target: Tensor, label: Tensor, weights: dict[str, float]) -> dict[str, Tensor]:
    """Terms and weighted ``total`` of EAR's loss (eq. 10).

    Args:
        out: the network's output (``volume``, ``edge_logit``).
        target: ``[B, 1, R, R, R]`` unit intensities; label: ``[B, 1, R, R, R]`` vertebra mask (> 0).
    """
    pred = out["volume"]
    t = {
        "recon": (pred - target).abs().mean(),
        "edge": F.binary_cross_entropy_with_logits(out["edge_logit"].float(), edges_of(label > 0)),
        "freq": frequency_distance(pred, target),
        "proj": mip_loss(pred, target),
    }
    t["total"] = sum(weights.get(k, 0.0) * v for k, v in t.items())
    return t


def default_weights(method: str = "ear") -> dict[str, Any]:
    return dict(WEIGHTS)
