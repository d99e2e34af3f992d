"""``xfit phantoms`` and ``xfit simulate``: the data, synthetic CTs and their X-rays."""

from __future__ import annotations

import math

import click

from ..console import SEED, FiniteFloat, pair_option

#: Largest grid side of ``xfit phantoms`` (1024^3 float32 is 4 GiB per volume).
MAX_PHANTOM_SIDE = 1024


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "-n", "--num", "n", default=10, show_default=True, type=click.IntRange(1, 100_000), help="number of cases"
)
@click.option("--size", default="64", show_default=True, help="voxels per side, or three sizes I,J,K (each 8 to 1024)")
@click.option("--spacing", default=1.25, show_default=True, type=FiniteFloat(0.05, 100.0), help="voxel size (mm)")
@click.option(
    "--fov",
    "fov_mm",
    default=None,
    type=FiniteFloat(1.0, 10_000.0),
    help="field of view (mm) with the torso around the spine (the grid then has fov/spacing voxels)",
)
@click.option("--seed", default=0, show_default=True, type=SEED, help="seed of case 0 (case i uses seed+i)")
@click.option(
    "--level",
    default=None,
    help="the vertebra each grid is centred on: a level (L1), a range (T10-L5, one drawn per case), "
    "lumbar or thoracic [default: half L1-L5, half T6-T12]",
)
@click.option(
    "--centre",
    type=click.Choice(["vertebra", "grid"]),
    default="vertebra",
    show_default=True,
    help="grid centre: the centroid of the centred vertebra (as the prior's training crops) "
    "or the middle of its antero-posterior extent",
)
@click.option(
    "--noise",
    "noise_hu",
    default=None,
    type=FiniteFloat(0.0, 500.0),
    help="CT noise standard deviation (HU; 0 = none) [default: drawn, 5-30]",
)
@click.option(
    "--blur/--no-blur", default=True, show_default=True, help="slice thickness and in-plane blur of the drawn scanner"
)
@click.option(
    "--metal/--no-metal", default=None, help="pedicle screws in every case / in none [default: drawn, a few % of cases]"
)
@click.option(
    "--body-composition",
    type=click.Choice(["default", "published"]),
    default="default",
    show_default=True,
    help="published: draw sex, BMI and the centred level's muscle and fat areas from published CT "
    "body-composition data and fit the torso to them; default: each seed's phantom as it always was",
)
@click.option("--force", is_flag=True, help="replace an existing output folder")
def phantoms(
    out: str,
    n: int,
    size: str,
    spacing: float,
    fov_mm: float | None,
    seed: int,
    level: str | None,
    centre: str,
    noise_hu: float | None,
    blur: bool,
    metal: bool | None,
    body_composition: str,
    force: bool,
) -> None:
    """Write N procedural spine CT phantoms to OUT: caseNNNN_ct.nii.gz (HU), caseNNNN_seg.nii.gz
    (every vertebra by its VerSe level), caseNNNN_tissue.nii.gz (tissue classes), caseNNNN.json
    and montage.png."""
    from ..errors import InputError
    from ..io import check_output_folder
    from ..phantoms import make_phantom, write_phantoms

    try:
        sizes = tuple(int(x) for x in str(size).split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected a number or three like 64,64,96, got {size!r}", param_hint="--size"
        ) from None
    if len(sizes) not in (1, 3) or not all(8 <= x <= MAX_PHANTOM_SIDE for x in sizes):
        raise click.BadParameter(
            f"expected one or three sizes of 8 to {MAX_PHANTOM_SIDE}, got {size!r}", param_hint="--size"
        )
    if fov_mm is not None and fov_mm / spacing > MAX_PHANTOM_SIDE:
        raise InputError(
            f"--fov {fov_mm:g} at --spacing {spacing:g} gives {math.ceil(fov_mm / spacing)} voxels "
            f"per side; at most {MAX_PHANTOM_SIDE}"
        )
    check_output_folder(out, force=force)
    kw = dict(
        size=sizes[0] if len(sizes) == 1 else sizes,
        spacing_mm=spacing,
        fov_mm=fov_mm,
        level=level,
        centre=centre,
        noise_hu=noise_hu,
        blur=blur,
        metal=metal,
        body_composition=body_composition,
    )
    make_phantom(seed, **{**kw, "size": 8, "fov_mm": None, "blur": False, "noise_hu": 0.0})  # bad level: now
    # write_phantoms builds the folder with xfit.io.atomic_folder: whole or not at all
    paths = write_phantoms(out, n, seed=seed, force=force, **kw)
    click.echo(f"wrote {len(paths)} files to {out} (montage: {out}/montage.png)")


@click.command()
@click.argument("ct", type=click.Path(dir_okay=False))
@click.option(
    "--angles",
    default="0,90",
    show_default=True,
    help="gantry angles in degrees, comma separated (0 = AP, 90 = left lateral)",
)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option(
    "--sdd",
    "sdd_mm",
    default=1800.0,
    show_default=True,
    type=FiniteFloat(0, 1e5, lo_open=True),
    help="source-detector distance (mm)",
)
@click.option(
    "--sod",
    "sod_mm",
    default=1500.0,
    show_default=True,
    type=FiniteFloat(0, 1e5, lo_open=True),
    help="source-isocentre distance (mm)",
)
@click.option(
    "--detector", default="128", show_default=True, help="detector rows[,cols] in pixels (at most 8192 per side)"
)
@click.option("--pixel-spacing", default="1.0", show_default=True, help="detector pixel spacing row[,col] (mm)")
@click.option("--projection", type=click.Choice(["cone", "parallel"]), default="cone", show_default=True)
@click.option("--mask", type=click.Path(dir_okay=False), default=None, help="label map for --center-label")
@click.option(
    "--center-label", type=click.IntRange(0, 32767), default=None, help="centre the views on this label of --mask"
)
@click.option(
    "--dose",
    "photons",
    type=FiniteFloat(0, 1e12, lo_open=True),
    default=None,
    help="Poisson noise: unattenuated photons per pixel",
)
@click.option(
    "--scale",
    "line_integral_scale",
    type=FiniteFloat(0, 1e6, lo_open=True),
    default=None,
    help="line integral mapped to 65535 (default: automatic)",
)
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option(
    "--style",
    type=click.Choice(["ideal", "clinical"]),
    default="ideal",
    show_default=True,
    help="ideal: line integrals (DRR); clinical: the processed radiograph of an X-ray room (spectrum, "
    "scatter, heel, noise, blur, LUT, edge enhancement, collimation, markers, grid), lumbar AP or "
    "lateral preset by angle; docs/radiographs.md",
)
@click.option(
    "--style-param",
    "style_params",
    multiple=True,
    metavar="NAME=VALUE",
    help="set a clinical-style parameter, for both presets or one (ap.NAME=, lateral.NAME=); repeatable, "
    "e.g. --style-param kvp=90 --style-param spr=0 --style-param strength=0.5 (docs/radiographs.md "
    "lists them; xfit/configs/style-clinical.yaml holds the defaults)",
)
@click.option(
    "--style-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML of clinical-style parameters: sections ap: and lateral:, or keys for both (see "
    "xfit/configs/style-clinical.yaml); --style-param wins over it",
)
@click.option("--force", is_flag=True, help="replace an existing output folder")
def simulate(
    ct,
    angles,
    out,
    sdd_mm,
    sod_mm,
    detector,
    pixel_spacing,
    projection,
    mask,
    center_label,
    photons,
    line_integral_scale,
    seed,
    style,
    style_params,
    style_file,
    force,
) -> None:
    """Simulate X-rays of CT (NIfTI, HU): one 16-bit PNG + sidecar JSON per angle.

    With --style clinical each view is a processed, uncalibrated radiograph (8-16 bit PNG, no
    line_integral_scale in its sidecar; invert: true when stored MONOCHROME1)."""
    from ..geometry import MAX_PIXEL_SPACING_MM, check_detector_shape, parse_angles
    from ..simulate import simulate as run

    styles = None
    if style == "clinical":
        from ..radiograph import load_styles

        styles = load_styles(style_file, style_params)
    elif style_params or style_file:
        raise click.BadParameter(
            "needs --style clinical", param_hint="--style-param" if style_params else "--style-file"
        )
    shape = check_detector_shape(pair_option(detector, "--detector", int), "--detector")
    results = run(
        ct,
        parse_angles(angles),
        out,
        sdd_mm=sdd_mm,
        sod_mm=sod_mm,
        detector_shape=shape,
        pixel_spacing_mm=pair_option(pixel_spacing, "--pixel-spacing", lo=0.0, hi=MAX_PIXEL_SPACING_MM, lo_open=True),
        projection=projection,
        mask_path=mask,
        center_label=center_label,
        photons=photons,
        line_integral_scale=line_integral_scale,
        seed=seed,
        force=force,
        style=style,
        styles=styles,
    )
    for r in results:
        if r.radiograph is None:
            click.echo(f"{r.png}  angle {r.view.angle_deg:g} deg  max line integral {r.image.max():.3f}")
        else:
            click.echo(
                f"{r.png}  angle {r.view.angle_deg:g} deg  clinical style ({r.preset} preset, "
                f"{r.radiograph.bits}-bit{', MONOCHROME1' if r.radiograph.inverted else ''})"
            )
