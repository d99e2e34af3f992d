"""The third hostile round of issue 31 (``docs/reliability.md``): the two leftovers of round 2 and
what round 3 found. Each test failed on the code before its fix (commit d757aa0; see each
docstring). Tiny configs, CPU, one torch thread."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from xfit.errors import OutputError

from cli_helpers import assert_user_error
from test_entry_points import _baseline_yaml, _train_baseline

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
        load_training_set(ct_dir, DataSettings(16, 5.0, (-1000.0, 1500.0)), cache_dir=tmp_path / "cache", progress=False, workers=1)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no half-written entry
    run_dir = tmp_path / "run"
    res = _train_baseline(ct_dir, run_dir, "--config", _baseline_yaml(tmp_path), "--max-steps", 2)
    assert_user_error(res, "crop cache", str(run_dir / "cache"), "no space left on device")


def test_a_missing_config_json_on_resume_is_reported_missing(tmp_path, ct_dir):
    """Before: ``--resume`` of a run folder whose ``config.json`` is gone took the default config,
    and the state then failed as "does not match this architecture" (train-baseline) or "does not
    match this config" (train-prior): a settings mismatch, not the missing file."""
    from test_entry_points import _prior_cfg
    from xfit.baselines.train import main as baseline_main
    from xfit.cli import main as xfit_main
    from xfit.prior import train as prior_train

    from click.testing import CliRunner

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
