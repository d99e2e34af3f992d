"""Does the residual stage (leaving the prior's range) help on held-out phantoms?

Each held-out phantom (not in the prior's training seeds) is X-rayed at 0 and 90 degrees and
fitted twice, without and with the last ``residual`` stage (``residual_steps`` of the fit
config). Both are judged against the phantom, and by the re-projection of a third view at
``--third-angle`` that neither fit sees (NCC with that view's true DRR over the
central half of the detector, inside the cube's silhouette). Run::

    python experiments/residual.py -o results/residual_study --cases 6 --residual-steps 30
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xfit.fitting import fit, load_fit_config
from xfit.io import hu_to_mu
from xfit.metrics import ncc, volume_metrics
from xfit.phantoms.model import make_phantom
from xfit.projector import project
from xfit.studies.cases import mode_table, run_cases, write_summary
from xfit.studies.evaluate import default_views

from _study import study_parser

#: Seeds of this study's phantoms.
SEED0 = 7000


def drr(hu: np.ndarray, affine: np.ndarray, view) -> np.ndarray:
    """Line integrals ``[R, C]`` of a HU volume ``[I, J, K]`` through one view."""
    with torch.no_grad():
        return project(hu_to_mu(torch.from_numpy(np.ascontiguousarray(hu)))[None, None], affine, [view])[0, 0].numpy()


def central(image: np.ndarray) -> np.ndarray:
    """The central half (per side) of an image: the pixels whose rays cross the vertebra's cube
    (the cube's silhouette would dominate a whole-image NCC)."""
    r, c = image.shape
    return image[r // 4 : r - r // 4, c // 4 : c - c // 4]


def run_case(index: int, prior, cfg_path, residual_steps: int, third_angle: float, steps: int | None) -> dict[str, Any]:
    cfg0 = prior.config
    seed = SEED0 + index
    ph = make_phantom(seed, size=cfg0.resolution, spacing_mm=cfg0.spacing_mm)
    views = default_views((0.0, 90.0), 128, 1.0)
    third = default_views((third_angle,), 128, 1.0)[0]
    images = [drr(ph.hu, ph.affine, v) for v in views]
    truth_third = drr(ph.hu, ph.affine, third)
    out: dict[str, Any] = {"case": index, "seed": seed, "modes": {}}
    for name, n in (("prior only", 0), ("with residual", residual_steps)):
        cfg = load_fit_config(cfg_path, residual_steps=n, steps=steps)
        t0 = time.perf_counter()
        res = fit(prior, images, views, cfg, progress=False)
        m = volume_metrics(res.hu, ph.hu, res.labels.astype(bool), ph.vertebra_mask, float(cfg0.spacing_mm))
        m["third_view_ncc"] = ncc(central(drr(res.hu, res.affine, third)), central(truth_third))
        m["fitted_views_ncc"] = float(np.mean(res.view_ncc))
        m["seconds"] = time.perf_counter() - t0
        if res.residual_rms_hu is not None:
            m["residual_rms_hu"] = res.residual_rms_hu
        out["modes"][name] = m
    return out


def summarize(results: Sequence[dict[str, Any]]) -> str:
    a, b = list(results[0]["modes"])
    table = mode_table(
        results,
        (a, b),
        ("psnr_db", "ssim", "mae_hu", "dice", "fitted_views_ncc", "third_view_ncc", "seconds"),
        label="fit",
    )
    worse = sum(r["modes"][b]["third_view_ncc"] < r["modes"][a]["third_view_ncc"] for r in results)
    better = sum(r["modes"][b]["psnr_db"] > r["modes"][a]["psnr_db"] for r in results)
    return (
        table + f"\nWith the residual: higher PSNR in {better} of {len(results)} cases; "
        f"a worse third-view NCC in {worse} of {len(results)}.\n"
    )


def main(argv: list[str] | None = None) -> None:
    from xfit.prior.checkpoint import load_prior

    ap = study_parser(__doc__)
    ap.add_argument("--residual-steps", type=int, default=30)
    ap.add_argument("--third-angle", type=float, default=45.0)
    a = ap.parse_args(argv)
    prior = load_prior(a.prior)
    t0 = time.perf_counter()
    results = run_cases(
        a.out, a.cases, lambda i: run_case(i, prior, a.fit_config, a.residual_steps, a.third_angle, a.steps)
    )
    head = (
        f"{len(results)} held-out phantoms (seeds {SEED0}..{SEED0 + len(results) - 1}); AP + lateral 128 px of 1 mm; "
        f"residual stage {a.residual_steps} steps; third view at {a.third_angle:g} deg; prior {a.prior.name}. "
        f"{time.perf_counter() - t0:.0f} s.\n\n"
    )
    write_summary(a.out, head + summarize(results))


if __name__ == "__main__":  # pragma: no cover
    main()
