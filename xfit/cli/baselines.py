"""``xfit train-baseline`` and ``xfit ship-baselines``: the feed-forward baselines.

``train-baseline`` trains one method (several processes: ``torchrun -m xfit.baselines.train``);
``ship-baselines`` (:mod:`xfit.baselines.ship`, also ``python -m xfit.baselines.ship``) retrains
the shipped checkpoints. Both raise :class:`xfit.errors.XfitError` and never exit themselves: the
``xfit`` group turns errors into one line ``xfit: error: ...`` and exit code 2.
"""

from __future__ import annotations

import click

from ..baselines.methods import METHODS
from ..baselines.ship import ship_command
from .training import check_training_request, collection_options, run_options

#: ``python -m xfit.baselines.ship`` as an ``xfit`` subcommand.
ship_baselines = ship_command


@click.command("train-baseline")
@click.argument("name", type=click.Choice(METHODS))
@click.argument("ct_dir", type=click.Path(file_okay=False))
@click.option(
    "-o", "--out", required=True, type=click.Path(file_okay=False), help="run folder (state, baseline.safetensors, log)"
)
@click.option(
    "--config",
    "config_name",
    default=None,
    help="config: a name (x2ct-cnn, x2ct-gan, ear, transvert, xctrsnet, igcn) or a YAML file "
    "[default: xfit/configs/baseline-NAME.yaml, or the run's own with --resume]",
)
@collection_options
@click.option(
    "--amp",
    type=click.Choice(["auto", "bf16", "off"]),
    default="auto",
    show_default=True,
    help="bfloat16 autocast (auto: on; bf16 measured 1.8-2.0x faster on this CPU, docs/baselines.md)",
)
@click.option("--resume", is_flag=True, help="continue bit-for-bit from OUT/state.safetensors")
@click.option(
    "--init-from",
    type=click.Path(dir_okay=False),
    default=None,
    help="fine-tune: start from this checkpoint of the same method and architecture (e.g. "
    "xfit/data/baseline-NAME.safetensors) instead of random weights",
)
@click.option("--force", is_flag=True, help="restart a started run (keeps the data cache)")
@run_options
@click.option("--quiet", is_flag=True, help="no progress bar")
def train_baseline(
    name,
    ct_dir,
    out,
    config_name,
    layout,
    levels,
    masks_dir,
    class_map,
    max_outside,
    workers,
    amp,
    resume,
    init_from,
    force,
    device,
    max_steps,
    quiet,
) -> None:
    """Train a feed-forward baseline (x2ct-cnn, x2ct-gan, ear, transvert, xctrsnet, igcn) on X-rays simulated
    from the prior's crops of a CT collection (several processes: torchrun -m xfit.baselines.train)."""
    from pathlib import Path

    from ..baselines.train import MODEL_FILE, resolve_config, train

    check_training_request(ct_dir, out, masks_dir=masks_dir, levels=levels, device=device)
    cfg = resolve_config(name, config_name, out, resume)
    summary = train(
        cfg,
        ct_dir,
        out,
        masks_dir=masks_dir,
        layout=layout,
        class_map=class_map,
        levels=levels,
        max_outside=max_outside,
        workers=workers,
        amp=amp,
        resume=resume,
        force=force,
        device=device,
        max_steps=max_steps,
        progress=not quiet,
        init_from=init_from,
    )
    click.echo(
        f"trained {name} {summary.get('steps', 0)} steps ({summary.get('images', 0)} images) on "
        f"{summary['examples']} examples, {summary.get('img_per_s', 0):.2f} img/s on {summary['device']}; "
        f"network: {Path(out) / MODEL_FILE}"
    )
    for item, why in summary.get("skipped", []):
        click.echo(f"skipped {item}: {why}")
