"""X-CTRSNet: Ge et al., "X-CTRSNet: 3D cervical vertebra CT reconstruction and segmentation
directly from 2D X-ray images" ([X-CTRSNet], ``docs/references.md``).

Three parts. **SpaDRNet** (reconstruction): per view a 2D encoder whose every scale is turned
into 3D by its own path (progressive 2D-to-3D multi-path conversion), the 3D features of the AP
and lateral views permuted into the CT's orientation (view alignment, eq. 5-6) and concatenated
(eq. 7), then hierarchical 3D fusion: each scale merged with its neighbours (``D``: strided 3^3
convs; ``U``: nearest upsampling + 1^3 conv), ``SeqConv3D`` (3^3 conv + Leaky ReLU) and a decoder
of stride-2 3^3 transposed convs (``UConv``); loss MAE + multi-view perceptual loss on the axial,
coronal and sagittal slices. **MulSISNet** (segmentation of the reconstructed CT): multi-scale
3D extraction and interoperation, a decoder; Dice loss, whose gradient also shapes the
reconstruction. **RSC learning**: MulSISNet also segments the ground-truth CT, and the divergence
between the two segmentations penalises the reconstruction. Instance norm in SpaDRNet, group norm
in MulSISNet, Adam lr 1e-3 (paper). Outputs: the CT and the labels.

Deviations:

* **Resolution** 64^2 footprints and a 64^3 CT at 1.25 mm; the paper's sizes are not in the text
  we have.
* **Equations 1-16 are missing from our copy** of the paper, so every weight and the exact form
  of the multi-path conversion, the fusion and MulSISNet are our reading of the prose:
  - conversion at scale ``h`` (R/2, R/4, R/8): 1^2 conv of the 2D features to ``path * h``
    channels, reshaped to a view-aligned ``[path, h (depth), h, h]`` volume, one ``SeqConv3D``,
    then placed in the cube by :meth:`xfit.baselines.common.Lifter.lift_volume` (the paper's
    permutation P for orthogonal parallel views; it follows the rays of the cone beam);
  - fusion: at each scale ``m_i = SeqConv(p_i + U(p_{i+1}) + D(p_{i-1}))`` (adjacent scales
    only), decoded coarse to fine by ``SeqConv(UConv(h) (+) m_i)`` and a last ``UConv`` to R;
  - MulSISNet: per level two parallel 3^3 convs (dilation 1 and 2) concatenated and mixed by a
    1^3 conv (the "interoperation"), group norm (4 groups or fewer), Leaky ReLU, stride-2 conv
    between levels, a decoder of transposed convs with skips; one output channel (the vertebra
    of interest; the paper segments C1..C7 as seven classes);
  - weights all 1: ``recon`` (MAE), ``perc``, ``dice`` (segmentation of the reconstruction),
    ``dice_gt`` (segmentation of the ground-truth CT, RSC on segmentation), ``rsc`` (mean
    absolute difference of the two segmentations' probabilities, the ground-truth one detached,
    RSC on reconstruction).
* **Perceptual loss**: the paper's multi-view VGG loss needs ImageNet weights, which xfit never
  downloads. It is replaced by ``1 - SSIM`` of the 2D slices along each of the three axes
  (:func:`multiview_ssim_loss`: Gaussian window 7 px, sigma 1.5, valid positions, data range 2 of
  the unit window), the same quantity as ``1 - xfit.metrics.ssim2d_slices`` (the tests check it
  against that function) and the project's documented LPIPS substitute
  (:func:`xfit.metrics.lpips_slices`). It is differentiable and has no weights.
* **Widths**: 2D encoder 16-32-64, 3D paths 8-16-32, MulSISNet 8-16-32; about 0.9 M parameters.
* Adam lr 1e-3 (paper) with betas (0.9, 0.999), constant.
* Labels: the component of ``sigmoid(seg) > 0.5`` nearest the centre, holes filled (value 1).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..metrics import SSIM_K1, SSIM_K2, _blur, gaussian_window
from .common import DEFAULT_ARCHS, BaselineConfig, Conv3d, Lifter, check_shape

DEFAULT_ARCH = DEFAULT_ARCHS["xctrsnet"]
WEIGHTS = {"recon": 1.0, "perc": 1.0, "dice": 1.0, "dice_gt": 1.0, "rsc": 1.0}
#: Data range of the unit intensities ([-1, 1]) in the SSIM constants.
UNIT_RANGE = 2.0


def _in3(c: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(c, affine=True)


def seq_conv3d(cin: int, cout: int, n: int = 2) -> nn.Sequential:
    """``SeqConv3D``: ``n`` 3^3 convs, each with instance norm and Leaky ReLU."""
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [Conv3d(cin if i == 0 else cout, cout, 3, 1, 1), _in3(cout), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


def uconv(cin: int, cout: int) -> nn.ConvTranspose3d:
    """``UConv``: 3^3 transposed conv, stride 2 (doubles the grid)."""
    return nn.ConvTranspose3d(cin, cout, 3, 2, 1, output_padding=1)


class Encoder2D(nn.Module):
    """Footprint ``[B, 1, R, R]`` -> features at R/2, R/4, ... (one stride-2 block per width)."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        cins = [1] + list(widths[:-1])
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(a, b, 3, 2, 1),
                nn.InstanceNorm2d(b, affine=True),
                nn.LeakyReLU(0.2),
                nn.Conv2d(b, b, 3, 1, 1),
                nn.InstanceNorm2d(b, affine=True),
                nn.LeakyReLU(0.2),
            )
            for a, b in zip(cins, widths)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for b in self.blocks:
            x = b(x)
            out.append(x)
        return out


class Path2Dto3D(nn.Module):
    """One path of the progressive conversion: ``[B, C, h, h]`` -> view-aligned ``[B, P, h, h, h]``."""

    def __init__(self, cin: int, cout: int, size: int) -> None:
        super().__init__()
        self.cout, self.size = cout, size
        self.expand = nn.Conv2d(cin, cout * size, 1)
        self.conv = seq_conv3d(cout, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        return self.conv(self.expand(x).view(b, self.cout, self.size, h, w))


class SpaDRNet(nn.Module):
    """Spatial decomposition-reconstruction net.

    Shape: forward(x ``[B, V, R, R]``, lifter) -> CT ``[B, 1, R, R, R]`` (unit intensity).
    """

    def __init__(self, resolution: int, enc: list[int], path: list[int], num_views: int = 2) -> None:
        super().__init__()
        if len(enc) != len(path):
            raise ValueError("enc and path need one width per scale")
        self.resolution, self.num_views = resolution, num_views
        self.sizes = [resolution >> (i + 1) for i in range(len(enc))]
        self.encoders = nn.ModuleList(Encoder2D(enc) for _ in range(num_views))
        self.paths = nn.ModuleList(
            nn.ModuleList(Path2Dto3D(enc[i], path[i], s) for i, s in enumerate(self.sizes)) for _ in range(num_views)
        )
        c = [num_views * p for p in path]
        n = len(c)
        self.up_from = nn.ModuleList(Conv3d(c[i + 1], c[i], 1) for i in range(n - 1))  # U
        self.down_from = nn.ModuleList(Conv3d(c[i - 1], c[i], 3, 2, 1) for i in range(1, n))  # D
        self.merge = nn.ModuleList(seq_conv3d(c[i], c[i]) for i in range(n))
        self.ups = nn.ModuleList(uconv(c[i + 1], c[i]) for i in range(n - 1))
        self.decode = nn.ModuleList(seq_conv3d(2 * c[i], c[i]) for i in range(n - 1))
        self.last = uconv(c[0], c[0])
        self.out = Conv3d(c[0], 1, 1)

    def forward(self, x: Tensor, lifter: Lifter) -> Tensor:
        feats = [enc(x[:, v : v + 1]) for v, enc in enumerate(self.encoders)]
        p = [
            torch.cat([lifter.lift_volume(self.paths[v][i](feats[v][i]), v, s) for v in range(self.num_views)], 1)
            for i, s in enumerate(self.sizes)
        ]
        m = []
        for i in range(len(p)):
            h = p[i]
            if i + 1 < len(p):
                h = h + self.up_from[i](F.interpolate(p[i + 1], scale_factor=2, mode="nearest"))
            if i > 0:
                h = h + self.down_from[i - 1](p[i - 1])
            m.append(self.merge[i](h))
        h = m[-1]
        for i in reversed(range(len(m) - 1)):
            h = self.decode[i](torch.cat([self.ups[i](h), m[i]], 1))
        return self.out(F.leaky_relu(self.last(h), 0.2))


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(4, c), c)


class MultiScaleBlock(nn.Module):
    """Parallel 3^3 convs of dilation 1 and 2, concatenated, mixed by a 1^3 conv (group norm)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.d1 = Conv3d(cin, cout, 3, 1, 1)
        self.d2 = Conv3d(cin, cout, 3, 1, 2, dilation=2)
        self.mix = nn.Sequential(Conv3d(2 * cout, cout, 1), _gn(cout), nn.LeakyReLU(0.2))

    def forward(self, x: Tensor) -> Tensor:
        return self.mix(torch.cat([F.leaky_relu(self.d1(x), 0.2), F.leaky_relu(self.d2(x), 0.2)], 1))


class MulSISNet(nn.Module):
    """Multi-scale space interoperability segmentation net: CT ``[B, 1, R, R, R]`` -> logits
    ``[B, 1, R, R, R]`` of the vertebra of interest."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        cins = [1] + list(widths[:-1])
        self.enc = nn.ModuleList(MultiScaleBlock(a, b) for a, b in zip(cins, widths))
        self.down = nn.ModuleList(Conv3d(w, w, 3, 2, 1) for w in widths[:-1])
        self.up = nn.ModuleList(nn.ConvTranspose3d(widths[i + 1], widths[i], 2, 2) for i in range(len(widths) - 1))
        self.dec = nn.ModuleList(MultiScaleBlock(2 * widths[i], widths[i]) for i in range(len(widths) - 1))
        self.out = Conv3d(widths[0], 1, 1)

    def forward(self, ct: Tensor) -> Tensor:
        skips, h = [], ct
        for i, block in enumerate(self.enc):
            h = block(h)
            if i < len(self.down):
                skips.append(h)
                h = self.down[i](h)
        for i in reversed(range(len(self.up))):
            h = self.dec[i](torch.cat([self.up[i](h), skips[i]], 1))
        return self.out(h)


class XCTRSNet(nn.Module):
    """SpaDRNet + MulSISNet.

    Args:
        resolution: cube side R; enc / path: SpaDRNet's 2D widths and 3D path widths per scale
            (R/2, R/4, ...); seg: MulSISNet's widths per level (R, R/2, ...).
    Shape:
        forward(x ``[B, V, R, R]``, lifter, ct_gt ``[B, 1, R, R, R]`` or None) ->
        ``{"volume": [B, 1, R, R, R], "seg_logit": [B, 1, R, R, R]}`` plus ``"seg_gt_logit"``
        (MulSISNet on the ground truth, for RSC learning) when ``ct_gt`` is given.
    """

    def __init__(self, resolution: int, enc: list[int], path: list[int], seg: list[int], num_views: int = 2) -> None:
        super().__init__()
        self.resolution, self.num_views = resolution, num_views
        self.spadr = SpaDRNet(resolution, enc, path, num_views)
        self.mulsis = MulSISNet(seg)

    @classmethod
    def from_config(cls, cfg: BaselineConfig) -> XCTRSNet:
        a = {**DEFAULT_ARCH, **cfg.arch}
        return cls(cfg.resolution, list(a["enc"]), list(a["path"]), list(a["seg"]), len(cfg.views.angles_deg))

    def forward(self, x: Tensor, lifter: Lifter, ct_gt: Tensor | None = None) -> dict[str, Tensor]:
        r = self.resolution
        check_shape(x, [None, self.num_views, r, r], "footprints")
        ct = self.spadr(x, lifter)
        out = {"volume": ct, "seg_logit": self.mulsis(ct)}
        if ct_gt is not None:
            check_shape(ct_gt, [x.shape[0], 1, r, r, r], "ground-truth CT")
            out["seg_gt_logit"] = self.mulsis(ct_gt)
        return out


# ----------------------------------------------------------------------------------------------
# Losses


def ssim_slices(
    pred: Tensor, target: Tensor, axis: int, data_range: float = UNIT_RANGE, win: int = 7, sigma: float = 1.5
) -> Tensor:
    """Differentiable mean 2D SSIM of the slices normal to volume ``axis`` (2, 3 or 4 of
    ``[B, 1, I, J, K]``), per example ``[B]``; the window and constants of
    :func:`xfit.metrics.ssim2d_slices` (valid positions, window shrunk to fit)."""
    p, t = pred.float().movedim(axis, 2), target.float().movedim(axis, 2)
    b, n = p.shape[0], p.shape[2]
    p, t = p.reshape(b * n, 1, *p.shape[3:]), t.reshape(b * n, 1, *t.shape[3:])
    win = min(win, *[s if s % 2 else s - 1 for s in p.shape[2:]])
    g = gaussian_window(win, sigma).to(p)
    m = _blur(torch.cat([p, t, p * p, t * t, p * t], 0), g)
    mu_p, mu_t, e_pp, e_tt, e_pt = m.chunk(5, 0)
    var_p, var_t, cov = e_pp - mu_p**2, e_tt - mu_t**2, e_pt - mu_p * mu_t
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return s.view(b, -1).mean(1)


def multiview_ssim_loss(pred: Tensor, target: Tensor) -> Tensor:
    """The multi-view perceptual term: ``1 - SSIM`` of the slices along the sagittal (I), coronal
    (J) and axial (K) axes, averaged over the three views and the batch."""
    with torch.autocast(pred.device.type, enabled=False):
        return 1 - torch.stack([ssim_slices(pred, target, a) for a in (2, 3, 4)]).mean()


def dice_loss(logit: Tensor, mask: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss ``1 - (2 sum(p m) + eps) / (sum p + sum m + eps)`` per example, averaged;
    ``p = sigmoid(logit)``, ``mask`` 0 / 1."""
    p = torch.sigmoid(logit.float()).flatten(1)
    m = mask.float().flatten(1)
    return (1 - (2 * (p * m).sum(1) + eps) / (p.sum(1) + m.sum(1) + eps)).mean()


def rsc_loss(seg_logit: Tensor, seg_gt_logit: Tensor) -> Tensor:
    """Reconstruction-segmentation consistency: mean ``|sigmoid(seg) - sigmoid(seg_gt)|`` with the
    segmentation of the ground-truth CT detached (the term penalises the reconstruction)."""
    return (torch.sigmoid(seg_logit.float()) - torch.sigmoid(seg_gt_logit.float()).detach()).abs().mean()


def losses(out: dict[str, Tensor], target: Tensor, label: Tensor, weights: dict[str, float]) -> dict[str, Tensor]:
    """Terms and weighted ``total`` of X-CTRSNet's loss.

    Args:
        out: the network's output with ``seg_gt_logit`` (forward with ``ct_gt``).
        target: ``[B, 1, R, R, R]`` unit intensities; label: ``[B, 1, R, R, R]`` mask (> 0).
    """
    pred, mask = out["volume"], (label > 0).float()
    t = {
        "recon": (pred - target).abs().mean(),
        "perc": multiview_ssim_loss(pred, target),
        "dice": dice_loss(out["seg_logit"], mask),
        "dice_gt": dice_loss(out["seg_gt_logit"], mask),
        "rsc": rsc_loss(out["seg_logit"], out["seg_gt_logit"]),
    }
    t["total"] = sum(weights.get(k, 0.0) * v for k, v in t.items())
    return t


def default_weights(method: str = "xctrsnet") -> dict[str, Any]:
    return dict(WEIGHTS)
