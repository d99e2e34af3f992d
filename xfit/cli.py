"""The ``xfit`` command line: parse options, call the library, print, exit codes.

Every user error ends in one line ``xfit: error: ...`` on stderr and exit code 2, never a
traceback: an :class:`xfit.errors.XfitError`, a bad option (floats must be finite and in their
documented range), a device that does not exist, an OSError of the file system (read-only, full,
permission, symlink loop; the path is named), an allocation failure or an overflow. Warnings
print as ``xfit: warning: ...``, one line each. Every command checks its device, inputs and
output folder before any work, and writes its output folder as a whole
(:func:`xfit.io.atomic_folder`).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from . import __version__
from .allocator import keep_freed_memory
from .errors import XfitError

#: Seeds of every command lie in [0, SEED_MAX] (numpy and torch accept them all).
SEED_MAX = 2**32 - 1


def _one_line(exc: BaseException) -> str:
    msg = (getattr(exc, "format_message", None) or (lambda: str(exc)))() or type(exc).__name__
    return " ".join(msg.split())


def _os_error_line(exc: OSError) -> str:
    """``path: reason`` of an OSError (both paths of a rename), else its message."""
    if isinstance(exc, XfitError) or exc.strerror is None:
        return _one_line(exc)
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return " ".join(f"{where}: {exc.strerror}".split()) if where else " ".join(exc.strerror.split())


_ALLOC_WORDS = ("can't allocate memory", "not enough memory", "defaultcpuallocator", "out of memory",
                "array is too big", "maximum allowed dimension")


def _is_allocation_failure(exc: BaseException) -> bool:
    return isinstance(exc, (RuntimeError, ValueError)) and any(w in str(exc).lower() for w in _ALLOC_WORDS)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    click.echo(f"xfit: warning: {_one_line(message) if isinstance(message, BaseException) else ' '.join(str(message).split())}",
               err=True)


def _sigterm_as_interrupt():
    """Turn SIGTERM (``kill``, a batch system's time limit) into KeyboardInterrupt, so output
    folders are cleaned up as on Ctrl-C. Returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):  # noqa: ANN001
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover
        return None


class _OneLineErrors:
    """Mixin of a click command or group: every user error ends in one line ``xfit: error: ...``
    and exit code 2; warnings print as ``xfit: warning: ...``; Ctrl-C and SIGTERM exit 130."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        keep_freed_memory()
        previous = _sigterm_as_interrupt()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("always", module=r"xfit(\..*)?$")
                warnings.showwarning = _show_warning
                rv = self._main(args, prog_name, complete_var, **extra)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if isinstance(rv, int) and standalone_mode:
            sys.exit(rv)
        return rv

    def _main(self, args, prog_name, complete_var, **extra):  # noqa: ANN001
        def fail(text: str) -> None:
            click.echo(f"xfit: error: {text}", err=True)
            sys.exit(2)

        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:  # --help, --version
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("xfit: interrupted", err=True)
            sys.exit(130)
        except click.ClickException as exc:  # bad option or argument
            fail(_one_line(exc))
        except XfitError as exc:
            fail(_one_line(exc))
        except (MemoryError, torch_oom_errors()) as exc:
            fail("out of memory; try a smaller detector (--detector), fewer --restarts, "
                 f"or --device cpu ({_one_line(exc)[:120]})")
        except OSError as exc:  # read-only or full file system, permission, symlink loop ...
            fail(_os_error_line(exc))
        except OverflowError as exc:
            fail(f"a number is too large ({_one_line(exc)[:160]})")
        except (RuntimeError, ValueError) as exc:
            if not _is_allocation_failure(exc):
                raise  # a bug in xfit: keep the traceback
            fail("out of memory; try a smaller detector (--detector), fewer samples or --restarts "
                 f"({_one_line(exc)[:120]})")
        return None


class XfitGroup(_OneLineErrors, click.Group):
    """The ``xfit`` group: every user error ends in one line ``xfit: error: ...`` and exit code 2."""


class XfitCommand(_OneLineErrors, click.Command):
    """A command run on its own (``python -m xfit.baselines.ship``, ``python -m xfit.prior.train
    snapshot``) under the same error contract as ``xfit``'s subcommands."""


def run_entry_point(body: Callable[[], Any], prog: str) -> None:
    """Run ``body``, the work of a ``python -m`` entry point whose arguments are parsed already
    (torchrun's argparse trainers), under the same error contract."""
    XfitCommand(prog, callback=body).main([], prog_name=prog)


def torch_oom_errors() -> type[BaseException]:
    """The out-of-memory exception type of torch (lazy import keeps ``--help`` fast)."""
    try:
        import torch

        return torch.OutOfMemoryError
    except (ImportError, AttributeError):  # pragma: no cover
        return MemoryError


class FiniteFloat(click.ParamType):
    """A float option that must be finite and within ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""

    name = "float"

    def __init__(self, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def describe(self) -> str:
        left = "(" if self.lo_open else "["
        return f"a finite number in {left}{self.lo:g}, {self.hi:g}]"

    def convert(self, value: Any, param, ctx) -> float:  # noqa: ANN001
        try:
            x = float(value)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not finite; expected {self.describe()}", param, ctx)
        if not ((x > self.lo if self.lo_open else x >= self.lo) and x <= self.hi):
            self.fail(f"{value!r} is out of range; expected {self.describe()}", param, ctx)
        return x

    def __repr__(self) -> str:
        return f"FiniteFloat({self.lo}, {self.hi})"


SEED = click.IntRange(0, SEED_MAX)


def _pair_option(text: str | None, name: str | Sequence[str], cast: Callable = float, *, lo: float = -math.inf,
                 hi: float = math.inf, lo_open: bool = False) -> tuple | None:
    """Parse ``"128"`` or ``"128,96"`` into a pair (a single value is repeated); numbers must be
    finite and in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    if text is None:
        return None
    bad = f"expected a number or a pair like 1,2, got {text!r}"
    try:
        parts = [cast(p.strip()) for p in str(text).split(",")]
    except (ValueError, OverflowError):
        raise click.BadParameter(bad, param_hint=name)
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise click.BadParameter(bad, param_hint=name)
    for x in parts:
        if not math.isfinite(x) or not ((x > lo if lo_open else x >= lo) and x <= hi):
            left = "(" if lo_open else "["
            raise click.BadParameter(f"{text!r}: each value must be a finite number in {left}{lo:g}, {hi:g}]",
                                     param_hint=name)
    return tuple(parts)


@click.group(cls=XfitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xfit")
def main() -> None:
    """xfit: reconstruct a 3D CT volume from two X-rays with a 3D StyleGAN2 anatomical prior."""


#: Largest grid side of ``xfit phantoms`` (1024^3 float32 is 4 GiB per volume).
MAX_PHANTOM_SIDE = 1024


@main.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("-n", "--num", "n", default=10, show_default=True, type=click.IntRange(1, 100_000), help="number of cases")
@click.option("--size", default="64", show_default=True, help="voxels per side, or three sizes I,J,K (each 8 to 1024)")
@click.option("--spacing", default=1.25, show_default=True, type=FiniteFloat(0.05, 100.0), help="voxel size (mm)")
@click.option("--fov", "fov_mm", default=None, type=FiniteFloat(1.0, 10_000.0), help="field of view (mm) with the torso around the spine (the grid then has fov/spacing voxels)")
@click.option("--seed", default=0, show_default=True, type=SEED, help="seed of case 0 (case i uses seed+i)")
@click.option("--level", default=None, help="the vertebra each grid is centred on: a level (L1), a range (T10-L5, one drawn per case), lumbar or thoracic [default: half L1-L5, half T6-T12]")
@click.option("--centre", type=click.Choice(["vertebra", "grid"]), default="vertebra", show_default=True,
              help="grid centre: the centroid of the centred vertebra (as the prior's training crops) or the middle of its antero-posterior extent")
@click.option("--noise", "noise_hu", default=None, type=FiniteFloat(0.0, 500.0), help="CT noise standard deviation (HU; 0 = none) [default: drawn, 5-30]")
@click.option("--blur/--no-blur", default=True, show_default=True, help="slice thickness and in-plane blur of the drawn scanner")
@click.option("--metal/--no-metal", default=None, help="pedicle screws in every case / in none [default: drawn, a few % of cases]")
@click.option("--body-composition", type=click.Choice(["default", "published"]), default="default", show_default=True,
              help="published: draw sex, BMI and the centred level's muscle and fat areas from published CT body-composition data "
                   "and fit the torso to them; default: each seed's phantom as it always was")
@click.option("--force", is_flag=True, help="replace an existing output folder")
def phantoms(out: str, n: int, size: str, spacing: float, fov_mm: float | None, seed: int, level: str | None,
             centre: str, noise_hu: float | None, blur: bool, metal: bool | None, body_composition: str, force: bool) -> None:
    """Write N procedural spine CT phantoms to OUT: caseNNNN_ct.nii.gz (HU), caseNNNN_seg.nii.gz
    (every vertebra by its VerSe level), caseNNNN_tissue.nii.gz (tissue classes), caseNNNN.json
    and montage.png."""
    from .errors import InputError
    from .io import check_output_folder
    from .phantoms import make_phantom, write_phantoms

    try:
        sizes = tuple(int(x) for x in str(size).split(","))
    except ValueError:
        raise click.BadParameter(f"expected a number or three like 64,64,96, got {size!r}", param_hint="--size")
    if len(sizes) not in (1, 3) or not all(8 <= x <= MAX_PHANTOM_SIDE for x in sizes):
        raise click.BadParameter(f"expected one or three sizes of 8 to {MAX_PHANTOM_SIDE}, got {size!r}",
                                 param_hint="--size")
    if fov_mm is not None and fov_mm / spacing > MAX_PHANTOM_SIDE:
        raise InputError(f"--fov {fov_mm:g} at --spacing {spacing:g} gives {math.ceil(fov_mm / spacing)} voxels "
                         f"per side; at most {MAX_PHANTOM_SIDE}")
    check_output_folder(out, force=force)
    kw = dict(size=sizes[0] if len(sizes) == 1 else sizes, spacing_mm=spacing, fov_mm=fov_mm, level=level,
              centre=centre, noise_hu=noise_hu, blur=blur, metal=metal, body_composition=body_composition)
    make_phantom(seed, **{**kw, "size": 8, "fov_mm": None, "blur": False, "noise_hu": 0.0})  # bad level: now
    # write_phantoms builds the folder with xfit.io.atomic_folder: whole or not at all
    paths = write_phantoms(out, n, seed=seed, force=force, **kw)
    click.echo(f"wrote {len(paths)} files to {out} (montage: {out}/montage.png)")


@main.command()
@click.argument("ct", type=click.Path(dir_okay=False))
@click.option("--angles", default="0,90", show_default=True, help="gantry angles in degrees, comma separated (0 = AP, 90 = left lateral)")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--sdd", "sdd_mm", default=1800.0, show_default=True, type=FiniteFloat(0, 1e5, lo_open=True), help="source-detector distance (mm)")
@click.option("--sod", "sod_mm", default=1500.0, show_default=True, type=FiniteFloat(0, 1e5, lo_open=True), help="source-isocentre distance (mm)")
@click.option("--detector", default="128", show_default=True, help="detector rows[,cols] in pixels (at most 8192 per side)")
@click.option("--pixel-spacing", default="1.0", show_default=True, help="detector pixel spacing row[,col] (mm)")
@click.option("--projection", type=click.Choice(["cone", "parallel"]), default="cone", show_default=True)
@click.option("--mask", type=click.Path(dir_okay=False), default=None, help="label map for --center-label")
@click.option("--center-label", type=click.IntRange(0, 32767), default=None, help="centre the views on this label of --mask")
@click.option("--dose", "photons", type=FiniteFloat(0, 1e12, lo_open=True), default=None, help="Poisson noise: unattenuated photons per pixel")
@click.option("--scale", "line_integral_scale", type=FiniteFloat(0, 1e6, lo_open=True), default=None, help="line integral mapped to 65535 (default: automatic)")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--style", type=click.Choice(["ideal", "clinical"]), default="ideal", show_default=True,
              help="ideal: line integrals (DRR); clinical: the processed radiograph of an X-ray room (spectrum, "
                   "scatter, heel, noise, blur, LUT, edge enhancement, collimation, markers, grid), lumbar AP or "
                   "lateral preset by angle; docs/radiographs.md")
@click.option("--style-param", "style_params", multiple=True, metavar="NAME=VALUE",
              help="set a clinical-style parameter, for both presets or one (ap.NAME=, lateral.NAME=); repeatable, "
                   "e.g. --style-param kvp=90 --style-param spr=0 --style-param strength=0.5 (docs/radiographs.md "
                   "lists them; xfit/configs/style-clinical.yaml holds the defaults)")
@click.option("--style-file", type=click.Path(dir_okay=False), default=None,
              help="YAML of clinical-style parameters: sections ap: and lateral:, or keys for both (see "
                   "xfit/configs/style-clinical.yaml); --style-param wins over it")
@click.option("--force", is_flag=True, help="replace an existing output folder")
def simulate(ct, angles, out, sdd_mm, sod_mm, detector, pixel_spacing, projection, mask, center_label, photons, line_integral_scale, seed, style,
             style_params, style_file, force) -> None:
    """Simulate X-rays of CT (NIfTI, HU): one 16-bit PNG + sidecar JSON per angle.

    With --style clinical each view is a processed, uncalibrated radiograph (8-16 bit PNG, no
    line_integral_scale in its sidecar; invert: true when stored MONOCHROME1)."""
    from .geometry import MAX_PIXEL_SPACING_MM, check_detector_shape, parse_angles
    from .simulate import simulate as run

    styles = None
    if style == "clinical":
        from .radiograph import load_styles

        styles = load_styles(style_file, style_params)
    elif style_params or style_file:
        raise click.BadParameter("needs --style clinical", param_hint="--style-param" if style_params else "--style-file")
    shape = check_detector_shape(_pair_option(detector, "--detector", int), "--detector")
    results = run(
        ct,
        parse_angles(angles),
        out,
        sdd_mm=sdd_mm,
        sod_mm=sod_mm,
        detector_shape=shape,
        pixel_spacing_mm=_pair_option(pixel_spacing, "--pixel-spacing", lo=0.0, hi=MAX_PIXEL_SPACING_MM, lo_open=True),
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
            click.echo(f"{r.png}  angle {r.view.angle_deg:g} deg  clinical style ({r.preset} preset, "
                       f"{r.radiograph.bits}-bit{', MONOCHROME1' if r.radiograph.inverted else ''})")


@main.command("train-prior")
@click.argument("ct_dir", type=click.Path(file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="run folder (state, prior.safetensors, samples, log)")
@click.option("--config", "config_name", default=None, help="config name (tiny, 64, 128) or YAML file [default: 64, or the run's own config with --resume]")
@click.option("--layout", type=click.Choice(["xfit", "verse", "ctspine1k", "totalsegmentator", "mixed"]), default=None,
              help="collection layout [default: detected]; see the README, 'Train on your own data'")
@click.option("--levels", default=None, help="vertebrae to train on: names, ranges or lists, e.g. T10-L5 or L1,L3 [default: all]")
@click.option("--masks", "masks_dir", default=None, type=click.Path(file_okay=False), help="folder of vertebra masks under the CTs' names (default: the layout's own)")
@click.option("--class-map", default=None, help="class map of multilabel masks not in the VerSe numbering: totalseg-v1, totalseg-v2 or a JSON file {value: structure} [default: the file's header]")
@click.option("--max-outside", type=FiniteFloat(0.0, 1.0), default=0.05, show_default=True, help="largest fraction of a crop allowed outside its scan")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="processes preparing the crops [default: one per CPU core]")
@click.option("--amp", type=click.Choice(["auto", "bf16", "off"]), default="auto", show_default=True,
              help="bfloat16 autocast of G and D (auto: on with CUDA, off on the CPU; bf16 measured 1.45x faster on this CPU)")
@click.option("--dry-run", is_flag=True, help="list per file the levels found, the crops, what is skipped and why; write OUT/dry_run.png; train nothing")
@click.option("--resume", is_flag=True, help="continue from OUT/state.safetensors")
@click.option("--resume-from", type=click.Path(dir_okay=False), default=None,
              help="continue from a compact snapshot (python -m xfit.prior.train snapshot RUN -o FILE) in a new run folder")
@click.option("--force", is_flag=True, help="restart a started run (removes its log, state, prior, samples, snapshots; keeps the data cache)")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
@click.option("--max-steps", type=click.IntRange(1, 10**9), default=None, help="stop after this many steps in total")
def train_prior(ct_dir, out, config_name, layout, levels, masks_dir, class_map, max_outside, workers, amp, dry_run,
                resume, resume_from, force, device, max_steps) -> None:
    """Train the 3D StyleGAN2 prior on vertebra-centred crops of a CT collection (multi-GPU: torchrun -m
    xfit.prior.train)."""
    import json
    from pathlib import Path

    from .errors import InputError
    from .io import check_device, check_output_path, parse_json_strict
    from .levels import parse_levels
    from .prior.checkpoint import snapshot_config
    from .prior.config import PriorConfig, load_config
    from .prior.train import data_settings, require_run_config, train

    if device is not None:
        check_device(device)
    if levels is not None:
        parse_levels(levels)  # a bad level is one line, before any work
    check_output_path(out)
    for folder in (ct_dir, masks_dir):
        if folder is not None and not Path(folder).is_dir():
            raise InputError(f"{folder}: folder not found" if not Path(folder).exists() else f"{folder} is not a folder")
    if resume and resume_from:
        raise InputError("use --resume (this run folder) or --resume-from SNAPSHOT (a new run folder), not both")
    saved = Path(out) / "config.json"
    if config_name is None and resume:
        require_run_config(out)
    if config_name is None and resume_from:
        cfg = snapshot_config(resume_from)
    else:
        cfg = load_config(config_name or "64")
    if resume and saved.is_file():
        try:
            run_cfg = PriorConfig.from_dict(parse_json_strict(saved.read_text()))
        except ValueError as exc:
            raise InputError(f"{saved}: cannot read the run's config: {exc}") from exc
        if config_name is None:
            cfg = run_cfg
        elif json.loads(json.dumps(cfg.to_dict())) != json.loads(json.dumps(run_cfg.to_dict())):
            raise InputError(f"--config {config_name} differs from the config the run {out} was started "
                             "with; resume without --config (or with the same one), or restart with --force")
    if dry_run:
        from .prior.data import dry_run as run_dry

        Path(out).mkdir(parents=True, exist_ok=True)
        rep = run_dry(ct_dir, data_settings(cfg, levels, max_outside), layout=layout, masks_dir=masks_dir,
                      class_map=class_map, montage=Path(out) / "dry_run.png", workers=workers)
        for line in rep.lines():
            click.echo(line)
        return
    summary = train(cfg, ct_dir, out, masks_dir=masks_dir, layout=layout, class_map=class_map, levels=levels,
                    max_outside=max_outside, workers=workers, amp=amp, resume=resume, resume_from=resume_from,
                    force=force, device=device, max_steps=max_steps)
    click.echo(f"trained {summary.get('steps', 0)} steps ({summary.get('kimg', 0):.3f} kimg) on "
               f"{summary['examples']} examples, {summary.get('img_per_s', 0):.2f} img/s on {summary['device']}; "
               f"prior: {out}/prior.safetensors")
    if summary.get("levels"):
        click.echo("crops per level: " + ", ".join(f"{k} {v}" for k, v in summary["levels"].items()))
    for name, why in summary.get("skipped", []):
        click.echo(f"skipped {name}: {why}")


@main.command()
@click.argument("prior", type=click.Path(dir_okay=False))
@click.option("-n", "--num", "n", default=8, show_default=True, type=click.IntRange(1, 100_000), help="number of samples")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--seed", default=0, show_default=True, type=SEED, help="latent seed (sample i is the same for any -n)")
@click.option("--truncation", "truncation_psi", default=1.0, show_default=True, type=FiniteFloat(-2.0, 2.0),
              help="truncation psi in [-2, 2] (1 = none, 0 = the average anatomy)")
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:N or auto")
@click.option("--force", is_flag=True, help="replace an existing output folder")
def sample(prior, n, out, seed, truncation_psi, device, force) -> None:
    """Write N prior samples (sampleNNN_ct/seg.nii.gz, samples.json, montage.png) to OUT."""
    from .io import check_device, check_output_folder
    from .prior.checkpoint import load_prior
    from .prior.sample import sample_prior

    dev = check_device(device)
    check_output_folder(out, force=force, inputs=[prior])  # before the prior is loaded
    paths = sample_prior(load_prior(prior, device=dev), n, out, seed=seed, truncation_psi=truncation_psi,
                         force=force)
    click.echo(f"wrote {n} samples to {out} (montage: {paths[-1]})")


@main.command("evaluate-prior")
@click.argument("prior", type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="held-out NIfTI CT folder")
@click.option("--train", "train_dir", default=None, type=click.Path(file_okay=False), help="training CT folder (memorisation check)")
@click.option("-n", "--num", "n", default=64, show_default=True, type=click.IntRange(1, 100_000), help="generated samples")
@click.option("--max-real", default=None, type=click.IntRange(1, 10**7), help="use at most this many real crops")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False), help="write the report as JSON here")
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:N or auto")
@click.option("--force", is_flag=True, help="overwrite --out")
def evaluate_prior(prior, data_dir, train_dir, n, max_real, seed, out, device, force) -> None:
    """Compare prior samples with held-out real CTs (HU histogram, bone, sizes, label pieces, FD,
    diversity)."""
    from .io import check_device, check_output_file
    from .prior.evaluate import evaluate_prior as run

    dev = check_device(device)
    if out is not None:
        check_output_file(out, force=force)
    r = run(prior, data_dir, n_samples=n, seed=seed, max_real=max_real, train_dir=train_dir, out=out,
            force=force, device=dev)

    def num(x) -> str:
        return "-" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))

    def vec(x) -> str:
        return "/".join(num(v) for v in x)

    lc = r["label_check"]
    rows = [("volumes", num(r["n_real"]), num(r["n_fake"])),
            ("bone fraction (>250 HU)", num(r["bone_fraction"]["real"]["mean"]), num(r["bone_fraction"]["fake"]["mean"])),
            ("vertebra extent x/y/z mm", vec(r["vertebra_extent_mm"]["real"]["mean"]), vec(r["vertebra_extent_mm"]["fake"]["mean"])),
            ("empty vertebra masks", num(r["vertebra_extent_mm"]["real"]["empty"]), num(r["vertebra_extent_mm"]["fake"]["empty"])),
            ("label components (mean)", num(lc["real"]["components"]), num(lc["fake"]["components"])),
            ("label largest-piece share", num(lc["real"]["largest_fraction"]), num(lc["fake"]["largest_fraction"])),
            ("label beyond its z-range", num(lc["real"]["beyond_z_fraction"]), num(lc["fake"]["beyond_z_fraction"])),
            ("labels not crisp", f"{lc['real']['not_crisp']}/{r['n_real']}", f"{lc['fake']['not_crisp']}/{r['n_fake']}"),
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
@click.option("--sdd", "sdd_mm", type=FiniteFloat(0, 1e5, lo_open=True), default=None, help="source-detector distance (mm), overrides sidecars")
@click.option("--sod", "sod_mm", type=FiniteFloat(0, 1e5, lo_open=True), default=None, help="source-isocentre distance (mm), overrides sidecars")
@click.option("--pixel-spacing", "--spacing", "pixel_spacing", default=None,
              help="detector pixel spacing row[,col] (mm), overrides sidecars; stands in for an invalid DICOM tag")
@click.option("--flip-lr/--no-flip-lr", default=None, help="the images are mirrored left-right relative to the conventions")
@click.option("--invert", is_flag=True, help="the images show bone dark (invert them)")
@click.option("--config", "fit_config", type=click.Path(dir_okay=False), default=None, help="fitting config YAML (default xfit/configs/fit.yaml)")
@click.option("--steps", type=click.IntRange(1, 1_000_000), default=None, help="optimizer steps per restart")
@click.option("--restarts", type=click.IntRange(1, 1024), default=None, help="independent restarts (their spread -> uncertainty)")
@click.option("--refine-pose", is_flag=True, default=None, help="also fit each view's angle and shift")
@click.option("--encoder", type=click.Path(dir_okay=False), default=None, help="warm-start encoder checkpoint")
@click.option("--target", "targets", multiple=True, help="ROW,COL (pixels of the file as stored, as a viewer shows "
              "it) of the vertebra's centre in each image, in image order (repeat per image; several vertebrae: V "
              "values each), or 'auto'; crops each image around it")
@click.option("--levels", "levels", default=None, help="with several targeted vertebrae: their levels in target order "
              "(e.g. L1-L3), used as folder names and label values")
@click.option("--method", default="fit", show_default=True, help="fit (the prior), a feed-forward baseline: "
              "x2ct-cnn, x2ct-gan, ear, transvert, xctrsnet, igcn (one view), or ceiling (oracle: the prior "
              "fitted to --gt, to see how well it can hold that anatomy)")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="the baseline's checkpoint "
              "(default: the one shipped for --method); with --method fit, that of the fit config's init_network")
@click.option("--transform/--no-transform", default=None, help="fit a global rotation, shift and scale of the "
              "volume with W+ (default: the fit config)")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ... or auto")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--gt", type=click.Path(dir_okay=False), default=None, help="ground-truth CT (NIfTI) centred on the isocentre: adds metrics")
@click.option("--gt-seg", type=click.Path(dir_okay=False), default=None, help="ground-truth labels (default: *_seg beside --gt)")
@click.option("--gt-isocenter", default=None, help="X,Y,Z (mm): where the X-rays' isocentre lies in the --gt CT "
              "(default: its grid centre; xfit simulate writes it to simulate.json)")
@click.option("--level", default=None, help="the vertebra the X-rays are aimed at (e.g. L1): recorded in the report; warns when the prior never saw it")
@click.option("--mesh", is_flag=True, help="also write surface.stl of the vertebra label")
@click.option("--allow-single-view", is_flag=True, help="accept one image (depth then comes from the prior alone)")
@click.option("--force", is_flag=True, help="replace an existing output folder (once the new one is complete)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def reconstruct(images, out, prior, angles, sdd_mm, sod_mm, pixel_spacing, flip_lr, invert, fit_config, steps, restarts,
                refine_pose, encoder, targets, levels, method, checkpoint, transform, device, seed, gt, gt_seg,
                gt_isocenter, level, mesh,
                allow_single_view, force, quiet) -> None:
    """Reconstruct a CT volume from X-ray IMAGES (PNG/JPEG/TIFF with sidecars, or DICOM)."""
    from .geometry import MAX_PIXEL_SPACING_MM, parse_angles
    from .io import check_device
    from .reconstruct import preflight, reconstruct_vertebrae as run, write_reconstruction, write_vertebrae

    # every cheap check before the fit: device, output folder, input files, fit config, options
    dev = str(check_device(device))
    if level is not None:
        from .levels import level_label

        level_label(level)
    preflight(images, out, force=force, device=dev, prior=prior, config=fit_config, gt=gt, gt_seg=gt_seg,
              encoder=encoder)
    parsed_angles = None if angles is None else parse_angles(angles)
    spacing = _pair_option(pixel_spacing, ("--pixel-spacing", "--spacing"), lo=0.0, hi=MAX_PIXEL_SPACING_MM,
                           lo_open=True)
    gt_iso = _point_option(gt_isocenter, "--gt-isocenter")
    clicks = _target_option(targets, len(images))
    level_values = _levels_option(levels, clicks)
    if method == "ceiling" and gt is None:
        raise click.BadParameter("ceiling fits the prior to the 3D truth, not to the X-rays: give --gt CT.nii.gz",
                                 param_hint="--method")
    if method != "fit":
        if method != "ceiling":
            from .baselines.common import check_method

            check_method(method)
        _refuse_fit_options(method, transform=transform, refine_pose=refine_pose, steps=steps, restarts=restarts,
                            config=fit_config, encoder=encoder)
    if clicks == "auto":
        _check_not_constant(images)
    from .errors import InputError

    if checkpoint is not None and not Path(checkpoint).is_file():
        raise InputError(f"{checkpoint}: file not found")
    recs = run(
        images,
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
    if len(recs) == 1:
        folder = write_reconstruction(recs[0], out, force=force, mesh=mesh)
        names = [None]
    else:
        from .levels import level_name

        names = ([level_name(v) for v in level_values] if level_values
                 else [f"vertebra{k + 1}" for k in range(len(recs))])
        values = list(level_values) if level_values else list(range(1, len(recs) + 1))
        folder = write_vertebrae(recs, out, names=names, values=values, force=force,
                                 mesh=mesh)
    for rec, name in zip(recs, names):
        ncc = ", ".join(f"{n:.3f}" for n in rec.fit.view_ncc)
        where = folder if name is None else folder / name
        if rec.target is not None and rec.target.method != "isocentre":
            click.echo(f"target ({rec.target.method}): {_fmt_point(rec.target.point_mm)} mm"
                       + (f", rays {rec.target.details['residual_mm']:.1f} mm apart (RMS)"
                          if "residual_mm" in rec.target.details else ""))
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
    pairs = [_pair_option(v, "--target", lo=-1e6, hi=1e6) for v in values]
    if any("," not in v for v in values):
        raise click.BadParameter("each --target is ROW,COL (pixels) or 'auto'", param_hint="--target")
    from .reconstruct import group_targets

    return group_targets(pairs, n_images)


#: ``reconstruct`` options that only the fit reads (a feed-forward baseline would ignore them).
FIT_ONLY_OPTIONS = {"transform": "--transform", "refine_pose": "--refine-pose", "steps": "--steps",
                    "restarts": "--restarts", "config": "--config", "encoder": "--encoder"}


def _refuse_fit_options(method: str, **given: Any) -> None:
    """Refuse the fit-only options (:data:`FIT_ONLY_OPTIONS`) given with a baseline ``method``."""
    names = [FIT_ONLY_OPTIONS[k] for k, v in given.items() if v is not None]
    if names:
        what = "the oracle ceiling" if method == "ceiling" else f"the feed-forward baseline {method}"
        raise click.BadParameter(f"{', '.join(names)} only apply to --method fit, not to {what}", param_hint="--method")


def _check_not_constant(images: Sequence[str]) -> None:
    """``--target auto`` searches the whole images: refuse a constant one, as the fit of a clicked
    target's crops does."""
    from .errors import InputError
    from .io import read_pixels

    for path in images:
        pixels = read_pixels(path)
        if float(pixels.max()) <= float(pixels.min()):
            raise InputError(f"{path}: the image is constant: nothing to find or fit")


def _levels_option(levels: str | None, clicks) -> tuple[int, ...] | None:
    """``--levels`` of several targeted vertebrae: as many levels as vertebrae."""
    if levels is None:
        return None
    from .levels import parse_levels

    if not isinstance(clicks, list) or len(clicks) < 2:
        raise click.BadParameter("names the vertebrae of several --target groups; for one vertebra use --level",
                                 param_hint="--levels")
    values = tuple(v for item in levels.split(",") for v in parse_levels(item))  # in the order given
    if len(set(values)) != len(values):
        raise click.BadParameter(f"{levels!r} names a level twice", param_hint="--levels")
    n = len(clicks) if isinstance(clicks, list) else 1
    if len(values) != n:
        raise click.BadParameter(f"{len(values)} level(s) for {n} targeted vertebra(e)", param_hint="--levels")
    return values


# ----------------------------------------------------------------------------------------------
# evaluate and the studies


def _shard_option(ctx, param, value: str | None) -> tuple[int, int] | None:  # noqa: ANN001
    """``--shard K/N`` -> ``(K, N)`` (:func:`xfit.studies.evaluate.parse_shard`)."""
    if value is None:
        return None
    from .errors import InputError
    from .studies.evaluate import parse_shard

    try:
        return parse_shard(value)
    except InputError as exc:
        raise click.BadParameter(str(exc).removeprefix("--shard "), param=param) from None


def _eval_options(f: Callable) -> Callable:
    """The options ``xfit evaluate`` and every ``xfit study`` share."""
    opts = [
        click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="run folder (resumed when it holds the same settings)"),
        click.option("--methods", default="fit,mean,best-of-n", show_default=True,
                     help="comma separated: fit, fit-pose, mean, best-of-n, best-of-n-oracle, ceiling (oracle: the prior fitted to the 3D truth), x2ct-cnn, x2ct-gan, ear, transvert, xctrsnet, igcn (a baseline may carry a tag: x2ct-cnn@jitter)"),
        click.option("--checkpoint", "checkpoints", multiple=True, metavar="METHOD=FILE",
                     help="a baseline's checkpoint (repeatable) [default: the shipped one]"),
        click.option("--prior", default=None, type=click.Path(dir_okay=False), help="prior checkpoint [default: the shipped prior]"),
        click.option("--phantoms", default=None, type=click.IntRange(1, 100_000), help="held-out phantoms to evaluate [default: 20 without --data]"),
        click.option("--first-seed", default=0, show_default=True, type=SEED, help="seed of the first phantom (the shipped prior trained on 1000-1799)"),
        click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False), help="CT folder in any train-prior layout instead of phantoms"),
        click.option("--layout", type=click.Choice(["xfit", "verse", "ctspine1k", "totalsegmentator", "mixed"]), default=None, help="layout of --data [default: detected]"),
        click.option("--levels", default=None, help="vertebrae of --data to evaluate, e.g. T10-L5 [default: all]"),
        click.option("--max-cases", default=None, type=click.IntRange(1, 10**7), help="at most this many crops of --data"),
        click.option("--detector", default=128, show_default=True, type=click.IntRange(8, 4096), help="detector pixels per side"),
        click.option("--pixel-spacing", default=1.0, show_default=True, type=FiniteFloat(0.01, 10.0), help="detector pixel spacing (mm)"),
        click.option("--third-view", default=45.0, show_default=True, type=FiniteFloat(-360.0, 360.0), help="angle of the held-out view (deg)"),
        click.option("--whole-body", "whole_body", default=None, type=FiniteFloat(80.0, 2000.0), metavar="FOV_MM", help="phantom X-rays through the whole torso on a FOV_MM grid"),
        click.option("--random", "n_random", default=32, show_default=True, type=click.IntRange(1, 10_000), help="prior samples of best-of-n"),
        click.option("--fit-config", default=None, type=click.Path(dir_okay=False), help="fit config YAML [default: xfit/configs/fit.yaml]"),
        click.option("--no-warm-start", is_flag=True, help="start every fit at w_mean even when the prior has an encoder"),
        click.option("--seed", default=0, show_default=True, type=SEED, help="seed of the fit and of the perturbations"),
        click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256), help="cases run in parallel processes (threads are split between them)"),
        click.option("--reuse", multiple=True, type=click.Path(exists=True, file_okay=False),
                     help="copy finished rows from this run folder (or sweep folder) where its settings match (repeatable)"),
        click.option("--shard", default=None, callback=_shard_option, metavar="K/N",
                     help="run only shard K of N (K from 1 to N; a 0-based array index I is $((I+1))/N): the K-th "
                          "of N equal blocks of the cases, into its own folder -o; `xfit merge` joins the N folders"),
        click.option("--force", is_flag=True, help="start the run folder afresh"),
        click.option("--quiet", is_flag=True, help="no progress bar"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _eval_spec(kw: dict[str, Any], angles: Sequence[float] = (0.0, 90.0)):
    """The :class:`xfit.studies.evaluate.EvalSpec` of the shared options (checked, nothing run)."""
    from .baselines.common import METHODS as BASELINE_METHODS
    from .errors import InputError
    from .reconstruct import DEFAULT_PRIOR
    from .studies.evaluate import EvalSpec, parse_methods

    methods = parse_methods(kw["methods"])
    checkpoints = {}
    for item in kw["checkpoints"]:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"expected METHOD=FILE, got {item!r}", param_hint="--checkpoint")
        if name not in methods:
            raise click.BadParameter(f"{name!r} is not among --methods", param_hint="--checkpoint")
        if name.partition("@")[0] not in BASELINE_METHODS:
            raise click.BadParameter(f"{name!r} takes no checkpoint (only a baseline does: "
                                     f"{', '.join(BASELINE_METHODS)})", param_hint="--checkpoint")
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
        raise click.BadParameter(f"{kw['first_seed']} + {n_phantoms} phantoms passes the largest seed {SEED_MAX}; "
                                 f"at most {SEED_MAX - n_phantoms + 1}", param_hint="--first-seed")
    if kw["levels"] is not None and kw["data_dir"] is None:
        raise click.BadParameter("selects the vertebrae of --data; it does not apply to phantoms", param_hint="--levels")
    if kw["levels"] is not None:
        from .levels import parse_levels

        parse_levels(kw["levels"])
    prior = Path(kw["prior"]) if kw["prior"] else DEFAULT_PRIOR
    if not prior.is_file():
        raise InputError(f"{prior}: prior not found")
    from .io import check_output_path

    check_output_path(kw["out"])
    return EvalSpec(prior=str(prior), methods=methods, checkpoints=checkpoints,
                    phantoms=n_phantoms, first_seed=kw["first_seed"],
                    data=kw["data_dir"], layout=kw["layout"], levels=kw["levels"], max_cases=kw["max_cases"],
                    angles=tuple(angles), detector=kw["detector"], pixel_spacing_mm=kw["pixel_spacing"],
                    third_view_deg=kw["third_view"], whole_body_fov_mm=kw["whole_body"], n_random=kw["n_random"],
                    fit_config=kw["fit_config"], warm_start=not kw["no_warm_start"], seed=kw["seed"])


@main.command("evaluate")
@click.option("--angles", default="0,90", show_default=True, help="gantry angles of the X-rays (deg)")
@click.option("--dose", "photons", type=FiniteFloat(1, 1e12), default=None, help="Poisson noise: photons per pixel (as study noise --dose)")
@click.option("--style-strength", type=FiniteFloat(0.0, 1.0), default=None,
              help="hand clinical-style radiographs (xfit simulate --style clinical presets) at this strength (as study style)")
@_eval_options
def evaluate_cmd(angles, photons, style_strength, **kw) -> None:
    """Run each method on held-out phantoms or a CT folder: OUT/cases.csv, summary.md (mean ± std,
    paired Wilcoxon tests against the fit), panel.png."""
    import dataclasses as dc

    from .geometry import parse_angles
    from .studies.evaluate import evaluate

    spec = dc.replace(_eval_spec(kw, parse_angles(angles)), photons=photons, style_strength=style_strength)
    evaluate(spec, kw["out"], workers=kw["workers"], force=kw["force"], progress=not kw["quiet"], reuse=kw["reuse"],
             shard=kw["shard"])
    click.echo((Path(kw["out"]) / "summary.md").read_text())


@main.group()
def study() -> None:
    """Sweeps of `xfit evaluate`: angles between the views, geometry errors, dose, radiograph style."""


def _run_study(conds, kw, angles=(0.0, 90.0)) -> None:
    from .studies.sweeps import run_sweep

    run_sweep(_eval_spec(kw, angles), conds, kw["out"], workers=kw["workers"], force=kw["force"], progress=not kw["quiet"],
              reuse=kw["reuse"], shard=kw["shard"])
    if kw["shard"] is None:
        click.echo((Path(kw["out"]) / "summary.md").read_text())
    else:
        k, n = kw["shard"]
        click.echo(f"{kw['out']}: shard {k}/{n} of the study, each condition folder holding its cases; "
                   f"`xfit merge` its {n} shard folders to draw the curves")


@study.command("angles")
@click.option("--second-angle", default="60:140:10", show_default=True, help="angles of the second view (deg), a list or START:STOP:STEP; the first is at 0")
@_eval_options
def study_angles(second_angle, **kw) -> None:
    """Each metric against the angle between the two views (EAR's experiment)."""
    from .studies.sweeps import angle_conditions, parse_values

    _run_study(angle_conditions(parse_values(second_angle, "--second-angle", -180.0, 180.0)), kw)


@study.command("geometry")
@click.option("--angle-error", default="0,1,2,5", show_default=True, help="angle errors handed to the methods (deg)")
@click.option("--shift-error", default="0,2,5", show_default=True, help="isocentre errors handed to the methods (mm)")
@click.option("--angles", default="0,90", show_default=True, help="true gantry angles (deg)")
@_eval_options
def study_geometry(angle_error, shift_error, angles, **kw) -> None:
    """Each metric against the error of the geometry handed to the methods (add fit-pose to --methods)."""
    from .geometry import parse_angles
    from .studies.sweeps import geometry_conditions, parse_values

    conds = geometry_conditions(parse_values(angle_error, "--angle-error", 0.0, 45.0),
                                parse_values(shift_error, "--shift-error", 0.0, 100.0))
    _run_study(conds, kw, parse_angles(angles))


@study.command("noise")
@click.option("--dose", default="1e3,1e4,1e5,1e6", show_default=True, help="photons per pixel (Poisson noise of xfit simulate --dose)")
@click.option("--angles", default="0,90", show_default=True, help="gantry angles (deg)")
@_eval_options
def study_noise(dose, angles, **kw) -> None:
    """Each metric against the X-ray dose."""
    from .geometry import parse_angles
    from .studies.sweeps import noise_conditions, parse_values

    _run_study(noise_conditions(parse_values(dose, "--dose", 1.0, 1e12)), kw, parse_angles(angles))


@study.command("style")
@click.option("--strengths", default="0,0.25,0.5,1", show_default=True,
              help="strengths of the clinical style (0: ideal images, 1: the lumbar AP / lateral presets of xfit simulate --style clinical)")
@click.option("--angles", default="0,90", show_default=True, help="gantry angles (deg)")
@_eval_options
def study_style(strengths, angles, **kw) -> None:
    """Each metric from ideal DRRs to processed clinical radiographs (scatter, noise, LUT, enhancement, collimation, markers)."""
    from .geometry import parse_angles
    from .studies.sweeps import parse_values, style_conditions

    _run_study(style_conditions(parse_values(strengths, "--strengths", 0.0, 1.0)), kw, parse_angles(angles))


@main.command("merge")
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
    from .io import check_output_path
    from .studies.shards import merge

    check_output_path(out)
    merge(shards, out, force=force)
    summary = Path(out) / "summary.md"
    click.echo(summary.read_text())


from .baselines.cli import train_baseline  # noqa: E402 (registered after the group exists)

main.add_command(train_baseline)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
