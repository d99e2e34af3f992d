"""The ``xfit`` command line: parse options, call the library, print, exit codes.

Every user error (an :class:`xfit.errors.XfitError`, a missing file, ...) ends in a one-line
``xfit: error: ...`` message and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from . import __version__
from .errors import XfitError


def _one_line(exc: BaseException) -> str:
    msg = (getattr(exc, "format_message", None) or (lambda: str(exc)))() or type(exc).__name__
    return " ".join(msg.split())


class XfitGroup(click.Group):
    """Click group that ends every user error in one line ``xfit: error: ...`` and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:  # --help, --version
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("xfit: interrupted", err=True)
            sys.exit(130)
        except click.ClickException as exc:  # bad option or argument
            click.echo(f"xfit: error: {_one_line(exc)}", err=True)
            sys.exit(2)
        except (XfitError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            click.echo(f"xfit: error: {_one_line(exc)}", err=True)
            sys.exit(2)
        except (MemoryError, torch_oom_errors()) as exc:
            click.echo(
                "xfit: error: out of memory; try a smaller detector (--detector), fewer --restarts, "
                f"or --device cpu ({_one_line(exc)[:120]})",
                err=True,
            )
            sys.exit(2)
        if isinstance(rv, int) and standalone_mode:
            sys.exit(rv)
        return rv


def torch_oom_errors() -> type[BaseException]:
    """The out-of-memory exception type of torch (lazy import keeps ``--help`` fast)."""
    try:
        import torch

        return torch.OutOfMemoryError
    except (ImportError, AttributeError):  # pragma: no cover
        return MemoryError


@click.group(cls=XfitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xfit")
def main() -> None:
    """xfit: reconstruct a 3D CT volume from two X-rays with a 3D StyleGAN2 anatomical prior."""


def _pair_option(text: str | None, name: str, cast: Callable = float) -> tuple | None:
    """Parse ``"128"`` or ``"128,96"`` into a pair (a single value is repeated)."""
    if text is None:
        return None
    try:
        parts = [cast(p) for p in str(text).split(",")]
    except ValueError:
        raise click.BadParameter(f"expected a number or a pair like 1,2, got {text!r}", param_hint=name)
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise click.BadParameter(f"expected a number or a pair like 1,2, got {text!r}", param_hint=name)
    return tuple(parts)


@main.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("-n", "--num", "n", default=10, show_default=True, type=click.IntRange(1), help="number of cases")
@click.option("--size", default=64, show_default=True, type=click.IntRange(8), help="voxels per side")
@click.option("--spacing", default=1.25, show_default=True, type=click.FloatRange(min=0.05), help="voxel size (mm)")
@click.option("--fov", "fov_mm", default=None, type=click.FloatRange(min=1), help="field of view (mm) with the torso around the spine (the grid then has fov/spacing voxels)")
@click.option("--seed", default=0, show_default=True, type=int, help="seed of case 0 (case i uses seed+i)")
@click.option("--centre", type=click.Choice(["vertebra", "grid"]), default="vertebra", show_default=True,
              help="grid centre: the centroid of the centred vertebra (label 1, as the prior's training crops) or the spine's drawing centre")
@click.option("--force", is_flag=True, help="overwrite existing files")
def phantoms(out: str, n: int, size: int, spacing: float, fov_mm: float | None, seed: int, centre: str,
             force: bool) -> None:
    """Write N procedural spine phantoms (caseNNNN_ct.nii.gz + caseNNNN_seg.nii.gz) to OUT."""
    from .phantoms import write_phantoms

    paths = write_phantoms(out, n, size=size, spacing_mm=spacing, seed=seed, fov_mm=fov_mm, force=force,
                           centre=centre)
    click.echo(f"wrote {len(paths)} files to {out} (montage: {out}/montage.png)")


@main.command()
@click.argument("ct", type=click.Path(dir_okay=False))
@click.option("--angles", default="0,90", show_default=True, help="gantry angles in degrees, comma separated (0 = AP, 90 = left lateral)")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--sdd", "sdd_mm", default=1800.0, show_default=True, type=float, help="source-detector distance (mm)")
@click.option("--sod", "sod_mm", default=1500.0, show_default=True, type=float, help="source-isocentre distance (mm)")
@click.option("--detector", default="128", show_default=True, help="detector rows[,cols] in pixels")
@click.option("--pixel-spacing", default="1.0", show_default=True, help="detector pixel spacing row[,col] (mm)")
@click.option("--projection", type=click.Choice(["cone", "parallel"]), default="cone", show_default=True)
@click.option("--mask", type=click.Path(dir_okay=False), default=None, help="label map for --center-label")
@click.option("--center-label", type=int, default=None, help="centre the views on this label of --mask")
@click.option("--dose", "photons", type=float, default=None, help="Poisson noise: unattenuated photons per pixel")
@click.option("--scale", "line_integral_scale", type=float, default=None, help="line integral mapped to 65535 (default: automatic)")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--force", is_flag=True, help="overwrite an existing output folder")
def simulate(ct, angles, out, sdd_mm, sod_mm, detector, pixel_spacing, projection, mask, center_label, photons, line_integral_scale, seed, force) -> None:
    """Simulate X-rays of CT (NIfTI, HU): one 16-bit PNG + sidecar JSON per angle."""
    from .geometry import parse_angles
    from .simulate import simulate as run

    results = run(
        ct,
        parse_angles(angles),
        out,
        sdd_mm=sdd_mm,
        sod_mm=sod_mm,
        detector_shape=_pair_option(detector, "--detector", int),
        pixel_spacing_mm=_pair_option(pixel_spacing, "--pixel-spacing"),
        projection=projection,
        mask_path=mask,
        center_label=center_label,
        photons=photons,
        line_integral_scale=line_integral_scale,
        seed=seed,
        force=force,
    )
    for r in results:
        click.echo(f"{r.png}  angle {r.view.angle_deg:g} deg  max line integral {r.image.max():.3f}")


@main.command("train-prior")
@click.argument("ct_dir", type=click.Path(file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="run folder (state, prior.safetensors, samples, log)")
@click.option("--config", "config_name", default=None, help="config name (tiny, 64, 128) or YAML file [default: 64, or the run's own config with --resume]")
@click.option("--masks", "masks_dir", default=None, type=click.Path(file_okay=False), help="folder of vertebra masks (default: *_seg beside each CT)")
@click.option("--resume", is_flag=True, help="continue from OUT/state.safetensors")
@click.option("--force", is_flag=True, help="restart in an existing, non-empty run folder")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="stop after this many steps in total")
def train_prior(ct_dir, out, config_name, masks_dir, resume, force, device, max_steps) -> None:
    """Train the 3D StyleGAN2 prior on a folder of NIfTI CTs (multi-GPU: torchrun -m xfit.prior.train)."""
    import json
    from pathlib import Path

    from .errors import InputError
    from .prior.config import PriorConfig, load_config
    from .prior.train import train

    saved = Path(out) / "config.json"
    cfg = load_config(config_name or "64")
    if resume and saved.is_file():
        try:
            run_cfg = PriorConfig.from_dict(json.loads(saved.read_text()))
        except ValueError as exc:
            raise InputError(f"{saved}: cannot read the run's config: {exc}") from exc
        if config_name is None:
            cfg = run_cfg
        elif json.loads(json.dumps(cfg.to_dict())) != json.loads(json.dumps(run_cfg.to_dict())):
            raise InputError(f"--config {config_name} differs from the config the run {out} was started "
                             "with; resume without --config (or with the same one), or restart with --force")
    summary = train(cfg, ct_dir, out, masks_dir=masks_dir, resume=resume, force=force,
                    device=device, max_steps=max_steps)
    click.echo(f"trained {summary.get('steps', 0)} steps ({summary.get('kimg', 0):.3f} kimg) on "
               f"{summary['examples']} examples, {summary.get('img_per_s', 0):.2f} img/s on {summary['device']}; "
               f"prior: {out}/prior.safetensors")
    for name, why in summary.get("skipped", []):
        click.echo(f"skipped {name}: {why}")


@main.command()
@click.argument("prior", type=click.Path(dir_okay=False))
@click.option("-n", "--num", "n", default=8, show_default=True, type=click.IntRange(1), help="number of samples")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--seed", default=0, show_default=True, type=int, help="latent seed (sample i is the same for any -n)")
@click.option("--truncation", "truncation_psi", default=1.0, show_default=True, type=float, help="truncation psi (1 = none)")
@click.option("--device", default="cpu", show_default=True, help="torch device")
@click.option("--force", is_flag=True, help="overwrite existing files")
def sample(prior, n, out, seed, truncation_psi, device, force) -> None:
    """Write N prior samples (sampleNNN_ct/seg.nii.gz, samples.json, montage.png) to OUT."""
    from .prior.checkpoint import load_prior
    from .prior.sample import sample_prior

    paths = sample_prior(load_prior(prior, device=device), n, out, seed=seed, truncation_psi=truncation_psi,
                         force=force)
    click.echo(f"wrote {n} samples to {out} (montage: {paths[-1]})")


@main.command("evaluate-prior")
@click.argument("prior", type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="held-out NIfTI CT folder")
@click.option("--train", "train_dir", default=None, type=click.Path(file_okay=False), help="training CT folder (memorisation check)")
@click.option("-n", "--num", "n", default=64, show_default=True, type=click.IntRange(1), help="generated samples")
@click.option("--max-real", default=None, type=click.IntRange(1), help="use at most this many real crops")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False), help="write the report as JSON here")
@click.option("--device", default="cpu", show_default=True, help="torch device")
@click.option("--force", is_flag=True, help="overwrite --out")
def evaluate_prior(prior, data_dir, train_dir, n, max_real, seed, out, device, force) -> None:
    """Compare prior samples with held-out real CTs (HU histogram, bone, sizes, FD, diversity)."""
    from .prior.evaluate import evaluate_prior as run

    r = run(prior, data_dir, n_samples=n, seed=seed, max_real=max_real, train_dir=train_dir, out=out,
            force=force, device=device)

    def num(x) -> str:
        return "-" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))

    def vec(x) -> str:
        return "/".join(num(v) for v in x)

    rows = [("volumes", num(r["n_real"]), num(r["n_fake"])),
            ("bone fraction (>250 HU)", num(r["bone_fraction"]["real"]["mean"]), num(r["bone_fraction"]["fake"]["mean"])),
            ("vertebra extent x/y/z mm", vec(r["vertebra_extent_mm"]["real"]["mean"]), vec(r["vertebra_extent_mm"]["fake"]["mean"])),
            ("empty vertebra masks", num(r["vertebra_extent_mm"]["real"]["empty"]), num(r["vertebra_extent_mm"]["fake"]["empty"])),
            ("diversity: mean pair SSIM", num(r["diversity_ssim"]["real"]), num(r["diversity_ssim"]["fake"]))]
    if r["nearest_train_mse"] is not None:
        rows.append(("nearest-train MSE (mean)", num(r["nearest_train_mse"]["real"]["mean"]),
                     num(r["nearest_train_mse"]["fake"]["mean"])))
    click.echo(f"{'':28} {'real':>20} {'generated':>20}")
    for name, a, b in rows:
        click.echo(f"{name:28} {a:>20} {b:>20}")
    click.echo(f"HU Wasserstein-1 {num(r['hu_w1'])} HU, histogram L1 {num(r['hu_hist_l1'])}, "
               f"feature FD {num(r['feature_fd'])} (features v{r['features_version']})")
    if out is not None:
        click.echo(f"report: {out}")


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--prior", type=click.Path(dir_okay=False), default=None, help="prior checkpoint (default: the one shipped with xfit)")
@click.option("--angles", default=None, help="gantry angle of each image in degrees, e.g. 0,90 (default: from sidecars/DICOM)")
@click.option("--sdd", "sdd_mm", type=float, default=None, help="source-detector distance (mm), overrides sidecars")
@click.option("--sod", "sod_mm", type=float, default=None, help="source-isocentre distance (mm), overrides sidecars")
@click.option("--spacing", "pixel_spacing", default=None, help="detector pixel spacing row[,col] (mm), overrides sidecars")
@click.option("--flip-lr/--no-flip-lr", default=None, help="the images are mirrored left-right relative to the conventions")
@click.option("--invert", is_flag=True, help="the images show bone dark (invert them)")
@click.option("--config", "fit_config", type=click.Path(dir_okay=False), default=None, help="fitting config YAML (default configs/fit.yaml)")
@click.option("--steps", type=click.IntRange(1), default=None, help="optimizer steps per restart")
@click.option("--restarts", type=click.IntRange(1), default=None, help="independent restarts (their spread -> uncertainty)")
@click.option("--refine-pose", is_flag=True, default=None, help="also fit each view's angle and shift")
@click.option("--encoder", type=click.Path(dir_okay=False), default=None, help="warm-start encoder checkpoint")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--gt", type=click.Path(dir_okay=False), default=None, help="ground-truth CT (NIfTI) centred on the isocentre: adds metrics")
@click.option("--gt-seg", type=click.Path(dir_okay=False), default=None, help="ground-truth labels (default: *_seg beside --gt)")
@click.option("--mesh", is_flag=True, help="also write surface.stl of the vertebra label")
@click.option("--allow-single-view", is_flag=True, help="accept one image (depth then comes from the prior alone)")
@click.option("--force", is_flag=True, help="overwrite an existing output folder")
@click.option("--quiet", is_flag=True, help="no progress bar")
def reconstruct(images, out, prior, angles, sdd_mm, sod_mm, pixel_spacing, flip_lr, invert, fit_config, steps, restarts,
                refine_pose, encoder, device, seed, gt, gt_seg, mesh, allow_single_view, force, quiet) -> None:
    """Reconstruct a CT volume from X-ray IMAGES (PNG/JPEG/TIFF with sidecars, or DICOM)."""
    import warnings

    from .geometry import parse_angles
    from .reconstruct import check_output_free, reconstruct as run, write_reconstruction

    check_output_free(out, force)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, *a, **k: click.echo(f"xfit: warning: {m}", err=True)
        rec = run(
            images,
            prior=prior,
            angles=None if angles is None else parse_angles(angles),
            sdd_mm=sdd_mm,
            sod_mm=sod_mm,
            pixel_spacing_mm=_pair_option(pixel_spacing, "--spacing"),
            flip_lr=flip_lr,
            invert=invert,
            allow_single_view=allow_single_view,
            config=fit_config,
            steps=steps,
            restarts=restarts,
            refine_pose=refine_pose,
            device=device,
            seed=seed,
            gt=gt,
            gt_seg=gt_seg,
            encoder=encoder,
            progress=not quiet,
        )
    folder = write_reconstruction(rec, out, force=force, mesh=mesh)
    ncc = ", ".join(f"{n:.3f}" for n in rec.fit.view_ncc)
    click.echo(f"wrote {folder}/recon.nii.gz ({rec.seconds:.1f} s; re-projection NCC per view: {ncc})")
    if rec.metrics:
        click.echo("  ".join(f"{k} {v:.3f}" for k, v in rec.metrics.items()))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
