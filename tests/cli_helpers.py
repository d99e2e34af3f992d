"""Helpers shared by the tests that drive the command line."""

from pathlib import Path

from click.testing import CliRunner

from xfit.cli import main


def run(*args):
    """Invoke ``xfit`` in-process with the arguments as strings."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_user_error(res, *words):
    """Exit code 2 and exactly one ``xfit: error:`` line (besides warnings) containing ``words``."""
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("xfit: warning")]
    assert len(lines) == 1 and lines[0].startswith("xfit: error:"), res.stderr
    assert "Traceback" not in res.output
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]


def baseline_cli():
    """A click group holding only ``train-baseline``, with xfit's error handling."""
    import click

    from xfit.cli.baselines import train_baseline
    from xfit.console import XfitGroup

    @click.group(cls=XfitGroup)
    def group():
        pass

    group.add_command(train_baseline)
    return group


def train_baseline(ct_dir: Path, out: Path, *args):
    """``xfit train-baseline x2ct-cnn CT_DIR -o OUT ARGS`` in process."""
    return CliRunner().invoke(
        baseline_cli(),
        [
            "train-baseline",
            "x2ct-cnn",
            str(ct_dir),
            "-o",
            str(out),
            "--quiet",
            "--workers",
            "1",
            *[str(a) for a in args],
        ],
    )
