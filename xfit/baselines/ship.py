"""Retrain the shipped baseline checkpoints in one command.

``python -m xfit.baselines.ship CT_DIR -o RUNS [--methods x2ct-cnn,...] [--jitter 0,50] [--data-dir DIR]``

trains (or resumes, bit for bit) each method with its default config in ``RUNS/<method>/`` and
writes a float16 copy of each finished network to ``DIR/baseline-<method>.safetensors`` (default:
``xfit/data/``, where ``xfit reconstruct --method`` and ``xfit evaluate`` find it). The copy's
metadata keeps the training summary plus the run's wall time from its log. ``--jitter J`` (one
number, or one per view) trains the same configs with ``views.angle_jitter_deg = J`` into
``RUNS/<method>-jitter/`` and ships ``baseline-<method>-jitter.safetensors``, which ``xfit
evaluate`` runs as ``<method>@jitter``. The shipped checkpoints were made with ``CT_DIR`` = the
prior's training collection (docs/measurements.md, "The shipped prior"):
``xfit phantoms train72 -n 800 --size 72 --seed 1000``; the jittered ones with ``--jitter 0,50``
(the AP at 0 degrees, the second view anywhere in 40..140).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..console import XfitCommand
from ..errors import InputError
from .methods import DATA_DIR, METHODS

if TYPE_CHECKING:  # the networks load only when a command runs, so ``xfit --help`` stays quick
    from .common import BaselineConfig


def run_wall_seconds(run_dir: Path) -> float | None:
    """Seconds between the first and the last line of ``run_dir/log.jsonl`` (None without one)."""
    from ..training import read_log

    log = run_dir / "log.jsonl"
    if not log.is_file():
        return None
    times = [rec.get("time") for rec in read_log(log)]
    times = [t for t in times if isinstance(t, (int, float))]
    return float(times[-1] - times[0]) if len(times) > 1 else None


def export_half(run_dir: Path, method: str, out: Path) -> Path:
    """``run_dir/baseline.safetensors`` as a float16 copy at ``out`` (replaced), wall time added."""
    from .common import save_model
    from .registry import load_model
    from .train import MODEL_FILE

    b = load_model(run_dir / MODEL_FILE, method)
    summary = {**b.meta.get("training", {}), "wall_seconds": run_wall_seconds(run_dir)}
    return save_model(out, b.model, b.config, summary, half=True, force=True)


def _config(method: str, run: Path, resume: bool, jitter: float | list[float] | None) -> BaselineConfig:
    """The config of one method's run: its own when resumed, else the default (jittered)."""
    from .train import resolve_config

    cfg = resolve_config(method, None, run, resume)
    if jitter is not None and not resume:
        cfg.views.angle_jitter_deg = jitter
        cfg.name = f"{cfg.name}-jitter"
        cfg.views.jitters()  # InputError on a malformed jitter
    return cfg


def ship(
    ct_dir: str | Path,
    runs: str | Path,
    methods: Sequence[str] = METHODS,
    data_dir: str | Path = DATA_DIR,
    workers: int | None = None,
    progress: bool = True,
    jitter: float | list[float] | None = None,
) -> list[Path]:
    """Train every method to its config's steps (resuming a started run) and export it;
    with ``jitter``, the angle-jittered variants (``<method>-jitter``). Every method, config and
    the folder are checked before any training.

    Raises:
        InputError: an unknown or repeated method, a bad jitter, a missing CT folder.
    """
    from .common import check_method
    from .train import STATE_FILE, train

    runs, data_dir = Path(runs), Path(data_dir)
    suffix = "" if jitter is None else "-jitter"
    for m in methods:
        check_method(m)
    if len(set(methods)) != len(methods):
        raise InputError(f"methods {','.join(methods)}: give each method once")
    if not Path(ct_dir).is_dir():
        raise InputError(f"{ct_dir}: folder not found")
    plans = []
    for m in methods:
        run = runs / f"{m}{suffix}"
        resume = (run / STATE_FILE).is_file()
        plans.append((m, run, resume, _config(m, run, resume, jitter)))
    out = []
    for m, run, resume, cfg in plans:
        train(cfg, ct_dir, run, resume=resume, workers=workers, progress=progress)
        out.append(export_half(run, m, data_dir / f"baseline-{m}{suffix}.safetensors"))
        click.echo(f"{m}{suffix}: {out[-1]}")
    return out


def parse_jitter(text: str | None) -> float | list[float] | None:
    """``"3"`` -> 3.0, ``"0,50"`` -> [0.0, 50.0], None -> None.

    Raises:
        InputError: a value that is not a finite number.
    """
    if text is None:
        return None
    try:
        vals = [float(x) for x in text.split(",")]
    except ValueError:
        vals = [math.nan]
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"--jitter must be a number of degrees, or one per view (0,50), got {text!r}")
    return vals[0] if len(vals) == 1 else vals


@click.command("ship", cls=XfitCommand, help=__doc__.splitlines()[0])
@click.argument("ct_dir", type=click.Path(file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="folder of the run folders")
@click.option("--methods", default=",".join(METHODS), show_default=True, help="comma separated")
@click.option("--jitter", default=None, help="angle jitter in degrees: one number, or one per view (0,50)")
@click.option("--data-dir", default=str(DATA_DIR), show_default=True, help="where the float16 copies go")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="processes preparing the crops")
def ship_command(ct_dir: str, out: str, methods: str, jitter: str | None, data_dir: str, workers: int | None) -> None:
    ship(ct_dir, out, [m.strip() for m in methods.split(",")], data_dir, workers, jitter=parse_jitter(jitter))


def main(argv: list[str] | None = None) -> None:
    """``python -m xfit.baselines.ship``: errors end as ``xfit``'s do (one line, exit code 2)."""
    ship_command.main(argv, prog_name="python -m xfit.baselines.ship")


if __name__ == "__main__":
    main()
