"""Run folders that cannot lie (issue 31): ``cases.csv`` read strictly, damaged ``settings.json``
and ``cases.csv`` as one line, a lock for a second writer, condition folders named by their exact
value, and ``--force`` replacing a folder only once the new run is complete.

Each test failed on the code before the fix (see the comment on each); a tiny random prior and the
``mean`` method keep them fast."""

import csv
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from xfit.errors import InputError, OutputExistsError, XfitError
from xfit.studies import evaluate as ev
from xfit.studies.evaluate import EvalSpec, evaluate
from xfit.studies.sweeps import (
    Condition,
    angle_conditions,
    folder_conditions,
    noise_conditions,
    parse_condition,
    run_sweep,
    value_text,
    write_curve_csv,
)
from xfit.studies.sweeps import main as sweeps_main

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_prior_file):
    """A tiny prior, an untrained two-view tiny X2CT-CNN checkpoint and a finished run of ``mean``
    on two phantoms (copied by each test that changes it)."""
    from tiny_models import untrained_x2ct_checkpoint

    d = tmp_path_factory.mktemp("tiny")
    prior = tiny_prior_file(torch_seed=1, n=300)
    ckpt = untrained_x2ct_checkpoint(d / "x2ct.safetensors")
    spec = EvalSpec(prior=str(prior), methods=("mean",), phantoms=2, detector=32, pixel_spacing_mm=3.0, n_random=2)
    evaluate(spec, d / "run", progress=False)
    return {"prior": prior, "ckpt": ckpt, "spec": spec, "run": d / "run"}


def _copy(tiny, dst: Path) -> Path:
    shutil.copytree(tiny["run"], dst)
    return dst


def _table(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "cases.csv").open()))


def _record_cases(monkeypatch) -> list:
    """Record each ``evaluate_case(spec, index, methods)`` call as ``(index, methods)``."""
    calls, real = [], ev.evaluate_case
    monkeypatch.setattr(ev, "evaluate_case", lambda s, i, m: (calls.append((i, tuple(m))), real(s, i, m))[1])
    return calls


def _damage_rows(text: str, kind: str) -> str:
    """``cases.csv`` text (header, phantom0000 mean, phantom0001 mean) damaged one way."""
    lines = text.splitlines(keepends=True)
    if kind == "torn inside the row":  # the last row cut inside its third metric (0.9886 -> 0.9)
        cut = [i for i, ch in enumerate(lines[2]) if ch == ","][3] + 3
        return "".join(lines[:2]) + lines[2][:cut]
    if kind == "torn at its end":  # every field there, the last one short: no line end
        return text[:-2]
    fields = lines[1].rstrip("\n").split(",")
    if kind == "not a number":
        return "".join([lines[0], ",".join(fields[:2] + ["abc"] + fields[3:]) + "\n", lines[2]])
    if kind == "nan where the method fills it":
        return "".join([lines[0], ",".join(fields[:2] + ["nan"] + fields[3:]) + "\n", lines[2]])
    if kind == "duplicated":
        return text + ",".join(fields[:2] + ["99"] + fields[3:]) + "\n"
    if kind == "foreign case":
        return text + ",".join(["phantom0999"] + fields[1:]) + "\n"
    assert kind == "unknown method"
    return text + ",".join([fields[0], "magic"] + fields[2:]) + "\n"


# kind -> the case computed again on resume
DAMAGE = {
    "torn inside the row": [(1, ("mean",))],
    "torn at its end": [(1, ("mean",))],
    "not a number": [(0, ("mean",))],
    "nan where the method fills it": [(0, ("mean",))],
    "duplicated": [(0, ("mean",))],
    "foreign case": [],
    "unknown method": [],
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_row_is_computed_again_on_resume(tiny, tmp_path, monkeypatch, kind):
    # before: a torn, NaN or duplicated row counted as done, a foreign one stayed, "abc" was a traceback
    out = _copy(tiny, tmp_path / "run")
    good = _table(out)
    (out / "cases.csv").write_text(_damage_rows((out / "cases.csv").read_text(), kind))
    calls = _record_cases(monkeypatch)
    with pytest.warns(UserWarning, match="computed again") as seen:
        evaluate(tiny["spec"], out, progress=False)
    assert len([w for w in seen if "computed again" in str(w.message)]) == 1  # one warning line
    assert calls == DAMAGE[kind]
    now = _table(out)
    assert [(r["case"], r["method"]) for r in now] == [(r["case"], r["method"]) for r in good]
    for a, b in zip(now, good):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    text = (out / "summary.md").read_text()
    assert "(`mean`) | 2 |" in text and "99" not in text


@pytest.mark.parametrize(
    "kind", ["torn inside the row", "torn at its end", "not a number", "duplicated", "foreign case", "unknown method"]
)
def test_a_summary_refuses_a_damaged_row(tiny, tmp_path, capsys, kind):
    # before: the torn, duplicated or foreign row was averaged into summary.md ("abc": a traceback)
    out = _copy(tiny, tmp_path / "run")
    (out / "cases.csv").write_text(_damage_rows((out / "cases.csv").read_text(), kind))
    with pytest.raises(InputError, match="line"):
        ev.rewrite_summary(out)
    assert sweeps_main([str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xfit: error:") and "cases.csv" in err[0]


def test_a_missing_metric_column_is_not_measured_and_kept(tiny, tmp_path, monkeypatch):
    """Committed runs predate ``volume_view_ncc``: the column reads as not measured (an empty
    cell once rewritten), not as damage, and is never recomputed (a regression guard)."""
    out = _copy(tiny, tmp_path / "run")
    rows = _table(out)
    keep = [k for k in rows[0] if k != "volume_view_ncc"]
    with (out / "cases.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keep, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    calls = _record_cases(monkeypatch)
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            evaluate(dataclasses.replace(tiny["spec"], methods=("mean",)), out, progress=False)
    assert calls == []
    assert all(r["volume_view_ncc"] == "" for r in _table(out))


def test_committed_results_read_strictly_without_a_problem():
    for settings in sorted((REPO / "results").glob("**/settings.json")):
        meta, spec, rows = ev.read_run(settings.parent)
        assert rows and len(rows) == len({(r["case"], r["method"]) for r in rows}), settings
        assert (
            ev.parse_rows(settings.parent / "cases.csv", cases=ev.known_cases(spec), methods=meta["methods"])[1] == []
        )
    assert [c.name for c in folder_conditions(REPO / "results" / "noise")] == [
        "dose_1000",
        "dose_10000",
        "dose_100000",
        "dose_1e+06",
    ]


SETTINGS_DAMAGE = {
    "truncated": lambda t: t[: len(t) // 2],
    "a list": lambda t: "[]\n",
    "wrong types": lambda t: t.replace('"methods": [', '"methods": "mean", "x": [', 1),
    "a mistyped key field": lambda t: t.replace('"detector": 32', '"detector": "32"', 1),
    "a renamed key field": lambda t: t.replace('"detector":', '"detectors":', 1),
    "random bytes": lambda t: bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)),
}
CSV_DAMAGE = {
    "a renamed header": lambda t: t.replace("psnr_db", "psnr", 1),
    "random bytes": lambda t: bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8)),
    "empty": lambda t: "",
}


def _write(path: Path, data) -> None:
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)


@pytest.mark.parametrize(
    "file,kind", [("settings.json", k) for k in SETTINGS_DAMAGE] + [("cases.csv", k) for k in CSV_DAMAGE]
)
def test_a_damaged_run_folder_is_one_line_everywhere(tiny, tmp_path, capsys, file, kind):
    # before: JSONDecodeError, AttributeError, UnicodeDecodeError or TypeError tracebacks, a renamed
    # header read as NaN and averaged, and --reuse left a partial folder behind
    out = _copy(tiny, tmp_path / "run")
    damage = (SETTINGS_DAMAGE if file == "settings.json" else CSV_DAMAGE)[kind]
    _write(out / file, damage((out / file).read_text()))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises((InputError, OutputExistsError)):  # resume
        evaluate(tiny["spec"], out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before
    with pytest.raises(InputError):  # --reuse of it: nothing left behind
        evaluate(tiny["spec"], tmp_path / "new", progress=False, reuse=[out])
    assert not (tmp_path / "new").exists()
    assert sweeps_main([str(out)]) == 2  # the summary
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xfit: error:"), err
    (tmp_path / "sweep").mkdir()
    shutil.copytree(out, tmp_path / "sweep" / "dose_1000")
    assert sweeps_main([str(tmp_path / "sweep")]) == 2  # a sweep holding it
    assert capsys.readouterr().err.startswith("xfit: error:")
    if file == "settings.json":
        from xfit.studies.results import results_section

        with pytest.raises(InputError):
            results_section(tmp_path / "sweep")


def test_the_sweeps_entry_point_ends_in_one_line(tiny, tmp_path):
    # before: `python -m xfit.studies.sweeps` printed a JSONDecodeError traceback
    out = _copy(tiny, tmp_path / "run")
    (out / "settings.json").write_text('{"key": ')
    res = subprocess.run(
        [sys.executable, "-m", "xfit.studies.sweeps", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xfit: error:") and "settings.json" in lines[0]


def test_a_second_writer_is_refused(tiny, tmp_path, monkeypatch):
    # before: both writers ran on the same folder (and the rows of one were lost)
    out = tmp_path / "run"
    started, release, errors = threading.Event(), threading.Event(), []
    real = ev.evaluate_case

    def slow(spec, index, methods):
        if threading.current_thread() is not threading.main_thread():
            started.set()
            release.wait(60)
        return real(spec, index, methods)

    monkeypatch.setattr(ev, "evaluate_case", slow)

    def first():
        try:
            evaluate(tiny["spec"], out, progress=False)
        except BaseException as exc:  # noqa: BLE001 # pragma: no cover (reported below)
            errors.append(exc)

    t = threading.Thread(target=first)
    t.start()
    try:
        assert started.wait(60)
        with pytest.raises(OutputExistsError, match="being written by another xfit run"):
            evaluate(tiny["spec"], out, progress=False)
        with pytest.raises(OutputExistsError, match="being written"):
            evaluate(tiny["spec"], out, progress=False, force=True)
    finally:
        release.set()
        t.join(120)
    assert not errors and len(_table(out)) == 2
    assert not (out / ev.LOCK_NAME).exists()  # released


def test_a_stale_lock_is_taken_over_and_a_foreign_one_refused(tiny, tmp_path):
    # before: the lock file was not looked at (no warning)
    out = _copy(tiny, tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ev.LOCK_NAME).write_text(f"{dead.pid} {socket.gethostname()}\n")
    with pytest.warns(UserWarning, match="took over the lock"):
        evaluate(tiny["spec"], out, progress=False)
    assert not (out / ev.LOCK_NAME).exists()
    (out / ev.LOCK_NAME).write_text("12345 another-host\n")  # cannot tell whether it runs: refused
    with pytest.raises(OutputExistsError, match="pid 12345 on another-host"):
        evaluate(tiny["spec"], out, progress=False)
    assert (out / ev.LOCK_NAME).read_text() == "12345 another-host\n"


def test_condition_folders_round_trip_the_exact_value(tmp_path):
    # before: --dose 1000000,1000001 both went to dose_1e+06, --second-angle 90,90.0000001 to angle_90
    doses = noise_conditions([1e6, 1000001.0])
    assert [c.name for c in doses] == ["dose_1e+06", "dose_1000001"]
    angles = angle_conditions([90.0, 90.0000001])
    assert [c.name for c in angles] == ["angle_90", "angle_90.0000001"]
    for c in doses + angles:
        assert parse_condition(c.name).value == c.value
    for v in [
        0.0,
        -0.0,
        0.5,
        60.0,
        1e3,
        1e6,
        1e12,
        123456789.0,
        2.0**60,
        1 / 3,
        1e-7,
        45.00000000000001,
        *np.random.default_rng(0).uniform(0, 1e7, 50),
    ]:
        assert float(value_text(v)) == v
    write_curve_csv(
        tmp_path / "curve.csv",
        [
            {"axis": "photons", "value": v, "method": "mean", "metric": "ssim", "n": 1, "mean": 0.5, "std": 0.0}
            for v in (1e6, 1000001.0)
        ],
    )
    assert [r["value"] for r in csv.DictReader((tmp_path / "curve.csv").open())] == ["1e+06", "1000001"]


def test_conditions_sharing_a_folder_are_refused_before_any_work(tiny, tmp_path, monkeypatch):
    # before: the second condition ran into the first one's folder (OutputExistsError after work)
    calls = _record_cases(monkeypatch)
    conds = [
        Condition("dose_5", "photons", 5.0, (("photons", 5.0),)),
        Condition("dose_5", "photons", 5.0000001, (("photons", 5.0000001),)),
    ]
    spec = dataclasses.replace(tiny["spec"], phantoms=1)
    with pytest.raises(InputError, match="share the folder dose_5"):
        run_sweep(spec, conds, tmp_path / "sweep", progress=False)
    assert calls == [] and not (tmp_path / "sweep").exists()


def test_force_replaces_a_run_only_once_the_new_one_is_complete(tiny, tmp_path, monkeypatch):
    # before: --force deleted the old results at start-up, then failed on the extra file
    out = _copy(tiny, tmp_path / "run")
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    real = ev.evaluate_case

    def stop_at_second(spec, index, methods):
        if index == 1:
            raise KeyboardInterrupt
        return real(spec, index, methods)

    other = dataclasses.replace(tiny["spec"], phantoms=3)
    monkeypatch.setattr(ev, "evaluate_case", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        evaluate(other, out, progress=False, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # untouched, unlocked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary folder left
    monkeypatch.setattr(ev, "evaluate_case", real)
    evaluate(other, out, progress=False, force=True)
    assert len(_table(out)) == 3 and not (out / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("what", ["a wrong checkpoint", "an empty data folder", "one angle for a two-view net"])
def test_a_failed_check_leaves_nothing(tiny, tmp_path, what):
    # before: OUT/settings.json was written first, which then blocked the corrected command
    spec = tiny["spec"]
    if what == "a wrong checkpoint":
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(b"not a checkpoint" * 10)
        spec = dataclasses.replace(spec, methods=("mean", "x2ct-cnn"), checkpoints={"x2ct-cnn": str(bad)})
    elif what == "an empty data folder":
        (tmp_path / "ct").mkdir()
        spec = dataclasses.replace(spec, phantoms=None, data=str(tmp_path / "ct"))
    else:
        spec = dataclasses.replace(
            spec, methods=("x2ct-cnn",), checkpoints={"x2ct-cnn": str(tiny["ckpt"])}, angles=(0.0,)
        )
    with pytest.raises(XfitError) as info:
        evaluate(spec, tmp_path / "out" / "run", progress=False)
    if what == "one angle for a two-view net":
        assert "takes 2 views" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_study_refuses_a_folder_not_its_own(tiny, tmp_path, monkeypatch):
    # before: `xfit study` wrote its summary.md and curve.csv into an evaluate run folder
    out = _copy(tiny, tmp_path / "run")
    before = (out / "summary.md").read_bytes()
    calls = _record_cases(monkeypatch)
    with pytest.raises(OutputExistsError, match="not a sweep of photons"):
        run_sweep(tiny["spec"], noise_conditions([1e3]), out, progress=False)
    assert calls == [] and (out / "summary.md").read_bytes() == before and not (out / "dose_1000").exists()


def test_a_forced_study_leaves_no_stale_condition(tiny, tmp_path, monkeypatch):
    # before: --force kept the old condition folders, which came back into curve.csv
    spec = dataclasses.replace(tiny["spec"], phantoms=1)
    out = tmp_path / "sweep"
    run_sweep(spec, noise_conditions([1e3, 1e4]), out, progress=False)
    before = sorted(p.name for p in out.iterdir())
    real = ev.evaluate_case
    monkeypatch.setattr(ev, "evaluate_case", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # stopped: the old sweep is left as it was
        run_sweep(spec, noise_conditions([1e5]), out, force=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before
    monkeypatch.setattr(ev, "evaluate_case", real)
    run_sweep(spec, noise_conditions([1e5]), out, force=True, progress=False)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["dose_100000"]
    assert sweeps_main([str(out)]) == 0
    assert {r["value"] for r in csv.DictReader((out / "curve.csv").open())} == {"100000"}


def test_a_damaged_case_file_of_a_study_is_computed_again(tmp_path):
    # before: a torn caseNN.json was a JSONDecodeError traceback
    from xfit.studies.cases import run_cases

    def run_one(i, modes):
        return {"case": i, "modes": {m: {"x": float(i)} for m in modes}}

    run_cases(tmp_path, 2, run_one, modes=["a"])
    (tmp_path / "case01.json").write_text('{"case": 1, "modes": {"a": {"x"')
    with pytest.warns(UserWarning, match="case01.json is damaged"):
        results = run_cases(tmp_path, 2, run_one, modes=["a"])
    assert [r["modes"]["a"]["x"] for r in results] == [0.0, 1.0]
