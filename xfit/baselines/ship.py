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

``--finish`` instead continues each shipped network (``--methods`` may name variants such as
``xctrsnet@style``) for ``FINISH_IMAGES`` more images while its learning rate falls from the rate
it was trained at to 0 on a cosine, in ``RUNS/<method>[-<tag>]-finish/``, and replaces the shipped
file with the result (docs/baselines.md, "Finishing with a decaying learning rate").
"""

from __future__ import annotations

import copy
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


#: Images of the finish: a fifth of the shipped networks' 3000 (the decay phase of a
#: warmup-stable-decay schedule; docs/baselines.md).
FINISH_IMAGES = 600
#: The finish's seed, the same for every network.
FINISH_SEED = 3
#: The suffix of a finished network's config name (and its run folder).
FINISH_SUFFIX = "-finish"


def finish_config(cfg: BaselineConfig, where: str) -> BaselineConfig:
    """``cfg`` (a trained network's own config) set for its finish: ``FINISH_IMAGES`` images
    with the learning rate falling from ``training.lr`` to 0 on a cosine, no warm-up.

    Raises:
        InputError: a network already finished (its name ends in ``-finish``) or trained with a
            decaying rate already.
    """
    if cfg.name.endswith(FINISH_SUFFIX) or cfg.training.schedule != "constant":
        raise InputError(f"{where}: already finished ({cfg.name}, schedule {cfg.training.schedule})")
    out = copy.deepcopy(cfg)
    t = out.training
    t.steps = math.ceil(FINISH_IMAGES / t.batch_size)
    t.schedule, t.warmup_steps, t.seed = "cosine", 0, FINISH_SEED
    t.checkpoint_every = min(t.checkpoint_every, 50)
    out.name = f"{cfg.name}{FINISH_SUFFIX}"
    return out


def _finish_plan(name: str, runs: Path, data_dir: Path) -> tuple[str, Path, bool, BaselineConfig, Path]:
    """``(method, run, resume, config, shipped file)`` of one network's finish: ``name`` is a
    method or ``method@tag`` whose ``data_dir/baseline-<method>[-<tag>].safetensors`` exists."""
    from .common import is_tag, split_tag
    from .infer import shipped_checkpoint
    from .registry import load_model
    from .train import STATE_FILE, resolve_config

    method, tag = split_tag(name)
    if tag is not None and not is_tag(tag):
        raise InputError(f"{name}: a variant is METHOD@TAG, TAG of letters, digits, - and _")
    shipped = shipped_checkpoint(method, tag, data_dir)  # InputError for an unknown method
    stem = f"{method}-{tag}" if tag else method
    if not shipped.is_file():
        raise InputError(f"{name}: no shipped network {shipped}")
    run = runs / f"{stem}{FINISH_SUFFIX}"
    resume = (run / STATE_FILE).is_file()
    if resume:
        return method, run, True, resolve_config(method, None, run, True), shipped
    return method, run, False, finish_config(load_model(shipped, method).config, str(shipped)), shipped


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
    finish: bool = False,
) -> list[Path]:
    """Train every method to its config's steps (resuming a started run) and export it;
    with ``jitter``, the angle-jittered variants (``<method>-jitter``); with ``finish``, continue
    each shipped network (``methods`` may hold ``method@tag`` variants) by :func:`finish_config`
    from its shipped file and replace that file. Every name, config and the folder are checked
    before any training.

    Raises:
        InputError: an unknown or repeated method, a bad jitter, a missing CT folder, ``finish``
            with ``jitter``, a network to finish that is not shipped or already finished.
    """
    from .common import check_method
    from .infer import shipped_checkpoint
    from .train import STATE_FILE, train

    runs, data_dir = Path(runs), Path(data_dir)
    if len(set(methods)) != len(methods):
        raise InputError(f"methods {','.join(methods)}: give each method once")
    if finish and jitter is not None:
        raise InputError("--finish continues the shipped variants: name them (x2ct-cnn@jitter), not --jitter")
    if not finish:
        for m in methods:
            check_method(m)
    if not Path(ct_dir).is_dir():
        raise InputError(f"{ct_dir}: folder not found")
    plans = []
    if finish:
        plans = [_finish_plan(name, runs, data_dir) for name in methods]
    else:
        tag = None if jitter is None else "jitter"
        for m in methods:
            run = runs / (m if tag is None else f"{m}-{tag}")
            resume = (run / STATE_FILE).is_file()
            plans.append((m, run, resume, _config(m, run, resume, jitter), shipped_checkpoint(m, tag, data_dir)))
    out = []
    for m, run, resume, cfg, shipped in plans:
        start = None if resume or not finish else shipped
        train(cfg, ct_dir, run, resume=resume, workers=workers, progress=progress, init_from=start)
        out.append(export_half(run, m, shipped))
        click.echo(f"{run.name}: {out[-1]}")
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
@click.option(
    "--finish",
    is_flag=True,
    help=f"continue each shipped network (METHOD or METHOD@TAG) {FINISH_IMAGES} images with a cosine-decaying rate",
)
def ship_command(
    ct_dir: str, out: str, methods: str, jitter: str | None, data_dir: str, workers: int | None, finish: bool
) -> None:
    names = [m.strip() for m in methods.split(",")]
    ship(ct_dir, out, names, data_dir, workers, jitter=parse_jitter(jitter), finish=finish)


def main(argv: list[str] | None = None) -> None:
    """``python -m xfit.baselines.ship``: errors end as ``xfit``'s do (one line, exit code 2)."""
    ship_command.main(argv, prog_name="python -m xfit.baselines.ship")


if __name__ == "__main__":
    main()
