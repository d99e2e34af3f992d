"""Benchmark the default reconstruction: wall time and peak memory, split into generator /
projector / optimizer time, and how time grows with steps, detector size and resolution.

    python bench/reconstruct.py [--prior PATH] [--quick]
    python bench/reconstruct.py --levers          # the default against its speed levers switched off
    python bench/reconstruct.py --radiograph     # README example vs a 2500 x 2000 px pair with --target
    python bench/reconstruct.py --profile [--set amp=off]   # seconds per part, top operators

Each case runs in a fresh subprocess (so peak resident memory is per case). The X-rays are
simulated from a held-out phantom (seed 9001) on the prior's grid. Prints a table; the first row
is the default setting (``xfit/configs/fit.yaml``), and later rows give their time as a ratio to it.
Wall times depend on the machine and its load: say which machine when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from timing import median_seconds

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
            res = subprocess.run(
                [sys.executable, "-c", RADIOGRAPH, json.dumps(args)], capture_output=True, text=True, check=True
            )
            out[case] = json.loads(res.stdout.strip().splitlines()[-1])
    ex, rg = out["example"], out["radiograph"]
    print(f"{threads} thread(s)")
    print(
        f"README example (128 x 128 px):             {ex['wall_s']:6.1f} s, {ex['steps']} steps, "
        f"fitted {ex['fitted_shapes']}"
    )
    print(
        f"2500 x 2000 px pair with --target (clicks): {rg['wall_s']:6.1f} s, {rg['steps']} steps, "
        f"fitted {rg['fitted_shapes']}"
    )
    print(f"ratio radiograph / example: {rg['wall_s'] / ex['wall_s']:.2f}")


def cpu_line() -> str:
    """This machine (``xfit.studies.evaluate.machine``) and its CPU's native bfloat16 units
    (``xfit.devices.cpu_bf16_units``)."""
    from xfit.devices import cpu_bf16_units
    from xfit.studies.evaluate import machine

    units = cpu_bf16_units()
    return f"{machine()}; native bf16: {', '.join(units) if units else 'none'}"


def profile(threads: int, overrides: dict, reps: int = 5, top: int = 15) -> None:
    """Seconds per part of one fit step at each stage's resolution, the whole default fit's
    timings, and the top operators (torch.profiler) of a short fit. In-process."""
    import time

    import torch

    from xfit.allocator import keep_freed_memory
    from xfit.devices import amp_enabled
    from xfit.fitting import fit, load_fit_config
    from xfit.fitting.optimize import build_objective, normalised_targets
    from xfit.io import hu_to_mu
    from xfit.prior.checkpoint import load_prior
    from xfit.prior.sample import generate_hu, prior_affine, synthesize
    from xfit.studies.evaluate import default_views, make_case

    keep_freed_memory()
    torch.set_num_threads(threads)
    prior = load_prior(Path(__file__).resolve().parents[1] / "xfit" / "data" / "prior-64.safetensors")
    cfg = load_fit_config(None, **overrides)
    amp = amp_enabled(cfg.amp, torch.device("cpu"))
    print(cpu_line())
    from xfit.projector import resolved_backend

    print(
        f"{threads} thread(s), amp {cfg.amp} -> {'bf16' if amp else 'float32'}, "
        f"projector {resolved_backend('auto', torch.device('cpu'))} ($XFIT_PROJECTOR=reference for the oracle)"
    )
    views = default_views((0.0, 90.0), 128, 1.0)
    case = make_case(9001, prior, views)
    targets = normalised_targets(case.images, torch.device("cpu"))
    S, full = prior.G.synthesis, int(prior.config.resolution)
    mean, std = prior.w_mean.float(), prior.w_std.float()

    print(f"\nper step, median of {reps} (seconds):")
    print(f"{'part':34s} {'coarse':>8s} {'fine':>8s}")
    rows: dict[str, list[float]] = {}
    for col, (res, coarse) in enumerate(((full // 2, True), (full, False))):
        u = torch.zeros(1, prior.num_ws, S.w_dim, requires_grad=True)
        noise = [torch.zeros(1, *sh[1:], requires_grad=True) for sh in S.noise_shapes()]

        def gen_fwd(r):
            with torch.no_grad():
                return synthesize(prior, mean + std * u, noise, r, amp)

        def gen_fwd_bwd(r):
            synthesize(prior, mean + std * u, noise, r, amp).square().mean().backward()

        prev_f = prev_fb = 0.0
        for r in S.block_resolutions:
            if r > res:
                break
            tf, tfb = median_seconds(lambda: gen_fwd(r), reps), median_seconds(lambda: gen_fwd_bwd(r), reps)
            rows.setdefault(f"synthesis block {r}^3 forward", [0.0, 0.0])[col] = tf - prev_f
            rows.setdefault(f"synthesis block {r}^3 backward", [0.0, 0.0])[col] = (tfb - tf) - (prev_fb - prev_f)
            prev_f, prev_fb = tf, tfb
        objective = build_objective(views, targets, prior_affine(prior, res), res, cfg, coarse=coarse)
        with torch.no_grad():
            hu, _ = generate_hu(prior, mean + std * u, noise, res, amp)
        mu = hu_to_mu(hu)[:, None].requires_grad_(True)
        rows.setdefault("projector forward", [0.0, 0.0])[col] = median_seconds(
            lambda: [p.detach() for p in objective.render(mu.detach())], reps
        )

        def proj_fwd_bwd():
            preds = objective.render(mu)
            sum(p.sum() for p in preds).backward()

        rows.setdefault("projector backward", [0.0, 0.0])[col] = (
            median_seconds(proj_fwd_bwd, reps) - rows["projector forward"][col]
        )
        preds = [p.detach().requires_grad_(True) for p in objective.render(mu.detach())]
        w = (mean + std * u).detach().requires_grad_(True)

        def loss_fwd_bwd():
            objective.terms(preds, w_plus=w, w_mean=mean, w_std=std, noise=noise)["total"].sum().backward()

        rows.setdefault("loss forward + backward", [0.0, 0.0])[col] = median_seconds(loss_fwd_bwd, reps)
        params = [u] + noise
        for p_ in params:
            p_.grad = torch.zeros_like(p_)
        opt = torch.optim.Adam(params, lr=1e-9)
        rows.setdefault("Adam step", [0.0, 0.0])[col] = median_seconds(opt.step, reps)
    z = torch.randn(1, prior.G.z_dim)
    with torch.no_grad():
        t_map = median_seconds(lambda: prior.G.mapping(z), reps)
    rows["mapping forward (init samples only)"] = [t_map, t_map]

    def order(name: str) -> tuple:
        if name.startswith("synthesis block"):
            return (0, int(name.split()[2].split("^", maxsplit=1)[0]), "backward" in name)
        return (1, list(rows).index(name))

    for name in sorted(rows, key=order):
        a, b = rows[name]
        print(f"{name:34s} {a:8.4f} {b:8.4f}")
    print(
        f"{'sum':34s} {sum(v[0] for k, v in rows.items() if 'mapping' not in k):8.4f} "
        f"{sum(v[1] for k, v in rows.items() if 'mapping' not in k):8.4f}"
    )

    t0 = time.perf_counter()
    res = fit(prior, case.images, views, cfg, progress=False)
    wall = time.perf_counter() - t0
    print(f"\nwhole fit of the README example's phantom (seed 9001): {wall:.1f} s wall, {res.stopped_at} steps")
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in res.timings.items()))

    short = load_fit_config(None, **{**overrides, "steps": 16, "init_network_steps": 8})
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fit(prior, case.images, views, short, progress=False)
    print(f"\ntop {top} operators of a short fit (16 steps, 8 inversion steps), by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def run_case(
    prior: str, detector: int, pixel_spacing: float, overrides: dict, threads: int, env: dict[str, str] | None = None
) -> dict:
    """Fit once in a fresh interpreter (``env``: extra environment variables); returns its
    timing record."""
    args = dict(prior=prior, detector=detector, pixel_spacing=pixel_spacing, overrides=overrides, threads=threads)
    out = subprocess.run(
        [sys.executable, "-c", CASE, json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(name: str, r: dict, base: float) -> str:
    """One table line of a timing record."""
    t = r["timings"]
    return (
        f"{name:48s} {r['wall_s']:7.1f} {r['steps']:5d} {r['wall_s'] / max(r['steps'], 1):7.2f} "
        f"{t.get('init', 0):7.1f} {t.get('generator', 0):7.1f} "
        f"{t.get('projector', 0):7.1f} {t.get('optimizer', 0):7.1f} "
        f"{r['peak_rss_mb']:8.0f} {r['wall_s'] / base:6.2f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--prior", default=str(Path(__file__).resolve().parents[1] / "xfit" / "data" / "prior-64.safetensors")
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="only the default and one variation per axis")
    p.add_argument(
        "--levers",
        action="store_true",
        help="only the default and the speed levers kept (bf16 generator, fused projector) switched off",
    )
    p.add_argument(
        "--radiograph", action="store_true", help="only: README example vs a 2500 x 2000 px pair with --target"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="only: seconds per part of a fit step (each synthesis block, projector, loss, Adam), "
        "the whole fit's timings and the top operators, with the CPU model and its bf16 units",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="fit config override for --profile (repeatable), e.g. --set amp=off",
    )
    a = p.parse_args()
    if a.radiograph:
        return radiograph(a.threads)
    if a.profile:
        from xfit.io import parse_yaml

        # YAML 1.2 as in the config files: ``off`` stays a string (PyYAML's default reads a bool)
        return profile(a.threads, {k: parse_yaml(v) for k, v in (kv.split("=", 1) for kv in a.set)})
    import torch

    from xfit.fitting import load_fit_config

    default = load_fit_config(None)
    print(cpu_line())
    print(
        f"prior {a.prior}; torch {torch.__version__}; {a.threads} thread(s); default steps {default.steps}, "
        f"restarts {default.restarts}"
    )
    cases = [("default (128 px, 1.0 mm)", 128, 1.0, {}, None)]
    if a.levers:  # the speed levers kept, each switched off, then both (the default before them)
        cases += [
            ("float32 generator (amp: off)", 128, 1.0, {"amp": "off"}, None),
            ("reference projector (XFIT_PROJECTOR=reference)", 128, 1.0, {}, {"XFIT_PROJECTOR": "reference"}),
            ("both off (the default before them)", 128, 1.0, {"amp": "off"}, {"XFIT_PROJECTOR": "reference"}),
        ]
    else:
        cases += [("glibc's allocator (XFIT_MALLOC=system)", 128, 1.0, {}, {"XFIT_MALLOC": "system"})]
    if not a.levers:
        cases += [(f"steps {default.steps // 2}", 128, 1.0, {"steps": default.steps // 2, "early_stop_tol": 0.0}, None)]
        cases += [("steps default, no early stop", 128, 1.0, {"early_stop_tol": 0.0}, None)]
        cases += [("coarse stage with the full generator", 128, 1.0, {"coarse_generator": False}, None)]
        cases += [("detector 64 px, 2.0 mm", 64, 2.0, {}, None), ("restarts 2", 128, 1.0, {"restarts": 2}, None)]
    if not a.quick and not a.levers:
        cases += [("detector 256 px, 0.5 mm", 256, 0.5, {}, None), ("restarts 4", 128, 1.0, {"restarts": 4}, None)]
    head = (
        f"{'case':48s} {'wall s':>7s} {'steps':>5s} {'s/step':>7s} {'init s':>7s} {'gen s':>7s} {'proj s':>7s} "
        f"{'opt s':>7s} {'peak MB':>8s} {'ratio':>6s}"
    )
    print(head)
    base = None
    for name, det, sp, ov, env in cases:
        r = run_case(a.prior, det, sp, ov, a.threads, env)
        base = base or r["wall_s"]
        print(row(name, r, base))
    if a.levers:
        return None
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
