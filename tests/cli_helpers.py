"""Helpers shared by the tests that drive the CLI or need a tiny random prior."""

from pathlib import Path

import torch
from click.testing import CliRunner

from xfit.cli import main
from xfit.prior.checkpoint import compute_w_stats, save_prior
from xfit.prior.config import load_config
from xfit.prior.networks import build_generator


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


def save_tiny_prior(path: Path, *, torch_seed: int = 0, n: int = 200) -> Path:
    """An untrained prior of the tiny config (32³ at 2.5 mm), its w statistics from ``n`` samples."""
    torch.manual_seed(torch_seed)
    cfg = load_config("tiny")
    G = build_generator(cfg).eval()
    save_prior(path, G, *compute_w_stats(G, n=n, seed=0), cfg, {"note": "random init, for tests"}, cfg.label_names)
    return path


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
    return CliRunner().invoke(baseline_cli(), ["train-baseline", "x2ct-cnn", str(ct_dir), "-o", str(out), "--quiet",
                                               "--workers", "1", *[str(a) for a in args]])
