"""How sharp each method's volumes are: mean gradient magnitude of the stored mid slices.

Every ``xfit evaluate`` run folder keeps the truth's and each method's axial, coronal and sagittal
mid slices (``slices/<case>__<method>.npy``, HU, ``[3, R, R]``). This prints, per method, the
mean over cases and slices of ``|grad HU|`` (HU per voxel, HU clipped to the prior's window) and
its ratio to the truth's on the same cases: a volume that is smoother than the anatomy scores
below 1.

    python bench/sharpness.py runs/levers/00-default runs/xs
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from xfit.units import HU_WINDOW


def slice_sharpness(slices: np.ndarray) -> float:
    """Mean ``|grad HU|`` (HU per voxel) over the 2D mid slices ``[3, R, R]``."""
    clipped = np.clip(np.asarray(slices, np.float64), *HU_WINDOW)
    return float(np.mean([np.hypot(*np.gradient(s)).mean() for s in clipped]))


def run_sharpness(folders: list[Path]) -> dict[str, dict[str, float]]:
    """``{method: {case: sharpness}}`` over the run folders (``truth`` included)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for folder in folders:
        for f in sorted((folder / "slices").glob("*__*.npy")):
            case, method = f.stem.split("__", 1)
            out[method][case] = slice_sharpness(np.load(f))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="xfit evaluate run folders")
    args = ap.parse_args(argv)
    got = run_sharpness(args.folders)
    truth = got.get("truth", {})
    if not truth:
        raise SystemExit("sharpness: no truth slices in these folders")
    print("| method | cases | mean abs gradient (HU/voxel) | ratio to the truth |\n|---|---|---|---|")
    for method, cases in sorted(got.items(), key=lambda kv: kv[0] != "truth"):
        common = [c for c in cases if c in truth]
        ratio = np.mean([cases[c] / truth[c] for c in common])
        print(f"| `{method}` | {len(common)} | {np.mean([cases[c] for c in common]):.1f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
