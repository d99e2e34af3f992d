"""Tests of xfit.prior.checkpoint and xfit.prior.config (tiny config, CPU, a few seconds)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from xfit.errors import CheckpointError, InputError, OutputExistsError
from xfit.prior.checkpoint import (
    capture_rng_state,
    compute_w_stats,
    flatten_optimizer,
    load_prior,
    load_training_state,
    restore_optimizer,
    restore_rng_state,
    save_prior,
    save_training_state,
    state_dict_tensors,
    take_prefix,
)
from xfit.prior.config import CONFIG_NAMES, PriorConfig, hu_to_unit, load_config, unit_to_hu
from xfit.prior.networks import build_generator


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny")


@pytest.fixture()
def G(cfg):
    torch.manual_seed(0)
    G = build_generator(cfg)
    with torch.no_grad():
        for layer in G.synthesis.layers:
            layer.noise_strength.fill_(0.2)
        G.mapping.w_avg.normal_()
    return G


@pytest.fixture()
def prior_file(tmp_path, G, cfg):
    w_mean, w_std = compute_w_stats(G, n=256, batch=128)
    return save_prior(tmp_path / "prior.safetensors", G, w_mean, w_std, cfg, {"kimg": 1.5})


def _rewrite(src, dst, *, meta_edit=None, tensor_edit=None):
    """Copy a prior with edited metadata and/or tensors (to build broken files)."""
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        meta = json.loads(f.metadata()["xfit"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta_edit:
        meta_edit(meta)
    if tensor_edit:
        tensor_edit(tensors)
    save_file(tensors, str(dst), metadata={"xfit": json.dumps(meta)})
    return dst


# ---------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_named_configs_load_and_build(name):
    cfg = load_config(name)
    assert cfg.out_channels == 2 and cfg.label_names == ("bone",)
    assert cfg.fov_mm == pytest.approx(128.0 if name == "128" else 80.0)  # 128: 128^3 at 1 mm
    assert sorted(cfg.g_channels) == sorted(cfg.d_channels)
    assert max(cfg.g_channels) == cfg.resolution


def test_config_json_round_trip(cfg):
    again = PriorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))  # int keys -> strings
    assert again == cfg


def test_config_rejects_unknown_and_invalid(tmp_path, cfg):
    d = cfg.to_dict()
    with pytest.raises(InputError, match="unknown key.*colour"):
        PriorConfig.from_dict({**d, "colour": 1})
    with pytest.raises(InputError, match="training.*lr_g"):
        PriorConfig.from_dict({**d, "training": {**d["training"], "lr_g": 1}})
    with pytest.raises(InputError, match="resolution"):
        PriorConfig.from_dict({**d, "resolution": 48})
    with pytest.raises(InputError, match="g_channels"):
        PriorConfig.from_dict({**d, "g_channels": {4: 8, 8: 8}})
    with pytest.raises(InputError, match="hu_window"):
        PriorConfig.from_dict({**d, "hu_window": [100, -100]})
    with pytest.raises(InputError, match="must be a number"):
        PriorConfig.from_dict({**d, "spacing_mm": "big"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("resolution: 32\nfoo: 1\n")
    with pytest.raises(InputError, match="bad.yaml.*foo"):
        load_config(bad)
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_hu_unit_mapping():
    window = (-1000.0, 1500.0)
    hu = torch.tensor([-3000.0, -1000.0, 250.0, 1500.0, 3000.0])
    unit = hu_to_unit(hu, window)
    assert torch.allclose(unit, torch.tensor([-1.0, -1.0, 0.0, 1.0, 1.0]))
    assert torch.allclose(unit_to_hu(unit, window), hu.clamp(*window))
    x = torch.tensor([1.2], requires_grad=True)  # outside [-1, 1]: no clamp, gradient flows
    unit_to_hu(x, window).sum().backward()
    assert x.grad.item() == pytest.approx(1250.0)


# ---------------------------------------------------------------------------------------------
# Prior checkpoint


def test_prior_round_trip(prior_file, G, cfg):
    G.eval()  # in training mode mapping() would keep updating w_avg
    prior = load_prior(prior_file)
    assert prior.sha256 == hashlib.sha256(prior_file.read_bytes()).hexdigest()
    assert prior.config == cfg and prior.resolution == 32 and prior.spacing_mm == 2.5
    assert prior.meta["format"] == "xfit-prior" and prior.meta["format_version"] == 1
    assert prior.meta["training"] == {"kimg": 1.5}
    assert prior.label_names == ("bone",) and prior.num_ws == G.num_ws
    assert not prior.G.training
    params = list(prior.G.parameters())
    assert len(params) == len(list(G.parameters())) and not any(p.requires_grad for p in params)
    assert all(t.device.type == "cpu" for t in prior.G.state_dict().values())
    assert prior.w_mean.shape == prior.w_std.shape == (cfg.w_dim,)
    torch.manual_seed(1)
    z = torch.randn(2, cfg.z_dim)
    with torch.no_grad():
        for psi in (1.0, 0.7):
            a = G(z, truncation_psi=psi, noise_mode="const")
            b = prior.G(z, truncation_psi=psi, noise_mode="const")
            assert torch.equal(a, b)
        noise = G.synthesis.make_noise(2, generator=torch.Generator().manual_seed(0))
        ws = G.mapping(z)
        assert torch.equal(G.synthesis(ws, noise=noise), prior.G.synthesis(ws, noise=noise))


def test_save_is_atomic_and_refuses_overwrite(prior_file, G, cfg):
    w = torch.ones(cfg.w_dim)
    with pytest.raises(OutputExistsError):
        save_prior(prior_file, G, w, w, cfg)
    save_prior(prior_file, G, w, w, cfg, force=True)
    assert torch.equal(load_prior(prior_file).w_std, w)
    assert [p.name for p in prior_file.parent.iterdir()] == [prior_file.name]  # no temp files


def test_save_rejects_mismatched_generator(tmp_path, G, cfg):
    other = dataclasses.replace(cfg, w_dim=32, z_dim=32)
    w = torch.ones(cfg.w_dim)
    with pytest.raises(InputError, match="does not match"):
        save_prior(tmp_path / "p.safetensors", G, w, w, other)
    with pytest.raises(InputError, match="w_mean"):
        save_prior(tmp_path / "p.safetensors", G, torch.ones(3), w, cfg)
    assert not (tmp_path / "p.safetensors").exists()


def test_load_rejects_random_bytes_and_json(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="junk.safetensors.*not a safetensors"):
        load_prior(junk)
    js = tmp_path / "prior.json"
    js.write_text(json.dumps({"format": "xfit-prior", "format_version": 1}))
    with pytest.raises(CheckpointError, match="prior.json"):
        load_prior(js)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="tiny.safetensors"):
        load_prior(tiny)
    with pytest.raises(CheckpointError, match="not found"):
        load_prior(tmp_path / "missing.safetensors")


def test_load_rejects_foreign_safetensors(tmp_path):
    foreign = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(foreign))
    with pytest.raises(CheckpointError, match="model.safetensors.*no 'xfit' metadata"):
        load_prior(foreign)
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(other), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="no 'xfit' metadata"):
        load_prior(other)


def test_load_rejects_wrong_format_and_version(tmp_path, prior_file):
    v2 = _rewrite(prior_file, tmp_path / "v2.safetensors", meta_edit=lambda m: m.update(format_version=2))
    with pytest.raises(CheckpointError, match="v2.safetensors.*format_version 2"):
        load_prior(v2)
    fmt = _rewrite(prior_file, tmp_path / "fmt.safetensors", meta_edit=lambda m: m.update(format="xfit-train-state"))
    with pytest.raises(CheckpointError, match="expected format 'xfit-prior'"):
        load_prior(fmt)
    badcfg = _rewrite(prior_file, tmp_path / "cfg.safetensors", meta_edit=lambda m: m["config"].update(resolution=30))
    with pytest.raises(CheckpointError, match="invalid config"):
        load_prior(badcfg)
    with pytest.raises(CheckpointError, match="xfit-train-state"):
        load_training_state(prior_file)


def test_load_rejects_shape_mismatch(tmp_path, prior_file, cfg):
    def widen(meta):
        meta["config"]["g_channels"]["32"] = 16

    wide = _rewrite(prior_file, tmp_path / "wide.safetensors", meta_edit=widen)
    with pytest.raises(CheckpointError, match="wide.safetensors.*wrong shape"):
        load_prior(wide)

    def drop(tensors):
        del tensors["G.mapping.w_avg"]

    missing = _rewrite(prior_file, tmp_path / "missing.safetensors", tensor_edit=drop)
    with pytest.raises(CheckpointError, match="missing: G.mapping.w_avg"):
        load_prior(missing)

    def extra(tensors):
        tensors["G.extra"] = torch.zeros(1)

    unexpected = _rewrite(prior_file, tmp_path / "extra.safetensors", tensor_edit=extra)
    with pytest.raises(CheckpointError, match="unexpected: G.extra"):
        load_prior(unexpected)

    def zero_std(tensors):
        tensors["w_std"] = torch.zeros(cfg.w_dim)

    zero = _rewrite(prior_file, tmp_path / "zero.safetensors", tensor_edit=zero_std)
    with pytest.raises(CheckpointError, match="w_std"):
        load_prior(zero)


def test_compute_w_stats(G, cfg):
    w_avg = G.mapping.w_avg.clone()
    m1, s1 = compute_w_stats(G, n=300, batch=128, seed=3)
    assert torch.equal(G.mapping.w_avg, w_avg)  # statistics do not touch the tracked mean
    m2, s2 = compute_w_stats(G, n=300, batch=300, seed=3)  # batching does not matter
    assert m1.shape == s1.shape == (cfg.w_dim,)
    assert torch.allclose(m1, m2, atol=1e-5) and torch.allclose(s1, s2, atol=1e-5)
    gen = torch.Generator().manual_seed(3)
    w = G.eval().mapping(torch.randn(300, cfg.z_dim, generator=gen), num_ws=None).detach()
    assert torch.allclose(m1, w.mean(0), atol=1e-5)
    assert torch.allclose(s1, w.std(0), atol=1e-5)
    with pytest.raises(InputError):
        compute_w_stats(G, n=1)


# ---------------------------------------------------------------------------------------------
# Training state


def _model_and_opt(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    return model, torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.0, 0.99))


def _step(model, opt, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 4, generator=g)
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()


def test_optimizer_flatten_restore_round_trip(tmp_path):
    model, opt = _model_and_opt()
    for s in range(3):
        _step(model, opt, s)
    t_opt, m_opt = flatten_optimizer(opt, "opt_g")
    assert "opt_g.state.3.exp_avg" in t_opt and "opt_g.state.0.step" in t_opt
    tensors = {**state_dict_tensors(model, "G"), **t_opt}
    path = save_training_state(tmp_path / "state.safetensors", tensors, {"step": 3, "opt_g": m_opt})
    tensors2, meta2 = load_training_state(path)
    assert meta2["step"] == 3

    restored, opt2 = _model_and_opt(seed=1)  # different initial weights
    restored.load_state_dict(take_prefix(tensors2, "G"))
    restore_optimizer(opt2, tensors2, meta2["opt_g"])
    assert opt2.param_groups[0]["betas"] == (0.0, 0.99)
    fresh, opt3 = _model_and_opt(seed=1)  # same weights, optimizer state not restored
    fresh.load_state_dict(take_prefix(tensors2, "G"))

    _step(model, opt, 10)
    _step(restored, opt2, 10)
    _step(fresh, opt3, 10)
    for a, b in zip(model.parameters(), restored.parameters()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, c) for a, c in zip(model.parameters(), fresh.parameters()))


def test_restore_optimizer_errors():
    model, opt = _model_and_opt()
    _step(model, opt, 0)
    tensors, meta = flatten_optimizer(opt, "opt")
    del tensors["opt.state.0.exp_avg"]
    with pytest.raises(CheckpointError, match="opt.state.0.exp_avg"):
        restore_optimizer(opt, tensors, meta)


def test_training_state_refuses_overwrite_and_bad_meta(tmp_path):
    path = save_training_state(tmp_path / "s.safetensors", {"a": torch.zeros(2)}, {"step": 1})
    with pytest.raises(OutputExistsError):
        save_training_state(path, {"a": torch.zeros(2)}, {"step": 2})
    save_training_state(path, {"a": torch.ones(2)}, {"step": 2}, force=True)
    tensors, meta = load_training_state(path)
    assert meta == {"step": 2} and torch.equal(tensors["a"], torch.ones(2))
    with pytest.raises(InputError, match="JSON"):
        save_training_state(tmp_path / "t.safetensors", {}, {"x": object()})


def test_rng_capture_restore(tmp_path):
    tensors, meta = capture_rng_state()
    assert tensors["rng.torch"].dtype == torch.uint8
    first = (
        torch.rand(3),
        np.random.rand(3),  # noqa: NPY002 (the global state is what is restored)
        [random.random() for _ in range(3)],
    )
    path = save_training_state(tmp_path / "rng.safetensors", tensors, {"rng": meta})
    t2, m2 = load_training_state(path)
    restore_rng_state(t2, m2["rng"])
    second = (
        torch.rand(3),
        np.random.rand(3),  # noqa: NPY002
        [random.random() for _ in range(3)],
    )
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2] == second[2]


def test_half_precision_prior_loads_as_float32(tmp_path):
    import torch

    from xfit.prior.checkpoint import compute_w_stats, load_prior, save_prior
    from xfit.prior.config import load_config
    from xfit.prior.networks import build_generator

    cfg = load_config("tiny")
    G = build_generator(cfg).eval()
    w_mean, w_std = compute_w_stats(G, n=200, seed=0)
    full = save_prior(tmp_path / "full.safetensors", G, w_mean, w_std, cfg)
    half = save_prior(tmp_path / "half.safetensors", G, w_mean, w_std, cfg, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    p_full, p_half = load_prior(full), load_prior(half)
    assert all(t.dtype == torch.float32 for t in p_half.G.state_dict().values())
    ws = p_full.w_mean.view(1, 1, -1).expand(1, p_full.G.num_ws, -1)
    a = p_full.G.synthesis(ws, noise_mode="const")
    b = p_half.G.synthesis(ws, noise_mode="const")
    assert torch.allclose(a, b, atol=2e-2) and not torch.equal(a, b)


def test_snapshot_round_trip_and_errors(tmp_path):
    from xfit.prior.checkpoint import levels_seen, load_snapshot, save_snapshot, snapshot_config
    from xfit.prior.config import load_config
    from xfit.prior.networks import build_discriminator, build_generator

    cfg = load_config("tiny")
    G, D = build_generator(cfg), build_discriminator(cfg)
    G.mapping.w_avg.normal_()
    nets = {"G": G, "G_ema": G, "D": D}
    path = save_snapshot(
        tmp_path / "s.safetensors",
        nets,
        step=7,
        kimg=0.028,
        config=cfg,
        dtype="bfloat16",
        summary={"levels": {"L1": 3, "T12": 0, "bogus": 2}},
    )
    tensors, meta = load_snapshot(path)
    assert meta["step"] == 7 and meta["dtype"] == "bfloat16" and snapshot_config(path) == cfg
    assert torch.equal(tensors["G.mapping.w_avg"], G.mapping.w_avg)  # kept in float32
    w = (
        tensors["D.b32.conv0.weight"]
        if "D.b32.conv0.weight" in tensors
        else next(v for k, v in tensors.items() if k.startswith("D.") and v.ndim == 5)
    )
    assert w.dtype == torch.float32
    key = next(k for k, v in tensors.items() if k.startswith("G.") and v.ndim == 5)
    ref = G.state_dict()[key[2:]]
    assert torch.equal(tensors[key], ref.bfloat16().float()) and not torch.equal(tensors[key], ref)
    assert levels_seen(meta["summary"]) == {20}
    with pytest.raises(InputError, match="dtype"):
        save_snapshot(tmp_path / "t.safetensors", nets, step=1, kimg=0, config=cfg, dtype="int8")
    with pytest.raises(InputError, match="needs the D"):
        save_snapshot(tmp_path / "t.safetensors", {"G": G, "G_ema": G}, step=1, kimg=0, config=cfg)
    with pytest.raises(CheckpointError, match="expected format 'xfit-train-snapshot'"):
        load_snapshot(save_training_state(tmp_path / "st.safetensors", {"a": torch.zeros(1)}, {"step": 1}))
    with pytest.raises(OutputExistsError):
        save_snapshot(path, nets, step=7, kimg=0.028, config=cfg)


def test_load_leaves_the_global_rng_alone_and_holds_the_files_weights(prior_file, G):
    """The architecture is built on the CPU to take the file's tensors: that build must not
    move the global RNG (seeded fits and sampling after a load would change) nor keep any of
    its random weights."""
    torch.manual_seed(123)
    want = torch.rand(4)
    torch.manual_seed(123)
    prior = load_prior(prior_file)
    assert torch.equal(torch.rand(4), want)
    for k, v in G.state_dict().items():
        assert torch.equal(prior.G.state_dict()[k], v.float()), k
