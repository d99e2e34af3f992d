"""Test-time averaging of the start network (issues 26 and 28): is the mean of several passes a
better estimate than one?

The fit's output is three quarters its start network's volume (``blend_start``), so a better
start is a better fit. Two estimates whose errors are partly independent average to a better one
(``docs/fit.md``, "An ensemble start"). This scores, on development phantoms (seeds 100 and up,
never the held-out ones), the start network's volume and mask alone and averaged with:

- ``mirror``: the same network on the left-right mirrored patient. Mirroring the patient in
  world x mirrors the AP image's columns and leaves the lateral image as it is (exactly for a
  parallel beam; for a cone beam up to the magnification difference between the two sides of
  the cube, which the script measures as ``mirror_view_err``); the predicted volume is mirrored
  back;
- ``+NET``: a second network's volume (``--second``), the first one's mask.

Each variant gets PSNR, SSIM and Dice against the truth; the paired differences against the
single pass are printed per strength. 2 threads, one process::

    python bench/start_tta.py --first-seed 100 --phantoms 20 --style-strength 0,1 [--whole-body 320]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch


def mirror_x(images: list[np.ndarray], views) -> list[np.ndarray]:
    """The X-rays of the patient mirrored in world x: each view's image flipped along the detector
    axis that world x maps to (columns for AP at 0 degrees, none for a lateral at 90)."""
    out = []
    for im, v in zip(images, views):
        a = float(v.angle_deg) % 180.0
        if abs(a) < 1e-6:
            out.append(np.ascontiguousarray(im[:, ::-1]))
        elif abs(a - 90.0) < 1e-6:
            out.append(im)
        else:
            raise ValueError(f"mirror_x: view at {v.angle_deg} deg is neither AP nor lateral")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--first-seed", type=int, default=100)
    p.add_argument("--phantoms", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--style-strength", default="0,1", help="comma-separated; 'none' for ideal DRRs")
    p.add_argument("--whole-body", type=float, default=None, metavar="FOV_MM")
    p.add_argument("--network", default=None, help="default: the fit's start network")
    p.add_argument("--second", default="", help="comma-separated second networks to average with")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from xfit.baselines.infer import predict
    from xfit.fitting import load_fit_config
    from xfit.fitting.config import network_parts
    from xfit.fitting.hybrid import network_checkpoint, start_network
    from xfit.metrics import volume_metrics
    from xfit.prior.checkpoint import load_prior
    from xfit.prior.sample import prior_affine
    from xfit.reconstruct import DEFAULT_PRIOR
    from xfit.studies.evaluate import default_views, make_case, observe, project_hu

    prior = load_prior(DEFAULT_PRIOR)
    affine = prior_affine(prior)
    cfg = load_fit_config(None)
    views = default_views((0.0, 90.0), 128, 1.0)
    strengths = [None if s == "none" else float(s) for s in a.style_strength.split(",")]
    seconds = [s for s in a.second.split(",") if s]

    def run(name: str, images, vs) -> tuple[np.ndarray, np.ndarray]:
        base, path = network_checkpoint(name)
        hu, _, _, notes = predict(base, path, images, vs, label_prob=True)
        return np.asarray(hu, np.float32), notes["label_prob"]

    for strength in strengths:
        scores: dict[str, dict[str, list[float]]] = {}
        err: list[float] = []
        for seed in range(a.first_seed, a.first_seed + a.phantoms):
            case = make_case(seed, prior, views, a.whole_body)
            obs = observe(case, views, style_strength=strength)
            name = a.network or network_parts(start_network(cfg, a.whole_body is not None, views=obs.views))[0]
            hu, prob = run(name, obs.images, obs.views)
            hu_m, prob_m = run(name, mirror_x(list(obs.images), obs.views), obs.views)
            hu_m, prob_m = hu_m[::-1].copy(), prob_m[::-1].copy()  # world x is the first array axis
            if seed == a.first_seed:  # the mirror's premise, on the truth: its views vs the mirrored truth's
                mirrored = project_hu(case.hu[::-1].copy(), affine, obs.views)
                plain = mirror_x(project_hu(case.hu, affine, obs.views), obs.views)
                err = [float(np.abs(m - q).mean() / (np.abs(q).mean() + 1e-9)) for m, q in zip(mirrored, plain)]
            variants = {"single": (hu, prob), "mirror": ((hu + hu_m) / 2, (prob + prob_m) / 2)}
            for s in seconds:
                hu2, _ = run(s, obs.images, obs.views)
                variants[f"+{s}"] = ((hu + hu2) / 2, prob)
                variants[f"mirror+{s}"] = (((hu + hu_m) / 2 + hu2) / 2, (prob + prob_m) / 2)
            for k, (h, pr) in variants.items():
                m = volume_metrics(h, case.hu, pr > 0.5, case.vertebra, prior.config.spacing_mm)
                for metric in ("psnr_db", "ssim", "dice"):
                    scores.setdefault(k, {}).setdefault(metric, []).append(float(m[metric]))
        print(
            f"\n## strength {strength}, whole body {a.whole_body}, network {name}, seeds "
            f"{a.first_seed}-{a.first_seed + a.phantoms - 1}; mirror_view_err (AP, lateral) "
            + ", ".join(f"{e:.4f}" for e in err)
        )
        print("| variant | PSNR | SSIM | Dice | dPSNR | dSSIM | dDice | better (PSNR/SSIM/Dice) |")
        print("|---|---|---|---|---|---|---|---|")
        ref = scores["single"]
        for k, sc in scores.items():
            d = {m: [x - y for x, y in zip(sc[m], ref[m])] for m in sc}
            print(
                f"| {k} | {statistics.mean(sc['psnr_db']):.2f} | {statistics.mean(sc['ssim']):.3f} | "
                f"{statistics.mean(sc['dice']):.3f} | {statistics.mean(d['psnr_db']):+.3f} | "
                f"{statistics.mean(d['ssim']):+.4f} | {statistics.mean(d['dice']):+.4f} | "
                + "/".join(str(sum(x > 0 for x in d[m])) for m in ("psnr_db", "ssim", "dice"))
                + " |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
