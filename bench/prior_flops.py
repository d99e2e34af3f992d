"""FLOPs of the prior's networks per config, and an estimate of the training cost per image.

Usage::

    python bench/prior_flops.py [64 128 ...]   # config names or YAML files (default: 64 128)

Counts the generator's and the discriminator's forward FLOPs at batch 1 with
``torch.utils.flop_counter`` on the meta device (nothing is computed, any machine can run it) and
estimates one training image as about ``4 G + 8.3 D`` forward FLOPs: the D step runs G forward once
and D forward + backward (weights) on a fake and a real (``G + 6 D``), the G step runs G forward +
backward and D forward + backward to its input (``3 G + 2 D``), lazy R1 every 16 steps adds a double
backward through D on the reals (``~5 D / 16``). Multiply-adds count as two FLOPs. The figures are
FLOP counts, not timings: measure with ``python bench/prior.py --config NAME --device cuda``.
"""

from __future__ import annotations

import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from xfit.prior.config import load_config
from xfit.prior.networks import build_discriminator, build_generator


def network_flops(name: str) -> dict[str, float]:
    """``{"G": forward FLOPs, "D": forward FLOPs, "G_params", "D_params", "train_image"}`` of a config."""
    cfg = load_config(name)
    with torch.device("meta"):
        G, D = build_generator(cfg), build_discriminator(cfg)
        with FlopCounterMode(display=False) as fc:
            G(torch.randn(1, cfg.z_dim))
        g = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            D(torch.randn(1, cfg.out_channels, *(cfg.resolution,) * 3))
        d = fc.get_total_flops()
    return dict(
        G=float(g),
        D=float(d),
        G_params=float(sum(p.numel() for p in G.parameters())),
        D_params=float(sum(p.numel() for p in D.parameters())),
        train_image=4.0 * g + 8.3 * d,
        resolution=cfg.resolution,
        spacing_mm=cfg.spacing_mm,
    )


def main(argv: list[str]) -> None:
    names = argv or ["64", "128"]
    rows = {n: network_flops(n) for n in names}
    base = rows[names[0]]["train_image"]
    print(
        f"| config | grid | G forward | D forward | G / D parameters | per training image | per kimg | vs {names[0]} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, r in rows.items():
        print(
            f"| {n} | {r['resolution']}³ at {r['spacing_mm']:g} mm | {r['G'] / 1e9:.1f} GFLOP | "
            f"{r['D'] / 1e9:.1f} GFLOP | {r['G_params'] / 1e6:.1f} M / {r['D_params'] / 1e6:.1f} M | "
            f"{r['train_image'] / 1e12:.2f} TFLOP | {r['train_image'] * 1000 / 1e15:.2f} PFLOP | "
            f"{r['train_image'] / base:.1f}x |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
