"""How tightly the prior's label channel follows its HU channel: ``python bench/label_coupling.py``.

The fit sees X-rays, which are made of HU alone: whatever it learns about the vertebra mask it
learns through the HU channel (and through the start network's mask, its anchor). The oracle
ceiling (``ceiling-lbfgs`` of ``xfit evaluate``) fits the prior's W+ to the 3D truth's HU *and* its
mask. This script fits it to the same truth twice, by the same L-BFGS inversion:

* ``HU + label``: the ceiling, as ``xfit evaluate`` computes it;
* ``HU only``: the label term off. The label channel then shows the mask the prior ties to the
  truth's HU, which bounds what an X-ray fit can read about the mask from HU.

It prints per phantom and on average PSNR, SSIM and vertebra Dice of both, and the Dice of the
``HU only`` label at the best of several probability thresholds (not a method: an upper bound of
recalibrating the label). Phantoms 100- by default, not the held-out 0-19.

    python bench/label_coupling.py --first-seed 100 --cases 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from xfit.fitting.invert import CEILING_LBFGS_STEPS, invert_volume
from xfit.metrics import dice, volume_metrics
from xfit.studies.evaluate import Context, EvalSpec, default_views, make_case

PRIOR = Path(__file__).resolve().parents[1] / "xfit" / "data" / "prior-64.safetensors"
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first-seed", type=int, default=100, help="first phantom (100-: not the held-out 0-19)")
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--steps", type=int, default=CEILING_LBFGS_STEPS, help="L-BFGS iterations of each inversion")
    ap.add_argument("--prior", default=str(PRIOR))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ctx = Context(EvalSpec(prior=args.prior, angles=(0.0, 90.0)))
    views = default_views(ctx.spec.angles, ctx.spec.detector, ctx.spec.pixel_spacing_mm)
    spacing = ctx.prior.config.spacing_mm
    rows: dict[str, list[list[float]]] = {"HU + label": [], "HU only": []}
    print("| phantom | fitted to | PSNR | SSIM | Dice | Dice at the best threshold |")
    print("|---|---|---|---|---|---|")
    for seed in range(args.first_seed, args.first_seed + args.cases):
        case = make_case(seed, ctx.prior, views)
        for name, label in (("HU + label", case.vertebra), ("HU only", None)):
            inv = invert_volume(ctx.prior, case.hu, label, steps=args.steps, optimizer="lbfgs")
            m = volume_metrics(inv.hu, case.hu, inv.label_prob > 0.5, case.vertebra, spacing)
            best = max((dice(inv.label_prob > t, case.vertebra), t) for t in THRESHOLDS)
            rows[name].append([m["psnr_db"], m["ssim"], m["dice"], best[0]])
            print(
                f"| {seed} | {name} | {m['psnr_db']:.2f} | {m['ssim']:.3f} | {m['dice']:.3f} "
                f"| {best[0]:.3f} (p > {best[1]}) |",
                flush=True,
            )
    for name, r in rows.items():
        mean = np.mean(r, axis=0)
        print(f"| mean | {name} | {mean[0]:.2f} | {mean[1]:.3f} | {mean[2]:.3f} | {mean[3]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
