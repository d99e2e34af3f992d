"""The data-consistency step through a whole torso (:mod:`xfit.fitting.consistency` with a fitted
background), measured lever by lever.

For each case the X-rays are taken through the whole torso of the phantom (``--fov-mm``, as
``xfit evaluate --whole-body``), so the fit turns its smooth background on and starts from the
whole-body network. The script runs the default fit without the step (``consistency_steps: 0``)
once per case and condition, then the step on its volume with the fitted backgrounds over the
data term's footprint:

* ``hp S xK``: the residual high-passed by a Gaussian of ``S`` detector pixels (0: not at all),
  ``K`` CGLS iterations, the default's weights (``edges+gap`` of the start network's volume),
  neither the gate nor the discrepancy stop (the lever alone);
* ``default``: as the fit runs it (its high-pass, iterations and weights, the discrepancy stop
  and the gate).

It prints the mean PSNR and SSIM per row and the per-case change of ``default`` against the fit
without the step, as markdown. Conditions: ``ideal`` (noise-free line integrals), ``1e4``
(quantum noise, photons per pixel) and ``s1`` (the clinical presets at full strength).

    python bench/torso_consistency.py --first-seed 100 --cases 10 --conditions ideal
    python bench/torso_consistency.py --first-seed 100 --cases 5 --conditions s1,1e4

Phantoms 100- are not the held-out 0-19 of ``results/``: the step's settings were chosen on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from xfit.fitting import FitConfig, fit
from xfit.fitting.consistency import consistency_step, step_weights
from xfit.fitting.optimize import view_footprints
from xfit.metrics import volume_metrics
from xfit.studies.evaluate import Context, EvalSpec, default_views, make_case, observe, run_method

PRIOR = Path(__file__).resolve().parents[1] / "xfit" / "data" / "prior-64.safetensors"
HIGHPASS = (0.0, 2.0, 3.0, 4.0, 6.0)
ITERATIONS = (1, 3, 5)
DEFAULT = FitConfig()


def observed(cond: str, case, views):
    if cond == "ideal":
        return observe(case, views)
    if cond.startswith("s"):
        return observe(case, views, style_strength=float(cond[1:]))
    return observe(case, views, photons=float(cond))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first-seed", type=int, default=100, help="first phantom (100-: not the held-out 0-19)")
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--conditions", default="ideal")
    ap.add_argument("--fov-mm", type=float, default=320.0, help="the torso's grid (as --whole-body)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = EvalSpec(prior=str(PRIOR), angles=(0.0, 90.0), whole_body_fov_mm=args.fov_mm)
    ctx = Context(spec)
    cfg = dataclasses.replace(ctx.cfg, consistency_steps=0)
    views = default_views(spec.angles, spec.detector, spec.pixel_spacing_mm)
    res = int(ctx.prior.config.resolution)
    masks = view_footprints(views, ctx.affine, res, cfg.footprint)
    rows: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    gains: dict[str, list[str]] = defaultdict(list)

    def score(hu: np.ndarray, case) -> tuple[float, float]:
        m = volume_metrics(hu, case.hu, None, None, ctx.prior.config.spacing_mm)
        return m["psnr_db"], m["ssim"]

    lo, hi = ctx.prior.hu_window
    for seed in range(args.first_seed, args.first_seed + args.cases):
        case = make_case(seed, ctx.prior, views, args.fov_mm)
        for cond in args.conditions.split(","):
            obs = observed(cond, case, views)
            ctx.memo = {}
            net = run_method(ctx, DEFAULT.init_network_whole_body, case, obs).hu
            r = fit(ctx.prior, obs.images, obs.views, cfg, seed=0, centre_mm=(0.0, 0.0, 0.0), progress=False)
            if r.backgrounds is None:
                raise SystemExit(f"phantom {seed}: the fit fitted no background; not whole-torso X-rays?")
            base = score(r.hu, case)
            rows[(cond, "network")].append(score(net, case))
            rows[(cond, "fit, no step")].append(base)
            w, _ = step_weights(DEFAULT.consistency_weights, r.hu, net)
            for s in HIGHPASS:
                for k in ITERATIONS:
                    out, _ = consistency_step(
                        r.hu,
                        obs.images,
                        obs.views,
                        ctx.affine,
                        k,
                        w,
                        tau=None,
                        min_view_ncc=-np.inf,
                        backgrounds=r.backgrounds,
                        masks=masks,
                        highpass_px=s,
                    )
                    rows[(cond, f"hp {s:g} x{k}")].append(score(np.clip(out, lo, hi), case))
            out, info = consistency_step(
                r.hu,
                obs.images,
                obs.views,
                ctx.affine,
                DEFAULT.consistency_steps,
                w,
                backgrounds=r.backgrounds,
                masks=masks,
                highpass_px=DEFAULT.consistency_highpass_px,
            )
            d = score(np.clip(out, lo, hi), case)
            rows[(cond, "default")].append(d)
            gains[cond].append(
                f"{seed}: {d[0] - base[0]:+.2f} dB, {d[1] - base[1]:+.3f} "
                f"({info.iterations} it.{', ' + info.skipped if info.skipped else ''})"
            )
            print(json.dumps({"seed": seed, "cond": cond, "default": d, "no_step": base}), flush=True)
    print("\n| X-rays | volume / step | PSNR | SSIM |")
    print("|---|---|---|---|")
    for (cond, name), v in rows.items():
        a = np.asarray(v)
        print(f"| {cond} | {name} | {a[:, 0].mean():.2f} | {a[:, 1].mean():.3f} |")
    for cond, g in gains.items():
        print(f"\n{cond}, default against no step, per case: " + "; ".join(g))
    return 0


if __name__ == "__main__":
    sys.exit(main())
