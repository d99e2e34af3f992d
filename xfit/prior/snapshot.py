"""Compact resumable snapshots of a prior's training run, and the ``snapshot`` command
(``xfit snapshot RUN -o FILE``, ``python -m xfit.prior.train snapshot RUN -o FILE``).

Torch loads only when a snapshot is written, so that ``xfit --help`` stays quick; the trainer
(:mod:`xfit.prior.train`) imports this module, never the reverse.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..console import XfitCommand
from ..errors import CheckpointError, InputError

if TYPE_CHECKING:
    from .config import PriorConfig

#: The prior a run folder exports (next to ``state.safetensors``, :data:`xfit.training.STATE_FILE`).
PRIOR_FILE = "prior.safetensors"


def run_config(path: Path) -> PriorConfig:
    """The config a run folder was started with (its ``config.json``).

    Raises:
        InputError: naming the file.
    """
    from ..io import parse_json_strict
    from .config import PriorConfig

    try:
        return PriorConfig.from_dict(parse_json_strict(path.read_text(errors="replace")))
    except ValueError as exc:
        raise InputError(f"{path}: cannot read the run's config: {exc}") from exc


def snapshot_run(run_dir: str | Path, out: str | Path, *, dtype: str = "float16", force: bool = False) -> Path:
    """Write a compact resumable snapshot of a run's last checkpoint (``state.safetensors``).

    Args:
        run_dir: a run folder (``config.json`` and ``state.safetensors``).
        out: the snapshot file (e.g. ``xfit/data/prior-64.state.safetensors``).
        dtype: ``float16`` or ``bfloat16``.
    Raises:
        InputError: no training state or config in ``run_dir``.
        CheckpointError: a corrupt state file.
    """
    from ..training import STATE_FILE
    from .checkpoint import load_prior, load_training_state, save_snapshot

    run_dir = Path(run_dir)
    if not (run_dir / STATE_FILE).is_file() or not (run_dir / "config.json").is_file():
        raise InputError(f"{run_dir} holds no training state (needs {STATE_FILE} and config.json)")
    cfg = run_config(run_dir / "config.json")
    tensors, meta = load_training_state(run_dir / STATE_FILE)
    try:
        world, step = int(meta.get("world_size", 1)), int(meta["step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{run_dir / STATE_FILE}: its metadata holds no valid step") from exc
    summary = {}
    if (run_dir / PRIOR_FILE).is_file():
        try:
            summary = dict(load_prior(run_dir / PRIOR_FILE).meta.get("training", {}))
        except CheckpointError:
            summary = {}
    nets = {k: v for k, v in tensors.items() if k.split(".")[0] in ("G", "G_ema", "D")}
    return save_snapshot(
        out,
        nets,
        step=step,
        kimg=step * cfg.training.batch_size * world / 1000,
        config=cfg,
        world_size=world,
        dtype=dtype,
        summary=summary,
        force=force,
    )


@click.command("snapshot", cls=XfitCommand, help="Compact resumable snapshot of a run (G, G_ema, D in half precision).")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="the snapshot file")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16"]), default="float16", show_default=True)
@click.option("--force", is_flag=True, help="replace an existing snapshot")
def snapshot_cli(run_dir: str, out: str, dtype: str, force: bool) -> None:
    """:func:`snapshot_run` under xfit's error contract (one line ``xfit: error: ...``, exit 2)."""
    path = snapshot_run(run_dir, out, dtype=dtype, force=force)
    click.echo(f"snapshot: {path} ({path.stat().st_size / 1e6:.1f} MB)")
