"""``xfit train-prior``, ``sample``, ``evaluate-prior`` and ``snapshot``: the prior."""

from __future__ import annotations

import click

from ..console import SEED, FiniteFloat
from ..prior.snapshot import snapshot_cli
from .training import check_training_request, collection_options, run_options

#: ``python -m xfit.prior.train snapshot`` as an ``xfit`` subcommand: a compact resumable
#: snapshot of a run (:func:`xfit.prior.snapshot.snapshot_run`).
snapshot = snapshot_cli


@click.command("train-prior")
@click.argument("ct_dir", type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="run folder (state, prior.safetensors, samples, log)",
)
@click.option(
    "--config",
    "config_name",
    default=None,
    help="config name (tiny, 64, 128) or YAML file [default: 64, or the run's own config with --resume]",
)
@collection_options
@click.option(
    "--amp",
    type=click.Choice(["auto", "bf16", "off"]),
    default="auto",
    show_default=True,
    help="bfloat16 autocast of G and D (auto: on with CUDA, off on the CPU; bf16 measured 1.45x faster on this CPU)",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="list per file the levels found, the crops, what is skipped and why; write OUT/dry_run.png; train nothing",
)
@click.option("--resume", is_flag=True, help="continue from OUT/state.safetensors")
@click.option(
    "--resume-from",
    type=click.Path(dir_okay=False),
    default=None,
    help="continue from a compact snapshot (xfit snapshot RUN -o FILE) in a new run folder",
)
@click.option(
    "--force",
    is_flag=True,
    help="restart a started run (removes its log, state, prior, samples, snapshots; keeps the data cache)",
)
@run_options
def train_prior(
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
    dry_run,
    resume,
    resume_from,
    force,
    device,
    max_steps,
) -> None:
    """Train the 3D StyleGAN2 prior on vertebra-centred crops of a CT collection (multi-GPU: torchrun -m
    xfit.prior.train)."""
    from pathlib import Path

    from ..errors import InputError
    from ..io import parse_json_strict
    from ..prior.checkpoint import snapshot_config
    from ..prior.config import PriorConfig, load_config
    from ..prior.train import SCHEDULE_KEYS, data_settings, require_run_config, same_config, train

    check_training_request(ct_dir, out, masks_dir=masks_dir, levels=levels, device=device)
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
        elif not same_config(run_cfg.to_dict(), cfg):
            raise InputError(
                f"--config {config_name} differs from the config the run {out} was started "
                f"with in more than its schedule ({', '.join(SCHEDULE_KEYS)}); resume without "
                "--config (or with the same one), or restart with --force"
            )
    if dry_run:
        from ..prior.data import dry_run as run_dry

        Path(out).mkdir(parents=True, exist_ok=True)
        rep = run_dry(
            ct_dir,
            data_settings(cfg, levels, max_outside),
            layout=layout,
            masks_dir=masks_dir,
            class_map=class_map,
            montage=Path(out) / "dry_run.png",
            workers=workers,
        )
        for line in rep.lines():
            click.echo(line)
        return
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
        resume_from=resume_from,
        force=force,
        device=device,
        max_steps=max_steps,
    )
    click.echo(
        f"trained {summary.get('steps', 0)} steps ({summary.get('kimg', 0):.3f} kimg) on "
        f"{summary['examples']} examples, {summary.get('img_per_s', 0):.2f} img/s on {summary['device']}; "
        f"prior: {out}/prior.safetensors"
    )
    if summary.get("levels"):
        click.echo("crops per level: " + ", ".join(f"{k} {v}" for k, v in summary["levels"].items()))
    for name, why in summary.get("skipped", []):
        click.echo(f"skipped {name}: {why}")


@click.command()
@click.argument("prior", type=click.Path(dir_okay=False))
@click.option(
    "-n", "--num", "n", default=8, show_default=True, type=click.IntRange(1, 100_000), help="number of samples"
)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--seed", default=0, show_default=True, type=SEED, help="latent seed (sample i is the same for any -n)")
@click.option(
    "--truncation",
    "truncation_psi",
    default=1.0,
    show_default=True,
    type=FiniteFloat(-2.0, 2.0),
    help="truncation psi in [-2, 2] (1 = none, 0 = the average anatomy)",
)
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:N or auto")
@click.option("--force", is_flag=True, help="replace an existing output folder")
def sample(prior, n, out, seed, truncation_psi, device, force) -> None:
    """Write N prior samples (sampleNNN_ct/seg.nii.gz, samples.json, montage.png) to OUT."""
    from ..io import check_device, check_output_folder
    from ..prior.checkpoint import load_prior
    from ..prior.sample import sample_prior

    dev = check_device(device)
    check_output_folder(out, force=force, inputs=[prior])  # before the prior is loaded
    paths = sample_prior(load_prior(prior, device=dev), n, out, seed=seed, truncation_psi=truncation_psi, force=force)
    click.echo(f"wrote {n} samples to {out} (montage: {paths[-1]})")


@click.command("evaluate-prior")
@click.argument("prior", type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="held-out NIfTI CT folder")
@click.option(
    "--train",
    "train_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="training CT folder (memorisation check)",
)
@click.option(
    "-n", "--num", "n", default=64, show_default=True, type=click.IntRange(1, 100_000), help="generated samples"
)
@click.option("--max-real", default=None, type=click.IntRange(1, 10**7), help="use at most this many real crops")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False), help="write the report as JSON here")
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:N or auto")
@click.option("--force", is_flag=True, help="overwrite --out")
def evaluate_prior(prior, data_dir, train_dir, n, max_real, seed, out, device, force) -> None:
    """Compare prior samples with held-out real CTs (HU histogram, bone, sizes, label pieces, FD,
    diversity)."""
    from ..io import check_device, check_output_file
    from ..prior.evaluate import evaluate_prior as run

    dev = check_device(device)
    if out is not None:
        check_output_file(out, force=force)
    r = run(
        prior,
        data_dir,
        n_samples=n,
        seed=seed,
        max_real=max_real,
        train_dir=train_dir,
        out=out,
        force=force,
        device=dev,
    )

    def num(x) -> str:
        return "-" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))

    def vec(x) -> str:
        return "/".join(num(v) for v in x)

    lc = r["label_check"]
    rows = [
        ("volumes", num(r["n_real"]), num(r["n_fake"])),
        ("bone fraction (>250 HU)", num(r["bone_fraction"]["real"]["mean"]), num(r["bone_fraction"]["fake"]["mean"])),
        (
            "vertebra extent x/y/z mm",
            vec(r["vertebra_extent_mm"]["real"]["mean"]),
            vec(r["vertebra_extent_mm"]["fake"]["mean"]),
        ),
        (
            "empty vertebra masks",
            num(r["vertebra_extent_mm"]["real"]["empty"]),
            num(r["vertebra_extent_mm"]["fake"]["empty"]),
        ),
        ("label components (mean)", num(lc["real"]["components"]), num(lc["fake"]["components"])),
        ("label largest-piece share", num(lc["real"]["largest_fraction"]), num(lc["fake"]["largest_fraction"])),
        ("label beyond its z-range", num(lc["real"]["beyond_z_fraction"]), num(lc["fake"]["beyond_z_fraction"])),
        ("labels not crisp", f"{lc['real']['not_crisp']}/{r['n_real']}", f"{lc['fake']['not_crisp']}/{r['n_fake']}"),
        ("diversity: mean pair SSIM", num(r["diversity_ssim"]["real"]), num(r["diversity_ssim"]["fake"])),
    ]
    if r["nearest_train_mse"] is not None:
        rows.append(
            (
                "nearest-train MSE (mean)",
                num(r["nearest_train_mse"]["real"]["mean"]),
                num(r["nearest_train_mse"]["fake"]["mean"]),
            )
        )
    click.echo(f"{'':28} {'real':>20} {'generated':>20}")
    for name, a, b in rows:
        click.echo(f"{name:28} {a:>20} {b:>20}")
    click.echo(
        f"HU Wasserstein-1 {num(r['hu_w1'])} HU, histogram L1 {num(r['hu_hist_l1'])}, "
        f"feature FD {num(r['feature_fd'])} (features v{r['features_version']})"
    )
    if out is not None:
        click.echo(f"report: {out}")
