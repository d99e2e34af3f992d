"""How often does ``--target auto`` land on a vertebra? Whole-body radiograph pairs of held-out
phantoms (the cases of ``xfit.studies.radiographs``), no fitting: the distance from the found
point to the nearest vertebra centroid, and whether that vertebra is the one the X-rays were
aimed near, for the search as it was (the upright mean template on the raw images) and as it is
now (high-passed images, seven template poses), run side by side on the same pairs.

    python bench/auto_target.py --cases 20 [--work DIR]

``--work`` keeps the generated cases (about a minute each on one core) for a second run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from xfit.fitting.roi import auto_target
from xfit.prior.checkpoint import load_prior
from xfit.reconstruct import DEFAULT_PRIOR, load_inputs, mean_volume
from xfit.studies.radiographs import SEED0, make_case, vertebra_centroids

#: auto_target settings compared: before this bench's last change, one change at a time, now.
VARIANTS = {
    "upright template, raw images (before)": {"tilts_deg": [(0.0, 0.0, 0.0)], "highpass_mm": 0.0},
    "upright template, high-passed images": {"tilts_deg": [(0.0, 0.0, 0.0)]},
    "7 poses, high-passed images (default)": {},
}


def load_case(index: int, work: Path) -> dict:
    """Case ``index`` (seed ``SEED0 + index``): generated once into ``work/cNN``, then read."""
    folder = work / f"c{index:02d}"
    saved = folder / "case.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    case = make_case(SEED0 + index, folder, detector=(448, 384), pixel_mm=0.6, offset_mm=(25.0, 50.0))
    labels, cents = vertebra_centroids(case)
    out = {
        "seed": case["seed"],
        "label": case["label"],
        "level": case["level"],
        "tilt_deg": case["tilt_deg"],
        "iso": [float(x) for x in case["iso"]],
        "images": [str(p) for p in case["images"]],
        "labels": labels,
        "centroids_mm": cents.tolist(),
    }
    saved.write_text(json.dumps(out))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--first", type=int, default=0, help="first case index (seed SEED0 + index)")
    p.add_argument("--work", type=Path, default=None, help="folder that keeps the generated cases")
    a = p.parse_args()
    prior = load_prior(DEFAULT_PRIOR)
    mu, affine = mean_volume(prior)
    rows: dict[str, list[tuple[float, bool]]] = {k: [] for k in VARIANTS}
    secs = dict.fromkeys(VARIANTS, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        for i in range(a.first, a.first + a.cases):
            case = load_case(i, work)
            inputs = load_inputs(case["images"])
            cents = np.asarray(case["centroids_mm"])
            for name, kw in VARIANTS.items():
                t0 = time.perf_counter()
                found = auto_target(inputs.images, inputs.views, mu, affine, **kw)
                secs[name] += time.perf_counter() - t0
                d = np.linalg.norm(cents - (np.asarray(found.point_mm) + case["iso"]), axis=1)
                rows[name].append((float(d.min()), case["labels"][int(np.argmin(d))] == case["label"]))
    print(f"{a.cases} cases (seeds {SEED0 + a.first}..{SEED0 + a.first + a.cases - 1}), 448x384 px of 0.6 mm")
    base = secs[next(iter(VARIANTS))]
    for name, r in rows.items():
        err = np.array([e for e, _ in r])
        print(
            f"{name:40s}: within 10 mm of a vertebra centre {np.sum(err < 10)}/{len(err)}, median distance "
            f"{np.median(err):.1f} mm, worst {err.max():.1f} mm, the wanted vertebra {np.mean([w for _, w in r]):.2f}, "
            f"{secs[name] / a.cases:.2f} s per pair ({secs[name] / base:.1f}x the first)"
        )


if __name__ == "__main__":
    main()
