"""What ``train-prior`` and ``train-baseline`` share: the CT collection's options, the run's
device and step limit, and the checks made before any work."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..console import FiniteFloat
from ..prior.datasets import LAYOUTS as COLLECTION_LAYOUTS

#: ``--layout`` choices: each layout of :mod:`xfit.prior.datasets`, or ``mixed`` (one per subfolder).
LAYOUTS = (*COLLECTION_LAYOUTS, "mixed")


def collection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--layout --levels --masks --class-map --max-outside --workers``: how the vertebra-centred
    crops are read from a CT collection (the same for the prior and every baseline)."""
    options = [
        click.option(
            "--layout",
            type=click.Choice(LAYOUTS),
            default=None,
            help="collection layout [default: detected]; see docs/training.md",
        ),
        click.option(
            "--levels",
            default=None,
            help="vertebrae to train on: names, ranges or lists, e.g. T10-L5 or L1,L3 [default: all]",
        ),
        click.option(
            "--masks",
            "masks_dir",
            default=None,
            type=click.Path(file_okay=False),
            help="folder of vertebra masks under the CTs' names (default: the layout's own)",
        ),
        click.option(
            "--class-map",
            default=None,
            help="class map of multilabel masks not in the VerSe numbering: totalseg-v1, totalseg-v2 or a "
            "JSON file {value: structure} [default: the file's header]",
        ),
        click.option(
            "--max-outside",
            type=FiniteFloat(0.0, 1.0),
            default=0.05,
            show_default=True,
            help="largest fraction of a crop allowed outside its scan",
        ),
        click.option(
            "--workers",
            type=click.IntRange(1, 256),
            default=None,
            help="processes preparing the crops [default: one per CPU core]",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--device --max-steps``."""
    f = click.option(
        "--max-steps", type=click.IntRange(1, 10**9), default=None, help="stop after this many steps in total"
    )(f)
    return click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")(f)


def check_training_request(
    ct_dir: str, out: str, *, masks_dir: str | None, levels: str | None, device: str | None
) -> None:
    """The checks of a training command before any work: the device, the levels, the run folder's
    path, and that the collection (and masks) are folders.

    Raises:
        InputError: the first of them that fails.
    """
    from ..errors import InputError
    from ..io import check_device, check_output_path
    from ..levels import parse_levels

    if device is not None:
        check_device(device)
    if levels is not None:
        parse_levels(levels)  # a bad level is one line, before any work
    check_output_path(out)
    for folder in (ct_dir, masks_dir):
        if folder is not None and not Path(folder).is_dir():
            raise InputError(
                f"{folder}: folder not found" if not Path(folder).exists() else f"{folder} is not a folder"
            )
