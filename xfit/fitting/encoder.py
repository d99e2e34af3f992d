"""Warm-start encoder: predicts a starting W+ for :func:`xfit.fitting.fit` from the X-rays.

The encoder is trained only on the prior's own samples and their simulated X-rays (no extra
data): z -> w_plus = mapping(z) -> volume (random noise) -> DRRs of a fixed view family (default
AP + lateral, small random angle jitter) -> gain/offset/noise augmentation -> encoder, regressed
to the true w_plus in normalized units ``u = (w_plus - w_mean) / w_std`` (MSE).

Input preprocessing (:func:`preprocess_images`) makes the encoder independent of the detector
size and calibration: each view is resampled (bilinear after a box pre-filter) onto a fixed
``image_size x image_size`` grid that covers ``window_mm`` at the isocentre plane (scaled by the
view's magnification), then normalised to zero mean and unit std, like the data term of the fit
(which is invariant to per-view gain and offset). The V views are stacked as channels.

The encoder holds copies of the prior's ``w_mean``/``w_std``, so ``predict_w_plus`` needs no
prior. It is specific to its view family: :func:`match_views` pairs the given views with the
trained angles (any order) and refuses angles further off than ``angle_tol_deg``.

Checkpoint: one safetensors file, tensors ``E.<state_dict key>``, metadata entry ``xfit`` with
JSON ``{"format": "xfit-encoder", "format_version": 1, "arch": ..., "views": ..., "image_size",
"window_mm", "prior_sha256", "training": ...}``.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import (
    check_names_shapes,
    load_tensors,
    read_safetensors,
    save_safetensors,
    state_dict_tensors,
    take_prefix,
    xfit_meta,
)
from ..errors import CheckpointError, GeometryError, InputError
from ..geometry import View
from ..prior.checkpoint import Prior
from ..prior.sample import prior_affine
from ..projector import project
from ..units import hu_to_mu, unit_to_hu

ENCODER_FORMAT = "xfit-encoder"
FORMAT_VERSION = 1
MODES = ("w", "wplus")
#: The view family of the shipped examples: AP and left lateral, 1800/1500 mm cone beam.
DEFAULT_ANGLES = (0.0, 90.0)
DEFAULT_SDD_MM, DEFAULT_SOD_MM = 1800.0, 1500.0
_EPS = 1e-6


# ----------------------------------------------------------------------------- preprocessing


def default_window_mm(prior: Prior) -> float:
    """Side (mm, at the isocentre plane) of the square the encoder looks at: 1.1 x prior FOV."""
    return 1.1 * float(prior.config.resolution) * float(prior.config.spacing_mm)


def normalize_images(x: Tensor) -> Tensor:
    """Zero mean, unit std per image over the last two axes: ``[..., S, S]`` -> same shape."""
    m = x.mean((-2, -1), keepdim=True)
    s = x.std((-2, -1), keepdim=True)
    return (x - m) / (s + _EPS)


def resample_view(img: Tensor, view: View, image_size: int, window_mm: float) -> Tensor:
    """Resample detector images onto the encoder's fixed grid.

    The grid is ``image_size^2`` points spanning ``window_mm * magnification`` on the detector,
    centred on the principal point, row 0 at the top (superior) as on the detector.

    Args:
        img: ``[B, rows, cols]`` images of ``view`` (any units).
        view: their view (shape, pixel spacing, offset, magnification are used).
        image_size: output side S.
        window_mm: covered side at the isocentre plane (mm).
    Returns:
        ``[B, S, S]`` resampled images (border values outside the detector).
    """
    if img.ndim != 3 or tuple(img.shape[1:]) != tuple(view.shape):
        raise InputError(f"image must be [B, {view.shape[0]}, {view.shape[1]}] for its view, got {list(img.shape)}")
    rows, cols = view.shape
    dr, dc = view.pixel_spacing_mm
    half = 0.5 * window_mm * view.magnification  # mm on the detector
    step = 2 * half / image_size
    x = img[:, None].float()
    k = int(step / max(dr, dc))  # odd box pre-filter against aliasing when downsampling
    k -= 1 - k % 2
    if k >= 3:
        x = F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
    pos = (torch.arange(image_size, dtype=torch.float32, device=img.device) + 0.5) * step - half
    r = pos / dr + (rows - 1) / 2 - view.offset_px[0]
    c = pos / dc + (cols - 1) / 2 - view.offset_px[1]
    gy = 2 * r / max(rows - 1, 1) - 1
    gx = 2 * c / max(cols - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)  # [S, S, (x, y)]
    grid = grid[None].expand(x.shape[0], -1, -1, -1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, 0]


def preprocess_images(
    images: Sequence[Tensor | np.ndarray] | Tensor, views: Sequence[View], image_size: int, window_mm: float
) -> Tensor:
    """Resample and normalise V views into the encoder input.

    Args:
        images: V images ``[rows_v, cols_v]`` (a list; shapes may differ), or ``[B, V, rows,
            cols]`` / ``[V, rows, cols]`` when all views share one detector.
        views: the V views.
        image_size: side S of the encoder input.
        window_mm: covered side at the isocentre plane (mm).
    Returns:
        ``[B, V, S, S]`` float32 (B = 1 for a list or a 3D tensor), zero mean / unit std per image.
    """
    views = list(views)
    if isinstance(images, Tensor) and images.ndim == 4:
        per_view = [images[:, i] for i in range(images.shape[1])]
    else:
        per_view = [torch.as_tensor(np.asarray(im) if not isinstance(im, Tensor) else im)[None] for im in images]
    if len(per_view) != len(views):
        raise InputError(f"{len(per_view)} images for {len(views)} views")
    out = []
    for im, view in zip(per_view, views):
        im = im.float()
        if not torch.isfinite(im).all():
            raise InputError("images must be finite")
        out.append(resample_view(im, view, image_size, window_mm))
    return normalize_images(torch.stack(out, 1))


# ----------------------------------------------------------------------------- network


class _ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm + SiLU and a (strided) skip: ``[B, Ci, H, W]`` ->
    ``[B, Co, H/stride, W/stride]``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(min(8, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, c_out), c_out)
        same = stride == 1 and c_in == c_out
        self.skip = nn.Identity() if same else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = F.silu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.silu(y + self.skip(x))


class Encoder(nn.Module):
    """Small ResNet: V stacked views ``[B, V, S, S]`` -> normalized W+ ``[B, num_ws, w_dim]``.

    Args:
        num_views: V input channels.
        image_size: input side S (a multiple of ``2 ** len(channels)`` is best).
        num_ws, w_dim: W+ shape of the prior.
        mode: ``"w"`` predicts one w broadcast to every layer; ``"wplus"`` one per layer.
        channels: widths of the strided residual stages.
        hidden: width of the fully connected layer.
        w_mean, w_std: ``[w_dim]`` statistics of the prior (buffers, saved with the weights).

    The last layer starts at zero, so an untrained encoder predicts ``w_mean``.
    """

    def __init__(
        self,
        num_views: int,
        image_size: int,
        num_ws: int,
        w_dim: int,
        *,
        mode: str = "w",
        channels: Sequence[int] = (16, 32, 64, 96),
        hidden: int = 256,
        w_mean: Tensor | None = None,
        w_std: Tensor | None = None,
    ):
        super().__init__()
        if mode not in MODES:
            raise InputError(f"encoder mode must be one of {MODES}, got {mode!r}")
        if num_views < 1 or image_size < 8 or num_ws < 1 or w_dim < 1 or not channels:
            raise InputError("encoder needs num_views >= 1, image_size >= 8, num_ws, w_dim >= 1 and at least one stage")
        self.arch = {
            "num_views": int(num_views),
            "image_size": int(image_size),
            "num_ws": int(num_ws),
            "w_dim": int(w_dim),
            "mode": mode,
            "channels": [int(c) for c in channels],
            "hidden": int(hidden),
        }
        self.num_ws, self.w_dim, self.mode = int(num_ws), int(w_dim), mode
        self.stem = nn.Sequential(nn.Conv2d(num_views, channels[0], 3, 1, 1), nn.SiLU())
        stages, c = [], channels[0]
        for c_out in channels:
            stages.append(_ResBlock(c, c_out, 2))
            c = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(4)
        n_out = w_dim if mode == "w" else num_ws * w_dim
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * 16, hidden), nn.SiLU(), nn.Linear(hidden, n_out))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.register_buffer("w_mean", torch.zeros(w_dim) if w_mean is None else w_mean.detach().float().clone())
        self.register_buffer("w_std", torch.ones(w_dim) if w_std is None else w_std.detach().float().clone())
        #: view family, window, prior sha256 and training summary (saved as JSON).
        self.meta: dict[str, Any] = {}

    def forward(self, x: Tensor) -> Tensor:
        """Normalized W+ offsets ``u``: ``[B, V, S, S]`` -> ``[B, num_ws, w_dim]``."""
        v, s = self.arch["num_views"], self.arch["image_size"]
        if x.ndim != 4 or tuple(x.shape[1:]) != (v, s, s):
            raise InputError(f"encoder input must be [B, {v}, {s}, {s}], got {list(x.shape)}")
        u = self.head(self.pool(self.stages(self.stem(x))))
        if self.mode == "w":
            return u[:, None].expand(-1, self.num_ws, -1)
        return u.view(-1, self.num_ws, self.w_dim)

    def to_w_plus(self, u: Tensor) -> Tensor:
        """Normalized ``u [B, num_ws, w_dim]`` -> ``w_plus = w_mean + w_std * u`` (same shape)."""
        return self.w_mean + self.w_std * u


# ----------------------------------------------------------------------------- views


def _angle_diff(a: float, b: float) -> float:
    """Smallest absolute difference of two angles in degrees (0..180)."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


def match_views(encoder: Encoder, views: Sequence[View]) -> tuple[list[int] | None, str]:
    """Pair the given views with the encoder's trained view family.

    Args:
        encoder: trained encoder (``encoder.meta["views"]`` holds ``angles_deg``,
            ``angle_tol_deg``, ``projection``).
        views: the V views of the images to encode.
    Returns:
        ``(order, reason)``: ``order[i]`` is the index of the given view to feed as channel i
        (``None`` when no pairing is within tolerance; ``reason`` then says why).
    """
    fam = encoder.meta.get("views") or {}
    angles = [float(a) for a in fam.get("angles_deg", [])]
    tol = float(fam.get("angle_tol_deg", 5.0))
    views = list(views)
    if len(views) != len(angles):
        return None, f"encoder trained for {len(angles)} views, got {len(views)}"
    proj = fam.get("projection")
    if proj is not None and any(v.projection != proj for v in views):
        return None, f"encoder trained for {proj} projection"
    best, best_err = None, math.inf
    for perm in itertools.permutations(range(len(views))):
        err = max(_angle_diff(views[p].angle_deg, a) for p, a in zip(perm, angles))
        if err < best_err:
            best, best_err = list(perm), err
    if best_err > tol:
        got = [v.angle_deg for v in views]
        return None, (f"view angles {got} differ from the encoder's {angles} by {best_err:.1f} deg (> {tol:g})")
    return best, ""


# ----------------------------------------------------------------------------- prediction


@torch.no_grad()
def predict_w_plus(
    encoder: Encoder, images: Sequence[np.ndarray | Tensor], views: Sequence[View], *, strict: bool = True
) -> Tensor | None:
    """Predict a starting W+ for fitting.

    Args:
        encoder: trained encoder.
        images: V images ``[rows_v, cols_v]`` (any gain/offset, bright = attenuating).
        views: their views (any order; paired with the trained angles).
        strict: raise on views outside the encoder's family; otherwise return ``None``.
    Returns:
        ``[num_ws, w_dim]`` float32 on the encoder's device, or ``None`` (not strict, views off).
    Raises:
        GeometryError: views outside the trained family (strict).
        InputError: images that do not match the views.
    """
    order, reason = match_views(encoder, views)
    if order is None:
        if strict:
            raise GeometryError(f"warm-start encoder not applicable: {reason}")
        return None
    images, views = list(images), list(views)
    if len(images) != len(views):
        raise InputError(f"{len(images)} images for {len(views)} views")
    device = encoder.w_mean.device
    x = preprocess_images(
        [images[i] for i in order],
        [views[i] for i in order],
        encoder.arch["image_size"],
        float(encoder.meta["window_mm"]),
    ).to(device)
    was_training = encoder.training
    encoder.eval()
    w = encoder.to_w_plus(encoder(x))[0]
    encoder.train(was_training)
    return w


# ----------------------------------------------------------------------------- training data


def default_views(prior: Prior, detector: int = 128, pixel_spacing_mm: float | None = None) -> list[View]:
    """AP + lateral views of the shipped examples' setup (1800/1500 mm cone beam).

    ``pixel_spacing_mm`` defaults to 1.0 mm for a 128 detector and otherwise to the spacing that
    covers the same 128 mm.
    """
    ps = 128.0 / detector if pixel_spacing_mm is None else float(pixel_spacing_mm)
    return [
        View(a, sdd_mm=DEFAULT_SDD_MM, sod_mm=DEFAULT_SOD_MM, shape=(detector, detector), pixel_spacing_mm=(ps, ps))
        for a in DEFAULT_ANGLES
    ]


@torch.no_grad()
def sample_w_plus_mixed(
    prior: Prior, n: int, gen: torch.Generator, *, style_mix_prob: float = 0.0, truncation_psi: float = 1.0
) -> Tensor:
    """``[n, num_ws, w_dim]`` styles of random z (optional style mixing / truncation)."""
    G = prior.G
    device = prior.w_mean.device
    z = torch.randn(n, G.z_dim, generator=gen).to(device)
    w = G.mapping(z, truncation_psi=truncation_psi)
    if style_mix_prob > 0:
        z2 = torch.randn(n, G.z_dim, generator=gen).to(device)
        w2 = G.mapping(z2, truncation_psi=truncation_psi)
        cut = torch.randint(1, G.num_ws, (n,), generator=gen).to(device)
        mix = torch.rand(n, generator=gen).to(device) < style_mix_prob
        layer = torch.arange(G.num_ws, device=device)[None]
        use2 = (layer >= cut[:, None]) & mix[:, None]
        w = torch.where(use2[..., None], w2, w)
    return w


@torch.no_grad()
def simulate_samples(
    prior: Prior,
    views: Sequence[View],
    w_plus: Tensor,
    gen: torch.Generator,
    *,
    angle_jitter_deg: float = 0.0,
    noise_mode: str = "random",
    chunk: int = 16,
) -> Tensor:
    """DRRs of the prior's volumes for given styles, each sample with its own angle jitter.

    Args:
        prior: loaded prior.
        views: V views (one detector shape).
        w_plus: ``[N, num_ws, w_dim]`` styles.
        gen: CPU random generator of the angle jitter.
        angle_jitter_deg: uniform jitter in +-this many degrees, per sample and view.
        noise_mode: synthesis noise (``random`` for training).
        chunk: volumes per generator call.
    Returns:
        ``[N, V, rows, cols]`` line integrals (CPU float32).
    """
    affine = torch.as_tensor(prior_affine(prior), dtype=torch.float32, device=w_plus.device)
    base = torch.tensor([v.angle_deg for v in views], dtype=torch.float32)
    out = []
    for i in range(0, w_plus.shape[0], chunk):
        vol = prior.G.synthesis(w_plus[i : i + chunk], noise_mode=noise_mode)
        mu = hu_to_mu(unit_to_hu(vol[:, :1].float(), prior.config.hu_window))
        for b in range(mu.shape[0]):
            jitter = (torch.rand(len(views), generator=gen) * 2 - 1) * angle_jitter_deg
            angle = (base + jitter).to(mu.device)
            out.append(project(mu[b : b + 1], affine, list(views), angle_deg=angle).cpu())
    return torch.cat(out)


def augment_images(
    images: Tensor, gen: torch.Generator, *, gain: float = 0.3, offset: float = 0.5, noise_std: float = 0.03
) -> Tensor:
    """Random per-image gain (log-uniform in 1/(1+gain)..1+gain), offset (in image stds) and
    Gaussian noise (std up to ``noise_std`` image stds): ``[B, V, R, C]`` -> same shape."""
    b, v = images.shape[:2]
    std = images.std((-2, -1), keepdim=True) + _EPS
    g = torch.exp((torch.rand(b, v, 1, 1, generator=gen) * 2 - 1) * math.log1p(gain))
    o = (torch.rand(b, v, 1, 1, generator=gen) * 2 - 1) * offset * std
    sigma = torch.rand(b, v, 1, 1, generator=gen) * noise_std * std
    n = torch.randn(images.shape, generator=gen) * sigma
    return g * (images + n) + o


def regression_loss(u_pred: Tensor, u_true: Tensor, mode: str) -> Tensor:
    """MSE in normalized units; in mode ``w`` the target is the mean w over layers. ``[]``."""
    if mode == "w":
        return F.mse_loss(u_pred[:, 0], u_true.mean(1))
    return F.mse_loss(u_pred, u_true)


@torch.no_grad()
def evaluate_encoder(
    encoder: Encoder,
    prior: Prior,
    views: Sequence[View],
    n: int = 32,
    *,
    seed: int = 12345,
    angle_jitter_deg: float = 0.0,
) -> dict[str, float]:
    """Normalized MSE of predicted vs true W+ on held-out prior samples, and of ``w_mean``.

    Returns:
        ``{"mse_encoder", "mse_mean"}`` (mean over samples, layers and w dims; units of w_std^2).
    """
    gen = torch.Generator().manual_seed(seed)
    w = sample_w_plus_mixed(prior, n, gen)
    imgs = simulate_samples(prior, views, w, gen, angle_jitter_deg=angle_jitter_deg)
    x = preprocess_images(imgs, views, encoder.arch["image_size"], float(encoder.meta["window_mm"]))
    was_training = encoder.training
    encoder.eval()
    u = encoder(x.to(encoder.w_mean.device)).cpu()
    encoder.train(was_training)
    u_true = ((w - prior.w_mean) / prior.w_std).cpu()
    return {"mse_encoder": float(F.mse_loss(u, u_true)), "mse_mean": float(u_true.square().mean())}


# ----------------------------------------------------------------------------- training


def train_encoder(
    prior: Prior,
    views: Sequence[View] | None = None,
    *,
    n_steps: int = 2000,
    batch: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    mode: str = "w",
    image_size: int = 64,
    bank: int | None = 2048,
    gen_batch: int = 16,
    angle_jitter_deg: float = 3.0,
    angle_tol_deg: float | None = None,
    style_mix_prob: float = 0.0,
    truncation_psi: float = 1.0,
    window_mm: float | None = None,
    channels: Sequence[int] = (16, 32, 64, 96),
    hidden: int = 256,
    weight_decay: float = 1e-4,
    callback: Callable[[int, float], Any] | None = None,
) -> Encoder:
    """Train an encoder on the prior's own samples and their simulated X-rays.

    Args:
        prior: loaded prior (frozen).
        views: the view family (default :func:`default_views`: AP + lateral, 128^2 at 1 mm).
        n_steps: Adam steps.
        batch: samples per step.
        lr: peak learning rate (cosine decay to 5% over ``n_steps``).
        seed: seed of everything random (samples, jitter, augmentation, init).
        progress: print a line every 10% of the steps.
        mode: ``"w"`` (one w broadcast) or ``"wplus"`` (one per layer).
        image_size: encoder input side S.
        bank: pre-generate this many samples and reuse them with fresh augmentation each step
            (generation dominates the cost); ``None`` generates ``batch`` fresh samples per step.
        gen_batch: volumes per generator call.
        angle_jitter_deg: uniform per-view angle jitter of the simulated X-rays.
        angle_tol_deg: largest angle difference accepted by :func:`predict_w_plus`
            (default ``angle_jitter_deg + 2``).
        style_mix_prob, truncation_psi: sampling of the training styles.
        window_mm: covered side at the isocentre (default :func:`default_window_mm`).
        channels, hidden: architecture.
        weight_decay: AdamW weight decay.
        callback: ``callback(step, loss)`` after every step.
    Returns:
        The trained :class:`Encoder` in eval mode, ``meta`` filled (views, window, prior sha,
        training summary with the loss at the first and last steps).
    """
    if n_steps < 1 or batch < 1:
        raise InputError(f"n_steps and batch must be >= 1, got {n_steps}, {batch}")
    views = list(views) if views is not None else default_views(prior)
    if len({v.shape for v in views}) != 1 or len({v.projection for v in views}) != 1:
        raise GeometryError("training views must share detector shape and projection")
    device = prior.w_mean.device
    window = default_window_mm(prior) if window_mm is None else float(window_mm)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    enc = Encoder(
        len(views),
        image_size,
        prior.num_ws,
        prior.config.w_dim,
        mode=mode,
        channels=channels,
        hidden=hidden,
        w_mean=prior.w_mean,
        w_std=prior.w_std,
    ).to(device)
    enc.meta = {
        "views": {
            "angles_deg": [v.angle_deg for v in views],
            "sdd_mm": views[0].sdd_mm,
            "sod_mm": views[0].sod_mm,
            "projection": views[0].projection,
            "shape": list(views[0].shape),
            "pixel_spacing_mm": list(views[0].pixel_spacing_mm),
            "angle_jitter_deg": angle_jitter_deg,
            "angle_tol_deg": angle_jitter_deg + 2.0 if angle_tol_deg is None else float(angle_tol_deg),
        },
        "window_mm": window,
        "prior_sha256": prior.sha256,
    }

    def draw(n: int) -> tuple[Tensor, Tensor]:
        w = sample_w_plus_mixed(prior, n, gen, style_mix_prob=style_mix_prob, truncation_psi=truncation_psi)
        imgs = simulate_samples(prior, views, w, gen, angle_jitter_deg=angle_jitter_deg, chunk=gen_batch)
        return imgs, ((w - prior.w_mean) / prior.w_std).cpu()

    t0 = time.perf_counter()
    bank_imgs = bank_u = None
    if bank is not None:
        bank_imgs, bank_u = draw(int(bank))
    t_bank = time.perf_counter() - t0
    opt = torch.optim.AdamW(enc.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / n_steps)))
    )
    enc.train()
    losses: list[float] = []
    for step in range(n_steps):
        if bank_imgs is not None:
            idx = torch.randint(0, bank_imgs.shape[0], (batch,), generator=gen)
            imgs, u_true = bank_imgs[idx], bank_u[idx]
        else:
            imgs, u_true = draw(batch)
        x = preprocess_images(augment_images(imgs, gen), views, image_size, window).to(device)
        loss = regression_loss(enc(x), u_true.to(device), mode)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, losses[-1])
        if progress and (step + 1) % max(1, n_steps // 10) == 0:
            recent = sum(losses[-50:]) / len(losses[-50:])
            print(f"encoder step {step + 1}/{n_steps}  loss {recent:.4f}  {time.perf_counter() - t0:.1f}s", flush=True)
    enc.eval()
    k = min(20, n_steps)
    enc.meta["training"] = {
        "n_steps": n_steps,
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "bank": bank,
        "style_mix_prob": style_mix_prob,
        "truncation_psi": truncation_psi,
        "loss_first": sum(losses[:k]) / k,
        "loss_last": sum(losses[-k:]) / k,
        "seconds_bank": t_bank,
        "seconds_total": time.perf_counter() - t0,
    }
    return enc


# ----------------------------------------------------------------------------- checkpoint


def save_encoder(
    path: str | Path, encoder: Encoder, meta: Mapping[str, Any] | None = None, force: bool = False
) -> Path:
    """Write an encoder checkpoint (safetensors + JSON metadata, atomically).

    Args:
        path: output ``.safetensors`` file.
        encoder: trained encoder (its ``meta`` must hold ``views``, ``window_mm``,
            ``prior_sha256``).
        meta: extra JSON-able entries merged into ``encoder.meta``.
        force: overwrite an existing file.
    Raises:
        InputError: incomplete or non-JSON metadata. OutputExistsError: exists without force.
    """
    info = {**encoder.meta, **dict(meta or {})}
    missing = [k for k in ("views", "window_mm", "prior_sha256") if k not in info]
    if missing:
        raise InputError(f"encoder metadata lacks {', '.join(missing)}")
    doc = {
        "format": ENCODER_FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": encoder.arch,
        "image_size": encoder.arch["image_size"],
        **info,
    }
    try:
        text = json.dumps(doc)
    except (TypeError, ValueError) as exc:
        raise InputError(f"encoder metadata is not JSON-serialisable: {exc}") from exc
    return save_safetensors(Path(path), state_dict_tensors(encoder, "E"), {"xfit": text}, force)


def load_encoder(path: str | Path, prior: Prior | None = None, device: str | torch.device = "cpu") -> Encoder:
    """Load an encoder checkpoint.

    Args:
        path: file written by :func:`save_encoder`.
        prior: when given, the encoder must have been trained for this prior (same sha256 and
            W+ shape).
        device: where to put it.
    Returns:
        The encoder in eval mode with ``meta`` restored.
    Raises:
        CheckpointError: missing/corrupt/foreign file, unknown version, tensors not matching the
            architecture, or trained for another prior.
    """
    path = Path(path)
    data, header = read_safetensors(path, "encoder checkpoint")
    meta = xfit_meta(header, path, ENCODER_FORMAT)
    arch = meta.get("arch")
    try:
        arch = dict(arch)
        enc = Encoder(
            arch["num_views"],
            arch["image_size"],
            arch["num_ws"],
            arch["w_dim"],
            mode=arch["mode"],
            channels=arch["channels"],
            hidden=arch["hidden"],
        )
        views = meta["views"]
        angles = [float(a) for a in views["angles_deg"]]
        window = float(meta["window_mm"])
    except (KeyError, TypeError, ValueError, InputError) as exc:
        raise CheckpointError(f"{path}: invalid encoder metadata ({exc})") from exc
    if len(angles) != arch["num_views"] or not window > 0:
        raise CheckpointError(f"{path}: inconsistent encoder metadata (views / window)")
    if prior is not None:
        if meta.get("prior_sha256") != prior.sha256:
            raise CheckpointError(
                f"{path} was trained for prior sha256 "
                f"{str(meta.get('prior_sha256'))[:12]}..., not "
                f"{prior.sha256[:12]}... ({prior.path})"
            )
        if (arch["num_ws"], arch["w_dim"]) != (prior.num_ws, prior.config.w_dim):
            raise CheckpointError(f"{path}: W+ shape does not match the prior")
    tensors = take_prefix(load_tensors(data, path), "E")
    expected = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    problem = check_names_shapes(tensors, expected)
    if problem:
        raise CheckpointError(f"{path}: tensors do not match the encoder architecture: {problem}")
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise CheckpointError(f"{path}: non-finite encoder weights")
    enc.load_state_dict(tensors, strict=True)
    enc.meta = {k: v for k, v in meta.items() if k not in ("format", "format_version", "arch", "image_size")}
    return enc.to(device).eval()


def encoder_path_for(prior: Prior) -> Path:
    """Where the default encoder of a prior lives: ``<prior stem>.encoder.safetensors`` beside it."""
    return Path(prior.path).with_name(Path(prior.path).stem + ".encoder.safetensors")


def warm_start_w_plus(
    prior: Prior,
    images: Sequence[np.ndarray | Tensor],
    views: Sequence[View],
    encoder: Encoder | str | Path | None = None,
) -> tuple[Tensor | None, str]:
    """Starting W+ for :func:`xfit.fitting.fit` from the encoder, or ``None`` to use ``w_mean``.

    Args:
        prior: the prior being fitted.
        images, views: the inputs of the fit.
        encoder: an encoder, a checkpoint path, or ``None`` for :func:`encoder_path_for`.
    Returns:
        ``(w_init [num_ws, w_dim] or None, note)`` where ``note`` says which start is used and
        why (for the report).
    Raises:
        CheckpointError: an explicitly given encoder file that is corrupt or for another prior.
    """
    if not isinstance(encoder, Encoder):
        path = encoder_path_for(prior) if encoder is None else Path(encoder)
        if encoder is None and not path.is_file():
            return None, "w_mean (no encoder for this prior)"
        encoder = load_encoder(path, prior, device=prior.w_mean.device)
    elif encoder.meta.get("prior_sha256") != prior.sha256:
        raise CheckpointError("the encoder was trained for another prior")
    w = predict_w_plus(encoder, images, views, strict=False)
    if w is None:
        return None, f"w_mean ({match_views(encoder, views)[1]})"
    return w.to(prior.w_mean.device), "encoder"


__all__ = [
    "DEFAULT_ANGLES",
    "ENCODER_FORMAT",
    "Encoder",
    "augment_images",
    "default_views",
    "default_window_mm",
    "encoder_path_for",
    "evaluate_encoder",
    "load_encoder",
    "match_views",
    "normalize_images",
    "predict_w_plus",
    "preprocess_images",
    "regression_loss",
    "resample_view",
    "save_encoder",
    "simulate_samples",
    "train_encoder",
    "warm_start_w_plus",
]
