"""Phantom realism report: measured dimensions, HU per tissue, posture, and pictures.

    python bench/phantoms.py -n 60 -o results/phantoms_report [--seed 0] [--force]
    python bench/phantoms.py -n 60 -o results/phantoms_report_published --body-composition published

Writes ``report.md`` / ``report.json`` (generated vertebrae per level beside the published
morphometry of ``xfit/phantoms/morphometry.py``, HU per tissue class beside the published ranges,
tissue fractions, posture angles, the centred level's muscle and fat areas beside the published
body-composition values of ``xfit/phantoms/composition.py``) and ``montage.png`` / ``whole_body.png`` (axial, coronal,
sagittal slices and AP / lateral DRRs). See :mod:`xfit.phantoms.report`.
"""

from __future__ import annotations

import argparse
import time

from xfit.phantoms.report import run_report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=60, help="number of phantoms (seeds seed..seed+n-1)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=6, help="cases in the montage")
    p.add_argument("--force", action="store_true", help="replace the output folder")
    p.add_argument(
        "--body-composition",
        default="default",
        choices=["default", "published"],
        help="phantom model (xfit phantoms --body-composition)",
    )
    a = p.parse_args()
    t0 = time.perf_counter()
    run_report(a.n, a.out, seed=a.seed, n_images=a.images, force=a.force, body_composition=a.body_composition)
    print(f"wrote {a.out}/report.md ({a.n} phantoms, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
