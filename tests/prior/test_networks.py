"""Tests of xfit.prior.networks (tiny 32^3 config; all CPU, a few seconds in total)."""

from __future__ import annotations

import pytest
import torch

from xfit.errors import InputError
from xfit.prior import networks
from xfit.prior.config import load_config
from xfit.prior.networks import (
    Discriminator,
    Generator,
    MinibatchStdLayer,
    build_discriminator,
    build_generator,
    channels_from_base,
    modulated_conv3d,
)


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny")


@pytest.fixture()
def G(cfg):
    torch.manual_seed(0)
    G = build_generator(cfg)
    with torch.no_grad():  # noise_strength starts at 0: make noise matter for these tests
        for layer in G.synthesis.layers:
            layer.noise_strength.fill_(0.3)
    return G


# ---------------------------------------------------------------------------------------------
# Generator


@pytest.mark.parametrize("batch", [1, 2])
def test_generator_shapes(G, cfg, batch):
    z = torch.randn(batch, cfg.z_dim)
    out = G(z)
    r = cfg.resolution
    assert out.shape == (batch, 2, r, r, r)
    assert torch.isfinite(out).all()
    assert G.num_ws == G.synthesis.num_ws == G.mapping.num_ws == 8  # 2 per block, 4 blocks
    ws = G.mapping(z)
    assert ws.shape == (batch, G.num_ws, cfg.w_dim)
    assert torch.equal(ws[:, 0], ws[:, -1])  # broadcast
    assert G.mapping(z, num_ws=None).shape == (batch, cfg.w_dim)


def test_max_resolution_returns_the_skip_output_of_that_block(G, cfg):
    """Stopping at R/2 gives the running skip output there: unaffected by the last block."""
    ws = G.mapping(torch.randn(2, cfg.z_dim))
    r = cfg.resolution
    full = G.synthesis(ws, noise_mode="const")
    assert torch.equal(G.synthesis(ws, noise_mode="const", max_resolution=r), full)
    half = G.synthesis(ws, noise_mode="const", max_resolution=r // 2)
    assert half.shape == (2, 2, r // 2, r // 2, r // 2)
    with torch.no_grad():
        last = G.synthesis.blocks[-1]
        last.to_output.weight.add_(1.0)
        last.conv1.weight.add_(1.0)
    assert torch.equal(G.synthesis(ws, noise_mode="const", max_resolution=r // 2), half)
    assert not torch.allclose(G.synthesis(ws, noise_mode="const"), full)
    with pytest.raises(InputError, match="max_resolution"):
        G.synthesis(ws, max_resolution=r // 2 + 1)


def test_inputs_used_are_exactly_those_a_stopped_forward_reads(G, cfg):
    """Changing a w or noise map past ``inputs_used(r)`` leaves the output stopped at ``r`` as it
    is; changing the last one it counts does not."""
    ws = G.mapping(torch.randn(1, cfg.z_dim))
    noise = G.synthesis.make_noise(1, torch.Generator().manual_seed(0))
    r = cfg.resolution // 2
    n_ws, n_noise = G.synthesis.inputs_used(r)
    assert (
        G.synthesis.inputs_used(None) == (G.num_ws, len(G.synthesis.layers)) == G.synthesis.inputs_used(cfg.resolution)
    )
    assert 0 < n_ws < G.num_ws and 0 < n_noise < len(noise)
    out = G.synthesis(ws, noise=noise, max_resolution=r)
    ws2, noise2 = ws.clone(), [n.clone() for n in noise]
    ws2[:, n_ws:] += 1.0
    for n in noise2[n_noise:]:
        n += 1.0
    assert torch.equal(G.synthesis(ws2, noise=noise2, max_resolution=r), out)
    ws2[:, n_ws - 1] += 1.0
    assert not torch.equal(G.synthesis(ws2, noise=noise2, max_resolution=r), out)
    with pytest.raises(InputError, match="max_resolution"):
        G.synthesis.inputs_used(r + 1)


def test_generator_float64(G, cfg):
    ws = G.mapping(torch.randn(2, cfg.z_dim, dtype=torch.float64))
    out = G.synthesis(ws, noise_mode="const")
    assert ws.dtype == out.dtype == torch.float64
    ref = G.synthesis(ws.float(), noise_mode="const")
    assert torch.allclose(out.float(), ref, atol=1e-4)


def test_bf16_autocast_keeps_features_bf16_and_the_output_in_the_ws_dtype(G, cfg):
    """Under CPU bf16 autocast the features stay bf16 from conv to conv (float32 elementwise work
    between them cost the fit most of a generator step, docs/speed.md), while the 2-channel output
    accumulates in the ws' dtype and stays close to float32's."""
    ws = G.mapping(torch.randn(1, cfg.z_dim)).detach()
    layer = G.synthesis.blocks[1].conv0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feat = layer(torch.randn(1, layer.in_channels, 4, 4, 4), ws[:, 0], noise_mode="const")
        out = G.synthesis(ws, noise_mode="const")
    assert feat.dtype == torch.bfloat16 and out.dtype == torch.float32
    ref = G.synthesis(ws, noise_mode="const")
    assert (out - ref).abs().mean() < 0.02 * ref.abs().mean()


@pytest.mark.parametrize("which", ["conv0", "conv1"])  # with and without the upsampling
def test_bf16_layer_takes_the_short_path_with_the_same_function(G, cfg, which, monkeypatch):
    """bf16 features take the short path (style scale before the upsampling, gain in the
    demodulation, bias by addcmul, lrelu in place); it is the float32 layer's function up to bf16
    rounding, output and W+ gradient."""
    torch.manual_seed(1)
    layer = getattr(G.synthesis.blocks[2], which)
    with torch.no_grad():
        layer.bias.normal_()  # a bias that matters (it starts at 0)
    w = G.mapping(torch.randn(1, cfg.z_dim)).detach()[:, 0]
    x = torch.randn(1, layer.in_channels, *[layer.resolution // layer.up] * 3)
    noise = torch.randn(1, 1, *[layer.resolution] * 3)

    def run(dtype):
        wi = w.clone().requires_grad_(True)
        out = layer(x.to(dtype), wi.to(dtype), noise=noise)
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.float().detach(), wi.grad

    ref, g_ref = run(torch.float32)
    out, g = run(torch.bfloat16)
    monkeypatch.setattr(networks, "SHORT_PATH", False)  # the reference arithmetic in bf16 too
    long, _ = run(torch.bfloat16)
    assert not torch.equal(long, out) and (long - ref).abs().max() < 0.05 * ref.abs().max()
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() and (out - ref).abs().mean() < 0.01 * ref.abs().mean()
    assert torch.nn.functional.cosine_similarity(g, g_ref, dim=-1).item() > 0.995
    with pytest.raises(InputError, match="bias"):
        modulated_conv3d(
            x, layer.weight, torch.ones(1, layer.in_channels), fused=True, bias=layer.bias.view(1, -1, 1, 1, 1)
        )


def test_channels_from_base_and_generator_without_dict():
    assert channels_from_base(32, channel_base=256, channel_max=32) == {4: 32, 8: 32, 16: 16, 32: 8}
    G = Generator(8, 8, 1, 16, channel_base=128, channel_max=16)
    assert G(torch.randn(1, 8)).shape == (1, 2, 16, 16, 16)


def test_wplus_path_equals_mapping_then_synthesis(G, cfg):
    z = torch.randn(2, cfg.z_dim)
    a = G(z, noise_mode="const")
    b = G.synthesis(G.mapping(z), noise_mode="const")
    assert torch.equal(a, b)
    # W+ really is per layer: changing one w changes the output.
    ws = G.mapping(z)
    ws2 = ws.clone()
    ws2[:, 3] += 1.0
    assert not torch.allclose(G.synthesis(ws2, noise_mode="const"), b)


def test_truncation(G, cfg):
    G.eval()  # keep w_avg fixed
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    z = torch.randn(3, cfg.z_dim)
    ws = G.mapping(z, truncation_psi=0.0)
    assert torch.allclose(ws, G.mapping.w_avg.expand_as(ws))
    half = G.mapping(z, truncation_psi=0.5, truncation_cutoff=2)
    full = G.mapping(z)
    assert torch.allclose(half[:, :2], G.mapping.w_avg.lerp(full[:, :2], 0.5))
    assert torch.equal(half[:, 2:], full[:, 2:])


def test_w_avg_updates_in_training_mode_only(G, cfg):
    z = torch.randn(4, cfg.z_dim)
    before = G.mapping.w_avg.clone()
    G.eval()
    G.mapping(z)
    G(z)
    assert torch.equal(G.mapping.w_avg, before)
    G.train()
    G.mapping(z, update_emas=False)
    assert torch.equal(G.mapping.w_avg, before)
    G.mapping(z)
    w = G.mapping(z, num_ws=None, update_emas=False).detach()
    beta = G.mapping.w_avg_beta
    assert torch.allclose(G.mapping.w_avg, before * beta + w.mean(0) * (1 - beta), atol=1e-6)
    G.eval()
    G.mapping(z, update_emas=True)
    assert not torch.allclose(G.mapping.w_avg, before * beta + w.mean(0) * (1 - beta), atol=1e-6)


def test_noise_modes(G, cfg):
    ws = G.mapping(torch.randn(1, cfg.z_dim))
    const1 = G.synthesis(ws, noise_mode="const")
    const2 = G.synthesis(ws, noise_mode="const")
    assert torch.equal(const1, const2)
    rand1 = G.synthesis(ws, noise_mode="random")
    rand2 = G.synthesis(ws, noise_mode="random")
    assert not torch.allclose(rand1, rand2)
    none = G.synthesis(ws, noise_mode="none")
    zeros = [torch.zeros(s) for s in G.synthesis.noise_shapes()]
    assert torch.allclose(none, G.synthesis(ws, noise=zeros, noise_mode="const"))
    const_list = [layer.noise_const for layer in G.synthesis.layers]
    assert torch.equal(const1, G.synthesis(ws, noise=const_list, noise_mode="random"))


def test_explicit_noise_overrides_and_is_reproducible(G, cfg):
    ws = G.mapping(torch.randn(2, cfg.z_dim))
    n1 = G.synthesis.make_noise(2, generator=torch.Generator().manual_seed(1))
    n1b = G.synthesis.make_noise(2, generator=torch.Generator().manual_seed(1))
    n2 = G.synthesis.make_noise(2, generator=torch.Generator().manual_seed(2))
    assert [tuple(n.shape) for n in n1] == [(2,) + s[1:] for s in G.synthesis.noise_shapes()]
    a = G.synthesis(ws, noise=n1, noise_mode="random")
    assert torch.equal(a, G.synthesis(ws, noise=n1b, noise_mode="const"))
    assert not torch.allclose(a, G.synthesis(ws, noise=n2))
    assert not torch.allclose(a, G.synthesis(ws, noise_mode="const"))


def test_noise_shapes_order(G, cfg):
    shapes = G.synthesis.noise_shapes()
    assert shapes == [(1, 1, r, r, r) for r in (4, 8, 8, 16, 16, 32, 32)]
    assert all(layer.noise_const.shape == s for layer, s in zip(G.synthesis.layers, shapes))


def test_bad_inputs_raise(G, cfg):
    ws = G.mapping(torch.randn(2, cfg.z_dim))
    noise = G.synthesis.make_noise(2)
    with pytest.raises(InputError, match="list of 7"):
        G.synthesis(ws, noise=noise[:-1])
    bad = list(noise)
    bad[2] = torch.zeros(2, 1, 16, 16, 16)
    with pytest.raises(InputError, match=r"noise\[2\]"):
        G.synthesis(ws, noise=bad)
    bad[2] = torch.zeros(3, 1, 8, 8, 8)  # batch neither 1 nor 2
    with pytest.raises(InputError, match=r"noise\[2\]"):
        G.synthesis(ws, noise=bad)
    with pytest.raises(InputError, match="w_plus"):
        G.synthesis(ws[:, :-1])
    with pytest.raises(InputError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fixed")
    with pytest.raises(InputError, match="z must be"):
        G(torch.randn(2, cfg.z_dim + 1))
    with pytest.raises(InputError, match="resolution"):
        Generator(8, 8, 1, 24, channels={4: 8})
    with pytest.raises(InputError, match="keys"):
        Generator(8, 8, 1, 16, channels={4: 8, 8: 8})


def test_gradients_reach_w_plus_and_noise(G, cfg):
    ws = G.mapping(torch.randn(1, cfg.z_dim)).detach().requires_grad_(True)
    noise = [n.requires_grad_(True) for n in G.synthesis.make_noise(1)]
    out = G.synthesis(ws, noise=noise)
    (out[:, 0].square().mean() + out[:, 1].mean()).backward()
    assert ws.grad is not None and ws.grad.abs().sum(dim=2).min() > 0  # every w matters
    for i, n in enumerate(noise):
        assert n.grad is not None and n.grad.abs().sum() > 0, f"no gradient to noise[{i}]"


def test_generator_parameters_get_gradients(G, cfg):
    G(torch.randn(2, cfg.z_dim)).mean().backward()
    missing = [name for name, p in G.named_parameters() if p.grad is None]
    assert not missing


# ---------------------------------------------------------------------------------------------
# Modulated convolution


@pytest.mark.parametrize("fused", [True, False])
def test_demodulation_keeps_unit_std(fused):
    torch.manual_seed(0)
    b, cin, cout, d = 2, 32, 16, 12
    x = torch.randn(b, cin, d, d, d)
    weight = torch.randn(cout, cin, 3, 3, 3)
    styles = torch.rand(b, cin) * 3 + 0.1  # very uneven modulation
    y = modulated_conv3d(x, weight, styles, demodulate=True, fused=fused)
    inner = y[:, :, 1:-1, 1:-1, 1:-1]  # away from the zero padding
    std = inner.std(dim=[2, 3, 4])  # per sample and output channel
    assert 0.8 < std.mean() < 1.2
    assert ((std > 0.6) & (std < 1.4)).all()
    raw = modulated_conv3d(x, weight, styles, demodulate=False, fused=fused)
    assert raw[:, :, 1:-1, 1:-1, 1:-1].std() > 5  # without demodulation the scale is way off


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_fused_matches_unfused(demodulate):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 6, 6, dtype=torch.float64)
    weight = torch.randn(4, 5, 3, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 5, dtype=torch.float64)
    a = modulated_conv3d(x, weight, styles, demodulate=demodulate, fused=True)
    b = modulated_conv3d(x, weight, styles, demodulate=demodulate, fused=False)
    assert a.shape == (3, 4, 6, 6, 6)
    assert torch.allclose(a, b, atol=1e-10)
    # per-sample kernels: sample 0's output does not depend on sample 1's style
    styles2 = styles.clone()
    styles2[1] *= 2
    c = modulated_conv3d(x, weight, styles2, demodulate=demodulate, fused=True)
    assert torch.equal(a[0], c[0])


@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv_gradcheck(fused):
    torch.manual_seed(0)
    x = torch.randn(2, 2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, s: modulated_conv3d(a, w, s, demodulate=True, fused=fused), (x, weight, styles)
    )


def test_modulated_conv_shape_error():
    with pytest.raises(InputError, match="do not agree"):
        modulated_conv3d(torch.randn(2, 3, 4, 4, 4), torch.randn(4, 3, 3, 3, 3), torch.randn(2, 4))


# ---------------------------------------------------------------------------------------------
# Discriminator


@pytest.mark.parametrize("batch", [1, 3, 4, 6])
def test_discriminator_shapes(cfg, batch):
    torch.manual_seed(0)
    D = build_discriminator(cfg)
    r = cfg.resolution
    x = torch.randn(batch, 2, r, r, r, requires_grad=True)
    logits = D(x)
    assert logits.shape == (batch, 1)
    assert torch.isfinite(logits).all()
    logits.sum().backward()  # R1 needs gradients w.r.t. the input
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_discriminator_in_channels_and_errors():
    D = Discriminator(8, {4: 4, 8: 4}, in_channels=3)
    assert D(torch.randn(2, 3, 8, 8, 8)).shape == (2, 1)
    with pytest.raises(InputError, match=r"\[B, 3, 8, 8, 8\]"):
        D(torch.randn(2, 2, 8, 8, 8))


def test_minibatch_std_groups():
    layer = MinibatchStdLayer(group_size=4, num_channels=1)
    assert [layer.group_for(n) for n in (1, 2, 3, 4, 5, 6, 8, 9)] == [1, 2, 3, 4, 1, 3, 4, 3]
    torch.manual_seed(0)
    x = torch.randn(6, 2, 2, 2, 2)
    y = layer(x)
    assert y.shape == (6, 3, 2, 2, 2)
    assert torch.equal(y[:, :2], x)
    # group size 3 for a batch of 6: members are samples {0, 2, 4} and {1, 3, 5}
    for members in ([0, 2, 4], [1, 3, 5]):
        g = x[members]
        expected = (g.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(y[members, 2], expected.expand(3, 2, 2, 2), atol=1e-6)
    # identical samples inside a group -> ~zero feature
    same = torch.randn(1, 2, 2, 2, 2).repeat(4, 1, 1, 1, 1)
    assert layer(same)[:, 2].abs().max() < 1e-3
