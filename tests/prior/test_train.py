"""Tests of xfit.prior.train: bit-exact resume (in process and after SIGKILL), 2-process training
with gloo, and input errors. Tiny config on 32^3 phantoms, CPU, one torch thread."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from spine_synth import write_layout, write_xfit_collection

from xfit.cli import main
from xfit.errors import InputError, OutputExistsError
from xfit.prior.checkpoint import levels_seen, load_prior, load_snapshot, load_training_state
from xfit.prior.config import config_path, load_config
from xfit.prior.train import PRIOR_FILE, STATE_FILE, Trainer, amp_enabled, lr_factor, snapshot_run, train
from xfit.prior.train import main as train_main

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    # three vertebra-centred 32^3 cases (new phantom format): one crop each, neighbours skipped
    return write_xfit_collection(out, 3, centres=["T12", "L1", "L2"], levels=("T11", "T12", "L1", "L2", "L3"))


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny")


def _custom_config(tmp_path: Path, **training) -> Path:
    """A YAML config derived from tiny with some training settings replaced."""
    data = yaml.safe_load(config_path("tiny").read_text())
    data["training"].update(training)
    path = tmp_path / "prior-custom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _state(run: Path) -> tuple[dict[str, torch.Tensor], dict]:
    return load_training_state(run / STATE_FILE)


def assert_same_state(run_a: Path, run_b: Path) -> None:
    ta, ma = _state(run_a)
    tb, mb = _state(run_b)
    assert ma["step"] == mb["step"]
    assert sorted(ta) == sorted(tb)
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"


# ----------------------------------------------------------------------------- resume


def test_resume_in_process_is_bit_exact(tmp_path, ct_dir, cfg):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    s = train(cfg, ct_dir, straight, max_steps=4, progress=False, device="cpu")
    assert s["steps"] == 4 and s["examples"] == 3
    train(cfg, ct_dir, resumed, max_steps=2, progress=False, device="cpu")
    assert _state(resumed)[1]["step"] == 2
    train(cfg, ct_dir, resumed, max_steps=4, resume=True, progress=False, device="cpu")
    assert_same_state(straight, resumed)
    prior = load_prior(resumed / PRIOR_FILE)
    assert prior.config.resolution == 32 and prior.meta["training"]["steps"] == 4
    # training moved the weights: the compared states are not just the initial ones
    fresh = Trainer(cfg, torch.device("cpu"))
    trained = _state(straight)[0]
    for name, p in fresh.G.named_parameters():
        if name.endswith("weight"):
            assert not torch.equal(trained[f"G.{name}"], p.detach()), name


def test_run_folder_rules(tmp_path, ct_dir, cfg):
    run = tmp_path / "run"
    with pytest.raises(InputError, match="nothing to resume"):
        train(cfg, ct_dir, run, resume=True, max_steps=1, progress=False, device="cpu")
    train(cfg, ct_dir, run, max_steps=1, progress=False, device="cpu")
    with pytest.raises(OutputExistsError, match="--resume"):
        train(cfg, ct_dir, run, max_steps=1, progress=False, device="cpu")


def test_resume_accepts_a_config_json_without_newer_keys(tmp_path, ct_dir, cfg):
    """A run whose config.json predates a config key (it holds the default) still resumes."""
    run = tmp_path / "run"
    train(cfg, ct_dir, run, max_steps=1, progress=False, device="cpu")
    saved = json.loads((run / "config.json").read_text())
    del saved["training"]["log_every"]  # as if log_every had been added to the config later
    (run / "config.json").write_text(json.dumps(saved))
    train(cfg, ct_dir, run, max_steps=2, resume=True, progress=False, device="cpu")
    assert _state(run)[1]["step"] == 2
    other = load_config("tiny")
    other.training.seed = 5
    with pytest.raises(InputError, match="another config"):
        train(other, ct_dir, run, max_steps=3, resume=True, progress=False, device="cpu")


def test_lr_decay_schedule_and_a_run_that_continues_with_it(tmp_path, ct_dir, cfg):
    """``lr_decay_kimg`` lowers both optimizers' lrs by a half cosine to ``lr_final``; a run
    started at constant lr continues (``--resume``) under a config that adds the decay, and the
    optimizers then step at the decayed lr; any other training change is still refused."""
    t = load_config(_custom_config(tmp_path, lr_decay_kimg=[0.008, 0.016], lr_final=0.2)).training
    assert [round(lr_factor(t, k), 6) for k in (0.0, 0.008, 0.012, 0.016, 1.0)] == [1.0, 1.0, 0.6, 0.2, 0.2]
    assert lr_factor(cfg.training, 1e6) == 1.0  # none configured: constant
    run = tmp_path / "run"
    train(cfg, ct_dir, run, max_steps=2, progress=False, device="cpu")  # batch 4: 0.008 kimg
    decayed = load_config(_custom_config(tmp_path, lr_decay_kimg=[0.008, 0.016], lr_final=0.2, log_every=1))
    train(decayed, ct_dir, run, max_steps=4, resume=True, progress=False, device="cpu")
    lines = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert [round(ln["lr_factor"], 6) for ln in lines if "lr_factor" in ln] == [1.0, 0.6]
    assert json.loads((run / "config.json").read_text())["training"]["lr_decay_kimg"] == [0.008, 0.016]
    trainer = Trainer(decayed, torch.device("cpu"))
    trainer.load_state(*_state(run))
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.training.g_lr * 0.6)
    with pytest.raises(InputError, match="lr_decay_kimg"):
        load_config(_custom_config(tmp_path, lr_decay_kimg=[5, 5]))
    with pytest.raises(InputError, match="lr_final"):
        load_config(_custom_config(tmp_path, lr_final=1.5))


def test_failed_start_does_not_block_a_retry(tmp_path, ct_dir, cfg):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x_ct.nii.gz").write_bytes(b"broken")
    (bad / "x_seg.nii.gz").write_bytes(b"broken")
    run = tmp_path / "run"
    with pytest.raises(InputError, match="no usable vertebra crop.*x_ct.nii.gz: cannot read"):
        train(cfg, bad, run, max_steps=1, progress=False, device="cpu")
    assert not run.exists()  # the failed start left no folder behind
    run.mkdir()
    (run / "notes.txt").write_text("mine")  # a folder that existed is kept, with what it held
    with pytest.raises(InputError):
        train(cfg, bad, run, max_steps=1, progress=False, device="cpu")
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    s = train(cfg, ct_dir, run, max_steps=1, progress=False, device="cpu")  # no --force needed
    assert s["steps"] == 1 and s["levels"] == {"T12": 1, "L1": 1, "L2": 1}
    assert s["skipped_count"] == 6 and s["layout"] == "xfit"


def test_force_restarts_without_stale_log_lines(tmp_path, ct_dir):
    config = _custom_config(tmp_path, log_every=1, checkpoint_every=2, sample_every=2)
    cfg = load_config(config)
    run = tmp_path / "run"
    train(cfg, ct_dir, run, max_steps=4, progress=False, device="cpu")
    assert [json.loads(ln)["step"] for ln in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert len(list((run / "snapshots").iterdir())) == 2
    cache = sorted((run / "cache").iterdir())
    train(cfg, ct_dir, run, max_steps=2, force=True, progress=False, device="cpu")
    assert [json.loads(ln)["step"] for ln in (run / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["prior-step000002.safetensors"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step000002.png"]
    assert sorted((run / "cache").iterdir()) == cache  # the prepared data is kept
    rec = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert rec["img_per_s"] > 0 and rec["kimg"] == pytest.approx(2 * 4 / 1000)


def test_snapshot_resume_continues(tmp_path, ct_dir):
    """A compact snapshot (G, G_ema, D in fp16, step, config; no optimizer state) starts a new run
    folder that continues the step count from weights equal to fp16 precision."""
    config = _custom_config(tmp_path, checkpoint_every=2, sample_every=1000, log_every=1)
    cfg = load_config(config)
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg, ct_dir, a, max_steps=4, progress=False, device="cpu")
    out = tmp_path / "data" / "prior-tiny.state.safetensors"
    train_main(["snapshot", str(a), "-o", str(out)])  # the CLI-callable entry
    assert out.stat().st_size < 0.4 * (a / STATE_FILE).stat().st_size
    assert b"pickle" not in out.read_bytes()[:200] and out.read_bytes()[8:9] == b"{"  # safetensors header
    snap, meta = load_snapshot(out)
    assert meta["step"] == 4 and meta["kimg"] == pytest.approx(0.016) and meta["dtype"] == "float16"
    assert meta["config"] == json.loads(json.dumps(cfg.to_dict()))
    assert meta["summary"]["levels"] == {"T12": 1, "L1": 1, "L2": 1}
    full, _ = _state(a)
    assert sorted(snap) == sorted(k for k in full if k.split(".")[0] in ("G", "G_ema", "D"))
    for k, v in snap.items():
        want = full[k] if k.endswith("w_avg") else full[k].half().float()
        assert torch.equal(v, want), k
    with pytest.raises(OutputExistsError):
        snapshot_run(a, out)
    s = train(cfg, ct_dir, b, resume_from=out, max_steps=6, progress=False, device="cpu")
    assert s["steps"] == 6 and s["resumed_from"]["step"] == 4
    tb, mb = _state(b)
    steps = [v for k, v in tb.items() if k.startswith("opt_g.") and k.endswith(".step")]
    assert mb["step"] == 6 and steps and all(int(v) == 2 for v in steps)  # fresh Adam moments
    assert [json.loads(ln)["step"] for ln in (b / "log.jsonl").read_text().splitlines()] == [5, 6]
    assert not torch.equal(
        tb["G.synthesis.blocks.0.conv1.weight"], snap["G.synthesis.blocks.0.conv1.weight"]
    )  # trained on
    # the continued run resumes normally from its own state
    train(cfg, ct_dir, b, resume=True, max_steps=7, progress=False, device="cpu")
    assert _state(b)[1]["step"] == 7
    other = load_config("tiny")
    other.training.g_lr = 0.001
    with pytest.raises(InputError, match="another config"):
        train(other, ct_dir, tmp_path / "c", resume_from=out, max_steps=5, progress=False, device="cpu")
    with pytest.raises(InputError, match="give one"):
        train(cfg, ct_dir, b, resume=True, resume_from=out, max_steps=8, progress=False, device="cpu")


@pytest.mark.parametrize(
    "layout,mode",
    [
        ("verse", "folders"),
        ("ctspine1k", "folders"),
        ("totalsegmentator", "folders"),
        ("totalsegmentator", "ml-header"),
    ],
)
def test_each_layout_trains_with_one_command(tmp_path, layout, mode):
    root = write_layout(
        tmp_path / "data", layout, 3, centres=("T12", "L1", "L2"), levels=("T11", "T12", "L1", "L2", "L3"), ts_mode=mode
    )
    run = tmp_path / "run"
    from click.testing import CliRunner

    from xfit.cli import main as cli

    res = CliRunner().invoke(
        cli,
        [
            "train-prior",
            str(root),
            "-o",
            str(run),
            "--config",
            "tiny",
            "--max-steps",
            "2",
            "--device",
            "cpu",
            "--amp",
            "bf16",
        ],
    )
    assert res.exit_code == 0, res.output
    prior = load_prior(run / PRIOR_FILE)
    assert prior.meta["training"]["layout"] == layout and prior.meta["training"]["steps"] == 2
    assert prior.meta["training"]["levels"] == {"T12": 1, "L1": 1, "L2": 1}
    assert prior.meta["training"]["amp_bf16"] is True


def test_levels_provenance_and_amp_choice(tmp_path, ct_dir, cfg):
    train(cfg, ct_dir, tmp_path / "r", max_steps=1, progress=False, device="cpu", levels="T12-L1")
    prior = load_prior(tmp_path / "r" / PRIOR_FILE)
    assert prior.meta["training"]["levels"] == {"T12": 1, "L1": 1}
    assert levels_seen(prior.meta) == {19, 20} and levels_seen({"training": {}}) == set()
    assert amp_enabled("bf16", torch.device("cpu")) and not amp_enabled("off", torch.device("cuda"))
    assert amp_enabled("auto", torch.device("cuda"))
    with pytest.raises(InputError, match="amp must be"):
        amp_enabled("fp8", torch.device("cpu"))


def _train_cmd(ct_dir: Path, run: Path, config: Path, steps: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "xfit.prior.train",
        str(ct_dir),
        "-o",
        str(run),
        "--config",
        str(config),
        "--max-steps",
        str(steps),
        *extra,
    ]


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tmp_path, ct_dir):
    config = _custom_config(tmp_path, checkpoint_every=2, sample_every=1000)
    steps = 10
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = subprocess.Popen(
        _train_cmd(ct_dir, killed, config, steps), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not (killed / STATE_FILE).exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no training state appeared"
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    step_at_kill = _state(killed)[1]["step"]
    assert 2 <= step_at_kill < steps and step_at_kill % 2 == 0
    for cmd in (_train_cmd(ct_dir, killed, config, steps, "--resume"), _train_cmd(ct_dir, straight, config, steps)):
        res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
    assert_same_state(killed, straight)


# ----------------------------------------------------------------------------- two processes

DDP_SCRIPT = textwrap.dedent('''
    """Train under torchrun, then gather a hash of every rank's weights (written by rank 0)."""
    import hashlib, json, sys
    import torch
    import torch.distributed as dist
    import xfit.prior.train as T
    from xfit.prior.config import load_config

    made = []

    class Recording(T.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    T.Trainer = Recording
    ct_dir, config, run, out = sys.argv[1:5]
    summary = T.train(load_config(config), ct_dir, run, max_steps=2, progress=False, device="cpu")
    tr = made[0]
    digest = {}
    for name, module in (("G", tr.G), ("D", tr.D), ("G_ema", tr.G_ema)):
        for k, v in sorted(module.state_dict().items()):
            data = v.detach().cpu().contiguous().numpy().tobytes()
            digest[f"{name}.{k}"] = hashlib.sha256(data).hexdigest()
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, {"rank": dist.get_rank(), "digest": digest,
                                      "step": tr.step, "summary": summary})
    if dist.get_rank() == 0:
        with open(out, "w") as fh:
            json.dump(gathered, fh)
    dist.barrier()  # tearing gloo down while the peer is still busy can abort the process
    dist.destroy_process_group()
''')


def test_two_process_training_keeps_ranks_identical(tmp_path, ct_dir):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ranks.json"
    config = _custom_config(tmp_path, batch_size=2, sample_every=1000)
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
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["step"] == 2 and r["summary"]["world_size"] == 2 for r in ranks)
    # every parameter and buffer agrees bit for bit, except the tracked mean w (``w_avg``, only
    # used for truncation): each rank updates it from its own latents, as in stylegan2-ada
    # (whose DDP consistency check ignores ``*_avg``); only rank 0's is saved.
    d0, d1 = ranks[0]["digest"], ranks[1]["digest"]
    assert sorted(d0) == sorted(d1) and len(d0) > 50
    differ = sorted(k for k in d0 if d0[k] != d1[k] and not k.endswith("mapping.w_avg"))
    assert not differ, differ
    meta = _state(tmp_path / "run")[1]
    assert meta["world_size"] == 2 and meta["step"] == 2
    assert "rng.1.gen" in _state(tmp_path / "run")[0]  # each rank's RNG is saved for resume


# ----------------------------------------------------------------------------- input errors


def test_empty_folder_and_junk(tmp_path, cfg):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty"):
        train(cfg, empty, tmp_path / "r1", max_steps=1, progress=False, device="cpu")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt"):
        train(cfg, junk, tmp_path / "r2", max_steps=1, progress=False, device="cpu")
    (junk / "broken_ct.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(InputError, match="broken_ct.nii.gz"):
        train(cfg, junk, tmp_path / "r3", max_steps=1, progress=False, device="cpu")


def test_cli_train_prior_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (
        [empty, "-o", tmp_path / "run", "--config", "tiny"],
        [tmp_path / "missing", "-o", tmp_path / "run2", "--config", "tiny"],
        [empty, "-o", tmp_path / "run3", "--config", "no-such-config"],
    ):
        res = CliRunner().invoke(main, ["train-prior", *map(str, args)])
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("xfit: error:"), res.stderr
        assert "Traceback" not in res.output


def test_cli_train_prior_runs(tmp_path, ct_dir):
    res = CliRunner().invoke(
        main,
        [
            "train-prior",
            str(ct_dir),
            "-o",
            str(tmp_path / "run"),
            "--config",
            "tiny",
            "--max-steps",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "trained 1 steps" in res.output
    assert (tmp_path / "run" / PRIOR_FILE).is_file()
    # --resume with another config is a one-line error; without --config the run's own is used
    res = CliRunner().invoke(
        main,
        ["train-prior", str(ct_dir), "-o", str(tmp_path / "run"), "--config", "64", "--resume", "--max-steps", "2"],
    )
    assert res.exit_code == 2 and "differs" in res.stderr, res.output
    res = CliRunner().invoke(
        main,
        ["train-prior", str(ct_dir), "-o", str(tmp_path / "run"), "--resume", "--max-steps", "2", "--device", "cpu"],
    )
    assert res.exit_code == 0 and "trained 2 steps" in res.output, res.output
    # ... and a config that changes only the schedule (here an lr decay) continues it
    decayed = _custom_config(tmp_path, lr_decay_kimg=[0.004, 0.02], total_kimg=0.02)
    args = ["train-prior", str(ct_dir), "-o", str(tmp_path / "run"), "--resume", "--config", str(decayed)]
    res = CliRunner().invoke(main, [*args, "--max-steps", "3", "--device", "cpu"])
    assert res.exit_code == 0 and "trained 3 steps" in res.output, res.output


# ----------------------------------------------------------------------------- the 128^3 GPU config


def shrunk_128_config(tmp_path: Path, factor: int = 8) -> Path:
    """``xfit/configs/prior-128.yaml`` shrunk for a CPU test: the same field of view, training settings,
    mapping depth and batch, with ``factor`` times fewer voxels per side (``factor`` times the
    spacing), the channel ladder of its top ``log2(128 / factor) - 1`` levels divided by
    ``factor``, and 32-wide latents."""
    data = yaml.safe_load(config_path("128").read_text())
    res = data["resolution"] // factor
    for key in ("g_channels", "d_channels"):
        ladder = {int(r): int(c) for r, c in data[key].items()}
        data[key] = {r // factor: max(c // factor, 2) for r, c in ladder.items() if r // factor >= 4}
        assert max(data[key]) == res
    data.update(name="128-shrunk", resolution=res, spacing_mm=data["spacing_mm"] * factor, z_dim=32, w_dim=32)
    path = tmp_path / "prior-128-shrunk.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_prior_128_config_trains_two_steps_shrunk(tmp_path):
    """The GPU config's structure (docs/training.md, "A prior at 128³ for GPUs") runs: 2 training steps of
    it shrunk to 16^3 at 8 mm, on phantoms with the field of view of its 128^3 crops at 1 mm."""
    full = load_config("128")
    assert (full.resolution, full.spacing_mm, full.fov_mm) == (128, 1.0, 128.0)
    assert full.training.batch_size % full.mbstd_group_size == 0
    cfg = load_config(shrunk_128_config(tmp_path))
    assert cfg.fov_mm == full.fov_mm and cfg.training == full.training
    assert cfg.mapping_layers == full.mapping_layers and cfg.hu_window == full.hu_window
    from xfit.phantoms import write_phantoms

    data = tmp_path / "phantoms"  # 160 mm grids: one whole 128 mm crop each (resampled to 8 mm)
    write_phantoms(data, 2, size=40, spacing_mm=4.0, seed=1000, progress=False, noise_hu=0.0, blur=False)
    run = tmp_path / "run"
    s = train(cfg, data, run, max_steps=2, progress=False, device="cpu")
    assert s["steps"] == 2 and s["examples"] == 2
    prior = load_prior(run / PRIOR_FILE)
    assert prior.config.resolution == 16 and prior.config.fov_mm == 128.0
    assert prior.meta["training"]["steps"] == 2
