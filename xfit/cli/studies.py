"""``xfit evaluate``, ``study ...``, ``merge`` and ``resummarize``: evaluations and studies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from ..console import SEED, SEED_MAX, FiniteFloat, pair_option
from ..studies import RESULTS_DIR, RESULTS_PAGE
from .training import LAYOUTS

# ----------------------------------------------------------------------------------------------
# evaluate and the studies


def _shard_option(ctx, param, value: str | None) -> tuple[int, int] | None:
    """``--shard K/N`` -> ``(K, N)`` (:func:`xfit.studies.evaluate.parse_shard`)."""
    if value is None:
        return None
    from ..errors import InputError
    from ..studies.evaluate import parse_shard

    try:
        return parse_shard(value)
    except InputError as exc:
        raise click.BadParameter(str(exc).removeprefix("--shard "), param=param) from None


def _eval_options(f: Callable) -> Callable:
    """The options ``xfit evaluate`` and every ``xfit study`` share."""
    opts = [
        click.option(
            "-o",
            "--out",
            required=True,
            type=click.Path(file_okay=False),
            help="run folder (resumed when it holds the same settings)",
        ),
        click.option(
            "--methods",
            default="fit,mean,best-of-n",
            show_default=True,
            help="comma separated: fit, fit-pose, mean, best-of-n, best-of-n-oracle, ceiling (oracle: the prior "
            "fitted to the 3D truth by 200 Adam steps), ceiling-lbfgs (the same by 120 L-BFGS iterations), "
            "ceiling-hu (the same fitted to the truth's HU alone, without its mask), "
            "x2ct-cnn, x2ct-gan, ear, transvert, xctrsnet, igcn "
            "(a baseline may carry a tag: x2ct-cnn@jitter)",
        ),
        click.option(
            "--checkpoint",
            "checkpoints",
            multiple=True,
            metavar="METHOD=FILE",
            help="a baseline's checkpoint (repeatable) [default: the shipped one]",
        ),
        click.option(
            "--prior",
            default=None,
            type=click.Path(dir_okay=False),
            help="prior checkpoint [default: the shipped prior]",
        ),
        click.option(
            "--phantoms",
            default=None,
            type=click.IntRange(1, 100_000),
            help="held-out phantoms to evaluate [default: 20 without --data]",
        ),
        click.option(
            "--first-seed",
            default=0,
            show_default=True,
            type=SEED,
            help="seed of the first phantom (the shipped prior trained on 1000-1799)",
        ),
        click.option(
            "--data",
            "data_dir",
            default=None,
            type=click.Path(file_okay=False),
            help="CT folder in any train-prior layout instead of phantoms",
        ),
        click.option(
            "--layout",
            type=click.Choice(LAYOUTS),
            default=None,
            help="layout of --data [default: detected]",
        ),
        click.option("--levels", default=None, help="vertebrae of --data to evaluate, e.g. T10-L5 [default: all]"),
        click.option(
            "--max-cases", default=None, type=click.IntRange(1, 10**7), help="at most this many crops of --data"
        ),
        click.option(
            "--detector", default=128, show_default=True, type=click.IntRange(8, 4096), help="detector pixels per side"
        ),
        click.option(
            "--pixel-spacing",
            default=1.0,
            show_default=True,
            type=FiniteFloat(0.01, 10.0),
            help="detector pixel spacing (mm)",
        ),
        click.option(
            "--third-view",
            default=45.0,
            show_default=True,
            type=FiniteFloat(-360.0, 360.0),
            help="angle of the held-out view (deg)",
        ),
        click.option(
            "--whole-body",
            "whole_body",
            default=None,
            type=FiniteFloat(80.0, 2000.0),
            metavar="FOV_MM",
            help="phantom X-rays through the whole torso on a FOV_MM grid",
        ),
        click.option(
            "--random",
            "n_random",
            default=32,
            show_default=True,
            type=click.IntRange(1, 10_000),
            help="prior samples of best-of-n",
        ),
        click.option(
            "--fit-config",
            default=None,
            type=click.Path(dir_okay=False),
            help="fit config YAML [default: xfit/configs/fit.yaml]",
        ),
        click.option(
            "--no-warm-start", is_flag=True, help="start every fit at w_mean even when the prior has an encoder"
        ),
        click.option(
            "--seed", default=0, show_default=True, type=SEED, help="seed of the fit and of the perturbations"
        ),
        click.option(
            "--workers",
            default=1,
            show_default=True,
            type=click.IntRange(1, 256),
            help="cases run in parallel processes (threads are split between them)",
        ),
        click.option(
            "--reuse",
            multiple=True,
            type=click.Path(exists=True, file_okay=False),
            help="copy finished rows from this run folder (or sweep folder) where its settings match (repeatable)",
        ),
        click.option(
            "--shard",
            default=None,
            callback=_shard_option,
            metavar="K/N",
            help="run only shard K of N (K from 1 to N; a 0-based array index I is $((I+1))/N): the K-th "
            "of N equal blocks of the cases, into its own folder -o; `xfit merge` joins the N folders",
        ),
        click.option("--force", is_flag=True, help="start the run folder afresh"),
        click.option("--quiet", is_flag=True, help="no progress bar"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _eval_spec(kw: dict[str, Any], angles: Sequence[float] = (0.0, 90.0)):
    """The :class:`xfit.studies.evaluate.EvalSpec` of the shared options (checked, nothing run)."""
    from ..baselines.methods import METHODS as BASELINE_METHODS
    from ..errors import InputError
    from ..reconstruct import DEFAULT_PRIOR
    from ..studies.evaluate import EvalSpec, parse_methods

    methods = parse_methods(kw["methods"])
    checkpoints = {}
    for item in kw["checkpoints"]:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"expected METHOD=FILE, got {item!r}", param_hint="--checkpoint")
        if name not in methods:
            raise click.BadParameter(f"{name!r} is not among --methods", param_hint="--checkpoint")
        if name.partition("@")[0] not in BASELINE_METHODS:
            raise click.BadParameter(
                f"{name!r} takes no checkpoint (only a baseline does: {', '.join(BASELINE_METHODS)})",
                param_hint="--checkpoint",
            )
        if name in checkpoints:
            raise click.BadParameter(f"{name!r} is given twice", param_hint="--checkpoint")
        if not Path(path).is_file():
            raise InputError(f"{path}: checkpoint not found")
        checkpoints[name] = path
    if kw["data_dir"] is not None and kw["phantoms"] is not None:
        raise click.BadParameter("give --phantoms or --data, not both", param_hint="--data")
    if kw["data_dir"] is not None and not Path(kw["data_dir"]).is_dir():
        raise InputError(f"{kw['data_dir']}: folder not found")
    n_phantoms = None if kw["data_dir"] else (kw["phantoms"] or 20)
    if n_phantoms is not None and kw["first_seed"] + n_phantoms - 1 > SEED_MAX:
        raise click.BadParameter(
            f"{kw['first_seed']} + {n_phantoms} phantoms passes the largest seed {SEED_MAX}; "
            f"at most {SEED_MAX - n_phantoms + 1}",
            param_hint="--first-seed",
        )
    if kw["levels"] is not None and kw["data_dir"] is None:
        raise click.BadParameter(
            "selects the vertebrae of --data; it does not apply to phantoms", param_hint="--levels"
        )
    if kw["levels"] is not None:
        from ..levels import parse_levels

        parse_levels(kw["levels"])
    prior = Path(kw["prior"]) if kw["prior"] else DEFAULT_PRIOR
    if not prior.is_file():
        raise InputError(f"{prior}: prior not found")
    from ..io import check_output_path

    check_output_path(kw["out"])
    return EvalSpec(
        prior=str(prior),
        methods=methods,
        checkpoints=checkpoints,
        phantoms=n_phantoms,
        first_seed=kw["first_seed"],
        data=kw["data_dir"],
        layout=kw["layout"],
        levels=kw["levels"],
        max_cases=kw["max_cases"],
        angles=tuple(angles),
        detector=kw["detector"],
        pixel_spacing_mm=kw["pixel_spacing"],
        third_view_deg=kw["third_view"],
        whole_body_fov_mm=kw["whole_body"],
        n_random=kw["n_random"],
        fit_config=kw["fit_config"],
        warm_start=not kw["no_warm_start"],
        seed=kw["seed"],
    )


@click.command("evaluate")
@click.option("--angles", default="0,90", show_default=True, help="gantry angles of the X-rays (deg)")
@click.option(
    "--dose",
    "photons",
    type=FiniteFloat(1, 1e12),
    default=None,
    help="Poisson noise: photons per pixel (as study noise --dose)",
)
@click.option(
    "--style-strength",
    type=FiniteFloat(0.0, 1.0),
    default=None,
    help="hand clinical-style radiographs (xfit simulate --style clinical presets) at this strength (as study style)",
)
@_eval_options
def evaluate_cmd(angles, photons, style_strength, **kw) -> None:
    """Run each method on held-out phantoms or a CT folder: OUT/cases.csv, summary.md (mean ± std,
    paired Wilcoxon tests against the fit), panel.png."""
    import dataclasses as dc

    from ..geometry import parse_angles
    from ..studies.evaluate import evaluate

    spec = dc.replace(_eval_spec(kw, parse_angles(angles)), photons=photons, style_strength=style_strength)
    evaluate(
        spec,
        kw["out"],
        workers=kw["workers"],
        force=kw["force"],
        progress=not kw["quiet"],
        reuse=kw["reuse"],
        shard=kw["shard"],
    )
    click.echo((Path(kw["out"]) / "summary.md").read_text())


@click.group()
def study() -> None:
    """Sweeps of `xfit evaluate` (angles between the views, geometry errors, dose, radiograph
    style) and the whole-body radiograph study."""


def _run_study(conds, kw, angles=(0.0, 90.0)) -> None:
    from ..studies.sweeps import run_sweep

    run_sweep(
        _eval_spec(kw, angles),
        conds,
        kw["out"],
        workers=kw["workers"],
        force=kw["force"],
        progress=not kw["quiet"],
        reuse=kw["reuse"],
        shard=kw["shard"],
    )
    if kw["shard"] is None:
        click.echo((Path(kw["out"]) / "summary.md").read_text())
    else:
        k, n = kw["shard"]
        click.echo(
            f"{kw['out']}: shard {k}/{n} of the study, each condition folder holding its cases; "
            f"`xfit merge` its {n} shard folders to draw the curves"
        )


@study.command("angles")
@click.option(
    "--second-angle",
    default="60:140:10",
    show_default=True,
    help="angles of the second view (deg), a list or START:STOP:STEP; the first is at 0",
)
@_eval_options
def study_angles(second_angle, **kw) -> None:
    """Each metric against the angle between the two views (EAR's experiment)."""
    from ..studies.sweeps import angle_conditions, parse_values

    _run_study(angle_conditions(parse_values(second_angle, "--second-angle", -180.0, 180.0)), kw)


@study.command("geometry")
@click.option("--angle-error", default="0,1,2,5", show_default=True, help="angle errors handed to the methods (deg)")
@click.option("--shift-error", default="0,2,5", show_default=True, help="isocentre errors handed to the methods (mm)")
@click.option("--angles", default="0,90", show_default=True, help="true gantry angles (deg)")
@_eval_options
def study_geometry(angle_error, shift_error, angles, **kw) -> None:
    """Each metric against the error of the geometry handed to the methods (add fit-pose to --methods)."""
    from ..geometry import parse_angles
    from ..studies.sweeps import geometry_conditions, parse_values

    conds = geometry_conditions(
        parse_values(angle_error, "--angle-error", 0.0, 45.0), parse_values(shift_error, "--shift-error", 0.0, 100.0)
    )
    _run_study(conds, kw, parse_angles(angles))


@study.command("noise")
@click.option(
    "--dose",
    default="1e3,1e4,1e5,1e6",
    show_default=True,
    help="photons per pixel (Poisson noise of xfit simulate --dose)",
)
@click.option("--angles", default="0,90", show_default=True, help="gantry angles (deg)")
@_eval_options
def study_noise(dose, angles, **kw) -> None:
    """Each metric against the X-ray dose."""
    from ..geometry import parse_angles
    from ..studies.sweeps import noise_conditions, parse_values

    _run_study(noise_conditions(parse_values(dose, "--dose", 1.0, 1e12)), kw, parse_angles(angles))


@study.command("style")
@click.option(
    "--strengths",
    default="0,0.25,0.5,1",
    show_default=True,
    help="strengths of the clinical style (0: ideal images, 1: the lumbar AP / lateral presets of "
    "xfit simulate --style clinical)",
)
@click.option("--angles", default="0,90", show_default=True, help="gantry angles (deg)")
@_eval_options
def study_style(strengths, angles, **kw) -> None:
    """Each metric from ideal DRRs to processed clinical radiographs (scatter, noise, LUT, enhancement,
    collimation, markers)."""
    from ..geometry import parse_angles
    from ..studies.sweeps import parse_values, style_conditions

    _run_study(style_conditions(parse_values(strengths, "--strengths", 0.0, 1.0)), kw, parse_angles(angles))


@click.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="the merged run or study folder")
@click.option("--force", is_flag=True, help="replace OUT, once the merged folder is complete")
def merge_cmd(shards, out, force) -> None:
    """Join the N shard folders of `xfit evaluate --shard K/N` (or of `xfit study ... --shard K/N`)
    into OUT: the folder one process would have written (cases.csv, summary.md, settings.json,
    panel.png, slices/ byte for byte, but for the measured seconds; wall_seconds is the sum over
    the shards). Refused, with nothing written: a shard that is unfinished, damaged or still being
    written, shards of other settings, methods, checkpoints or fit config, of different N, a shard
    given twice or missing.

    \b
    SLURM:   #SBATCH --array=1-8
             xfit evaluate ... --shard $SLURM_ARRAY_TASK_ID/8 -o runs/ev.$SLURM_ARRAY_TASK_ID
    then:    xfit merge runs/ev.{1..8} -o runs/ev
    """
    from ..io import check_output_path
    from ..studies.shards import merge

    check_output_path(out)
    merge(shards, out, force=force)
    summary = Path(out) / "summary.md"
    click.echo(summary.read_text())


@study.command("radiographs")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="study folder (resumable)")
@click.option(
    "--prior", type=click.Path(dir_okay=False), default=None, help="prior checkpoint (default: the shipped one)"
)
@click.option("--cases", type=click.IntRange(1, 10_000), default=6, show_default=True, help="phantoms")
@click.option("--steps", type=click.IntRange(1, 1_000_000), default=None, help="fit steps (default: the fit config's)")
@click.option("--detector", default="448,384", show_default=True, help="detector rows,cols (px)")
@click.option(
    "--pixel-mm",
    type=FiniteFloat(0, 100, lo_open=True),
    default=0.6,
    show_default=True,
    help="detector pixel spacing (mm)",
)
@click.option("--offset-mm", default="25,50", show_default=True, help="isocentre offset range from the vertebra (mm)")
@click.option("--modes", default="isocentre,clicks,auto", show_default=True, help="comma separated")
@click.option("--keep", is_flag=True, help="write each reconstruction folder (preview.png...)")
@click.option("--redo", default="", help="modes to run again on the saved cases (e.g. auto), keeping the others")
@click.option("--force", is_flag=True, help="start afresh: drop the saved cases (resuming other settings is refused)")
def study_radiographs(out, prior, cases, steps, detector, pixel_mm, offset_mm, modes, keep, redo, force) -> None:
    """Whole-body radiographs of held-out phantoms: does the fit find and reconstruct the
    vertebra (no target, clicked target, --target auto)? See xfit.studies.radiographs."""
    from ..studies.radiographs import run_study

    det = pair_option(detector, "--detector", int, lo=1, hi=8192)
    offset = pair_option(offset_mm, "--offset-mm", lo=0.0, hi=10_000.0)
    run_study(
        out,
        prior=prior,
        cases=cases,
        steps=steps,
        detector=det,
        pixel_mm=pixel_mm,
        offset_mm=offset,
        modes=[m for m in modes.split(",") if m],
        keep=keep,
        redo=[m for m in redo.split(",") if m],
        force=force,
    )


@click.command("summarize")
@click.argument("folders", nargs=-1, required=True, type=click.Path(file_okay=False))
def summarize_cmd(folders) -> None:
    """Rewrite the summaries (and a sweep's curves) of evaluate run folders and study folders
    from the rows they hold now (a run stopped part way shows what it has, with n)."""
    from ..studies.sweeps import summarize_folders

    summarize_folders(folders)


@click.command("results")
@click.option(
    "--readme", default=RESULTS_PAGE, show_default=True, type=click.Path(dir_okay=False), help="the generated page"
)
@click.option(
    "--results",
    "results_dir",
    default=RESULTS_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
    help="folder of the committed run folders",
)
@click.option("--check", is_flag=True, help="exit 1 when the page is not up to date (write nothing)")
@click.pass_context
def results_cmd(ctx, readme, results_dir, check) -> None:
    """Rewrite the results page (docs/results.md) from the committed run folders under results/."""
    from ..studies.results import readme_is_current, update_readme

    if check:
        ctx.exit(0 if readme_is_current(readme, results_dir) else 1)
    click.echo(f"{readme} updated" if update_readme(readme, results_dir) else f"{readme} already up to date")
