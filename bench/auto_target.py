"""How often does ``--target auto`` land on a vertebra? Whole-body radiograph pairs of held-out
phantoms (the cases of ``xfit.studies.radiographs``), no fitting: the distance from the found
point to the nearest vertebra centroid, and whether that vertebra is the one the X-rays were
aimed near, for each way of combining the views' correlation maps.

    python bench/auto_target.py --cases 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from xfit.fitting.roi import auto_target
from xfit.prior.checkpoint import load_prior
from xfit.reconstruct import DEFAULT_PRIOR, load_inputs, mean_volume
from xfit.studies.radiographs import SEED0, found_vertebra, make_case


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--first", type=int, default=0, help="first case index (seed SEED0 + index)")
    a = p.parse_args()
    prior = load_prior(DEFAULT_PRIOR)
    mu, affine = mean_volume(prior)
    rows = {"mean": [], "min": []}
    t = {"mean": 0.0, "min": 0.0}
    for i in range(a.first, a.first + a.cases):
        with tempfile.TemporaryDirectory() as tmp:
            case = make_case(SEED0 + i, Path(tmp), detector=(448, 384), pixel_mm=0.6, offset_mm=(25.0, 50.0))
            inputs = load_inputs(case["images"])
            for combine in rows:
                t0 = time.perf_counter()
                found = auto_target(inputs.images, inputs.views, mu, affine, combine=combine)
                t[combine] += time.perf_counter() - t0
                label, centre = found_vertebra(np.asarray(found.point_mm), case)
                err = float(np.linalg.norm(np.asarray(found.point_mm) + case["iso"] - centre))
                rows[combine].append((err, label == case["label"]))
    print(f"{a.cases} cases (seeds {SEED0 + a.first}..{SEED0 + a.first + a.cases - 1})")
    for combine, r in rows.items():
        err = np.array([e for e, _ in r])
        print(f"combine={combine:4s}: within 10 mm of a vertebra centre {np.mean(err < 10):.2f}, median distance "
              f"{np.median(err):.1f} mm, the wanted vertebra {np.mean([w for _, w in r]):.2f}, "
              f"{t[combine] / a.cases:.2f} s per pair")


if __name__ == "__main__":
    main()
