"""Benchmark the default reconstruction: wall time and peak memory, split into generator /
projector / optimizer time, and how time grows with steps, detector size and resolution.

    python bench/reconstruct.py [--prior PATH] [--quick]
    python bench/reconstruct.py --radiograph     # README example vs a 2500 x 2000 px pair with --target

Each case runs in a fresh subprocess (so peak resident memory is per case). The X-rays are
simulated from a held-out phantom (seed 9001) on the prior's grid. Prints a table; the first row
is the default setting (``configs/fit.yaml``), and later rows give their time as a ratio to it.
Wall times depend on the machine and its load: say which machine when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CASE = r"""
import json, resource, sys, time, torch
from xfit.allocator import keep_freed_memory
from xfit.fitting import fit, load_fit_config
from xfit.prior.checkpoint import load_prior
from xfit.studies.evaluate import default_views, make_case
args = json.loads(sys.argv[1])
keep_freed_memory()  # as the command line does; XFIT_MALLOC=system in the environment opts out
torch.set_num_threads(args["threads"])
prior = load_prior(args["prior"])
views = default_views((0.0, 90.0), args["detector"], args["pixel_spacing"])
case = make_case(9001, prior, views)
cfg = load_fit_config(None, **args["overrides"])
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
res = fit(prior, case.images, views, cfg, progress=False)
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall_s": wall, "steps": res.stopped_at, "timings": res.timings,
                  "peak_rss_mb": rss / 1024, "rss_increase_mb": (rss - rss0) / 1024,
                  "ncc": [float(x) for x in res.view_ncc]}))
"""


RADIOGRAPH = r"""
import json, sys, time, torch
import numpy as np
from xfit.geometry import world_to_pixel
from xfit.io import write_nifti
from xfit.phantoms.model import make_phantom
from xfit.reconstruct import reconstruct
from xfit.simulate import simulate
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
if args["case"] == "example":
    t0 = time.perf_counter()
    rec = reconstruct([args["root"] + "/examples/ap.png", args["root"] + "/examples/lat.png"], progress=False)
else:
    ph = make_phantom(9002, size=(160, 144, 224), spacing_mm=1.5, level="L2")
    write_nifti(args["tmp"] + "/ct.nii.gz", ph.hu, ph.affine, force=True)
    iso = np.array([15.0, -5.0, 25.0])
    sims = simulate(args["tmp"] + "/ct.nii.gz", [0.0, 90.0], args["tmp"] + "/xr", detector_shape=(2500, 2000),
                    pixel_spacing_mm=(0.14, 0.14), isocenter_mm=iso, force=True)
    origin = torch.zeros(1, 3, dtype=torch.float64)
    clicks = [tuple(world_to_pixel(origin, s.view)[0].tolist()) for s in sims]
    t0 = time.perf_counter()
    rec = reconstruct([s.png for s in sims], target=clicks, progress=False)
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "steps": rec.fit.stopped_at, "timings": rec.fit.timings,
                  "fitted_shapes": [list(im.shape) for im in rec.fit_images], "ncc": rec.fit.view_ncc}))
"""


def radiograph(threads: int) -> None:
    """The README example's reconstruct against a 2500 x 2000 px pair with --target (whole
    ``xfit.reconstruct.reconstruct`` calls: reading, targeting, cropping, fitting)."""
    import tempfile

    root = str(Path(__file__).resolve().parents[1])
    out = {}
    for case in ("example", "radiograph"):
        with tempfile.TemporaryDirectory() as tmp:
            args = dict(case=case, threads=threads, root=root, tmp=tmp)
            res = subprocess.run([sys.executable, "-c", RADIOGRAPH, json.dumps(args)], capture_output=True, text=True,
                                 check=True)
            out[case] = json.loads(res.stdout.strip().splitlines()[-1])
    ex, rg = out["example"], out["radiograph"]
    print(f"{threads} thread(s)")
    print(f"README example (128 x 128 px):             {ex['wall_s']:6.1f} s, {ex['steps']} steps, fitted {ex['fitted_shapes']}")
    print(f"2500 x 2000 px pair with --target (clicks): {rg['wall_s']:6.1f} s, {rg['steps']} steps, fitted {rg['fitted_shapes']}")
    print(f"ratio radiograph / example: {rg['wall_s'] / ex['wall_s']:.2f}")


def run_case(prior: str, detector: int, pixel_spacing: float, overrides: dict, threads: int,
             env: dict[str, str] | None = None) -> dict:
    """Fit once in a fresh interpreter (``env``: extra environment variables); returns its
    timing record."""
    args = dict(prior=prior, detector=detector, pixel_spacing=pixel_spacing, overrides=overrides, threads=threads)
    out = subprocess.run([sys.executable, "-c", CASE, json.dumps(args)], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(name: str, r: dict, base: float) -> str:
    """One table line of a timing record."""
    t = r["timings"]
    return (f"{name:34s} {r['wall_s']:7.1f} {r['steps']:5d} {r['wall_s'] / max(r['steps'], 1):7.2f} "
            f"{t.get('generator', 0):7.1f} {t.get('projector', 0):7.1f} {t.get('optimizer', 0):7.1f} "
            f"{r['peak_rss_mb']:8.0f} {r['wall_s'] / base:6.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default=str(Path(__file__).resolve().parents[1] / "xfit" / "data" / "prior-64.safetensors"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="only the default and one variation per axis")
    p.add_argument("--radiograph", action="store_true", help="only: README example vs a 2500 x 2000 px pair with --target")
    a = p.parse_args()
    if a.radiograph:
        return radiograph(a.threads)
    import torch

    from xfit.fitting import load_fit_config

    default = load_fit_config(None)
    print(f"prior {a.prior}; torch {torch.__version__}; {a.threads} thread(s); default steps {default.steps}, "
          f"restarts {default.restarts}")
    cases = [("default (128 px, 1.0 mm)", 128, 1.0, {}, None)]
    cases += [("glibc's allocator (XFIT_MALLOC=system)", 128, 1.0, {}, {"XFIT_MALLOC": "system"})]
    cases += [(f"steps {default.steps // 2}", 128, 1.0, {"steps": default.steps // 2, "early_stop_tol": 0.0}, None)]
    cases += [("steps default, no early stop", 128, 1.0, {"early_stop_tol": 0.0}, None)]
    cases += [("coarse stage with the full generator", 128, 1.0, {"coarse_generator": False}, None)]
    cases += [("detector 64 px, 2.0 mm", 64, 2.0, {}, None), ("restarts 1", 128, 1.0, {"restarts": 1}, None)]
    if not a.quick:
        cases += [("detector 256 px, 0.5 mm", 256, 0.5, {}, None), ("restarts 4", 128, 1.0, {"restarts": 4}, None)]
    head = f"{'case':34s} {'wall s':>7s} {'steps':>5s} {'s/step':>7s} {'gen s':>7s} {'proj s':>7s} {'opt s':>7s} {'peak MB':>8s} {'ratio':>6s}"
    print(head)
    base = None
    for name, det, sp, ov, env in cases:
        r = run_case(a.prior, det, sp, ov, a.threads, env)
        base = base or r["wall_s"]
        print(row(name, r, base))
    # resolution: the tiny (32^3, 2.5 mm) architecture, untrained: the cost, not the quality
    import tempfile

    from xfit.prior.checkpoint import compute_w_stats, save_prior
    from xfit.prior.config import load_config
    from xfit.prior.networks import build_generator

    cfg = load_config("tiny")
    torch.manual_seed(0)
    G = build_generator(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_prior(Path(tmp) / "tiny.safetensors", G, *compute_w_stats(G, n=1000), cfg)
        r = run_case(str(path), 128, 1.0, {}, a.threads)
    print(row("resolution 32^3 (tiny, untrained)", r, base))


if __name__ == "__main__":
    main()
