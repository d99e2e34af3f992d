"""What a GPU gives xfit, in one run: the Triton projector against the reference on the device,
rays per second of each projector backend, the fit's wall time at 64³ (the shipped prior) and
128³ (the ``prior-128`` architecture, untrained: the cost, not the quality), and prior training
images per second (``bench/prior.py``).

    python bench/gpu_check.py                      # on a CUDA machine: writes results/gpu/<gpu name>.{json,md}
    python bench/gpu_check.py --dry-run --out /tmp/gpu   # CPU, Triton interpreter, tiny sizes (tested)

``--dry-run`` runs every step on the CPU at tiny sizes with ``TRITON_INTERPRET=1`` (set before
triton is imported), so the script itself is tested without a GPU; its numbers mean nothing.
DiffDRR and nanodrr are compared on the CPU by ``bench/projector.py``; on a GPU run that script
too (``--threads`` does not matter there).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from timing import median_seconds

ROOT = Path(__file__).resolve().parents[1]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def projector_checks(device, sizes: list[tuple[int, int]], reps: int) -> dict:
    """Triton against the reference on ``device`` (max relative difference of forward and adjoint)
    and forward+backward rays per second of each backend at each (volume side, detector side)."""
    import torch

    from xfit.geometry import View, make_rays
    from xfit.projector import backproject_rays, project_rays, resolved_backend

    out: dict = {"agreement": {}, "rays_per_s": {}}
    backends = ["reference", "triton"] + (
        ["fused"] if device.type == "cpu" and resolved_backend("fused", device) == "fused" else []
    )
    for n, det in sizes:
        gen = torch.Generator().manual_seed(0)
        mu = (torch.rand(1, 1, n, n, n, generator=gen) * 0.02).to(device)
        affine = torch.eye(4)
        affine[:3, :3] *= 200.0 / n
        affine[:3, 3] = -100.0 + 100.0 / n
        view = View(30.0, sdd_mm=1000.0, sod_mm=700.0, shape=(det, det), pixel_spacing_mm=(300.0 / det,) * 2)
        rays = make_rays([view], device=device, dtype=torch.float32)
        ref = project_rays(mu, affine, rays, backend="reference")
        tri = project_rays(mu, affine, rays, backend="triton")
        y = torch.rand(ref.shape, generator=gen).to(device)
        bref = backproject_rays(y, affine, rays, mu.shape[2:], backend="reference")
        btri = backproject_rays(y, affine, rays, mu.shape[2:], backend="triton")
        key = f"{n}^3/{det}^2"
        out["agreement"][key] = {
            "forward_max_rel": float((tri - ref).abs().max() / ref.abs().max()),
            "adjoint_max_rel": float((btri - bref).abs().max() / bref.abs().max()),
        }
        out["rays_per_s"][key] = {}
        for b in backends:

            def step(b=b):
                m = mu.detach().requires_grad_(True)
                project_rays(m, affine, rays, backend=b).sum().backward()

            out["rays_per_s"][key][b] = det * det / median_seconds(step, reps, sync=lambda: _sync(device))
    return out


def fit_times(device, dry_run: bool) -> dict:
    """Wall seconds of a default fit at 64³ (shipped prior, the README example's phantom) and of a
    short fit at 128³ (untrained ``prior-128`` architecture; seconds per step)."""
    import torch

    from xfit.fitting import fit, load_fit_config
    from xfit.prior.checkpoint import Prior, compute_w_stats, load_prior
    from xfit.prior.config import load_config
    from xfit.prior.networks import build_generator
    from xfit.studies.evaluate import default_views, make_case

    out = {}
    configs = [("tiny", 2)] if dry_run else [("64", None), ("128", 10)]
    for name, steps in configs:
        if name == "64":
            prior = load_prior(ROOT / "xfit" / "data" / "prior-64.safetensors", device=device)
        else:
            cfg = load_config(name)
            torch.manual_seed(0)
            G = build_generator(cfg).eval().requires_grad_(False).to(device)
            w_mean, w_std = compute_w_stats(G, n=256)
            prior = Prior(G=G, w_mean=w_mean, w_std=w_std, config=cfg, meta={}, sha256="0" * 64, path=Path(name))
        side = int(prior.config.resolution) * 2
        views = default_views((0.0, 90.0), side, float(prior.config.spacing_mm))
        case = make_case(9001, prior, views)
        overrides = {} if steps is None else {"steps": steps, "init_network": None}
        t0 = time.perf_counter()
        res = fit(prior, case.images, views, load_fit_config(None, **overrides), progress=False)
        _sync(device)
        out[name] = {
            "wall_s": time.perf_counter() - t0,
            "steps": res.stopped_at,
            "per_step_s": res.timings.get("per_step"),
            "amp": res.config.get("amp_resolved"),
        }
    return out


def training_rate(device, dry_run: bool) -> dict:
    """Prior training images per second from ``bench/prior.py`` (its printed table)."""
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "prior.py"),
        "--device",
        device.type,
        "--config",
        "tiny" if dry_run else "64",
        "--train-steps",
        "2" if dry_run else "20",
        "--repeats",
        "1" if dry_run else "3",
    ]
    if not dry_run:
        cmd += ["--config", "128"]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, env=os.environ.copy())
    return {
        "command": " ".join(["bench/prior.py", *cmd[2:]]),
        "returncode": res.returncode,
        "output": res.stdout.strip().splitlines()[-12:],
        "stderr_tail": res.stderr.strip().splitlines()[-3:],
    }


def to_markdown(report: dict) -> str:
    """The report as a page for ``results/gpu/``."""
    lines = [
        f"# GPU check: {report['device_name']}",
        "",
        (f"`python bench/gpu_check.py` on {report['date']}, torch {report['torch']}, dry run: {report['dry_run']}."),
        "",
        "## Projector",
        "",
        "| size | Triton vs reference, forward | adjoint | "
        + " | ".join(f"{b} rays/s (fwd+bwd)" for b in next(iter(report["projector"]["rays_per_s"].values())))
        + " |",
        "|---|---|---|" + "---|" * len(next(iter(report["projector"]["rays_per_s"].values()))),
    ]
    for key, agree in report["projector"]["agreement"].items():
        rates = report["projector"]["rays_per_s"][key]
        lines.append(
            f"| {key} | {agree['forward_max_rel']:.2e} | {agree['adjoint_max_rel']:.2e} | "
            + " | ".join(f"{v:,.0f}" for v in rates.values())
            + " |"
        )
    lines += ["", "## Fit", "", "| prior | wall s | steps | s/step | amp |", "|---|---|---|---|---|"]
    for name, r in report["fit"].items():
        lines.append(f"| {name} | {r['wall_s']:.2f} | {r['steps']} | {r['per_step_s']:.3f} | {r['amp']} |")
    t = report["training"]
    lines += [
        "",
        "## Prior training",
        "",
        f"`python {t['command']}` (exit {t['returncode']}):",
        "",
        "```",
        *t["output"],
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, Triton interpreter, tiny sizes")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "gpu", help="folder of the report")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    import torch

    if args.dry_run:
        device, name = torch.device("cpu"), "dry run (CPU, Triton interpreter)"
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; use --dry-run to test the script", file=sys.stderr)
            return 2
        device, name = torch.device("cuda"), torch.cuda.get_device_name(0)
    sizes = [(6, 5)] if args.dry_run else [(64, 128), (128, 256)]
    report = {
        "device_name": name,
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "dry_run": args.dry_run,
        "projector": projector_checks(device, sizes, 1 if args.dry_run else args.reps),
        "fit": fit_times(device, args.dry_run),
        "training": training_rate(device, args.dry_run),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (args.out / f"{stem}.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
