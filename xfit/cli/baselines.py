"""``xfit train-baseline`` and ``xfit ship-baselines``: the feed-forward baselines.

``train-baseline`` trains one method (several processes: ``torchrun -m xfit.baselines.train``);
``ship-baselines`` (:mod:`xfit.baselines.ship`, also ``python -m xfit.baselines.ship``) retrains
the shipped checkpoints. Both raise :class:`xfit.errors.XfitError` and never exit themselves: the
``xfit`` group turns errors into one line ``xfit: error: ...`` and exit code 2.
"""

from __future__ import annotations

import click

from ..baselines.common import METHODS
from ..baselines.ship import ship_command

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
@click.option(
    "--layout",
    type=click.Choice(["xfit", "verse", "ctspine1k", "totalsegmentator", "mixed"]),
    default=None,
    help="collection layout [default: detected], as for train-prior",
)
@click.option("--levels", default=None, help="vertebrae to train on, e.g. T10-L5 [default: all]")
@click.option(
    "--masks",
    "masks_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="folder of vertebra masks under the CTs' names",
)
@click.option(
    "--class-map", default=None, help="class map of multilabel masks not in the VerSe numbering (as for train-prior)"
)
@click.option(
    "--max-outside",
    type=click.FloatRange(0.0, 1.0),
    default=0.05,
    show_default=True,
    help="largest fraction of a crop allowed outside its scan",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=None,
    help="processes preparing the crops [default: one per CPU core]",
)
@click.option(
    "--amp",
    type=click.Choice(["auto", "bf16", "off"]),
    default="auto",
    show_default=True,
    help="bfloat16 autocast (auto: on; bf16 measured 1.8-2.0x faster on this CPU, docs/baselines.md)",
)
@click.option("--resume", is_flag=True, help="continue bit-for-bit from OUT/state.safetensors")
@click.option("--force", is_flag=True, help="restart a started run (keeps the data cache)")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
@click.option("--max-steps", type=click.IntRange(1, 10**9), default=None, help="stop after this many steps in total")
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
    force,
    device,
    max_steps,
    quiet,
) -> None:
    """Train a feed-forward baseline (x2ct-cnn, x2ct-gan, ear, transvert, xctrsnet, igcn) on X-rays simulated
    from the prior's crops of a CT collection (several processes: torchrun -m xfit.baselines.train)."""
    from pathlib import Path

    from ..baselines.train import MODEL_FILE, resolve_config, train
    from ..errors import InputError
    from ..io import check_device, check_output_path
    from ..levels import parse_levels

    if device is not None:
        check_device(device)
    if levels is not None:
        parse_levels(levels)
    check_output_path(out)
    for folder in (ct_dir, masks_dir):
        if folder is not None and not Path(folder).is_dir():
            raise InputError(
                f"{folder}: folder not found" if not Path(folder).exists() else f"{folder} is not a folder"
            )
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
    )
    click.echo(
        f"trained {name} {summary.get('steps', 0)} steps ({summary.get('images', 0)} images) on "
        f"{summary['examples']} examples, {summary.get('img_per_s', 0):.2f} img/s on {summary['device']}; "
        f"network: {Path(out) / MODEL_FILE}"
    )
    for item, why in summary.get("skipped", []):
        click.echo(f"skipped {item}: {why}")
