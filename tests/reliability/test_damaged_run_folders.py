"""The second hostile round of issue 31: inputs of the same kinds as the first round (damaged run
and sweep folders, options, a forced run over its own inputs) that still ended in a traceback, a
silent wrong result or a lost file after the first fixes.

Each test failed on the code before this round (commit 8f016c5; see the comment on each). A tiny
random prior, the ``mean`` method and one or two phantoms keep them fast."""

import csv
import dataclasses
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_user_error, run

from xfit.errors import InputError, OutputError
from xfit.studies import evaluate as ev
from xfit.studies.evaluate import EvalSpec, evaluate
from xfit.studies.sweeps import main as sweeps_main
from xfit.studies.sweeps import noise_conditions, parse_values, run_sweep

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_prior_file):
    """A tiny prior, a finished run of ``mean`` on two phantoms and a noise sweep (1e3, 1e4) of
    one phantom, each copied by the tests that change it."""
    d = tmp_path_factory.mktemp("hostile")
    prior = tiny_prior_file(torch_seed=1, n=300)
    spec = EvalSpec(prior=str(prior), methods=("mean",), phantoms=2, detector=32, pixel_spacing_mm=3.0, n_random=2)
    evaluate(spec, d / "run", progress=False)
    one = dataclasses.replace(spec, phantoms=1)
    run_sweep(one, noise_conditions([1e3, 1e4]), d / "sweep", progress=False)
    return {"prior": prior, "spec": spec, "one": one, "run": d / "run", "sweep": d / "sweep"}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _record_cases(monkeypatch) -> list:
    calls, real = [], ev.evaluate_case
    monkeypatch.setattr(ev, "evaluate_case", lambda s, i, m: (calls.append((i, tuple(m))), real(s, i, m))[1])
    return calls


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("xfit: warning")]
    assert len(err) == 1 and err[0].startswith("xfit: error:"), err
    return err[0]


# ----------------------------------------------------------------------------- settings.json


SETTINGS_DAMAGE = {
    # before: RecursionError (a traceback from every entry point)
    "nested too deeply": (lambda t: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    # before: the last value silently won (the summary said 64 px for a 32 px run)
    "a key given twice": (lambda t: t.replace('"detector": 32,', '"detector": 32, "detector": 64,', 1), "twice"),
    # before: the default (128 px) was reported in summary.md for the 32 px run
    "a key field missing": (lambda t: t.replace('"detector": 32,', "", 1), "no key.detector"),
    # before: accepted; a billion would build a billion case names (memory and time)
    "a phantom count out of range": (lambda t: t.replace('"phantoms": 2,', '"phantoms": 1000000,', 1), "out of range"),
}


@pytest.mark.parametrize("kind", list(SETTINGS_DAMAGE))
def test_a_damaged_settings_json_is_one_line(tiny, tmp_path, capsys, kind):
    damage, words = SETTINGS_DAMAGE[kind]
    out = _copy(tiny["run"], tmp_path / "run")
    text = (out / "settings.json").read_text()
    assert damage(text) != text
    (out / "settings.json").write_text(damage(text))
    before = (out / "summary.md").read_bytes()
    with pytest.raises(InputError, match=words):
        ev.rewrite_summary(out)
    assert sweeps_main([str(out)]) == 2
    assert words in _one_error_line(capsys)
    assert (out / "summary.md").read_bytes() == before


# ----------------------------------------------------------------------------- cases.csv


@pytest.mark.parametrize("column", ["psnr_db", "dice", "seconds"])
def test_a_cases_csv_lacking_a_metric_column_is_refused(tiny, tmp_path, capsys, column):
    # before: the cut column read as "not measured": summary.md showed "-" and a resume kept it so
    out = _copy(tiny["run"], tmp_path / "run")
    rows = list(csv.DictReader((out / "cases.csv").open()))
    with (out / "cases.csv").open("w", newline="") as fh:
        w = csv.DictWriter(
            fh, fieldnames=[k for k in rows[0] if k != column], lineterminator="\n", extrasaction="ignore"
        )
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(InputError, match=f"lacks the column.*{column}"):
        ev.rewrite_summary(out)
    with pytest.raises(InputError, match="lacks the column"):
        evaluate(tiny["spec"], out, progress=False)
    assert sweeps_main([str(out)]) == 2
    assert column in _one_error_line(capsys)


def test_a_nan_metric_as_computed_is_not_computed_again_on_every_resume(tiny, tmp_path, monkeypatch):
    # before: images of (almost) no photons are constant, their NCC is NaN as computed; each
    # resume dropped the row as damaged, warned, and computed the same NaN again (a fit: minutes)
    spec = dataclasses.replace(tiny["one"], photons=1e-300)
    out = tmp_path / "run"
    evaluate(spec, out, progress=False)
    row = next(csv.DictReader((out / "cases.csv").open()))
    assert row["view_ncc"] == "nan" and row["psnr_db"] != "nan"
    calls = _record_cases(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(spec, out, progress=False)
    assert calls == []


def test_a_summary_cell_over_fewer_cases_says_so(tiny, tmp_path):
    # before: the mean of the finite values was shown under n = every row, without a word
    out = _copy(tiny["run"], tmp_path / "run")
    rows = ev.read_rows(out / "cases.csv")
    rows[0]["psnr_db"] = math.inf  # identical volumes: PSNR is inf as computed
    ev.write_rows(out / "cases.csv", rows)
    text = ev.rewrite_summary(out).read_text()
    line = next(ln for ln in text.splitlines() if "(`mean`)" in ln)
    psnr_cell = line.split("|")[3]
    assert f"{rows[1]['psnr_db']:.1f} ± 0.0 (n=1 of 2)" in psnr_cell
    assert "(n=" not in line.split("|")[4]  # ssim: both cases


# ----------------------------------------------------------------------------- slices


SLICE_DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:50]),
    "pickled": lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
    "another shape": lambda p: np.save(p, np.zeros((2, 2), np.float16)),
    "another size": lambda p: np.save(p, np.zeros((3, 8, 8), np.float16)),
}


@pytest.mark.parametrize("which", ["mean", "truth"])
@pytest.mark.parametrize("kind", list(SLICE_DAMAGE))
def test_a_damaged_slice_file_is_made_again(tiny, tmp_path, kind, which):
    # before: np.load or imshow raised (ValueError, TypeError) on resume and on --reuse of the
    # folder, and --reuse left a half-written new folder behind
    out = _copy(tiny["run"], tmp_path / "run")
    good = np.load(ev.slice_path(out, "phantom0000", which))
    SLICE_DAMAGE[kind](ev.slice_path(out, "phantom0000", which))
    evaluate(tiny["spec"], tmp_path / "new", progress=False, reuse=[out])  # the damaged slice is not copied
    np.testing.assert_array_equal(np.load(ev.slice_path(tmp_path / "new", "phantom0000", which)), good)
    assert (tmp_path / "new" / "panel.png").is_file()
    evaluate(tiny["spec"], out, progress=False)  # resume: made again
    np.testing.assert_array_equal(np.load(ev.slice_path(out, "phantom0000", which)), good)
    assert ev.read_rows(out / "cases.csv") == ev.read_rows(tiny["run"] / "cases.csv")


# ----------------------------------------------------------------------------- sweep folders


def _assembled(tiny, tmp_path, kind: str) -> Path:
    out = _copy(tiny["sweep"], tmp_path / "sweep")
    if kind == "a condition folder renamed":  # the 1e4 run would be drawn at 1e5
        (out / "dose_10000").rename(out / "dose_100000")
    elif kind == "a plain run copied in":  # a noiseless run drawn at dose 1e5
        shutil.copytree(tiny["run"], out / "dose_100000")
        meta = json.loads((out / "dose_100000" / "settings.json").read_text())
        meta["key"]["photons"] = 1e5
        meta["key"]["phantoms"] = 2
        (out / "dose_100000" / "settings.json").write_text(json.dumps(meta))
    elif kind == "a run of other settings":  # two phantoms, n_random 3, beside one phantom, n_random 2
        shutil.rmtree(out / "dose_10000")
        evaluate(dataclasses.replace(tiny["spec"], photons=1e4, n_random=3), out / "dose_10000", progress=False)
    else:
        assert kind == "a condition of another sweep"
        shutil.copytree(out / "dose_1000", out / "angle_90")
    return out


@pytest.mark.parametrize(
    "kind",
    ["a condition folder renamed", "a plain run copied in", "a run of other settings", "a condition of another sweep"],
)
def test_a_sweep_folder_is_drawn_only_from_one_sweep(tiny, tmp_path, capsys, kind):
    # before: `python -m xfit.studies.sweeps` drew every condition folder at the value its name
    # says, whatever its run was made with, and mixed cases and settings into one curve
    out = _assembled(tiny, tmp_path, kind)
    before = (out / "curve.csv").read_bytes()
    assert sweeps_main([str(out)]) == 2
    line = _one_error_line(capsys)
    assert any(w in line for w in ("folder name says", "share every other setting", "several sweeps")), line
    assert (out / "curve.csv").read_bytes() == before
    assert sweeps_main([str(tiny["sweep"])]) == 0  # the sweep as written still draws


# ----------------------------------------------------------------------------- --force and inputs


def test_a_forced_run_never_replaces_a_folder_holding_its_prior(tiny, tmp_path):
    # before: `xfit evaluate --force --prior OUT/prior.safetensors -o OUT` ran, then deleted OUT
    # with the prior in it (settings.json then named a file that no longer exists)
    out = _copy(tiny["run"], tmp_path / "run")
    prior = Path(shutil.copy(tiny["prior"], out / "prior.safetensors"))
    spec = dataclasses.replace(tiny["spec"], prior=str(prior), phantoms=3)
    with pytest.raises(OutputError, match="holds the input"):
        evaluate(spec, out, progress=False, force=True)
    assert prior.is_file() and len(ev.read_rows(out / "cases.csv")) == 2
    sweep = _copy(tiny["sweep"], tmp_path / "sweep")
    prior2 = Path(shutil.copy(tiny["prior"], sweep / "prior.safetensors"))
    with pytest.raises(OutputError, match="holds the input"):
        run_sweep(
            dataclasses.replace(tiny["one"], prior=str(prior2)),
            noise_conditions([1e5]),
            sweep,
            force=True,
            progress=False,
        )
    assert prior2.is_file() and (sweep / "dose_1000").is_dir()


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "change,words",
    [
        ({"max_cases": 1}, "max_cases"),
        ({"layout": "verse"}, "layout"),
        ({"levels": "L1"}, "levels"),
        ({"phantoms": None, "data": "CT", "first_seed": 5}, "first_seed"),
        ({"phantoms": None, "data": "CT", "whole_body_fov_mm": 500.0}, "whole_body_fov_mm"),
    ],
)
def test_a_setting_that_does_not_apply_to_the_cases_is_refused(tiny, tmp_path, monkeypatch, change, words):
    # before: recorded in settings.json and ignored (--max-cases 1 with --phantoms 2 ran 2 cases)
    (tmp_path / "CT").mkdir()
    change = {k: (str(tmp_path / v) if k == "data" else v) for k, v in change.items()}
    calls = _record_cases(monkeypatch)
    with pytest.raises(InputError, match=f"{words}.*only appl"):
        evaluate(dataclasses.replace(tiny["spec"], **change), tmp_path / "out", progress=False)
    assert calls == [] and not (tmp_path / "out").exists()


def test_max_cases_with_phantoms_is_one_line_on_the_command_line(tiny, tmp_path):
    res = run(
        "evaluate",
        "--prior",
        tiny["prior"],
        "--methods",
        "mean",
        "--phantoms",
        2,
        "--detector",
        32,
        "--pixel-spacing",
        3,
        "--max-cases",
        1,
        "-o",
        tmp_path / "out",
        "--quiet",
    )
    assert_user_error(res, "--max-cases", "--data")
    assert not (tmp_path / "out").exists()


def test_the_sweeps_entry_point_gives_usage_errors_in_one_line(capsys):
    # before: argparse's two lines (usage, then "python -m xfit.studies.sweeps: error: ...")
    for argv in ([], ["--bogus", "x"]):
        with pytest.raises(SystemExit) as info:
            sweeps_main(argv)
        assert info.value.code == 2
        _one_error_line(capsys)


def test_a_range_of_more_than_1000_values_says_so():
    # before: "cannot read --dose '1:1e6:1': expected a list like ..." (the InputError was caught
    # as a ValueError and reworded)
    with pytest.raises(InputError, match="more than 1000 values"):
        parse_values("1:1e6:1", "--dose", 1.0, 1e12)
    assert parse_values("60:140:10", "--second-angle", -180, 180)[-1] == 140.0


# ----------------------------------------------------------------------------- training run folders


def test_a_run_config_or_log_line_nested_too_deeply_is_one_line(tmp_path):
    # before: RecursionError tracebacks from `train-baseline --resume` (config.json) and from
    # both trainers' resume (a log.jsonl line)
    from xfit.baselines.train import resolve_config
    from xfit.training import read_log

    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "config.json").write_text(deep)
    with pytest.raises(InputError, match="nested too deeply"):
        resolve_config("x2ct-cnn", None, tmp_path, resume=True)
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n' + deep + "\n")
    with pytest.warns(UserWarning, match="torn"):
        assert read_log(log) == [{"step": 1}]
    log.write_text('{"step": 1}\n' + deep + '\n{"step": 2}\n')
    with pytest.raises(InputError, match="line 2"):
        read_log(log)


def _live_lock(folder: Path) -> str:
    """A lock held by a process that runs (this one), as a second trainer would see it."""
    import os
    import socket

    text = f"{os.getpid()} {socket.gethostname()}\n"
    (folder / ".lock").write_text(text)
    return text


def test_a_second_trainer_on_a_run_folder_is_refused(tmp_path, ct_dir):
    # before: no lock; two `train-baseline` (or `train-prior`) on one folder both exited 0, their
    # log.jsonl interleaved (steps 1, 1, 2, 2, ...) and each overwrote the other's state
    from cli_helpers import train_baseline as _train_baseline
    from tiny_models import baseline_yaml as _baseline_yaml
    from tiny_models import tiny_prior_training as _prior_cfg

    from xfit.errors import OutputExistsError
    from xfit.prior import train as prior_train

    base = tmp_path / "baseline"
    assert _train_baseline(ct_dir, base, "--config", _baseline_yaml(tmp_path), "--max-steps", 2).exit_code == 0
    assert not (base / ".lock").exists()  # released
    held = _live_lock(base)
    before = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
    assert_user_error(_train_baseline(ct_dir, base, "--resume", "--max-steps", 3), "being written by another xfit run")
    assert {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()} == before
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _live_lock(fresh)
    assert_user_error(
        _train_baseline(ct_dir, fresh, "--config", _baseline_yaml(tmp_path), "--max-steps", 2), "being written"
    )
    assert sorted(p.name for p in fresh.iterdir()) == [".lock"]
    prior = tmp_path / "prior"
    prior_train.train(_prior_cfg(), ct_dir, prior, max_steps=2, progress=False, device="cpu", workers=1)
    assert not (prior / ".lock").exists()
    _live_lock(prior)
    log = (prior / "log.jsonl").read_text()
    with pytest.raises(OutputExistsError, match="being written"):
        prior_train.train(
            _prior_cfg(), ct_dir, prior, resume=True, max_steps=3, progress=False, device="cpu", workers=1
        )
    assert (prior / "log.jsonl").read_text() == log and (prior / ".lock").read_text() == held


def test_a_run_stopped_before_its_first_checkpoint_is_sent_to_force(tmp_path, ct_dir):
    # before: a full disk stopped a fresh `train-baseline` before its first checkpoint; the plain
    # command then said "use --resume", and --resume said "nothing to resume" (a dead end)
    from cli_helpers import train_baseline as _train_baseline
    from tiny_models import baseline_yaml as _baseline_yaml

    run_dir = tmp_path / "run"
    config = _baseline_yaml(tmp_path)
    assert _train_baseline(ct_dir, run_dir, "--config", config, "--max-steps", 2).exit_code == 0
    for name in ("state.safetensors", "baseline.safetensors"):  # what the full disk never wrote
        (run_dir / name).unlink()
    res = _train_baseline(ct_dir, run_dir, "--config", config, "--max-steps", 2)
    assert_user_error(res, "stopped before its first checkpoint", "--force")
    assert "--resume" not in res.stderr
    assert_user_error(_train_baseline(ct_dir, run_dir, "--resume", "--max-steps", 2), "nothing to resume", "--force")
    assert _train_baseline(ct_dir, run_dir, "--config", config, "--max-steps", 2, "--force").exit_code == 0
    assert (run_dir / "state.safetensors").is_file()


def test_a_crop_cache_index_holding_a_list_is_rebuilt_not_a_traceback(tmp_path):
    """``index.json`` holding ``[]`` gave an AttributeError traceback on --resume; a damaged cache
    is removed so that it is prepared again."""
    from xfit.prior.data import _open_cached

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "index.json").write_text("[]")
    assert _open_cached(cache) is None
    assert not cache.exists()
