"""The ``xfit`` command line as a package (issue 30): every command group is reachable, the
entry points that were ``python -m`` only are ``xfit`` subcommands under the same error contract
(one line ``xfit: error: ...``, exit 2), and the baselines' registry knows every method."""

from __future__ import annotations

import pytest
from cli_helpers import assert_user_error, run

COMMANDS = {
    "phantoms",
    "simulate",
    "train-prior",
    "sample",
    "evaluate-prior",
    "snapshot",
    "reconstruct",
    "train-baseline",
    "ship-baselines",
    "evaluate",
    "study",
    "merge",
    "summarize",
    "results",
}


def test_every_command_is_registered():
    from xfit.cli import main

    assert set(main.commands) == COMMANDS
    assert set(main.commands["study"].commands) == {"angles", "geometry", "noise", "style", "radiographs"}
    for name in sorted(COMMANDS):
        res = run(name, "--help")
        assert res.exit_code == 0 and "Usage:" in res.output, (name, res.output)


def test_snapshot_subcommand_speaks_one_line(tmp_path):
    assert_user_error(run("snapshot", tmp_path / "nowhere", "-o", tmp_path / "s.safetensors"), "no training state")


@pytest.mark.parametrize("args,word", [(["--methods", "x2ct-cnn,nope"], "nope"), (["--jitter", "abc"], "--jitter")])
def test_ship_baselines_subcommand_speaks_one_line(tmp_path, args, word):
    (tmp_path / "ct").mkdir()
    res = run("ship-baselines", tmp_path / "ct", "-o", tmp_path / "runs", "--data-dir", tmp_path / "d", *args)
    assert_user_error(res, word)
    assert not (tmp_path / "runs").exists()


def test_summarize_subcommand_speaks_one_line(tmp_path):
    assert_user_error(run("summarize", tmp_path / "missing"), "not found")
    (tmp_path / "empty").mkdir()
    assert_user_error(run("summarize", tmp_path / "empty"), "no condition folder")


def test_results_subcommand_checks_and_writes_the_readme(tmp_path):
    readme = tmp_path / "README.md"
    assert_user_error(run("results", "--readme", readme, "--results", tmp_path), "readme.md")
    readme.write_text("# x\n<!-- results:begin -->\nold\n<!-- results:end -->\n")
    (tmp_path / "results").mkdir()
    assert run("results", "--readme", readme, "--results", tmp_path / "results", "--check").exit_code == 1
    res = run("results", "--readme", readme, "--results", tmp_path / "results")
    assert res.exit_code == 0 and f"{readme} updated" in res.output
    assert "No committed result yet." in readme.read_text()
    assert run("results", "--readme", readme, "--results", tmp_path / "results", "--check").exit_code == 0


def test_radiograph_study_checks_its_modes_before_any_work(tmp_path):
    assert_user_error(run("study", "radiographs", "-o", tmp_path / "s", "--modes", "auto,nope"), "modes")
    assert not (tmp_path / "s").exists()


def test_the_registry_builds_every_baseline():
    from xfit.baselines.common import DEFAULT_ARCHS, METHODS, BaselineConfig
    from xfit.baselines.registry import MODELS, build_model

    assert set(MODELS) == set(METHODS) == set(DEFAULT_ARCHS)
    for method in METHODS:
        views = {"angles_deg": [0.0]} if method == "igcn" else {}
        net = build_model(
            BaselineConfig.from_dict({"method": method, "resolution": 64, "spacing_mm": 1.25, "views": views})
        )
        assert isinstance(net, MODELS[method])
