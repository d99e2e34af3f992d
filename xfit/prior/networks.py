"""3D StyleGAN2 networks: mapping, modulated conv3d synthesis and a residual discriminator.

Modelled on stylegan2-ada-pytorch ``training/networks.py`` (one flat file, bottom-up), written
from scratch in plain PyTorch for volumes: no custom ops, trilinear upsampling in place of FIR
filters, average pooling for downsampling.

Shapes: latents ``z [B, z_dim]``, ``w [B, w_dim]``, ``w_plus [B, num_ws, w_dim]``; volumes
``[B, C, R, R, R]`` in voxel order (I, J, K) of ``docs/architecture.md``. The generator's channel 0
is intensity in unit range (HU window mapped to ~[-1, 1], see :mod:`xfit.prior.config`),
channels 1.. are label logits (channel 1: bone/vertebra).

Every layer uses the equalized learning rate: weights are stored ~N(0, 1 / lr_multiplier) and
scaled at run time by ``lr_multiplier / sqrt(fan_in)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from .config import PriorConfig

NOISE_MODES = ("random", "const", "none")
ACTIVATIONS = ("linear", "lrelu")
LRELU_GAIN = math.sqrt(2.0)
#: bf16/fp16 synthesis layers on the CPU take the short path (:class:`SynthesisLayer`); ``False``
#: runs the reference arithmetic there too (``bench/synthesis_paths.py`` and the tests compare them).
SHORT_PATH = True


def _activate(x: Tensor, activation: str, gain: float = 1.0) -> Tensor:
    """Apply ``linear`` or ``lrelu`` (slope 0.2, gain sqrt 2) times ``gain``."""
    if activation == "lrelu":
        return F.leaky_relu(x, 0.2) * (LRELU_GAIN * gain)
    return x * gain if gain != 1 else x


def _check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise InputError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Scale ``x`` to unit mean square along ``dim`` (``[B, N] -> [B, N]``)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ----------------------------------------------------------------------------------------------
# Equalized-lr building blocks


class FullyConnectedLayer(nn.Module):
    """Equalized-lr linear layer ``[B, in] -> [B, out]`` with optional lrelu."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = _check_activation(activation)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        return _activate(F.linear(x, w, b), self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, activation={self.activation}"


class Conv3dLayer(nn.Module):
    """Equalized-lr 3D convolution, optionally after 2x average-pool downsampling.

    Shape: ``[B, in, D, D, D] -> [B, out, D/down, D/down, D/down]`` (``same`` padding).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: int = 1,
    ):
        super().__init__()
        if down not in (1, 2):
            raise InputError(f"down must be 1 or 2, got {down}")
        self.activation = _check_activation(activation)
        self.down, self.padding = down, kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *[kernel_size] * 3))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**3)

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        if self.down == 2:
            x = F.avg_pool3d(x, 2)
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype)
        return _activate(F.conv3d(x, w, b, padding=self.padding), self.activation, gain)


# ----------------------------------------------------------------------------------------------
# Mapping network


class MappingNetwork(nn.Module):
    """z -> w: normalised z through ``num_layers`` lrelu FC layers (lr multiplier 0.01).

    Tracks the running mean ``w_avg [w_dim]`` (buffer) for the truncation trick.
    """

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.998,
    ):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        features = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            FullyConnectedLayer(features[i], features[i + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            for i in range(num_layers)
        )
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        num_ws: int | None = -1,
        update_emas: bool | None = None,
    ) -> Tensor:
        """Map latents to styles.

        Args:
            z: ``[B, z_dim]`` latents.
            truncation_psi: 1 = no truncation; 0 = every w equals ``w_avg``.
            truncation_cutoff: truncate only the first this many ws (``None``: all).
            num_ws: broadcast count; ``-1`` (default) uses ``self.num_ws``; ``None`` returns
                ``[B, w_dim]``.
            update_emas: update ``w_avg`` with this batch; ``None`` (default) does so in training
                mode only, as StyleGAN2-ADA does (a frozen/eval prior never changes).

        Returns:
            ``[B, num_ws, w_dim]`` (or ``[B, w_dim]`` when ``num_ws`` resolves to ``None``).
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise InputError(f"z must be [B, {self.z_dim}], got {list(z.shape)}")
        x = normalize_2nd_moment(z)
        for layer in self.layers:
            x = layer(x)
        if update_emas or (update_emas is None and self.training):
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(0).to(self.w_avg.dtype).lerp(self.w_avg, self.w_avg_beta))
        num_ws = self.num_ws if num_ws == -1 else num_ws
        if num_ws is not None:
            x = x.unsqueeze(1).repeat(1, num_ws, 1)
        if truncation_psi != 1:
            w_avg = self.w_avg.to(x.dtype)
            if num_ws is None:
                x = w_avg.lerp(x, truncation_psi)
            else:
                cut = num_ws if truncation_cutoff is None else truncation_cutoff
                x = torch.cat([w_avg.lerp(x[:, :cut], truncation_psi), x[:, cut:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


# ----------------------------------------------------------------------------------------------
# Modulated convolution


def modulated_conv3d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    demodulate: bool = True,
    padding: int = 1,
    fused: bool | None = None,
    eps: float = 1e-8,
    gain: float = 1.0,
    bias: Tensor | None = None,
    scaled: bool = False,
) -> Tensor:
    """StyleGAN2 modulated (and demodulated) 3D convolution.

    Each sample's kernel is ``weight * styles[b]`` over input channels; with ``demodulate`` it is
    rescaled to unit L2 norm per output channel, so unit-variance input gives ~unit-variance
    output. ``fused=True`` runs one grouped conv (groups = B) with per-sample kernels;
    ``fused=False`` scales the activations before and after a shared conv instead (same result).
    ``None`` picks grouped on CUDA and activation scaling on CPU, where it was measured faster
    (64^3 generator, 2 cores: fwd+bwd batch 4 2.0 s vs 5.7 s).

    Args:
        x: ``[B, Cin, D, H, W]`` input.
        weight: ``[Cout, Cin, k, k, k]`` kernel.
        styles: ``[B, Cin]`` per-sample input-channel scales.
        demodulate: normalise each output channel's kernel.
        padding: conv padding.
        fused: grouped-conv implementation (``None``: automatic).
        gain: a scale of the output, folded into the demodulation (with ``demodulate``).
        bias: ``[1, Cout, 1, 1, 1]`` added to the output in the same pass (with ``demodulate``
            and ``fused`` false; ``None``: none).
        scaled: ``x`` is already multiplied by ``styles`` (``fused`` false).

    Returns:
        ``[B, Cout, D', H', W']``.
    """
    if fused is None:
        fused = x.is_cuda
    b, cin = x.shape[:2]
    cout = weight.shape[0]
    if weight.ndim != 5 or weight.shape[1] != cin or styles.shape != (b, cin):
        raise InputError(
            f"modulated_conv3d: x {list(x.shape)}, weight {list(weight.shape)} and "
            f"styles {list(styles.shape)} do not agree"
        )
    dcoefs = None
    if demodulate:
        w = weight.unsqueeze(0) * styles.reshape(b, 1, cin, 1, 1, 1)  # [B, Cout, Cin, k, k, k]
        dcoefs = (w.square().sum(dim=[2, 3, 4, 5]) + eps).rsqrt()  # [B, Cout]
        if gain != 1.0:
            dcoefs = dcoefs * gain
    if bias is not None and (dcoefs is None or fused):
        raise InputError("modulated_conv3d: bias is added only with demodulate and fused=False")
    if scaled and fused:
        raise InputError("modulated_conv3d: a scaled input needs fused=False")
    if not fused:
        if not scaled:
            x = x * styles.reshape(b, cin, 1, 1, 1).to(x.dtype)
        if not x.is_cuda:  # oneDNN's channels-last 3D conv: 64^3 generator fwd+bwd ~1.25x faster
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = F.conv3d(x, weight, padding=padding)
        # the scale in the conv's output dtype: under bf16 autocast the activations stay bf16
        if dcoefs is None:
            return x
        d = dcoefs.reshape(b, cout, 1, 1, 1).to(x.dtype)
        return x * d if bias is None else torch.addcmul(bias.to(x.dtype), x, d)
    w = weight.unsqueeze(0) * styles.reshape(b, 1, cin, 1, 1, 1)
    if dcoefs is not None:
        w = w * dcoefs.reshape(b, cout, 1, 1, 1, 1)
    x = x.reshape(1, b * cin, *x.shape[2:])
    x = F.conv3d(x, w.reshape(b * cout, cin, *weight.shape[2:]), padding=padding, groups=b)
    return x.reshape(b, cout, *x.shape[2:])


# ----------------------------------------------------------------------------------------------
# Synthesis network


class SynthesisLayer(nn.Module):
    """Modulated 3^3 conv (optionally after x2 trilinear upsampling) + noise + bias + lrelu.

    Shape: ``x [B, in, r/up, ...], w [B, w_dim] -> [B, out, r, r, r]``. Noise of shape
    ``[1 or B, 1, r, r, r]`` is scaled by the learned ``noise_strength`` (initialised at 0).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: int = 1,
        kernel_size: int = 3,
        activation: str = "lrelu",
    ):
        super().__init__()
        if up not in (1, 2):
            raise InputError(f"up must be 1 or 2, got {up}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.up = resolution, up
        self.activation = _check_activation(activation)
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *[kernel_size] * 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution, resolution))

    @property
    def noise_shape(self) -> tuple[int, int, int, int, int]:
        """Shape of one noise input, ``(1, 1, r, r, r)``."""
        r = self.resolution
        return (1, 1, r, r, r)

    def forward(
        self, x: Tensor, w: Tensor, noise: Tensor | None = None, noise_mode: str = "random", fused: bool | None = None
    ) -> Tensor:
        styles = self.affine(w)
        # bf16/fp16 features (autocast) take a shorter path, the same function up to rounding
        # (float32 and float64 keep the reference arithmetic, which the fit's pinned numbers
        # record): the input's style scale before the upsampling, which it commutes with (8x
        # fewer voxels), the lrelu gain folded into the demodulation, the bias added in the same
        # pass (addcmul) and the activation in place
        short = (
            SHORT_PATH
            and self.activation == "lrelu"
            and x.dtype in (torch.bfloat16, torch.float16)
            and not (fused or x.is_cuda)
        )
        scaled = short and self.up == 2
        if scaled:
            x = x * styles.reshape(x.shape[0], -1, 1, 1, 1).to(x.dtype)
        if self.up == 2:
            x = F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)
        gain = LRELU_GAIN if short else 1.0
        bias = self.bias.to(x.dtype).reshape(1, -1, 1, 1, 1) * gain if short else None
        x = modulated_conv3d(
            x,
            self.weight.to(x.dtype),
            styles,
            demodulate=True,
            padding=self.padding,
            fused=fused,
            gain=gain,
            bias=bias,
            scaled=scaled,
        )
        if noise is None and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        elif noise is None and noise_mode == "const":
            noise = self.noise_const.to(x.dtype)
        if noise is not None:
            x = x + noise.to(x.dtype) * (self.noise_strength * gain).to(x.dtype)
        if short:
            return F.leaky_relu_(x, 0.2)
        x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1, 1)
        return _activate(x, self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, resolution={self.resolution}, up={self.up}"


class ToOutput(nn.Module):
    """Modulated 1^3 conv (no demodulation) to the outputs: ``[B, in, r^3] -> [B, out, r^3]``."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor, fused: bool | None = None) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv3d(x, self.weight.to(x.dtype), styles, demodulate=False, padding=0, fused=fused)
        return x + self.bias.to(x.dtype).reshape(1, -1, 1, 1, 1)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (const | up-conv), conv, to-output.

    The running output image is upsampled x2 (trilinear) and this block's output added to it.

    The first block (``in_channels == 0``) starts from a learned constant ``[C, 4, 4, 4]`` and
    has one conv; later blocks have two (the first upsamples). ``num_conv + num_out`` ws are
    read, of which the last is shared with the next block's first conv (as in StyleGAN2).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        if in_channels == 0:
            if resolution != 4:
                raise InputError(f"the constant input block must be at 4^3, got {resolution}")
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4, 4))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.to_output = ToOutput(out_channels, img_channels, w_dim)
        self.num_conv = 1 if self.conv0 is None else 2
        self.num_out = 1

    @property
    def layers(self) -> list[SynthesisLayer]:
        """The noise-consuming layers in order."""
        return [self.conv1] if self.conv0 is None else [self.conv0, self.conv1]

    def forward(
        self,
        x: Tensor | None,
        img: Tensor | None,
        ws: Tensor,
        noise: Sequence[Tensor | None],
        noise_mode: str = "random",
        fused: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``ws [B, num_conv + 1, w_dim]`` -> (features ``[B, C, r^3]``, output ``[B, O, r^3]``)."""
        if self.const is not None:
            x = self.const.to(ws.dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1, 1)
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i], noise=noise[i], noise_mode=noise_mode, fused=fused)
        # the output channels (2, cheap) accumulate in the ws' dtype, also when the features are
        # bf16 under autocast
        y = self.to_output(x, ws[:, self.num_conv], fused=fused).to(ws.dtype)
        if img is not None:
            y = y + F.interpolate(img, scale_factor=2.0, mode="trilinear", align_corners=False)
        return x, y


def _check_resolution(resolution: int) -> None:
    if not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
        raise InputError(f"resolution must be a power of two >= 4, got {resolution!r}")


def _block_resolutions(resolution: int) -> list[int]:
    return [2**i for i in range(2, int(math.log2(resolution)) + 1)]


def channels_from_base(resolution: int, channel_base: int = 16384, channel_max: int = 512) -> dict[int, int]:
    """StyleGAN's width rule ``min(channel_base // r, channel_max)`` for r = 4..resolution."""
    return {r: max(1, min(channel_base // r, channel_max)) for r in _block_resolutions(resolution)}


def _check_channels(channels: dict[int, int], resolution: int, what: str) -> dict[int, int]:
    want = _block_resolutions(resolution)
    channels = {int(k): int(v) for k, v in channels.items()}
    if sorted(channels) != want:
        raise InputError(f"{what} must have keys {want}, got {sorted(channels)}")
    if min(channels.values()) < 1:
        raise InputError(f"{what} widths must be >= 1, got {channels}")
    return channels


class SynthesisNetwork(nn.Module):
    """w_plus -> volume: blocks from 4^3 to ``resolution``^3 with skip outputs.

    Attributes:
        num_ws: number of ws consumed (``2 * number of blocks``).
        resolution: output side R.
        img_channels: output channels (intensity + label logits).
    """

    def __init__(self, w_dim: int, resolution: int, channels: dict[int, int], img_channels: int = 2):
        super().__init__()
        _check_resolution(resolution)
        self.w_dim, self.resolution, self.img_channels = w_dim, resolution, img_channels
        self.channels = _check_channels(channels, resolution, "channels")
        self.block_resolutions = _block_resolutions(resolution)
        self.blocks = nn.ModuleList()
        for r in self.block_resolutions:
            in_ch = 0 if r == 4 else self.channels[r // 2]
            self.blocks.append(SynthesisBlock(in_ch, self.channels[r], w_dim, r, img_channels))
        self.num_ws = sum(b.num_conv for b in self.blocks) + self.blocks[-1].num_out

    @property
    def layers(self) -> list[SynthesisLayer]:
        """All noise-consuming layers, in the order noise inputs are consumed."""
        return [layer for block in self.blocks for layer in block.layers]

    def noise_shapes(self) -> list[tuple[int, ...]]:
        """Shapes ``(1, 1, r, r, r)`` of the noise inputs in the order consumed."""
        return [layer.noise_shape for layer in self.layers]

    def inputs_used(self, max_resolution: int | None = None) -> tuple[int, int]:
        """``(ws, noise maps)``: how many of the leading ws of W+ and of the noise inputs a forward
        pass stopped at ``max_resolution`` reads (``None``: all of them)."""
        if max_resolution is None:
            return self.num_ws, len(self.layers)
        if max_resolution not in self.block_resolutions:
            raise InputError(f"max_resolution must be one of {self.block_resolutions}, got {max_resolution!r}")
        blocks = [b for b in self.blocks if b.resolution <= max_resolution]
        return sum(b.num_conv for b in blocks) + blocks[-1].num_out, sum(len(b.layers) for b in blocks)

    def make_noise(
        self,
        batch: int = 1,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[Tensor]:
        """Fresh standard-normal noise inputs, each ``[batch, 1, r, r, r]``.

        ``generator`` (optional) makes them reproducible; they are drawn on its device and then
        moved to ``device``.
        """
        src = generator.device if generator is not None else device
        return [
            torch.randn(batch, *s[1:], generator=generator, dtype=dtype, device=src).to(device)
            for s in self.noise_shapes()
        ]

    def _check_noise(self, noise: Sequence[Tensor], batch: int) -> None:
        shapes = self.noise_shapes()
        if len(noise) != len(shapes):
            raise InputError(f"noise must be a list of {len(shapes)} tensors, got {len(noise)}")
        for i, (n, s) in enumerate(zip(noise, shapes)):
            if not isinstance(n, Tensor) or n.ndim != 5 or tuple(n.shape[1:]) != s[1:] or n.shape[0] not in (1, batch):
                got = list(n.shape) if isinstance(n, Tensor) else type(n).__name__
                want = ", ".join(map(str, s[1:]))
                raise InputError(f"noise[{i}] must have shape [1 or {batch}, {want}], got {got}")

    def forward(
        self,
        w_plus: Tensor,
        noise: Sequence[Tensor] | None = None,
        noise_mode: str = "random",
        fused: bool | None = None,
        max_resolution: int | None = None,
    ) -> Tensor:
        """Synthesise volumes.

        Args:
            w_plus: ``[B, num_ws, w_dim]`` styles.
            noise: optional list (see :meth:`noise_shapes`) overriding ``noise_mode``.
            noise_mode: ``random`` (fresh each call), ``const`` (stored buffers) or ``none``.
            fused: grouped-conv modulation or not (see :func:`modulated_conv3d`).
            max_resolution: stop after the block of this resolution and return the skip
                architecture's running output there (a coarse version of the full output, the
                same cube at ``R / max_resolution`` times the voxel size; coarse-to-fine fitting).
                ``None``: the full resolution. Later ws and noise inputs are not used.

        Returns:
            ``[B, img_channels, r, r, r]`` with ``r = max_resolution or R``: channel 0 unit
            intensity, 1.. label logits.
        """
        if max_resolution is not None and max_resolution not in self.block_resolutions:
            raise InputError(f"max_resolution must be one of {self.block_resolutions}, got {max_resolution!r}")
        if w_plus.ndim != 3 or tuple(w_plus.shape[1:]) != (self.num_ws, self.w_dim):
            raise InputError(f"w_plus must be [B, {self.num_ws}, {self.w_dim}], got {list(w_plus.shape)}")
        if noise_mode not in NOISE_MODES:
            raise InputError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noise is not None:
            self._check_noise(noise, w_plus.shape[0])
            noise_iter = iter(noise)
        else:
            noise_iter = iter([None] * len(self.layers))
        x = img = None
        w_idx = 0
        for block in self.blocks:
            block_ws = w_plus.narrow(1, w_idx, block.num_conv + block.num_out)
            block_noise = [next(noise_iter) for _ in block.layers]
            x, img = block(x, img, block_ws, block_noise, noise_mode=noise_mode, fused=fused)
            w_idx += block.num_conv
            if block.resolution == max_resolution:
                break
        return img

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, resolution={self.resolution}, num_ws={self.num_ws}"


class Generator(nn.Module):
    """z -> volume. Holds only ``mapping`` and ``synthesis``.

    Args:
        z_dim, w_dim: latent sizes.
        mapping_layers: FC layers of the mapping network.
        resolution: output side R (power of two >= 4).
        channels: width per resolution ``{4: C4, ..., R: CR}``; if ``None``, from
            ``channel_base`` / ``channel_max`` (see :func:`channels_from_base`).
        out_channels: output channels (intensity + label logits).
        mapping_lr_multiplier, w_avg_beta: mapping network settings.
    """

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        mapping_layers: int,
        resolution: int,
        channels: dict[int, int] | None = None,
        channel_base: int = 16384,
        channel_max: int = 512,
        out_channels: int = 2,
        mapping_lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.998,
    ):
        super().__init__()
        _check_resolution(resolution)
        if channels is None:
            channels = channels_from_base(resolution, channel_base, channel_max)
        self.z_dim, self.w_dim = z_dim, w_dim
        self.resolution, self.out_channels = resolution, out_channels
        self.synthesis = SynthesisNetwork(w_dim, resolution, channels, out_channels)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim, w_dim, self.num_ws, mapping_layers, lr_multiplier=mapping_lr_multiplier, w_avg_beta=w_avg_beta
        )

    def forward(
        self,
        z: Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "random",
        noise: Sequence[Tensor] | None = None,
        update_emas: bool | None = None,
        fused: bool | None = None,
    ) -> Tensor:
        """``z [B, z_dim]`` -> volumes ``[B, out_channels, R, R, R]`` (no style mixing here)."""
        ws = self.mapping(
            z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesis(ws, noise=noise, noise_mode=noise_mode, fused=fused)


# ----------------------------------------------------------------------------------------------
# Discriminator


class DiscriminatorBlock(nn.Module):
    """Residual block at resolution r: ``[B, tmp, r^3] -> [B, out, (r/2)^3]``.

    The first block (``in_channels == 0``) starts with a 1^3 conv from the image channels.
    Main path conv 3^3 -> down + conv 3^3, skip 1^3 conv-down; both scaled by 1/sqrt(2).
    """

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int, img_channels: int):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.from_input = Conv3dLayer(img_channels, tmp_channels, 1, activation="lrelu") if in_channels == 0 else None
        self.conv0 = Conv3dLayer(tmp_channels, tmp_channels, 3, activation="lrelu")
        self.conv1 = Conv3dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = Conv3dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Tensor | None, img: Tensor) -> Tensor:
        if self.from_input is not None:
            x = self.from_input(img)
        gain = math.sqrt(0.5)
        y = self.skip(x, gain=gain)
        x = self.conv1(self.conv0(x), gain=gain)
        return x + y


class MinibatchStdLayer(nn.Module):
    """Append the within-group feature std as ``num_channels`` extra channels.

    The group size is the largest divisor of the batch that is <= ``group_size`` (so any batch
    works; a batch of 1 gives a zero-ish feature). Shape ``[B, C, r^3] -> [B, C + F, r^3]``.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def group_for(self, batch: int) -> int:
        """Group size actually used for ``batch``."""
        return max(g for g in range(1, min(self.group_size, batch) + 1) if batch % g == 0)

    def forward(self, x: Tensor) -> Tensor:
        n, c, d, h, w = x.shape
        g, f = self.group_for(n), self.num_channels
        if c % f:
            raise InputError(f"minibatch std: {c} channels not divisible by {f}")
        y = x.reshape(g, -1, f, c // f, d, h, w)  # [G, M, F, c, D, H, W], sample = m + M * g
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [M, F, c, D, H, W]
        y = y.mean(dim=[2, 3, 4, 5])  # [M, F]
        y = y.reshape(-1, f, 1, 1, 1).repeat(g, 1, d, h, w)  # [N, F, D, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """At 4^3: minibatch std, conv 3^3, FC, output FC: ``[B, C, 4^3] -> [B, 1]``."""

    def __init__(self, in_channels: int, resolution: int = 4, mbstd_group_size: int = 4, mbstd_num_channels: int = 1):
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv3dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu")
        self.fc = FullyConnectedLayer(in_channels * resolution**3, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """Residual 3D discriminator: volumes ``[B, in_channels, R, R, R]`` -> logits ``[B, 1]``.

    Args:
        resolution: input side R (power of two >= 8).
        channels: width per resolution ``{4: C4, ..., R: CR}``.
        in_channels: input channels (intensity + label channels, default 2).
        mbstd_group_size, mbstd_num_channels: minibatch std settings.
    """

    def __init__(
        self,
        resolution: int,
        channels: dict[int, int],
        in_channels: int = 2,
        mbstd_group_size: int = 4,
        mbstd_num_channels: int = 1,
    ):
        super().__init__()
        _check_resolution(resolution)
        if resolution < 8:
            raise InputError(f"discriminator resolution must be >= 8, got {resolution}")
        self.resolution, self.in_channels = resolution, in_channels
        self.channels = _check_channels(channels, resolution, "channels")
        self.block_resolutions = _block_resolutions(resolution)[:0:-1]  # R, ..., 8
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(
                0 if r == resolution else self.channels[r], self.channels[r], self.channels[r // 2], r, in_channels
            )
            for r in self.block_resolutions
        )
        self.epilogue = DiscriminatorEpilogue(self.channels[4], 4, mbstd_group_size, mbstd_num_channels)

    def forward(self, img: Tensor) -> Tensor:
        r = self.resolution
        if img.ndim != 5 or tuple(img.shape[1:]) != (self.in_channels, r, r, r):
            raise InputError(
                f"discriminator input must be [B, {self.in_channels}, {r}, {r}, {r}], got {list(img.shape)}"
            )
        x = None
        for block in self.blocks:
            x = block(x, img)
        return self.epilogue(x)


# ----------------------------------------------------------------------------------------------
# Construction from a config


def build_generator(cfg: PriorConfig) -> Generator:
    """The generator described by a :class:`~xfit.prior.config.PriorConfig`."""
    return Generator(
        cfg.z_dim,
        cfg.w_dim,
        cfg.mapping_layers,
        cfg.resolution,
        channels=dict(cfg.g_channels),
        out_channels=cfg.out_channels,
        mapping_lr_multiplier=cfg.mapping_lr_multiplier,
        w_avg_beta=cfg.w_avg_beta,
    )


def build_discriminator(cfg: PriorConfig) -> Discriminator:
    """The discriminator described by a :class:`~xfit.prior.config.PriorConfig`."""
    return Discriminator(
        cfg.resolution,
        dict(cfg.d_channels),
        in_channels=cfg.out_channels,
        mbstd_group_size=cfg.mbstd_group_size,
        mbstd_num_channels=cfg.mbstd_num_channels,
    )
