"""``xfit reconstruct``: X-rays in, a CT volume out (:mod:`xfit.reconstruct`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..console import SEED, FiniteFloat, pair_option


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option(
    "--prior",
    type=click.Path(dir_okay=False),
    default=None,
    help="prior checkpoint (default: the one shipped with xfit)",
)
@click.option(
    "--angles", default=None, help="gantry angle of each image in degrees, e.g. 0,90 (default: from sidecars/DICOM)"
)
@click.option(
    "--sdd",
    "sdd_mm",
    type=FiniteFloat(0, 1e5, lo_open=True),
    default=None,
    help="source-detector distance (mm), overrides sidecars",
)
@click.option(
    "--sod",
    "sod_mm",
    type=FiniteFloat(0, 1e5, lo_open=True),
    default=None,
    help="source-isocentre distance (mm), overrides sidecars",
)
@click.option(
    "--pixel-spacing",
    "--spacing",
    "pixel_spacing",
    default=None,
    help="detector pixel spacing row[,col] (mm), overrides sidecars; stands in for an invalid DICOM tag",
)
@click.option(
    "--flip-lr/--no-flip-lr", default=None, help="the images are mirrored left-right relative to the conventions"
)
@click.option("--invert", is_flag=True, help="the images show bone dark (invert them)")
@click.option(
    "--config",
    "fit_config",
    type=click.Path(dir_okay=False),
    default=None,
    help="fitting config YAML (default xfit/configs/fit.yaml)",
)
@click.option("--steps", type=click.IntRange(1, 1_000_000), default=None, help="optimizer steps per restart")
@click.option(
    "--restarts", type=click.IntRange(1, 1024), default=None, help="independent restarts (their spread -> uncertainty)"
)
@click.option("--refine-pose", is_flag=True, default=None, help="also fit each view's angle and shift")
@click.option("--encoder", type=click.Path(dir_okay=False), default=None, help="warm-start encoder checkpoint")
@click.option(
    "--target",
    "targets",
    multiple=True,
    help="ROW,COL (pixels of the file as stored, as a viewer shows "
    "it) of the vertebra's centre in each image, in image order (repeat per image; several vertebrae: V "
    "values each), or 'auto'; crops each image around it",
)
@click.option(
    "--levels",
    "levels",
    default=None,
    help="with several targeted vertebrae: their levels in target order "
    "(e.g. L1-L3), used as folder names and label values",
)
@click.option(
    "--method",
    default="fit",
    show_default=True,
    help="fit (the prior), a feed-forward baseline: "
    "x2ct-cnn, x2ct-gan, ear, transvert, xctrsnet, igcn (one view), or ceiling (oracle: the prior "
    "fitted to --gt, to see how well it can hold that anatomy)",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="the baseline's checkpoint "
    "(default: the one shipped for --method); with --method fit, that of the fit config's init_network",
)
@click.option(
    "--transform/--no-transform",
    default=None,
    help="fit a global rotation, shift and scale of the volume with W+ (default: the fit config)",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ... or auto")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option(
    "--gt",
    type=click.Path(dir_okay=False),
    default=None,
    help="ground-truth CT (NIfTI) centred on the isocentre: adds metrics",
)
@click.option(
    "--gt-seg", type=click.Path(dir_okay=False), default=None, help="ground-truth labels (default: *_seg beside --gt)"
)
@click.option(
    "--gt-isocenter",
    default=None,
    help="X,Y,Z (mm): where the X-rays' isocentre lies in the --gt CT "
    "(default: its grid centre; xfit simulate writes it to simulate.json)",
)
@click.option(
    "--level",
    default=None,
    help="the vertebra the X-rays are aimed at (e.g. L1): recorded in the report; warns when the prior never saw it",
)
@click.option("--mesh", is_flag=True, help="also write surface.stl of the vertebra label")
@click.option("--allow-single-view", is_flag=True, help="accept one image (depth then comes from the prior alone)")
@click.option("--force", is_flag=True, help="replace an existing output folder (once the new one is complete)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def reconstruct(
    images,
    out,
    prior,
    angles,
    sdd_mm,
    sod_mm,
    pixel_spacing,
    flip_lr,
    invert,
    fit_config,
    steps,
    restarts,
    refine_pose,
    encoder,
    targets,
    levels,
    method,
    checkpoint,
    transform,
    device,
    seed,
    gt,
    gt_seg,
    gt_isocenter,
    level,
    mesh,
    allow_single_view,
    force,
    quiet,
) -> None:
    """Reconstruct a CT volume from X-ray IMAGES (PNG/JPEG/TIFF with sidecars, or DICOM)."""
    from ..geometry import MAX_PIXEL_SPACING_MM, parse_angles
    from ..io import check_device
    from ..reconstruct import (
        ReconstructSettings,
        preflight,
        reconstruct_vertebrae,
        write_reconstruction,
        write_vertebrae,
    )

    # every cheap check before the fit: device, output folder, input files, fit config, options
    dev = str(check_device(device))
    if level is not None:
        from ..levels import level_label

        level_label(level)
    preflight(
        images, out, force=force, device=dev, prior=prior, config=fit_config, gt=gt, gt_seg=gt_seg, encoder=encoder
    )
    parsed_angles = None if angles is None else parse_angles(angles)
    spacing = pair_option(
        pixel_spacing, ("--pixel-spacing", "--spacing"), lo=0.0, hi=MAX_PIXEL_SPACING_MM, lo_open=True
    )
    gt_iso = _point_option(gt_isocenter, "--gt-isocenter")
    clicks = _target_option(targets, len(images))
    level_values = _levels_option(levels, clicks)
    if method == "ceiling" and gt is None:
        raise click.BadParameter(
            "ceiling fits the prior to the 3D truth, not to the X-rays: give --gt CT.nii.gz", param_hint="--method"
        )
    if method != "fit":
        if method != "ceiling":
            from ..baselines.common import check_method

            check_method(method)
        _refuse_fit_options(
            method,
            transform=transform,
            refine_pose=refine_pose,
            steps=steps,
            restarts=restarts,
            config=fit_config,
            encoder=encoder,
        )
    if clicks == "auto":
        _check_not_constant(images)
    from ..errors import InputError

    if checkpoint is not None and not Path(checkpoint).is_file():
        raise InputError(f"{checkpoint}: file not found")
    settings = ReconstructSettings(
        targets=clicks,
        method=method,
        checkpoint=checkpoint,
        transform=transform,
        prior=prior,
        angles=parsed_angles,
        sdd_mm=sdd_mm,
        sod_mm=sod_mm,
        pixel_spacing_mm=spacing,
        flip_lr=flip_lr,
        invert=invert,
        allow_single_view=allow_single_view,
        config=fit_config,
        steps=steps,
        restarts=restarts,
        refine_pose=refine_pose,
        device=dev,
        seed=seed,
        gt=gt,
        gt_seg=gt_seg,
        gt_isocenter_mm=gt_iso,
        encoder=encoder,
        level=level,
        progress=not quiet,
    )
    recs = reconstruct_vertebrae(images, settings)
    if len(recs) == 1:
        folder = write_reconstruction(recs[0], out, force=force, mesh=mesh)
        names = [None]
    else:
        from ..levels import level_name

        names = (
            [level_name(v) for v in level_values] if level_values else [f"vertebra{k + 1}" for k in range(len(recs))]
        )
        values = list(level_values) if level_values else list(range(1, len(recs) + 1))
        folder = write_vertebrae(recs, out, names=names, values=values, force=force, mesh=mesh)
    for rec, name in zip(recs, names):
        ncc = ", ".join(f"{n:.3f}" for n in rec.fit.view_ncc)
        where = folder if name is None else folder / name
        if rec.target is not None and rec.target.method != "isocentre":
            click.echo(
                f"target ({rec.target.method}): {_fmt_point(rec.target.point_mm)} mm"
                + (
                    f", rays {rec.target.details['residual_mm']:.1f} mm apart (RMS)"
                    if "residual_mm" in rec.target.details
                    else ""
                )
            )
        click.echo(f"wrote {where}/recon.nii.gz ({rec.seconds:.1f} s; re-projection NCC per view: {ncc})")
        if rec.metrics:
            click.echo("  ".join(f"{k} {v:.3f}" for k, v in rec.metrics.items()))
    if len(recs) > 1:
        click.echo(f"wrote {folder}/labels.nii.gz ({len(recs)} vertebrae)")


def _point_option(text: str | None, name: str) -> tuple[float, float, float] | None:
    """``X,Y,Z`` in mm (finite, within 100 m)."""
    if text is None:
        return None
    try:
        xyz = tuple(float(v) for v in text.split(","))
    except ValueError:
        xyz = ()
    if len(xyz) != 3 or not all(math.isfinite(v) and abs(v) <= 1e5 for v in xyz):
        raise click.BadParameter(f"expected X,Y,Z in mm, got {text!r}", param_hint=name)
    return xyz


def _fmt_point(p) -> str:
    return "(" + ", ".join(f"{float(x):.1f}" for x in p) + ")"


def _target_option(values: Sequence[str], n_images: int):
    """``--target`` values: none, ``auto``, or ROW,COL pairs grouped per vertebra."""
    if not values:
        return None
    if any(v.strip().lower() == "auto" for v in values):
        if len(values) != 1:
            raise click.BadParameter("'auto' finds one vertebra: give it alone", param_hint="--target")
        return "auto"
    pairs = [pair_option(v, "--target", lo=-1e6, hi=1e6) for v in values]
    if any("," not in v for v in values):
        raise click.BadParameter("each --target is ROW,COL (pixels) or 'auto'", param_hint="--target")
    from ..reconstruct import group_targets

    return group_targets(pairs, n_images)


#: ``reconstruct`` options that only the fit reads (a feed-forward baseline would ignore them).
FIT_ONLY_OPTIONS = {
    "transform": "--transform",
    "refine_pose": "--refine-pose",
    "steps": "--steps",
    "restarts": "--restarts",
    "config": "--config",
    "encoder": "--encoder",
}


def _refuse_fit_options(method: str, **given: Any) -> None:
    """Refuse the fit-only options (:data:`FIT_ONLY_OPTIONS`) given with a baseline ``method``."""
    names = [FIT_ONLY_OPTIONS[k] for k, v in given.items() if v is not None]
    if names:
        what = "the oracle ceiling" if method == "ceiling" else f"the feed-forward baseline {method}"
        raise click.BadParameter(f"{', '.join(names)} only apply to --method fit, not to {what}", param_hint="--method")


def _check_not_constant(images: Sequence[str]) -> None:
    """``--target auto`` searches the whole images: refuse a constant one, as the fit of a clicked
    target's crops does."""
    from ..errors import InputError
    from ..io import read_pixels

    for path in images:
        pixels = read_pixels(path)
        if float(pixels.max()) <= float(pixels.min()):
            raise InputError(f"{path}: the image is constant: nothing to find or fit")


def _levels_option(levels: str | None, clicks) -> tuple[int, ...] | None:
    """``--levels`` of several targeted vertebrae: as many levels as vertebrae."""
    if levels is None:
        return None
    from ..levels import parse_levels

    if not isinstance(clicks, list) or len(clicks) < 2:
        raise click.BadParameter(
            "names the vertebrae of several --target groups; for one vertebra use --level", param_hint="--levels"
        )
    values = tuple(v for item in levels.split(",") for v in parse_levels(item))  # in the order given
    if len(set(values)) != len(values):
        raise click.BadParameter(f"{levels!r} names a level twice", param_hint="--levels")
    n = len(clicks) if isinstance(clicks, list) else 1
    if len(values) != n:
        raise click.BadParameter(f"{len(values)} level(s) for {n} targeted vertebra(e)", param_hint="--levels")
    return values
