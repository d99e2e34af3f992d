"""Issue 31: every entry point under one error contract (one line ``xfit: error: ...``, exit 2),
training runs that survive a torn log and refuse non-finite numbers, DICOM tag values a user option
may stand in for, one name for the pixel spacing, and options that would be ignored refused.
Tiny configs, CPU, one torch thread."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import assert_user_error, run
from cli_helpers import train_baseline as _train_baseline
from dicom_files import beams_eye as _beams_eye
from dicom_files import write_dicom as _dicom
from tiny_models import baseline_yaml as _baseline_yaml
from tiny_models import tiny_prior_training as _prior_cfg

from xfit.baselines.train import BaselineTrainer
from xfit.errors import CheckpointError, InputError
from xfit.io import read_xray, write_png16, write_sidecar
from xfit.prior import train as prior_train
from xfit.prior.checkpoint import load_training_state, save_training_state
from xfit.prior.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: What safetensors' writer raises on a full and on a read-only disk (not an OSError).
DISK_ERRORS = {
    "no space left on device": "Error while serializing: I/O error: No space left on device (os error 28) "
    'at path "/x/.tmpAbC"',
    "read-only file system": "Error while serializing: I/O error: Read-only file system (os error 30)",
}


def _main_error(capsys, main, *args) -> str:
    """Run a ``python -m`` entry point in process; it must exit 2 with exactly one line
    ``xfit: error: ...`` (besides warnings), which is returned."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("xfit: warning")]
    assert exc.value.code == 2 and len(lines) == 1 and lines[0].startswith("xfit: error:"), err
    return lines[0]


def _error_line(res) -> str:
    """The one ``xfit: error:`` line, on a line of its own, of a command that also draws progress
    bars (``train-prior`` has no ``--quiet``), which exited with code 2."""
    assert res.exit_code == 2 and "Traceback" not in res.output, (res.exit_code, res.output, res.exception)
    errors = [ln for ln in res.stderr.splitlines() if "xfit: error:" in ln]
    assert len(errors) == 1 and errors[0].startswith("xfit: error:"), res.stderr
    return errors[0]


@pytest.fixture
def prior_run(tmp_path) -> Path:
    """A prior run folder holding the (untrained) training state of the tiny config."""
    cfg = load_config("tiny")
    folder = tmp_path / "prior-run"
    save_training_state(
        folder / prior_train.STATE_FILE, *prior_train.Trainer(cfg, torch.device("cpu"), amp="off").state()
    )
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    return folder


def _logged_steps(folder: Path) -> list[int]:
    return [json.loads(ln)["step"] for ln in (folder / "log.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- one error contract


def test_snapshot_errors_are_one_line_in_cli_terms(tmp_path, prior_run, capsys):
    main, out = prior_train.main, tmp_path / "snap.safetensors"
    assert "holds no training state" in _main_error(capsys, main, "snapshot", tmp_path / "nowhere", "-o", out)
    main(["snapshot", str(prior_run), "-o", str(out)])
    line = _main_error(capsys, main, "snapshot", prior_run, "-o", out)
    assert "--force" in line and "force=True" not in line
    assert "--dtype" in _main_error(capsys, main, "snapshot", prior_run, "-o", out, "--force", "--dtype", "fp8")
    (prior_run / "config.json").write_text('{"resolution": ')
    assert "config.json" in _main_error(capsys, main, "snapshot", prior_run, "-o", tmp_path / "b.safetensors")


@pytest.mark.parametrize(
    "args,word",
    [
        (["--methods", "x2ct-cnn,nope"], "nope"),
        (["--jitter", "abc"], "--jitter"),
        (["--workers", "0"], "--workers"),
        (["--methods", "ear,ear"], "once"),
    ],
)
def test_ship_errors_are_one_line(tmp_path, capsys, args, word):
    from xfit.baselines.ship import main

    (tmp_path / "ct").mkdir()  # empty: anything that got past the checks would fail on it
    line = _main_error(capsys, main, tmp_path / "ct", "-o", tmp_path / "runs", "--data-dir", tmp_path / "d", *args)
    assert word in line and not (tmp_path / "runs").exists()


def test_ship_missing_folder_is_one_line(tmp_path, capsys):
    from xfit.baselines.ship import main

    line = _main_error(capsys, main, tmp_path / "missing", "-o", tmp_path / "runs", "--methods", "ear")
    assert "missing" in line and "not found" in line and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("reason", sorted(DISK_ERRORS))
def test_full_or_read_only_disk_while_writing_safetensors(tmp_path, ct_dir, prior_run, capsys, monkeypatch, reason):
    import safetensors.torch
    from safetensors import SafetensorError

    def refuse(*args, **kwargs):
        raise SafetensorError(DISK_ERRORS[reason])

    monkeypatch.setattr(safetensors.torch, "save_file", refuse)
    line = _main_error(capsys, prior_train.main, "snapshot", prior_run, "-o", tmp_path / "snap.safetensors")
    assert reason in line.lower() and "snap.safetensors" in line and "Traceback" not in line
    res = _train_baseline(ct_dir, tmp_path / "run", "--config", _baseline_yaml(tmp_path), "--max-steps", 2)
    assert_user_error(res, reason, "safetensors")
    assert not list(tmp_path.rglob(".*.tmp-*"))


# ----------------------------------------------------------------------------- a torn log


def _tear(log: Path) -> None:
    """Append half a record, as a crash while the log is written leaves it."""
    with open(log, "a") as fh:
        fh.write('{"step": 3, "images": 6, "img_per_s": 1.5, "lo')


def _assert_torn_line_dropped(res, folder: Path) -> None:
    assert res.exit_code == 0, (res.output, res.exception)
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("xfit: warning") and "torn" in ln]
    assert len(warned) == 1, res.stderr
    assert _logged_steps(folder) == [1, 2, 3]


def test_torn_log_line_on_train_baseline_resume(tmp_path, ct_dir):
    from xfit.baselines.ship import run_wall_seconds

    folder = tmp_path / "run"
    assert _train_baseline(ct_dir, folder, "--config", _baseline_yaml(tmp_path), "--max-steps", 2).exit_code == 0
    _tear(folder / "log.jsonl")
    with pytest.warns(UserWarning, match="torn"):
        assert run_wall_seconds(folder) is not None
    _assert_torn_line_dropped(_train_baseline(ct_dir, folder, "--resume", "--max-steps", 3), folder)
    # a damaged line before the last is not a crash's: one line
    lines = (folder / "log.jsonl").read_text().splitlines()
    (folder / "log.jsonl").write_text("\n".join([lines[0], "#garbage", *lines[1:]]) + "\n")
    assert_user_error(_train_baseline(ct_dir, folder, "--resume", "--max-steps", 4), "log.jsonl", "line 2")


def test_torn_log_line_on_train_prior_resume(tmp_path, ct_dir):
    folder = tmp_path / "run"
    prior_train.train(_prior_cfg(), ct_dir, folder, max_steps=2, progress=False, device="cpu", workers=1)
    _tear(folder / "log.jsonl")
    res = run("train-prior", ct_dir, "-o", folder, "--resume", "--max-steps", 3, "--device", "cpu", "--workers", 1)
    _assert_torn_line_dropped(res, folder)


# ----------------------------------------------------------------------------- non-finite guards


def _poison_state(path: Path) -> None:
    tensors, meta = load_training_state(path)
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = torch.full_like(tensors[key], math.nan)
    save_training_state(path, tensors, meta, force=True)


def test_resume_refuses_a_state_holding_nan(tmp_path, ct_dir, prior_run, capsys):
    folder = tmp_path / "run"
    assert _train_baseline(ct_dir, folder, "--config", _baseline_yaml(tmp_path), "--max-steps", 2).exit_code == 0
    _poison_state(folder / "state.safetensors")
    before = (folder / "baseline.safetensors").read_bytes()
    assert_user_error(_train_baseline(ct_dir, folder, "--resume", "--max-steps", 3), "NaN", "state.safetensors")
    assert (folder / "baseline.safetensors").read_bytes() == before
    # the prior's trainer and its snapshot carrier refuse it as well
    (prior_run / "config.json").write_text(json.dumps(_prior_cfg().to_dict()))
    _poison_state(prior_run / prior_train.STATE_FILE)
    with pytest.raises(CheckpointError, match="NaN"):
        prior_train.train(_prior_cfg(), ct_dir, prior_run, resume=True, max_steps=1, progress=False, device="cpu")
    assert "NaN" in _main_error(capsys, prior_train.main, "snapshot", prior_run, "-o", tmp_path / "s.safetensors")


def _poison_crops(cache: Path) -> None:
    (crops,) = cache.glob("data-*/crops.f16")
    with open(crops, "r+b") as fh:
        fh.write(np.full(64, np.nan, np.float16).tobytes())


def test_training_refuses_a_crop_cache_holding_nan(tmp_path, ct_dir):
    folder = tmp_path / "run"
    assert _train_baseline(ct_dir, folder, "--config", _baseline_yaml(tmp_path), "--max-steps", 2).exit_code == 0
    _poison_crops(folder / "cache")
    assert_user_error(_train_baseline(ct_dir, folder, "--resume", "--max-steps", 3), "NaN", "crops.f16")
    # the prior's trainer: crops prepared, then damaged, before its first step
    from xfit.prior.data import load_training_set

    cfg, folder = _prior_cfg(), tmp_path / "prior-run"
    load_training_set(ct_dir, prior_train.data_settings(cfg), cache_dir=folder / "cache", workers=1, progress=False)
    _poison_crops(folder / "cache")
    with pytest.raises(InputError, match="NaN"):
        prior_train.train(cfg, ct_dir, folder, max_steps=1, progress=False, device="cpu", workers=1)
    assert not (folder / "state.safetensors").exists()


@pytest.mark.parametrize("kind", ["baseline", "prior"])
def test_a_non_finite_loss_stops_training_keeping_the_last_finite_checkpoint(tmp_path, ct_dir, monkeypatch, kind):
    trainer = BaselineTrainer if kind == "baseline" else prior_train.Trainer
    real = trainer.train_step

    def diverging(self, *args, **kwargs):  # the third step's loss overflows
        logs = real(self, *args, **kwargs)
        return {**logs, "loss_g" if kind == "prior" else "loss": math.inf} if self.step == 3 else logs

    monkeypatch.setattr(trainer, "train_step", diverging)
    folder = tmp_path / "run"
    if kind == "baseline":
        res = _train_baseline(ct_dir, folder, "--config", _baseline_yaml(tmp_path), "--max-steps", 4)
    else:
        config = tmp_path / "prior.yaml"
        config.write_text(yaml.safe_dump(_prior_cfg().to_dict()))
        res = run(
            "train-prior", ct_dir, "-o", folder, "--config", config, "--max-steps", 4, "--device", "cpu", "--workers", 1
        )
    line = _error_line(res)
    assert "diverged at step 3" in line and "not finite" in line
    _tensors, meta = load_training_state(folder / "state.safetensors")
    assert meta["step"] == 2 and _logged_steps(folder) == [1, 2]


@pytest.mark.parametrize("training,word", [({"seed": -1}, "training.seed"), ({"betas": [1.5, 0.9]}, "training.betas")])
def test_bad_baseline_training_numbers_are_refused_before_anything_is_written(tmp_path, ct_dir, training, word):
    res = _train_baseline(ct_dir, tmp_path / "run", "--config", _baseline_yaml(tmp_path, **training), "--max-steps", 1)
    assert_user_error(res, word)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- DICOM tag values


CR = dict(Modality="CR", ViewPosition="AP", PatientOrientation=["L", "F"], ImagerPixelSpacing=None)


@pytest.mark.parametrize("spacing", [[0, 0], [-0.2, 0.2], [0.2]])
def test_an_option_stands_in_for_an_invalid_pixel_spacing_tag(tmp_path, spacing):
    dcm = _dicom(tmp_path / "cr.dcm", _beams_eye(), PixelSpacing=spacing, **CR)
    with pytest.raises(InputError, match=r"PixelSpacing \(0028,0030\).*not two positive numbers.*--pixel-spacing"):
        read_xray(dcm)
    with pytest.warns(UserWarning, match=r"PixelSpacing \(0028,0030\).*--pixel-spacing\) used instead"):
        xr = read_xray(dcm, pixel_spacing_mm=0.15)
    assert xr.view.pixel_spacing_mm == (0.15, 0.15) and xr.sources["pixel_spacing_mm"].startswith("option")


def test_a_valid_spacing_tag_wins_over_an_invalid_one_and_contradictions_stay_errors(tmp_path):
    dcm = _dicom(
        tmp_path / "i.dcm",
        _beams_eye(),
        Modality="DX",
        ViewPosition="AP",
        PatientOrientation=["L", "F"],
        ImagerPixelSpacing=[0.2, 0.3],
        PixelSpacing=[0, 0],
    )
    with pytest.warns(UserWarning, match=r"PixelSpacing \(0028,0030\) is 0.*ignored"):
        assert read_xray(dcm).view.pixel_spacing_mm == (0.2, 0.3)
    with pytest.raises(InputError, match=r"--pixel-spacing.*contradicts DICOM ImagerPixelSpacing"):
        read_xray(dcm, pixel_spacing_mm=0.15)


@pytest.mark.parametrize("slope", ["abcdefg", "0.00000"])
def test_a_non_numeric_or_zero_rescale_slope_is_an_input_error(tmp_path, slope):
    dcm = _dicom(
        tmp_path / "s.dcm", _beams_eye(), ViewPosition="AP", PatientOrientation=["L", "F"], RescaleSlope="1.23456"
    )
    data = dcm.read_bytes()
    assert data.count(b"1.23456 ") == 1
    dcm.write_bytes(data.replace(b"1.23456 ", slope.encode() + b" "))  # what no writer would store
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own warning about the value
        with pytest.raises(InputError, match="RescaleSlope"):
            read_xray(dcm)


# ----------------------------------------------------------------------------- command-line options


@pytest.mark.parametrize("name", ["--pixel-spacing", "--spacing"])
def test_reconstruct_names_the_pixel_spacing_like_simulate(tmp_path, name):
    res = run("reconstruct", EXAMPLES / "ap.png", EXAMPLES / "lat.png", "-o", tmp_path / "r", name, "abc")
    assert_user_error(res, "--pixel-spacing", "'abc'")


def test_first_seed_is_range_checked(tmp_path, tiny_prior_file):
    tiny_prior = tiny_prior_file()
    res = run(
        "evaluate",
        "-o",
        tmp_path / "e",
        "--prior",
        tiny_prior,
        "--methods",
        "mean",
        "--phantoms",
        2,
        "--first-seed",
        4294967295,
        "--detector",
        16,
    )
    assert_user_error(res, "--first-seed", "4294967294")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--methods", "mean", "--checkpoint", "mean=PRIOR"], ["--checkpoint", "'mean' takes no checkpoint"]),
        (
            [
                "--methods",
                "x2ct-cnn",
                "--checkpoint",
                "x2ct-cnn=DATA/baseline-x2ct-cnn.safetensors",
                "--checkpoint",
                "x2ct-cnn=DATA/baseline-x2ct-cnn-jitter.safetensors",
            ],
            ["--checkpoint", "'x2ct-cnn' is given twice"],
        ),
        (["--methods", "mean", "--levels", "L1"], ["--levels", "phantoms"]),
    ],
)
def test_evaluate_refuses_options_it_would_ignore(tmp_path, tiny_prior_file, extra, words):
    tiny_prior = tiny_prior_file()
    from xfit.baselines.infer import DATA_DIR

    extra = [x.replace("PRIOR", str(tiny_prior)).replace("DATA", str(DATA_DIR)) for x in extra]
    res = run("evaluate", "-o", tmp_path / "e", "--prior", tiny_prior, "--phantoms", 1, "--detector", 16, *extra)
    assert_user_error(res, *words)
    assert not (tmp_path / "e").exists()


def test_reconstruct_baseline_refuses_fit_only_options(tmp_path):
    args = ["reconstruct", EXAMPLES / "ap.png", EXAMPLES / "lat.png", "-o", tmp_path / "r", "--method", "x2ct-cnn"]
    res = run(*args, "--transform", "--refine-pose", "--steps", 5)
    assert_user_error(res, "--transform", "--refine-pose", "--steps", "x2ct-cnn")
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("xfit: error"))
    assert "--restarts" not in line and "--config" not in line
    assert_user_error(run(*args, "--restarts", 2), "--restarts")
    assert not (tmp_path / "r").exists()


def test_target_auto_refuses_a_constant_image_like_clicks(tmp_path, tiny_prior_file):
    tiny_prior = tiny_prior_file()
    for name, angle in (("ap", 0.0), ("lat", 90.0)):
        write_png16(tmp_path / f"{name}.png", np.full((200, 200), 30000, np.uint16))
        write_sidecar(tmp_path / f"{name}.json", dict(angle_deg=angle, pixel_spacing_mm=[1.0, 1.0]))
    images = [tmp_path / "ap.png", tmp_path / "lat.png"]
    for target in (["auto"], ["100,100", "100,100"]):
        res = run(
            "reconstruct",
            *images,
            "-o",
            tmp_path / "r",
            "--prior",
            tiny_prior,
            "--steps",
            1,
            "--restarts",
            1,
            "--quiet",
            *[a for t in target for a in ("--target", t)],
        )
        assert_user_error(res, "constant")
    assert not (tmp_path / "r").exists()
