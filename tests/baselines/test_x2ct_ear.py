"""Tests of xfit.baselines (X2CT-CNN, X2CT-GAN, EAR): shapes, gradient flow, losses against hand
computations, a tiny training run whose loss falls, checkpoint round trip, bit-exact resume,
inference and bad input. Tiny configs (16^3 at 5 mm, 24 x 24 detectors), CPU, one thread."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import baseline_cli
from click.testing import CliRunner
from spine_synth import synthetic_crops as _crops
from tiny_models import tiny_baseline as tiny

from xfit.baselines import ear, x2ct
from xfit.baselines.common import PART1_METHODS as METHODS
from xfit.baselines.common import (
    BaselineConfig,
    Conv3d,
    Lifter,
    check_method,
    cube_affine,
    footprints,
    labels_from_hu,
    load_config,
    param_count,
    save_model,
)
from xfit.baselines.registry import build_model, load_model
from xfit.baselines.train import MODEL_FILE, STATE_FILE, BaselineTrainer, train
from xfit.errors import CheckpointError, InputError, OutputExistsError
from xfit.geometry import View
from xfit.prior.checkpoint import load_training_state

pytestmark = pytest.mark.usefixtures("one_thread")

# ----------------------------------------------------------------------------------------------
# networks


@pytest.mark.parametrize("shape", [(2, 2, 2), (2, 4, 4), (4, 4, 4)])
def test_conv3d_bf16_weight_grad_on_thin_volumes(shape):
    """Under CPU bf16 autocast the weight gradient stays within bf16 rounding of float32's; a
    plain nn.Conv3d fails this for depth 2 on AVX512-BF16 CPUs without AMX (PyTorch 2.14.1)."""
    torch.manual_seed(0)
    conv = Conv3d(16, 8, 3, padding=1)
    x, g = torch.randn(2, 16, *shape), torch.randn(2, 8, *shape)
    conv(x).backward(g)
    ref = conv.weight.grad.clone()
    for _ in range(3):
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        assert y.dtype == torch.bfloat16
        y.backward(g.to(y.dtype))
        assert ((conv.weight.grad - ref).abs().max() / ref.abs().max()).item() < 0.05


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch", [1, 2])
def test_network_shape_and_gradients(method, batch):
    cfg = tiny(method)
    torch.manual_seed(0)
    net = build_model(cfg)
    views = [cfg.views.views() for _ in range(batch)]
    x = torch.randn(batch, 2, 16, 16)
    out = net(x, Lifter(views, (0, 0, 0), cfg.fov_mm))
    assert out["volume"].shape == (batch, 1, 16, 16, 16)
    if method == "ear":
        assert out["edge_logit"].shape == (batch, 1, 16, 16, 16)
    loss = sum(v.square().mean() for v in out.values())
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert sum(float(p.grad.abs().sum()) for p in net.parameters()) > 0


def test_full_size_parameter_budget():
    for m in METHODS:
        assert 0.5e6 < param_count(build_model(load_config(m))) < 4e6
    assert param_count(x2ct.PatchDiscriminator3D.from_config(load_config("x2ct-gan"))) < 1e6


def test_network_rejects_wrong_input_shape():
    cfg = tiny("ear")
    net = build_model(cfg)
    with pytest.raises(InputError, match="footprints"):
        net(torch.zeros(1, 2, 8, 8), Lifter([cfg.views.views()], (0, 0, 0), cfg.fov_mm))


def test_lifting_copies_along_the_beam_axis():
    """For parallel AP / lateral views the lifting is the papers' copy along y / x."""
    vs = [View(a, shape=(32, 32), pixel_spacing_mm=(2.5, 2.5), projection="parallel") for a in (0.0, 90.0)]
    lif = Lifter([vs], (0, 0, 0), 80.0)
    feat = torch.randn(1, 3, 16, 16)
    ap, lat = lif.lift(feat, 0, 16), lif.lift(feat, 1, 16)
    assert torch.allclose(ap, ap[:, :, :, :1].expand_as(ap), atol=1e-5)  # constant along y
    assert torch.allclose(lat, lat[:, :, :1].expand_as(lat), atol=1e-5)  # constant along x
    # superior (high k) on the top row; the patient's right (+x, high i) on the AP image's left
    assert torch.allclose(ap[0, :, -1, 0, -1], feat[0, :, 0, 0], atol=1e-5)
    assert torch.allclose(ap[0, :, 0, 0, 0], feat[0, :, -1, -1], atol=1e-5)
    # lateral: anterior (+y, high j) on the image's right
    assert torch.allclose(lat[0, :, 0, -1, -1], feat[0, :, 0, -1], atol=1e-5)


def test_footprint_is_standardised_and_gain_invariant():
    v = View(0.0, shape=(24, 24), pixel_spacing_mm=(4.0, 4.0))
    img = torch.rand(1, 1, 24, 24)
    a = footprints(img, [[v]], (0, 0, 0), 80.0, 16)
    b = footprints(3 * img + 1, [[v]], (0, 0, 0), 80.0, 16)
    assert a.shape == (1, 1, 16, 16)
    assert abs(float(a.mean())) < 1e-5 and abs(float(a.std()) - 1) < 1e-4
    assert torch.allclose(a, b, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# losses against hand computations


def test_x2ct_losses_by_hand():
    pred = torch.zeros(1, 1, 2, 2, 2)
    target = torch.zeros(1, 1, 2, 2, 2)
    target[0, 0, 0, 0, 0] = 1.0
    # MSE = 1/8; each mean projection has one entry 1/2 and three zeros: L1 mean = 1/8 on each axis
    d_fake = torch.full((1, 1, 1, 1, 1), 0.5)
    t = x2ct.generator_losses(pred, target, x2ct.GAN_WEIGHTS, d_fake)
    assert math.isclose(t["recon"].item(), 1 / 8, rel_tol=1e-6)
    assert math.isclose(t["proj"].item(), 1 / 8, rel_tol=1e-6)
    assert math.isclose(t["adv"].item(), 0.5 * 0.25, rel_tol=1e-6)
    assert math.isclose(t["total"].item(), 0.1 * 0.125 + 10 * 0.125 + 10 * 0.125, rel_tol=1e-6)
    d = x2ct.discriminator_loss(torch.full((1,), 0.5), torch.full((1,), 0.25))
    assert math.isclose(d.item(), 0.5 * (0.25 + 0.0625), rel_tol=1e-6)


def test_ear_losses_by_hand():
    pred = torch.zeros(1, 1, 2, 2, 2)
    target = torch.zeros(1, 1, 2, 2, 2)
    target[0, 0, 0, 0, 0] = 1.0
    # orthonormal FFT of a unit impulse at the origin: every coefficient 1/sqrt(8), real
    # D_real = sqrt(8 * (1/8) / 8) = 1/sqrt(8), D_imag = 0
    assert math.isclose(ear.frequency_distance(pred, target).item(), math.log10(1 / math.sqrt(8)), rel_tol=1e-5)
    # maximum projections: one entry 1 of four on each axis
    assert math.isclose(ear.mip_loss(pred, target).item(), 0.25, rel_tol=1e-6)
    label = -torch.ones(1, 1, 4, 4, 4)
    label[0, 0, 1:3, 1:3, 1:3] = 1
    e = ear.edges_of(label > 0)
    assert e.sum() == 64 and e.max() == 1  # 3^3 dilation covers the whole 4^3 grid, erosion nothing
    out = {"volume": pred, "edge_logit": torch.zeros(1, 1, 2, 2, 2)}
    t = ear.losses(out, target, torch.ones(1, 1, 2, 2, 2), ear.WEIGHTS)
    assert math.isclose(t["recon"].item(), 1 / 8, rel_tol=1e-6)
    # all-bone label: no edges; BCE of logit 0 against 0 is ln 2
    assert math.isclose(t["edge"].item(), math.log(2), rel_tol=1e-6)
    want = 1 / 8 + 0.1 * math.log(2) + 0.1 * math.log10(1 / math.sqrt(8)) + 0.1 * 0.25
    assert math.isclose(t["total"].item(), want, rel_tol=1e-5)


def test_labels_from_threshold():
    hu = np.full((16, 16, 16), -100.0, np.float32)
    hu[5:11, 5:11, 5:11] = 400.0
    hu[7:9, 7:9, 7:9] = 50.0  # a hole: filled
    hu[0:2, 0:2, 0:2] = 800.0  # another component: dropped
    lab = labels_from_hu(hu)
    assert lab.dtype == np.uint8 and lab.sum() == 216 and lab[0, 0, 0] == 0


# ----------------------------------------------------------------------------------------------
# training


@pytest.mark.parametrize("method", METHODS)
def test_tiny_training_loss_falls(method):
    cfg = tiny(method, lr=3e-3)
    tr = BaselineTrainer(cfg)
    crops = _crops(2)
    first = tr.train_step(crops)["loss_recon"]
    for _ in range(24):
        last = tr.train_step(crops)["loss_recon"]
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize("method", ["x2ct-gan", "ear"])
def test_resume_is_bit_exact(tmp_path, ct_dir, method):
    cfg = tiny(method)
    cfg.views.angle_jitter_deg = 3.0  # the views' random stream is checkpointed too
    train(cfg, ct_dir, tmp_path / "a", max_steps=4, progress=False, workers=1)
    train(cfg, ct_dir, tmp_path / "b", max_steps=2, progress=False, workers=1)
    train(cfg, ct_dir, tmp_path / "b", max_steps=4, resume=True, progress=False, workers=1)
    ta, ma = load_training_state(tmp_path / "a" / STATE_FILE)
    tb, mb = load_training_state(tmp_path / "b" / STATE_FILE)
    assert ma["step"] == mb["step"] == 4
    assert set(ta) == set(tb)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    la = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [x["loss"] for x in la] == [x["loss"] for x in lb]


def test_per_view_jitter_draws_each_view_in_its_own_range():
    cfg = tiny("x2ct-cnn")
    cfg.views.angle_jitter_deg = [0, 50]
    tr = BaselineTrainer(cfg)
    angles = np.array([[v.angle_deg for v in vs] for vs in tr.draw_views(200)])
    assert np.all(angles[:, 0] == 0.0)
    assert 40 <= angles[:, 1].min() < 50 and 130 < angles[:, 1].max() <= 140
    from xfit.baselines.infer import view_differences

    class B:  # view_differences only reads the config
        config = cfg

    assert not view_differences(cfg.views.views([0, 135]), B)
    assert view_differences(cfg.views.views([3, 90]), B)  # the AP has no jitter
    for bad in ([1, 2, 3], [0, -5], "5", [0, True]):
        with pytest.raises(InputError, match="angle_jitter_deg"):
            BaselineConfig.from_dict({**cfg.to_dict(), "views": {**cfg.to_dict()["views"], "angle_jitter_deg": bad}})


def test_run_folder_rules(tmp_path, ct_dir):
    cfg = tiny("x2ct-cnn")
    train(cfg, ct_dir, tmp_path / "r", max_steps=1, progress=False, workers=1)
    with pytest.raises(OutputExistsError, match="--resume"):
        train(cfg, ct_dir, tmp_path / "r", max_steps=1, progress=False, workers=1)
    other = tiny("x2ct-cnn", lr=5e-4)
    with pytest.raises(InputError, match="another config"):
        train(other, ct_dir, tmp_path / "r", max_steps=2, resume=True, progress=False, workers=1)
    with pytest.raises(InputError, match="nothing to resume"):
        train(cfg, ct_dir, tmp_path / "empty", resume=True, progress=False, workers=1)
    train(cfg, ct_dir, tmp_path / "r", max_steps=1, force=True, progress=False, workers=1)


# ----------------------------------------------------------------------------------------------
# checkpoints and inference


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ct_dir):
    run = tmp_path_factory.mktemp("run")
    train(tiny("x2ct-cnn"), ct_dir, run, max_steps=2, progress=False, workers=1)
    return run / MODEL_FILE


@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_round_trip(tmp_path, method):
    cfg = tiny(method)
    torch.manual_seed(1)
    net = build_model(cfg).eval()
    path = save_model(tmp_path / "m.safetensors", net, cfg, {"steps": 3})
    b = load_model(path, method)
    assert b.config.to_dict() == cfg.to_dict() and b.meta["training"]["steps"] == 3
    lif = Lifter([cfg.views.views()], (0, 0, 0), cfg.fov_mm)
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x, lif)["volume"], b.model(x, lif)["volume"])
    half = load_model(save_model(tmp_path / "h.safetensors", net, cfg, half=True), method)
    with torch.no_grad():
        assert torch.allclose(net(x, lif)["volume"], half.model(x, lif)["volume"], atol=5e-2)
    with pytest.raises(OutputExistsError):
        save_model(path, net, cfg)


def test_bad_checkpoints(tmp_path, trained):
    with pytest.raises(CheckpointError, match="'x2ct-cnn' checkpoint, not 'ear'"):
        load_model(trained, "ear")
    with pytest.raises(InputError, match="unknown baseline method"):
        load_model(trained, "x2ct")
    # architecture mismatch: tensors of one width under the metadata of another
    from xfit.checkpoint import save_safetensors

    cfg = tiny("x2ct-cnn")
    wide = BaselineConfig.from_dict({**cfg.to_dict(), "arch": {"enc": [4, 8, 16], "dec": [4, 8, 8], "fc_hidden": 16}})
    tensors = {f"G.{k}": v for k, v in build_model(wide).state_dict().items()}
    meta = {
        "format": "xfit-baseline",
        "format_version": 1,
        "method": "x2ct-cnn",
        "config": cfg.to_dict(),
        "training": {},
    }
    bad = save_safetensors(tmp_path / "bad.safetensors", tensors, {"xfit": json.dumps(meta)}, False)
    with pytest.raises(CheckpointError, match="do not match the x2ct-cnn architecture"):
        load_model(bad, "x2ct-cnn")
    with pytest.raises(CheckpointError, match="expected format 'xfit-baseline', got 'xfit-prior'"):
        load_model(Path(__file__).resolve().parents[2] / "xfit" / "data" / "prior-64.safetensors", "ear")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model(tmp_path / "junk.safetensors")


def test_training_state_of_another_method(tmp_path):
    tr = BaselineTrainer(tiny("x2ct-cnn"))
    other = BaselineTrainer(tiny("ear"))
    with pytest.raises(CheckpointError, match="method 'x2ct-cnn', not 'ear'"):
        other.load_state(*tr.state())
    wider = BaselineTrainer(
        BaselineConfig.from_dict(
            {**tiny("x2ct-cnn").to_dict(), "arch": {"enc": [4, 8, 16], "dec": [4, 8, 8], "fc_hidden": 16}}
        )
    )
    with pytest.raises(CheckpointError, match="does not match this architecture"):
        wider.load_state(*tr.state())


def test_bad_configs(tmp_path):
    with pytest.raises(InputError, match="unknown baseline method"):
        check_method("nerf")
    with pytest.raises(InputError, match="not found"):
        load_config("nerf")
    with pytest.raises(InputError, match="unknown key"):
        BaselineConfig.from_dict({"method": "ear", "widths": 3})
    with pytest.raises(InputError, match="unknown term"):
        BaselineConfig.from_dict({"method": "x2ct-cnn", "training": {"weights": {"edge": 1}}})
    with pytest.raises(InputError, match="finite number"):
        BaselineConfig.from_dict({"method": "ear", "spacing_mm": True})
    with pytest.raises(InputError, match="arch: unknown key"):
        BaselineConfig.from_dict({"method": "ear", "arch": {"fc_hidden": 3}})
    with pytest.raises(InputError, match="arch.enc must be a list"):
        BaselineConfig.from_dict({"method": "x2ct-cnn", "arch": {"enc": "wide"}})
    with pytest.raises(InputError, match="one width per level"):
        BaselineConfig.from_dict({"method": "x2ct-gan", "arch": {"enc": [4, 8]}})
    with pytest.raises(InputError, match="too many"):
        BaselineConfig.from_dict({"method": "ear", "resolution": 16, "arch": {"enc": [4, 4, 4, 4]}})
    for m in METHODS:
        assert load_config(m).method == m


def test_predict(trained):
    from xfit.baselines.infer import predict

    cfg = tiny("x2ct-cnn")
    views = cfg.views.views()
    images = [np.random.default_rng(i).random((24, 24)).astype(np.float32) for i in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hu, lab, aff, notes = predict("x2ct-cnn", trained, images, views)
    assert hu.shape == (16, 16, 16) and hu.dtype == np.float32 and lab.dtype == np.uint8
    assert np.allclose(aff, cube_affine(16, 5.0)) and "threshold" in notes["labels"]
    assert -1000 <= hu.min() and hu.max() <= 1500
    other = [views[0], views[1].with_(angle_deg=60.0, sdd_mm=1700.0)]
    with pytest.warns(UserWarning, match="angle 60 deg .*sdd 1700") as rec:
        predict("x2ct-cnn", trained, images, other)
    assert len(rec) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        _, _, aff2, n2 = predict("x2ct-cnn", trained, images, other, target_mm=(0, 0, 10))
    assert n2["view_differences"] and np.allclose(aff2[:3, 3], aff[:3, 3] + [0, 0, 10])
    with pytest.raises(CheckpointError, match="not 'ear'"):
        predict("ear", trained, images, views)
    with pytest.raises(InputError, match="trained on 2 views"):
        predict("x2ct-cnn", trained, images[:1], views[:1])
    with pytest.raises(InputError, match="unknown baseline"):
        predict("foo", trained, images, views)


# ----------------------------------------------------------------------------------------------
# command line


def test_cli_train_baseline(tmp_path, ct_dir):
    import yaml

    cfgfile = tmp_path / "tiny.yaml"
    cfgfile.write_text(yaml.safe_dump(tiny("ear").to_dict()))
    runner = CliRunner()
    res = runner.invoke(
        baseline_cli(),
        [
            "train-baseline",
            "ear",
            str(ct_dir),
            "-o",
            str(tmp_path / "run"),
            "--config",
            str(cfgfile),
            "--max-steps",
            "1",
            "--quiet",
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "trained ear 1 steps" in res.output and (tmp_path / "run" / MODEL_FILE).is_file()
    res = runner.invoke(
        baseline_cli(),
        [
            "train-baseline",
            "ear",
            str(ct_dir),
            "-o",
            str(tmp_path / "run"),
            "--resume",
            "--max-steps",
            "2",
            "--quiet",
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        baseline_cli(),
        ["train-baseline", "x2ct-cnn", str(ct_dir), "-o", str(tmp_path / "r2"), "--config", str(cfgfile)],
    )
    assert res.exit_code == 2 and "xfit: error: the config is for method 'ear', not 'x2ct-cnn'" in res.output
    res = runner.invoke(baseline_cli(), ["train-baseline", "nerf", str(ct_dir), "-o", str(tmp_path / "r3")])
    assert res.exit_code == 2 and res.output.startswith("xfit: error:") and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_footprint_and_lifting_agree_with_the_projector():
    """A blob's X-ray, resampled to the footprint and lifted back, peaks along the blob's rays."""
    from xfit.io import hu_to_mu
    from xfit.projector import project

    hu = torch.full((16, 16, 16), -1000.0)
    hu[11:14, 6:9, 11:14] = 1500.0  # right (+x), superior (+z)
    aff = torch.as_tensor(cube_affine(16, 5.0), dtype=torch.float32)
    vs = [View(a, shape=(24, 24), pixel_spacing_mm=(4.0, 4.0)) for a in (0.0, 90.0)]
    img = project(hu_to_mu(hu)[None, None], aff, vs)
    fp = footprints(img, [vs], (0, 0, 0), 80.0, 16)
    lif = Lifter([vs], (0, 0, 0), 80.0)
    prod = lif.lift(fp[:, :1], 0, 16) + lif.lift(fp[:, 1:], 1, 16)  # backprojection of both views
    peak = np.unravel_index(int(prod.argmax()), (16, 16, 16))
    assert 11 <= peak[0] <= 13 and 6 <= peak[1] <= 8 and 11 <= peak[2] <= 13, peak


DDP_SCRIPT = """
import hashlib, json, sys
import torch
import torch.distributed as dist
import xfit.baselines.train as T
from xfit.baselines.common import BaselineConfig

made = []
class Recording(T.BaselineTrainer):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        made.append(self)
T.BaselineTrainer = Recording
ct_dir, config, run, out = sys.argv[1:5]
cfg = BaselineConfig.from_dict(json.loads(open(config).read()))
summary = T.train(cfg, ct_dir, run, max_steps=2, progress=False, device="cpu", workers=1)
tr = made[0]
digest = {f"{n}.{k}": hashlib.sha256(v.detach().contiguous().numpy().tobytes()).hexdigest()
          for n, m in tr.modules().items() for k, v in sorted(m.state_dict().items())}
gathered = [None] * dist.get_world_size()
dist.all_gather_object(gathered, {"rank": dist.get_rank(), "digest": digest, "step": tr.step})
if dist.get_rank() == 0:
    open(out, "w").write(json.dumps(gathered))
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ear", "x2ct-gan"])
def test_two_process_training_keeps_ranks_identical(tmp_path, ct_dir, method):
    import os
    import subprocess
    import sys

    script, config, out = tmp_path / "ddp.py", tmp_path / "cfg.json", tmp_path / "ranks.json"
    script.write_text(DDP_SCRIPT)
    config.write_text(json.dumps(tiny(method).to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
        str(ct_dir),
        str(config),
        str(tmp_path / "run"),
        str(out),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert [r["step"] for r in ranks] == [2, 2]
    d0, d1 = ranks[0]["digest"], ranks[1]["digest"]
    assert sorted(d0) == sorted(d1) and not [k for k in d0 if d0[k] != d1[k]]
    meta = load_training_state(tmp_path / "run" / STATE_FILE)[1]
    assert meta["world_size"] == 2


@pytest.mark.parametrize("method", METHODS)
def test_bf16_autocast_step(method):
    tr = BaselineTrainer(tiny(method), amp="bf16")
    assert tr.amp
    logs = tr.train_step(_crops(2))
    assert all(math.isfinite(v) for v in logs.values())


def test_default_views_are_the_studys():
    from xfit.studies.evaluate import default_views

    for m in METHODS:
        assert load_config(m).views.views() == default_views([0.0, 90.0], 128, 1.0)


def test_reconstruct_method_through_the_front_door(tmp_path, trained, ct_dir):
    """`xfit reconstruct --method` writes the fit's outputs from a baseline's prediction."""
    from xfit.cli import main

    ct = sorted(Path(ct_dir).rglob("*_ct.nii.gz"))[0]
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "simulate",
            str(ct),
            "--angles",
            "0,90",
            "--detector",
            "24",
            "--pixel-spacing",
            "4",
            "-o",
            str(tmp_path / "xr"),
        ],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "rec"
    args = [
        "reconstruct",
        str(tmp_path / "xr" / "ap.png"),
        str(tmp_path / "xr" / "lat.png"),
        "-o",
        str(out),
        "--method",
        "x2ct-cnn",
        "--checkpoint",
        str(trained),
        "--quiet",
    ]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, (res.output, res.exception)
    for name in ("recon.nii.gz", "labels.nii.gz", "preview.png", "report.json"):
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["method"] == "x2ct-cnn" and "threshold" in report["settings"]["fit"]["labels"]
    assert len(report["views"]) == 2 and all(-1 <= v["ncc"] <= 1 for v in report["views"])
    bad = runner.invoke(main, args[:4] + [str(tmp_path / "rec2"), "--method", "x2ct-nope", "--quiet"])
    assert bad.exit_code == 2 and "unknown baseline method" in bad.stderr and not (tmp_path / "rec2").exists()


def test_ship_exports_a_half_copy_with_the_wall_time(tmp_path, trained):
    from safetensors import safe_open

    from xfit.baselines.ship import export_half, run_wall_seconds

    out = export_half(trained.parent, "x2ct-cnn", tmp_path / "baseline-x2ct-cnn.safetensors")
    with safe_open(str(out), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    b, full = load_model(out, "x2ct-cnn"), load_model(trained, "x2ct-cnn")
    assert b.meta["training"]["wall_seconds"] == run_wall_seconds(trained.parent) is not None
    assert b.meta["training"]["steps"] == full.meta["training"]["steps"]
    lif = Lifter([b.config.views.views()], (0, 0, 0), b.config.fov_mm)
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        assert torch.allclose(b.model(x, lif)["volume"], full.model(x, lif)["volume"], atol=5e-2)
    assert run_wall_seconds(tmp_path) is None


def test_ship_finish_continues_the_shipped_network_with_a_decaying_rate(tmp_path, trained, ct_dir, monkeypatch):
    from xfit.baselines import ship as ship_mod
    from xfit.checkpoint import file_sha256

    monkeypatch.setattr(ship_mod, "FINISH_IMAGES", 4)  # 2 steps of batch 2
    data = tmp_path / "data"
    shipped = ship_mod.export_half(trained.parent, "x2ct-cnn", data / "baseline-x2ct-cnn-jitter.safetensors")
    before, digest = load_model(shipped, "x2ct-cnn"), file_sha256(shipped)
    runs = tmp_path / "runs"
    ship_mod.ship(ct_dir, runs, ["x2ct-cnn@jitter"], data, workers=1, progress=False, finish=True)
    after = load_model(shipped, "x2ct-cnn")
    t = after.meta["training"]
    assert after.config.name == before.config.name + "-finish" and after.config.training.schedule == "cosine"
    assert after.config.training.steps == 2 and t["init_from"]["sha256"] == digest
    assert (runs / "x2ct-cnn-jitter-finish" / "init_from.json").is_file()
    start, end = before.model.state_dict(), after.model.state_dict()
    assert any(not torch.equal(start[k], end[k]) for k in start)
    # the rate starts at the one the network was trained at and falls on a cosine
    from xfit.training import read_log

    lrs = [r["lr"] for r in read_log(runs / "x2ct-cnn-jitter-finish" / "log.jsonl") if "lr" in r]
    assert lrs == pytest.approx([before.config.training.lr, before.config.training.lr / 2])
    # the same command again resumes the finished run: the same network, nothing trained twice
    ship_mod.ship(ct_dir, runs, ["x2ct-cnn@jitter"], data, workers=1, progress=False, finish=True)
    again = load_model(shipped, "x2ct-cnn").model.state_dict()
    assert all(torch.equal(again[k], end[k]) for k in end)
    # a finished network is not finished twice, and bad requests are refused before any training
    with pytest.raises(InputError, match="already finished"):
        ship_mod.ship(ct_dir, tmp_path / "fresh", ["x2ct-cnn@jitter"], data, finish=True)
    with pytest.raises(InputError, match="no shipped network"):
        ship_mod.ship(ct_dir, tmp_path / "fresh", ["x2ct-gan"], data, finish=True)
    with pytest.raises(InputError, match="--jitter"):
        ship_mod.ship(ct_dir, tmp_path / "fresh", ["x2ct-cnn"], data, finish=True, jitter=50.0)
    assert not (tmp_path / "fresh").exists()
