"""Does the X-ray fit know more than the network it starts from? The error split around it.

For a network ``n`` trained by MSE on the same distribution (X-CTRSNet) and any estimate ``x``,

    |x - t|^2 = |n - t|^2 + |x - n|^2 - 2 <x - n, t - n>        (t: the truth, per voxel means)

so ``x`` beats ``n`` only when its step away from ``n`` points toward the truth:
``cos(x - n, t - n) > |x - n| / (2 |t - n|)``. If ``n`` were the conditional mean of the volume
given the X-rays, every ``x`` computed from the X-rays alone would have ``E <x - n, t - n> = 0``
(orthogonality of the MMSE error), and then no volume of the prior's set could beat ``n`` on
PSNR unless ``n`` lies in that set. A positive cosine measures what the X-ray fit adds beyond the
network; ``ceiling-lbfgs`` (it sees the truth) shows how large it could be.

HU are clipped to the prior's window, as PSNR is (:func:`xfit.metrics.volume_metrics`).

    python bench/fit_decomposition.py --first-seed 100 --cases 4
    python bench/fit_decomposition.py --first-seed 100 --cases 4 --angles 0,60   # the network off its views
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from xfit.studies.evaluate import Context, EvalSpec, default_views, make_case, observe, run_method
from xfit.units import HU_WINDOW

PRIOR = Path(__file__).resolve().parents[1] / "xfit" / "data" / "prior-64.safetensors"


def split(x: np.ndarray, n: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """The error of ``x`` around ``n`` (all ``[R, R, R]`` HU, clipped to the window): PSNR of
    both, ``dist`` = mean (x - n)^2, ``cross`` = 2 mean (x - n)(t - n) (HU^2), and their cosine."""
    lo, hi = HU_WINDOW
    x, n, t = (np.clip(np.asarray(a, np.float64), lo, hi) for a in (x, n, t))
    rng2 = (hi - lo) ** 2
    dx, dt = x - n, t - n
    cos = float((dx * dt).sum() / max(np.sqrt((dx**2).sum() * (dt**2).sum()), 1e-12))
    return {
        "psnr": float(10 * np.log10(rng2 / np.mean((x - t) ** 2))),
        "psnr_net": float(10 * np.log10(rng2 / np.mean(dt**2))),
        "dist": float(np.mean(dx**2)),
        "cross": float(2 * np.mean(dx * dt)),
        "cos": cos,
        "cos_needed": float(np.sqrt(np.mean(dx**2)) / (2 * np.sqrt(np.mean(dt**2)))),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first-seed", type=int, default=100, help="first phantom (100-: not the held-out 0-19)")
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--network", default="xctrsnet@style", help="the fit's start network")
    ap.add_argument(
        "--methods",
        default="start,fit,ceiling-lbfgs",
        help="start: the fit's start (the network inverted into W+; one warm step at lr 1e-9)",
    )
    ap.add_argument("--angles", default="0,90", help="view angles (deg), comma separated")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    angles = tuple(float(a) for a in args.angles.split(","))
    spec = EvalSpec(prior=str(PRIOR), angles=angles)
    ctx = Context(spec)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "start.yaml"
        cfg.write_text("warm_steps: 1\nwarm_lr: 1.0e-9\n")  # one step of nothing: the start
        start_ctx = Context(EvalSpec(prior=str(PRIOR), angles=angles, fit_config=str(cfg)))
    views = default_views(spec.angles, spec.detector, spec.pixel_spacing_mm)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.cases):
        case = make_case(seed, ctx.prior, views)
        obs = observe(case, views)
        ctx.memo, start_ctx.memo = {}, {}
        net = run_method(ctx, args.network, case, obs).hu
        for m in args.methods.split(","):
            x = run_method(start_ctx, "fit", case, obs).hu if m == "start" else run_method(ctx, m, case, obs).hu
            row = {"seed": seed, "method": m, **{k: round(v, 4) for k, v in split(x, net, case.hu).items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    head = (
        "| method | cases | PSNR | network PSNR | mean (x-n)^2 | 2<x-n, t-n> | cos(x-n, t-n) | cos needed to beat n |"
    )
    print("\n" + head)
    print("|---|---|---|---|---|---|---|---|")
    for m in args.methods.split(","):
        r = [x for x in rows if x["method"] == m]
        mean = {k: np.mean([x[k] for x in r]) for k in ("psnr", "psnr_net", "dist", "cross", "cos", "cos_needed")}
        print(
            f"| `{m}` | {len(r)} | {mean['psnr']:.2f} | {mean['psnr_net']:.2f} | {mean['dist']:.0f} | "
            f"{mean['cross']:.0f} | {mean['cos']:.3f} | {mean['cos_needed']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
