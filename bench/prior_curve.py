"""Plot ``xfit evaluate-prior`` reports over training: ``python bench/prior_curve.py DIR -o curve.png``.

Reads every ``prior-stepNNNNNN.json`` in DIR (one report per training snapshot, from
``xfit evaluate-prior SNAPSHOT --data HELDOUT -o DIR/prior-stepNNNNNN.json``; with ``--prefix P``
every ``Pprior-stepNNNNNN.json``) and draws HU
Wasserstein-1, feature FD, pairwise SSIM and bone fraction against kimg, with the held-out
data's own value as a dashed line where it has one. ``--batch`` is the training batch size
(images per step; 4 in ``xfit/configs/prior-64.yaml``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument(
        "--prefix", default="", help="the reports' name prefix (heldoutp_ for heldoutp_prior-stepNNNNNN.json)"
    )
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xfit.preview import figure_to_png

    reports = []
    for p in sorted(a.folder.glob(f"{a.prefix}prior-step*.json")):
        step = int(re.search(r"step(\d+)", p.name).group(1))
        reports.append((step * a.batch / 1000, json.loads(p.read_text())))
    if not reports:
        raise SystemExit(f"no {a.prefix}prior-stepNNNNNN.json in {a.folder}")
    panels = [
        ("HU Wasserstein-1 (HU)", lambda r: r["hu_w1"], None),
        ("feature FD (random 3D features)", lambda r: r["feature_fd"], None),
        ("pairwise SSIM (diversity)", lambda r: r["diversity_ssim"]["fake"], lambda r: r["diversity_ssim"]["real"]),
        (
            "bone fraction (> 250 HU)",
            lambda r: r["bone_fraction"]["fake"]["mean"],
            lambda r: r["bone_fraction"]["real"]["mean"],
        ),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    kimg = [k for k, _ in reports]
    for ax, (title, get, real) in zip(axes, panels):
        ax.plot(kimg, [get(r) for _, r in reports], "o-", ms=3, label="generated")
        if real is not None:
            ax.axhline(real(reports[-1][1]), ls="--", c="gray", label="held-out phantoms")
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("kimg", fontsize=8)
    print(figure_to_png(fig, a.out))


if __name__ == "__main__":
    main()
