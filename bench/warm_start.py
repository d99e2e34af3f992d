"""Benchmark of the warm-start encoder: fitting steps and seconds to reach a data-term value.

Usage::

    python bench/warm_start.py [--prior PATH] [--encoder PATH | --save-encoder PATH]
                               [--n 4] [--steps 100] [--data DIR] [--target T] [--json OUT]

Without ``--prior`` a tiny random prior (``xfit/configs/prior-tiny.yaml``, seed 0) is built in a
temporary folder. The encoder is trained on the prior's own samples (``--enc-steps``,
``--bank``) unless ``--encoder`` loads one. For N held-out prior samples (and, with ``--data``,
the CTs ``*_ct.nii.gz`` of a folder resampled onto the prior grid, centred on their grid centre)
it simulates the AP + lateral X-rays, then runs :func:`xfit.fitting.fit` twice: cold (start at
``w_mean``) and warm (``w_init`` = encoder prediction). Both use one restart, no coarse stage and
no early stopping, so their data terms are comparable step by step.

Reported per case and as medians: the data term (multi-scale 1 - NCC) at step 0 and at the end,
the steps and seconds (wall clock from the call of ``fit``; the warm run also pays the encoder
prediction) until the data term first reaches the target: ``--target`` or, by default, the cold
run's final value. ``-`` means never reached. ``w_err`` is the normalized MSE of the final W+ to
the truth (prior samples only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build_tiny_prior(folder: Path):
    """A random-init tiny prior saved in ``folder`` and loaded back."""
    from xfit.prior.checkpoint import compute_w_stats, load_prior, save_prior
    from xfit.prior.config import load_config
    from xfit.prior.networks import build_generator

    cfg = load_config("tiny")
    torch.manual_seed(0)
    G = build_generator(cfg).eval()
    w_mean, w_std = compute_w_stats(G, n=2000)
    path = save_prior(folder / "tiny-random.safetensors", G, w_mean, w_std, cfg, {}, cfg.label_names)
    return load_prior(path)


def phantom_cases(prior, views, data_dir: Path, limit: int) -> list[dict]:
    """X-rays of the CTs in ``data_dir`` resampled onto the prior grid (``[R, C]`` each)."""
    from xfit.io import hu_to_mu, read_nifti, resample
    from xfit.prior.sample import prior_affine
    from xfit.projector import project

    r, s = prior.config.resolution, prior.config.spacing_mm
    affine = torch.as_tensor(prior_affine(prior), dtype=torch.float32)
    cases = []
    for path in sorted(data_dir.glob("*_ct.nii.gz"))[:limit]:
        hu = resample(read_nifti(path), s, order=1, shape=(r, r, r), cval=-1000.0).data
        mu = hu_to_mu(torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32)))[None, None]
        imgs = project(mu, affine, views)[0]
        cases.append({"name": path.name, "images": [im.numpy() for im in imgs], "w_true": None})
    return cases


def prior_cases(prior, views, n: int, seed: int) -> list[dict]:
    """X-rays of ``n`` held-out prior samples (random synthesis noise), with their true W+."""
    from xfit.fitting.encoder import simulate_samples

    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, prior.G.z_dim, generator=gen)
    with torch.no_grad():
        w = prior.G.mapping(z)
    imgs = simulate_samples(prior, views, w, gen)
    return [{"name": f"sample{i}", "images": [im.numpy() for im in imgs[i]], "w_true": w[i]} for i in range(n)]


def run_fit(fit, prior, case, views, cfg, w_init, extra_s: float) -> dict:
    """One fit; returns per-step data terms and seconds since the call (plus ``extra_s``)."""
    trace: list[tuple[int, float, float]] = []
    t0 = time.perf_counter()

    def callback(step: int, state: dict) -> None:
        trace.append((step, min(state["terms"]["data"]), time.perf_counter() - t0 + extra_s))

    result = fit(prior, case["images"], views, cfg, seed=0, w_init=w_init, progress=False, callback=callback)
    out = {"trace": trace, "seconds": time.perf_counter() - t0 + extra_s}
    if case["w_true"] is not None:
        u = (torch.as_tensor(result.w_plus) - case["w_true"]) / prior.w_std
        out["w_err"] = float(u.square().mean())
    return out


def reach(trace: list[tuple[int, float, float]], target: float) -> tuple[int | None, float | None]:
    """(steps, seconds) until the data term first is <= target (steps counted from 1)."""
    for step, data, t in trace:
        if data <= target:
            return step + 1, t
    return None, None


def fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prior", type=Path, help="prior checkpoint (default: tiny random prior)")
    ap.add_argument("--encoder", type=Path, help="load this encoder instead of training one")
    ap.add_argument("--save-encoder", type=Path, help="write the trained encoder here")
    ap.add_argument("--n", type=int, default=4, help="held-out prior samples")
    ap.add_argument("--steps", type=int, default=100, help="fit steps")
    ap.add_argument("--lr", type=float, default=None, help="fit lr (default: fit config)")
    ap.add_argument("--target", type=float, default=None, help="data-term target (default: the cold run's final value)")
    ap.add_argument("--data", type=Path, help="folder of *_ct.nii.gz phantoms to add")
    ap.add_argument("--n-data", type=int, default=4, help="phantoms used from --data")
    ap.add_argument(
        "--detector", type=int, default=None, help="detector side in pixels covering 128 mm (default 128; 32 for tiny)"
    )
    ap.add_argument("--enc-steps", type=int, default=600)
    ap.add_argument("--bank", type=int, default=1024, help="pre-generated training samples")
    ap.add_argument(
        "--image-size", type=int, default=None, help="encoder input side (default 64; 32 for detectors < 64)"
    )
    ap.add_argument("--mode", choices=("w", "wplus"), default="w")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1000, help="seed of the held-out samples")
    ap.add_argument("--json", type=Path, help="write the results as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from xfit.fitting.encoder import (
        default_views,
        evaluate_encoder,
        load_encoder,
        predict_w_plus,
        save_encoder,
        train_encoder,
    )
    from xfit.prior.checkpoint import load_prior

    tmp = tempfile.TemporaryDirectory()
    prior = load_prior(args.prior) if args.prior else build_tiny_prior(Path(tmp.name))
    detector = args.detector or (32 if prior.config.resolution <= 32 else 128)
    views = default_views(prior, detector)
    image_size = args.image_size or (32 if detector < 64 else 64)
    print(
        f"prior {prior.path.name} R={prior.config.resolution} num_ws={prior.num_ws} "
        f"w_dim={prior.config.w_dim}; views {[v.angle_deg for v in views]} detector "
        f"{detector}^2 at {views[0].pixel_spacing_mm[0]:.2f} mm; threads {args.threads}"
    )

    if args.encoder:
        encoder = load_encoder(args.encoder, prior)
        print(f"encoder loaded from {args.encoder}")
    else:
        encoder = train_encoder(
            prior,
            views,
            n_steps=args.enc_steps,
            batch=32,
            lr=2e-3,
            image_size=image_size,
            bank=args.bank,
            mode=args.mode,
            progress=True,
        )
        tr = encoder.meta["training"]
        print(
            f"encoder trained: {args.enc_steps} steps, bank {args.bank}, "
            f"{tr['seconds_total']:.1f} s ({tr['seconds_bank']:.1f} s generating); loss "
            f"{tr['loss_first']:.3f} -> {tr['loss_last']:.3f}"
        )
        if args.save_encoder:
            save_encoder(args.save_encoder, encoder)
    ev = evaluate_encoder(encoder, prior, views, n=64, seed=args.seed + 1)
    print(f"held-out normalized W+ MSE: encoder {ev['mse_encoder']:.3f}, w_mean {ev['mse_mean']:.3f}")

    try:
        from xfit.fitting import fit, load_fit_config
    except ImportError as exc:
        print(f"note: xfit.fitting.fit is not available yet ({exc}); fitting comparison skipped")
        return 0
    cfg = load_fit_config(steps=args.steps, restarts=1, coarse_fraction=0.0, early_stop_tol=0.0, lr=args.lr)
    cases = prior_cases(prior, views, args.n, args.seed)
    if args.data:
        cases += phantom_cases(prior, views, args.data, args.n_data)

    rows = []
    print(f"\nfit: {args.steps} steps, lr {cfg.lr}, restarts 1, no coarse stage, no early stop")
    print(
        f"{'case':<22}{'start cold/warm':>17}{'end cold/warm':>17}{'target':>8}"
        f"{'steps cold/warm':>17}{'sec cold/warm':>17}{'w_err cold/warm':>17}"
    )
    for case in cases:
        t0 = time.perf_counter()
        w0 = predict_w_plus(encoder, case["images"], views)
        t_pred = time.perf_counter() - t0
        cold = run_fit(fit, prior, case, views, cfg, None, 0.0)
        warm = run_fit(fit, prior, case, views, cfg, w0, t_pred)
        target = args.target if args.target is not None else cold["trace"][-1][1]
        (sc, tc), (sw, tw) = reach(cold["trace"], target), reach(warm["trace"], target)
        row = {
            "case": case["name"],
            "target": target,
            "predict_s": t_pred,
            "cold": {
                "start": cold["trace"][0][1],
                "end": cold["trace"][-1][1],
                "steps": sc,
                "seconds": tc,
                "total_s": cold["seconds"],
                "w_err": cold.get("w_err"),
                "data_trace": [d for _, d, _ in cold["trace"]],
            },
            "warm": {
                "start": warm["trace"][0][1],
                "end": warm["trace"][-1][1],
                "steps": sw,
                "seconds": tw,
                "total_s": warm["seconds"],
                "w_err": warm.get("w_err"),
                "data_trace": [d for _, d, _ in warm["trace"]],
            },
        }
        rows.append(row)
        c, w = row["cold"], row["warm"]
        print(
            f"{case['name'][:21]:<22}{c['start']:>8.4f}/{w['start']:<8.4f}"
            f"{c['end']:>8.4f}/{w['end']:<8.4f}{target:>8.4f}"
            f"{fmt(sc, 'd'):>8}/{fmt(sw, 'd'):<8}{fmt(tc, '.1f'):>8}/{fmt(tw, '.1f'):<8}"
            f"{fmt(c['w_err']):>8}/{fmt(w['w_err']):<8}",
            flush=True,
        )

    def med(side: str, key: str):
        vals = [r[side][key] for r in rows if r[side][key] is not None]
        return statistics.median(vals) if vals else None

    reached = {s: sum(r[s]["steps"] is not None for r in rows) for s in ("cold", "warm")}
    # a case where warm never reaches the target counts as the full budget for the ratio
    ratio = [((r["warm"]["steps"] or args.steps + 1) / r["cold"]["steps"]) for r in rows if r["cold"]["steps"]]
    summary = {
        "cases": len(rows),
        "reached": reached,
        "median_start": {s: med(s, "start") for s in ("cold", "warm")},
        "median_end": {s: med(s, "end") for s in ("cold", "warm")},
        "median_steps": {s: med(s, "steps") for s in ("cold", "warm")},
        "median_seconds": {s: med(s, "seconds") for s in ("cold", "warm")},
        "median_step_ratio_warm_over_cold": statistics.median(ratio) if ratio else None,
        "warm_wins": sum(1 for r in rows if (r["warm"]["steps"] or 10**9) < (r["cold"]["steps"] or 10**9)),
        "encoder_eval": ev,
    }
    print("\nsummary:", json.dumps(summary, indent=None))
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "summary": summary}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
