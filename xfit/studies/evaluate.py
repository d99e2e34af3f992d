"""Measured quality of the fit on held-out phantoms, beside two references computed the same way.

For each held-out phantom (seeds never used for training: the shipped prior was trained on
seeds 1000-1599), on the prior's grid centred on its vertebra like the training crops, the
X-rays are simulated with the given views (isocentre at that vertebra), then:

* **fit**: :func:`xfit.fitting.fit` (the method);
* **mean**: the prior's mean volume, ``G(w_mean)`` with its constant noise;
* **best of N (X-ray)**: of N random prior samples, the one whose projections agree best (NCC)
  with the X-rays, i.e. the best a method could pick without fitting;
* **best of N (oracle)**: of the same samples, the one closest to the ground truth (PSNR), an
  upper bound for sample selection that no real method can reach.

``python -m xfit.studies.evaluate PRIOR --cases 20 -o OUT`` writes ``results.json`` and
``table.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..geometry import View
from ..io import atomic_write, hu_to_mu
from ..metrics import ncc, volume_metrics
from ..phantoms import make_phantom
from ..projector import project

METHODS = ("fit", "mean", "best_of_n_xray", "best_of_n_oracle")
KEYS = ("psnr_db", "ssim", "mae_hu", "dice")


@dataclass
class Case:
    """One held-out phantom on the prior grid with its simulated X-rays."""

    seed: int
    hu: np.ndarray
    vertebra: np.ndarray
    images: list[np.ndarray]


def default_views(angles: Sequence[float], detector: int, pixel_spacing_mm: float) -> list[View]:
    """Views of the study: isocentre at the prior grid centre (world origin)."""
    return [View(a, shape=(detector, detector), pixel_spacing_mm=(pixel_spacing_mm,) * 2) for a in angles]


def make_case(seed: int, prior, views: Sequence[View], whole_body_fov_mm: float | None = None) -> Case:
    """Phantom ``seed`` on the prior's grid and its noiseless X-rays.

    With ``whole_body_fov_mm`` the X-rays integrate the whole torso of the same phantom drawn
    on a ``whole_body_fov_mm`` grid (as real radiographs do), while the ground truth stays the
    prior-grid crop (the central block of that grid).
    """
    cfg = prior.config
    ph = make_phantom(seed, size=cfg.resolution, spacing_mm=cfg.spacing_mm, centre="vertebra")
    src = ph if whole_body_fov_mm is None else make_phantom(
        seed, size=cfg.resolution, spacing_mm=cfg.spacing_mm, centre="vertebra", fov_mm=whole_body_fov_mm)
    mu = hu_to_mu(torch.from_numpy(src.hu))[None, None]
    images = []
    for v in views:
        with torch.no_grad():
            images.append(project(mu, src.affine, [v])[0, 0].numpy())
    return Case(seed, ph.hu, ph.vertebra_mask, images)


def _project_hu(hu: torch.Tensor, affine: np.ndarray, views: Sequence[View]) -> list[np.ndarray]:
    mu = hu_to_mu(hu)[:, None]
    with torch.no_grad():
        return [project(mu, affine, [v])[:, 0].numpy() for v in views]


def _metrics(hu, label_logit, case: Case, spacing: float) -> dict[str, float]:
    return volume_metrics(hu, case.hu, label_logit > 0, case.vertebra, spacing)


def evaluate_case(prior, case: Case, views: Sequence[View], cfg, *, n_random: int = 32, seed: int = 0,
                  warm_start: bool = True) -> dict[str, Any]:
    """All methods on one case; returns ``{method: metrics}`` plus timing.

    The fit starts like ``xfit reconstruct``: from the prior's encoder when
    ``<prior>.encoder.safetensors`` exists and ``warm_start``, else from ``w_mean``.
    """
    from ..fitting import fit
    from ..fitting.encoder import warm_start_w_plus
    from ..prior.sample import generate_hu, prior_affine, sample_w_plus

    spacing = prior.config.spacing_mm
    affine = prior_affine(prior)
    out: dict[str, Any] = {"seed": case.seed}
    t0 = time.perf_counter()
    w_init, out["start"] = warm_start_w_plus(prior, case.images, list(views)) if warm_start \
        else (None, "w_mean (warm start off)")
    res = fit(prior, case.images, list(views), cfg, seed=seed, w_init=w_init, progress=False)
    out["fit_seconds"] = time.perf_counter() - t0
    out["fit"] = _metrics(res.hu, res.label_prob - 0.5, case, spacing)
    out["fit"]["view_ncc"] = float(np.mean(res.view_ncc))
    with torch.no_grad():
        w_mean = prior.w_mean.view(1, 1, -1).expand(1, prior.G.num_ws, -1)
        hu, logit = generate_hu(prior, w_mean)
        out["mean"] = _metrics(hu[0].numpy(), logit[0].numpy(), case, spacing)
        ws = sample_w_plus(prior, n_random, seed=10_000 + case.seed)
        best_x = best_o = None
        for i in range(n_random):
            hu, logit = generate_hu(prior, ws[i : i + 1])
            proj = _project_hu(hu, affine, views)
            agree = float(np.mean([ncc(p[0], img) for p, img in zip(proj, case.images)]))
            m = _metrics(hu[0].numpy(), logit[0].numpy(), case, spacing)
            if best_x is None or agree > best_x[0]:
                best_x = (agree, m)
            if best_o is None or m["psnr_db"] > best_o["psnr_db"]:
                best_o = m
    out["best_of_n_xray"], out["best_of_n_oracle"] = best_x[1], best_o
    return out


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and standard deviation of each metric per method."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for m in METHODS:
        table[m] = {}
        for k in KEYS:
            vals = np.array([r[m][k] for r in results if k in r[m]], dtype=np.float64)
            table[m][k] = (float(vals.mean()), float(vals.std())) if vals.size else (float("nan"), float("nan"))
    return table


#: Metrics where lower is better.
LOWER_IS_BETTER = ("mae_hu",)


def paired_wins(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per reference method and metric: in how many cases the fit is strictly better."""
    wins: dict[str, dict[str, int]] = {}
    for m in METHODS[1:]:
        wins[m] = {}
        for k in KEYS:
            sign = -1.0 if k in LOWER_IS_BETTER else 1.0
            wins[m][k] = int(sum(sign * (r["fit"][k] - r[m][k]) > 0 for r in results))
    return wins


def markdown_table(table: dict[str, dict[str, tuple[float, float]]], n_cases: int, n_random: int,
                   wins: dict[str, dict[str, int]] | None = None) -> str:
    """The study's table (mean ± std per method), plus paired win counts when given."""
    names = {
        "fit": "xfit fit",
        "mean": "prior mean volume",
        "best_of_n_xray": f"best of {n_random} samples (by X-ray NCC)",
        "best_of_n_oracle": f"best of {n_random} samples (oracle, by PSNR to truth)",
    }
    head = "| method | PSNR (dB) | SSIM | MAE (HU) | vertebra Dice |\n|---|---|---|---|---|\n"
    rows = []
    for m in METHODS:
        cells = [f"{table[m][k][0]:.3f} ± {table[m][k][1]:.3f}" if k in ("ssim", "dice") else f"{table[m][k][0]:.1f} ± {table[m][k][1]:.1f}" for k in KEYS]
        rows.append(f"| {names[m]} | " + " | ".join(cells) + " |")
    text = head + "\n".join(rows) + f"\n\n({n_cases} held-out phantoms, mean ± std)\n"
    if wins:
        text += "\nCases where the fit is better (paired, same phantom):\n\n"
        text += "| fit better than | PSNR | SSIM | MAE | Dice |\n|---|---|---|---|---|\n"
        for m, w in wins.items():
            text += f"| {names[m]} | " + " | ".join(f"{w[k]}/{n_cases}" for k in KEYS) + " |\n"
    return text


def run_study(
    prior_path: str | Path,
    out_dir: str | Path,
    *,
    cases: int = 20,
    first_seed: int = 0,
    angles: Sequence[float] = (0.0, 90.0),
    detector: int = 128,
    pixel_spacing_mm: float = 1.0,
    n_random: int = 32,
    fit_config: str | Path | None = None,
    whole_body_fov_mm: float | None = None,
    warm_start: bool = True,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the study and write ``results.json`` and ``table.md`` to ``out_dir``."""
    from tqdm.auto import tqdm

    from ..fitting import load_fit_config
    from ..io import prepare_output_dir
    from ..prior.checkpoint import load_prior

    out = prepare_output_dir(out_dir, force=force)
    prior = load_prior(prior_path)
    cfg = load_fit_config(fit_config)
    views = default_views(angles, detector, pixel_spacing_mm)
    results = []
    for s in tqdm(range(first_seed, first_seed + cases), desc="evaluate", disable=not progress):
        case = make_case(s, prior, views, whole_body_fov_mm)
        results.append(evaluate_case(prior, case, views, cfg, n_random=n_random, warm_start=warm_start))
        with atomic_write(out / "results.json", force=True) as tmp:  # partial results survive interruption
            Path(tmp).write_text(json.dumps({"cases": results}, indent=2))
    table = summarize(results)
    summary = {
        "prior": str(prior_path),
        "prior_sha256": prior.sha256,
        "angles_deg": list(angles),
        "detector": [detector, detector],
        "pixel_spacing_mm": pixel_spacing_mm,
        "n_random": n_random,
        "whole_body_fov_mm": whole_body_fov_mm,
        "starts": sorted({r["start"] for r in results}),
        "fit_config": cfg.to_dict() if hasattr(cfg, "to_dict") else str(cfg),
        "mean_fit_seconds": float(np.mean([r["fit_seconds"] for r in results])),
        "summary": table,
        "fit_better_than": paired_wins(results),
        "cases": results,
    }
    with atomic_write(out / "results.json", force=True) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2))
    with atomic_write(out / "table.md", force=True) as tmp:
        Path(tmp).write_text(markdown_table(table, cases, n_random, paired_wins(results)))
    return summary


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m xfit.studies.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("prior")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--angles", default="0,90")
    p.add_argument("--detector", type=int, default=128)
    p.add_argument("--pixel-spacing", type=float, default=1.0)
    p.add_argument("--random", type=int, default=32)
    p.add_argument("--fit-config", default=None)
    p.add_argument("--no-warm-start", action="store_true", help="start every fit at w_mean even if the prior has an encoder")
    p.add_argument("--whole-body", type=float, default=None, metavar="FOV_MM",
                   help="simulate the X-rays through the whole torso drawn on a FOV_MM grid (e.g. 320)")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    from ..geometry import parse_angles

    s = run_study(
        a.prior, a.out, cases=a.cases, first_seed=a.first_seed, angles=parse_angles(a.angles), detector=a.detector,
        pixel_spacing_mm=a.pixel_spacing, n_random=a.random, fit_config=a.fit_config, whole_body_fov_mm=a.whole_body, warm_start=not a.no_warm_start, force=a.force,
    )
    print(markdown_table(s["summary"], a.cases, a.random, s["fit_better_than"]))


if __name__ == "__main__":
    main()
