"""The third hostile round of issue 31 (``docs/reliability.md``): the two leftovers of round 2 and
what round 3 found. Each test failed on the code before its fix (commit d757aa0; see each
docstring). Tiny configs, CPU, one torch thread."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
from cli_helpers import assert_user_error
from cli_helpers import train_baseline as _train_baseline
from tiny_models import baseline_yaml as _baseline_yaml

from xfit.errors import OutputError

pytestmark = pytest.mark.usefixtures("one_thread")


def _full_disk_for(monkeypatch, module, name: str) -> None:
    """Files named ``name`` opened by ``module`` write to ``/dev/full`` (every write: ENOSPC, an
    OSError that names no file, as a full disk raises)."""
    real = builtins.open

    def fake(path, mode="r", *args, **kw):
        if Path(str(path)).name == name and "w" in mode:
            return real("/dev/full", mode, *args, **kw)
        return real(path, mode, *args, **kw)

    monkeypatch.setattr(module, "open", fake, raising=False)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_while_writing_the_crop_cache_names_the_cache(tmp_path, ct_dir, monkeypatch):
    """Before: ``xfit: error: No space left on device``, naming no path (the crop cache of
    ``train-baseline`` and ``train-prior`` is written with plain file writes)."""
    from xfit.prior import data
    from xfit.prior.data import DataSettings, load_training_set

    _full_disk_for(monkeypatch, data, "crops.f16")
    with pytest.raises(OutputError, match=r"cannot write the crop cache .*cache/data-\w+: No space left on device"):
        load_training_set(
            ct_dir, DataSettings(16, 5.0, (-1000.0, 1500.0)), cache_dir=tmp_path / "cache", progress=False, workers=1
        )
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no half-written entry
    run_dir = tmp_path / "run"
    res = _train_baseline(ct_dir, run_dir, "--config", _baseline_yaml(tmp_path), "--max-steps", 2)
    assert_user_error(res, "crop cache", str(run_dir / "cache"), "no space left on device")


def test_a_missing_config_json_on_resume_is_reported_missing(tmp_path, ct_dir):
    """Before: ``--resume`` of a run folder whose ``config.json`` is gone took the default config,
    and the state then failed as "does not match this architecture" (train-baseline) or "does not
    match this config" (train-prior): a settings mismatch, not the missing file."""
    from click.testing import CliRunner
    from tiny_models import tiny_prior_training as _prior_cfg

    from xfit.baselines.train import main as baseline_main
    from xfit.cli import main as xfit_main
    from xfit.prior import train as prior_train

    base = tmp_path / "baseline"
    config = _baseline_yaml(tmp_path)
    assert _train_baseline(ct_dir, base, "--config", config, "--max-steps", 2).exit_code == 0
    (base / "config.json").unlink()
    assert_user_error(_train_baseline(ct_dir, base, "--resume", "--max-steps", 3), "config.json is missing", "--config")
    res = _train_baseline(ct_dir, base, "--resume", "--config", config, "--max-steps", 3)  # the way out it names
    assert res.exit_code == 0, res.output
    assert (base / "config.json").is_file()  # written again: the state matched that config
    (base / "config.json").unlink()
    with pytest.raises(SystemExit) as exc:
        baseline_main(["x2ct-cnn", str(ct_dir), "--out", str(base), "--resume", "--max-steps", "3", "--workers", "1"])
    assert exc.value.code == 2

    prior = tmp_path / "prior"
    prior_train.train(_prior_cfg(), ct_dir, prior, max_steps=2, progress=False, device="cpu", workers=1)
    (prior / "config.json").unlink()
    res = CliRunner().invoke(xfit_main, ["train-prior", str(ct_dir), "-o", str(prior), "--resume", "--max-steps", "3"])
    assert_user_error(res, "config.json is missing")
    with pytest.raises(SystemExit) as exc:
        prior_train.main([str(ct_dir), "--out", str(prior), "--resume", "--max-steps", "3", "--workers", "1"])
    assert exc.value.code == 2


# ----------------------------------------------------------------------------- round 3: cases.csv cells


@pytest.fixture(scope="module")
def run_of_two(tmp_path_factory, tiny_prior_file):
    """A finished run of ``mean`` on two phantoms, and its shards 1/2 and 2/2."""
    from xfit.studies.evaluate import EvalSpec, evaluate

    d = tmp_path_factory.mktemp("round3")
    prior = tiny_prior_file(torch_seed=1, n=300)
    spec = EvalSpec(prior=str(prior), methods=("mean",), phantoms=2, detector=32, pixel_spacing_mm=3.0, n_random=2)
    evaluate(spec, d / "run", progress=False)
    for k in (1, 2):
        evaluate(spec, d / f"s{k}", progress=False, shard=(k, 2))
    return {"spec": spec, "run": d / "run", "s1": d / "s1", "s2": d / "s2"}


def _set_cell(folder: Path, column: str, value: str, line: int = 1) -> None:
    import csv as csv_mod
    import io

    rows = list(csv_mod.reader(io.StringIO((folder / "cases.csv").read_text())))
    rows[line][rows[0].index(column)] = value
    (folder / "cases.csv").write_text("".join(",".join(r) + "\n" for r in rows))


def _table(folder: Path) -> list[dict]:
    import csv as csv_mod

    return [{k: v for k, v in r.items() if k != "seconds"} for r in csv_mod.DictReader((folder / "cases.csv").open())]


# a value no computation gives: before, kept as done on resume (and, finite, averaged into summary.md)
IMPOSSIBLE = [
    ("dice", "1e999"),
    ("ssim", "inf"),
    ("ssim", "2"),
    ("mae_hu", "-5"),
    ("psnr_db", "-inf"),
    ("third_view_ncc", "7"),
    ("seconds", "-1"),
    ("freq_dist", "3"),
]


@pytest.mark.parametrize("column,value", IMPOSSIBLE)
def test_a_value_a_metric_cannot_take_is_damage(run_of_two, tmp_path, capsys, column, value):
    """Before (d757aa0): ``dice 1e999`` (inf) or ``ssim 2`` was read as a sound row: a resume kept
    it as done, and a finite one (``ssim 2``, ``mae_hu -5``) was averaged into the summary."""
    import shutil

    from xfit.studies import evaluate as ev
    from xfit.studies.sweeps import main as sweeps_main

    out = tmp_path / "run"
    shutil.copytree(run_of_two["run"], out)
    good = _table(out)
    _set_cell(out, column, value)
    assert sweeps_main([str(out)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "line 2" in err[0] and column in err[0], err
    with pytest.warns(UserWarning, match="computed again"):
        ev.evaluate(run_of_two["spec"], out, progress=False)
    assert _table(out) == good


def test_values_a_metric_can_take_stay(run_of_two, tmp_path, recwarn):
    """inf PSNR (identical volumes), inf HD95 (one mask empty), -8 frequency distance and an NCC of
    -1 are values the metrics give: kept, not recomputed."""
    import shutil

    from xfit.studies import evaluate as ev

    out = tmp_path / "run"
    shutil.copytree(run_of_two["run"], out)
    for column, value in (("psnr_db", "inf"), ("hd95_mm", "inf"), ("freq_dist", "-8"), ("view_ncc", "-1")):
        _set_cell(out, column, value)
    calls, real = [], ev.evaluate_case
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ev, "evaluate_case", lambda s, i, m: (calls.append(i), real(s, i, m))[1])
        ev.evaluate(run_of_two["spec"], out, progress=False)
    assert calls == [] and _table(out)[0]["psnr_db"] == "inf"
    ev.rewrite_summary(out)


def test_an_empty_cell_where_every_run_writes_one_is_damage(run_of_two, tmp_path, capsys):
    """Before (d757aa0): an empty ``ssim`` cell read as "not measured": a resume kept the row as
    done, so the run lacked that value for good, and a merge took the shard's row as finished."""
    import shutil

    from xfit.studies import evaluate as ev

    out = tmp_path / "run"
    shutil.copytree(run_of_two["run"], out)
    good = _table(out)
    _set_cell(out, "ssim", "")
    with pytest.warns(UserWarning, match="computed again"):
        ev.evaluate(run_of_two["spec"], out, progress=False)
    assert _table(out) == good
    shard = tmp_path / "s2"
    shutil.copytree(run_of_two["s2"], shard)
    _set_cell(shard, "ssim", "")
    res = __import__("cli_helpers").run("merge", run_of_two["s1"], shard, "-o", tmp_path / "merged")
    assert_user_error(res, "not finished")
    assert not (tmp_path / "merged").exists()


# ----------------------------------------------------------------------------- round 3: lock files


@pytest.mark.parametrize(
    "content", [bytes(range(128, 256)) + b"\n\x00 \x1b[2J", b"\xff\xfe", b"12 host with spaces", b"abc def"]
)
def test_a_lock_file_no_xfit_run_wrote_is_named_not_printed(tmp_path, content):
    """Before (d757aa0): a damaged ``.lock`` was printed as its holder, ``(pid \\ufffd\\ufffd... on ?)``:
    random bytes, escape codes and all, on the user's terminal."""
    from xfit.errors import OutputExistsError
    from xfit.io import folder_lock

    (tmp_path / ".lock").write_bytes(content)
    with pytest.raises(OutputExistsError) as exc:
        with folder_lock(tmp_path):
            pass
    msg = str(exc.value)
    assert "no xfit run wrote" in msg and str(tmp_path / ".lock") in msg
    assert msg.isprintable() and msg.isascii()
    assert (tmp_path / ".lock").read_bytes() == content  # not taken over: it may be another tool's
