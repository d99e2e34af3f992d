"""The data-consistency step (:mod:`xfit.fitting.consistency`) measured lever by lever.

For each case and each way the X-rays are made, the script takes two volumes, the start
network's (``--network``) and the fit's before the step (the default fit with
``consistency_steps: 0``), and runs the step on each with every weighting at 1, 3 and 5 CGLS
iterations (neither the view-NCC gate nor the discrepancy stop), and as the default runs it (its
iterations and weights, the discrepancy stop, the view-NCC gate). It prints the mean PSNR, SSIM and third-view
NCC (45 deg, against the truth's projection) per row, as a markdown table.

Weights: ``flat`` (W = 1: each ray's residual spread evenly along it), ``edges-net`` and
``edges-fit`` (:func:`~xfit.fitting.consistency.edge_weights` of the network's or the fit's
volume), ``edges-net+gap`` (plus where the fit and the network disagree), and ``oracle``: the
smoothed squared error of the volume, which needs the truth, so an upper bound of what a
weighting can give.

The X-rays (``--conditions``):

* ``ideal``: noise-free line integrals of the 64^3 truth through xfit's own projector, as every
  study of xfit makes them. On these the step is an exact projection (the "inverse crime").
* ``fine``: line integrals of the same phantom drawn at 128^3 and 0.625 mm: a finer grid than
  the one reconstructed, as a real body is.
* ``1e4``, ``1e3``: quantum noise of that many photons per pixel (``xfit simulate --dose``).
* ``s0.25``, ``s1``: processed radiographs, the clinical presets at that strength (the default
  gate skips the step there).

    python bench/data_consistency.py --first-seed 100 --cases 4

Phantoms 100- are not the held-out 0-19 of ``results/``: the step's settings were chosen on
them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from xfit.fitting import FitConfig
from xfit.fitting.consistency import consistency_step, edge_weights, gap_weights, step_weights
from xfit.geometry import View
from xfit.metrics import ncc, volume_metrics
from xfit.phantoms import make_phantom
from xfit.studies.evaluate import (
    Context,
    EvalSpec,
    Observation,
    default_views,
    make_case,
    observe,
    project_hu,
    run_method,
)

PRIOR = Path(__file__).resolve().parents[1] / "xfit" / "data" / "prior-64.safetensors"
ITERATIONS = (1, 3, 5)
DEFAULT = FitConfig()


def observation(cond: str, case, ctx: Context, views: list[View]) -> Observation:
    """The X-rays of ``case`` under condition ``cond`` (see the module docstring)."""
    if cond == "ideal":
        return observe(case, views)
    if cond == "fine":
        spacing = ctx.prior.config.spacing_mm / 2
        ph = make_phantom(case.seed, size=2 * ctx.prior.config.resolution, spacing_mm=spacing, centre="vertebra")
        return Observation(project_hu(ph.hu, ph.affine, views), list(views))
    if cond.startswith("s"):
        return observe(case, views, style_strength=float(cond[1:]))
    return observe(case, views, photons=float(cond))


def oracle_weights(hu: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The volume's squared error, smoothed (1.5 voxels), mean 1, plus 0.05 (needs the truth)."""
    w = ndimage.gaussian_filter((np.asarray(hu, np.float64) - truth) ** 2, 1.5)
    return w / max(float(w.mean()), 1e-12) + 0.05


def scores(hu: np.ndarray, case, ctx: Context, truth_third: np.ndarray, third: View) -> dict[str, float]:
    m = volume_metrics(hu, case.hu, None, None, ctx.prior.config.spacing_mm)
    return {"psnr": m["psnr_db"], "ssim": m["ssim"], "third": ncc(project_hu(hu, ctx.affine, [third])[0], truth_third)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first-seed", type=int, default=100, help="first phantom (100-: not the held-out 0-19)")
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--network", default="xctrsnet@style", help="the fit's start network at 0/90 deg")
    ap.add_argument("--conditions", default="ideal,fine,1e4,1e3,s0.25,s1")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "no_step.yaml"
        cfg_path.write_text("consistency_steps: 0\n")
        ctx = Context(EvalSpec(prior=str(PRIOR), angles=(0.0, 90.0), fit_config=str(cfg_path)))
    views = default_views(ctx.spec.angles, ctx.spec.detector, ctx.spec.pixel_spacing_mm)
    third = View(45.0, shape=views[0].shape, pixel_spacing_mm=views[0].pixel_spacing_mm)
    rows: dict[tuple[str, str, str], list[dict[str, float]]] = defaultdict(list)
    for seed in range(args.first_seed, args.first_seed + args.cases):
        case = make_case(seed, ctx.prior, views)
        truth_third = project_hu(case.hu, ctx.affine, [third])[0]
        for cond in args.conditions.split(","):
            obs = observation(cond, case, ctx, views)
            ctx.memo = {}
            net = run_method(ctx, args.network, case, obs).hu
            fitted = run_method(ctx, "fit", case, obs)
            edges_net = edge_weights(net)
            edges = {
                "edges-net": edges_net,
                "edges-fit": edge_weights(fitted.hu),
                "edges-net+gap": edges_net + gap_weights(fitted.hu, net),
            }
            # the default's weights (of the fit's volume and the network's), for both volumes
            w_default, _ = step_weights(DEFAULT.consistency_weights, fitted.hu, net)
            for name, hu in (("network", net), ("fit", fitted.hu)):
                rows[(cond, name, "-")].append(scores(hu, case, ctx, truth_third, third))
                for wname, w in (("flat", None), *edges.items(), ("oracle", oracle_weights(hu, case.hu))):
                    for k in ITERATIONS:
                        # the lever alone: neither the view-NCC gate nor the discrepancy stop
                        out, _ = consistency_step(
                            hu, obs.images, obs.views, ctx.affine, k, w, tau=None, min_view_ncc=-np.inf
                        )
                        rows[(cond, name, f"{wname} x{k}")].append(scores(out, case, ctx, truth_third, third))
                # as the fit runs it: the default's iterations and weights, the discrepancy stop
                # and the view-NCC gate
                hu_d, _ = consistency_step(hu, obs.images, obs.views, ctx.affine, DEFAULT.consistency_steps, w_default)
                rows[(cond, name, "default")].append(scores(hu_d, case, ctx, truth_third, third))
            print(json.dumps({"seed": seed, "cond": cond}), flush=True)
    print("\n| X-rays | volume | step | PSNR | SSIM | third-view NCC |")
    print("|---|---|---|---|---|---|")
    for (cond, name, step), r in rows.items():
        mean = {k: float(np.mean([x[k] for x in r])) for k in ("psnr", "ssim", "third")}
        print(f"| {cond} | {name} | {step} | {mean['psnr']:.2f} | {mean['ssim']:.3f} | {mean['third']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
