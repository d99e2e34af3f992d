"""Benchmark of xfit's projector (reference and fused CPU backends) against DiffDRR 0.6.1's Siddon
renderer and nanodrr 0.1.7's torch backend, on identical geometry.

Usage::

    python bench/projector.py [--quick] [--all] [--repeats N] [--threads T] [--no-memory]
    python bench/projector.py --fit [--threads 2] [--repeats N]   # the fit's projector per step

Cases (volume n^3, detector d^2, one cone-beam view at 30 degrees): 64^3/128^2 and 128^3/256^2
(``--all`` adds 64^3/256^2 and 128^3/128^2; ``--quick``: 64^3/128^2 only, 2 repeats). Methods:

- ``xfit reference``: :mod:`xfit.projector.reference` (``grid_sample`` and its aten backward);
- ``xfit fused``: :mod:`xfit.projector.fused` (numba; skipped when numba is missing);
- ``DiffDRR``: Siddon, ``pip install .[bench]``;
- ``nanodrr``: its ``backend="torch"`` (``grid_sample``, ``align_corners=False``) with
  ``n_samples`` equal to xfit's samples per ray, which makes its sampling the same as xfit's
  (midpoints of equal parts of each ray's chord through the same support box).

Timing: every method of a case runs in one process, after a warm-up, with the methods interleaved
in each of ``--repeats`` rounds (forward, then forward+backward of ``sum(drr * weights)`` w.r.t.
the volume); the medians are printed. Ratios are speed-ups: the peer's median time / ours (> 1:
ours is faster). Accuracy: the max and mean absolute difference of each DRR from DiffDRR's,
relative to DiffDRR's maximum (and the fused backend's from the reference). Memory (unless
``--no-memory``): per method and case in its own process, the peak resident-memory increase over
the resident memory before the first projection (Linux VmHWM after resetting it through
``/proc/self/clear_refs``, else ``ru_maxrss``). The geometry mapping to each peer is checked by
comparing its source and pixel positions with :func:`xfit.geometry.make_rays` (printed as
``geometry check``, in mm).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

FOV_MM = 200.0
SDD_MM, SOD_MM = 1000.0, 700.0
ANGLE_DEG = 30.0


# ----------------------------------------------------------------------------- case setup


def phantom(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Torso-like mu volume (1/mm) ``[n, n, n]`` float32 and its RAS affine (centred, FOV 200 mm)."""
    spacing = FOV_MM / n
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, :3] *= spacing
    affine[:3, 3] = -spacing * (n - 1) / 2
    idx = torch.arange(n, dtype=torch.float32) * spacing - spacing * (n - 1) / 2
    x, y, z = torch.meshgrid(idx, idx, idx, indexing="ij")
    body = (x / 85) ** 2 + (y / 60) ** 2 <= 1
    lungs = (((x.abs() - 40) / 28) ** 2 + ((y + 5) / 35) ** 2 + (z / 70) ** 2) <= 1
    spine = ((x / 12) ** 2 + ((y + 38) / 12) ** 2 <= 1) & ((z.remainder(30.0) - 15).abs() < 12)
    mu = torch.where(body, 0.02, 0.0)
    mu = torch.where(lungs & body, 0.005, mu)
    mu = torch.where(spine, 0.045, mu)
    return mu.contiguous(), affine


def view_for(detector: int):
    from xfit.geometry import View

    spacing = 1.1 * FOV_MM * (SDD_MM / SOD_MM) / detector
    return View(ANGLE_DEG, sdd_mm=SDD_MM, sod_mm=SOD_MM, shape=(detector, detector), pixel_spacing_mm=spacing)


def camera_to_world(view) -> torch.Tensor:
    """DiffDRR's camera->world 4x4 for a View: source at the origin, detector at z = sdd,
    camera -x = our column axis u, camera -y = our row axis v (with ``reverse_x_axis=True``)."""
    from xfit.geometry import detector_frame

    f = detector_frame([view], dtype=torch.float64)
    w = (f["centre"][0] - f["source"][0]) / view.sdd_mm
    m = torch.eye(4, dtype=torch.float64)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = -f["u"][0], -f["v"][0], w, f["source"][0]
    return m


def diffdrr_setup(mu: torch.Tensor, affine: torch.Tensor, view):
    """A DiffDRR Siddon DRR module rendering ``mu`` (as density) and the pose that reproduces ``view``."""
    import torchio
    from diffdrr.drr import DRR
    from diffdrr.pose import RigidTransform

    reorient = torch.eye(4)
    image = torchio.ScalarImage(tensor=mu[None], affine=affine.numpy())
    subject = torchio.Subject(volume=image, density=image, reorient=reorient, mask=None)
    rows, cols = view.shape
    dr, dc = view.pixel_spacing_mm
    drr = DRR(
        subject, sdd=view.sdd_mm, height=rows, width=cols, delx=dc, dely=dr, reverse_x_axis=True, renderer="siddon"
    )
    # DiffDRR applies reorient first, then the pose: world = pose @ reorient @ camera
    pose = camera_to_world(view) @ torch.linalg.inv(reorient.double())
    return drr, RigidTransform(pose.float())


# ----------------------------------------------------------------------------- peers


def nanodrr_setup(mu: torch.Tensor, affine: torch.Tensor, view):
    """nanodrr's DRR module, subject (``mu`` as raw values) and the camera->world pose for ``view``:
    camera x = our column axis u, y = our row axis v, z = source -> detector centre, source at the
    camera's origin (nanodrr puts pixel (r, c) at ((c + 0.5 - W/2) dx, (r + 0.5 - H/2) dy, sdd))."""
    import torchio
    from nanodrr.data import Subject
    from nanodrr.drr import DRR

    from xfit.geometry import detector_frame

    subject = Subject.from_images(torchio.ScalarImage(tensor=mu[None], affine=affine.numpy()), convert_to_mu=False)
    rows, cols = view.shape
    dr, dc = view.pixel_spacing_mm
    drr = DRR.from_carm_intrinsics(view.sdd_mm, dc, dr, 0.0, 0.0, rows, cols, dtype=torch.float32)
    f = detector_frame([view], dtype=torch.float64)
    m = torch.eye(4, dtype=torch.float64)
    w = (f["centre"][0] - f["source"][0]) / view.sdd_mm
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = f["u"][0], f["v"][0], w, f["source"][0]
    return drr, subject, m[None].float()


def _pixels(view) -> tuple[torch.Tensor, torch.Tensor]:
    """xfit's source ``[3]`` and pixel centres ``[R*C, 3]`` (world mm, float64)."""
    from xfit.geometry import make_rays

    rays = make_rays([view], dtype=torch.float64)
    pixels = (rays.origins + rays.lengths[..., None] * rays.directions).reshape(-1, 3)
    return rays.origins.reshape(-1, 3)[0], pixels


def samples_per_ray(mu: torch.Tensor, affine: torch.Tensor, view) -> int:
    """xfit's number of samples per ray for this case (default step: half a voxel)."""
    from xfit.geometry import make_rays
    from xfit.projector.reference import _prepare, as_affine

    aff = as_affine(affine.float(), 1, dtype=torch.float32, device=mu.device)
    return _prepare(make_rays([view]), aff, mu.shape, None, None, 1)[5]


def make_method(method: str, mu: torch.Tensor, affine: torch.Tensor, view, n_samples: int):
    """``(forward, geometry_check_mm)``: forward maps a volume ``[n, n, n]`` to its DRR ``[R, C]``."""
    if method in ("reference", "fused"):
        from xfit.projector import project

        aff = affine.float()
        return (lambda m: project(m, aff, [view], backend=method)[0, 0]), None
    source, pixels = _pixels(view)
    if method == "diffdrr":
        drr, pose = diffdrr_setup(mu, affine, view)
        src, tgt = drr.detector(pose, None)
        check = max(float((src[0, 0].double() - source).abs().max()), float((tgt[0].double() - pixels).abs().max()))

        def forward(m):
            drr.density = m
            return drr(pose)[0, 0]

        return forward, check
    if method == "nanodrr":
        from nanodrr.geometry import transform_point

        drr, subject, rt_inv = nanodrr_setup(mu, affine, view)
        tgt = transform_point(rt_inv, drr.tgt)[0].double()
        src = transform_point(rt_inv, drr.src)[0, 0].double()
        check = max(float((src - source).abs().max()), float((tgt - pixels).abs().max()))

        def forward(m):
            subject._image_hu = m[None, None].permute(0, 1, 4, 3, 2)  # torchio (I, J, K) -> (K, J, I)
            return drr(subject, rt_inv, n_samples=n_samples, backend="torch")[0, 0]

        return forward, check
    raise ValueError(method)


# ----------------------------------------------------------------------------- measurements


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); elsewhere ru_maxrss deltas are used."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024.0
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024.0
    except (OSError, AttributeError):
        return _peak_rss_mb()


def _forward_backward(forward, mu: torch.Tensor, weights: torch.Tensor) -> None:
    m = mu.clone().requires_grad_()
    (forward(m) * weights).sum().backward()


def time_case(methods: list[str], n: int, detector: int, repeats: int, out_dir: str) -> dict:
    """Interleaved timing of every method on one case (one process); DRRs saved to ``out_dir``."""
    mu, affine = phantom(n)
    view = view_for(detector)
    n_samples = samples_per_ray(mu, affine, view)
    weights = torch.rand(view.shape, generator=torch.Generator().manual_seed(0))
    fns, result = {}, {"n_samples": n_samples, "methods": {}}
    for method in methods:
        fn, check = make_method(method, mu, affine, view, n_samples)
        with torch.no_grad():
            image = fn(mu)  # warm-up (numba: compile or load from cache) and the image to compare
        _forward_backward(fn, mu, weights)
        np.save(os.path.join(out_dir, f"{method}.npy"), image.detach().numpy().astype(np.float64), allow_pickle=False)
        fns[method] = fn
        result["methods"][method] = {"fwd": [], "fwdbwd": [], "geometry_check_mm": check}
    for r in range(repeats):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]  # rotate who goes first
        for method in order:
            rec = result["methods"][method]
            t0 = time.perf_counter()
            with torch.no_grad():
                fns[method](mu)
            rec["fwd"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _forward_backward(fns[method], mu, weights)
            rec["fwdbwd"].append(time.perf_counter() - t0)
    for rec in result["methods"].values():
        rec["fwd_s"], rec["fwdbwd_s"] = statistics.median(rec["fwd"]), statistics.median(rec["fwdbwd"])
    return result


def memory_case(method: str, n: int, detector: int) -> dict:
    """Peak resident-memory increase (MB) of one forward and one forward+backward (own process)."""
    mu, affine = phantom(n)
    view = view_for(detector)
    fn, _ = make_method(method, mu, affine, view, samples_per_ray(mu, affine, view))
    weights = torch.rand(view.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # setup and JIT load outside the measurement: run once, then reset
        fn(mu)
    _reset_peak_rss()
    base = _current_rss_mb()
    with torch.no_grad():
        fn(mu)
    fwd_mb = _peak_rss_mb() - base
    _forward_backward(fn, mu, weights)
    return {"fwd_mb": fwd_mb, "fwdbwd_mb": _peak_rss_mb() - base}


def fit_steps(threads: int, repeats: int) -> None:
    """The fit's projector cost per step (``Objective.render`` of the README example's two 128^2
    views of the shipped prior's volume; coarse stage 32^3 / 64^2), reference vs fused, interleaved."""
    from xfit.fitting import load_fit_config
    from xfit.fitting.optimize import build_objective, normalised_targets
    from xfit.io import hu_to_mu
    from xfit.prior.checkpoint import load_prior
    from xfit.prior.sample import generate_hu, prior_affine
    from xfit.studies.evaluate import default_views, make_case

    torch.set_num_threads(threads)
    prior = load_prior(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "xfit", "data", "prior-64.safetensors")
    )
    cfg = load_fit_config(None)
    views = default_views((0.0, 90.0), 128, 1.0)
    targets = normalised_targets(make_case(9001, prior, views).images, torch.device("cpu"))
    synthesis, full = prior.G.synthesis, int(prior.config.resolution)
    backends = ["reference", "fused"]
    print(f"\nthe fit's projector per step ({threads} thread(s), median of {repeats} interleaved rounds, seconds)")
    for res, coarse in ((full // 2, True), (full, False)):
        objective = build_objective(views, targets, prior_affine(prior, res), res, cfg, coarse=coarse)
        u = torch.zeros(1, prior.num_ws, synthesis.w_dim)
        noise = [torch.zeros(1, *sh[1:]) for sh in synthesis.noise_shapes()]
        with torch.no_grad():
            hu, _ = generate_hu(prior, prior.w_mean.float() + prior.w_std.float() * u, noise, res, False)
        mu = hu_to_mu(hu)[:, None].contiguous()
        sizes = ", ".join(f"{p.shape[1]} x {p.shape[2]}x{p.shape[3]}" for p in objective.render(mu))

        def run(backend: str, grad: bool) -> float:
            os.environ["XFIT_PROJECTOR"] = backend
            t0 = time.perf_counter()
            if grad:
                m = mu.clone().requires_grad_(True)
                sum(p.sum() for p in objective.render(m)).backward()
            else:
                with torch.no_grad():
                    objective.render(mu)
            return time.perf_counter() - t0

        times = {b: ([], []) for b in backends}
        for b in backends:  # warm-up
            run(b, False), run(b, True)
        for r in range(repeats):
            for b in backends if r % 2 == 0 else backends[::-1]:
                times[b][0].append(run(b, False))
                times[b][1].append(run(b, True))
        os.environ.pop("XFIT_PROJECTOR")
        print(f"  {'coarse' if coarse else 'fine'} stage: volume {res}^3, views {sizes}")
        for b, (fwd, fb) in times.items():
            f, g = statistics.median(fwd), statistics.median(fb)
            print(f"    {LABELS[b]:<15} forward {f:.4f}  forward+backward {g:.4f}  (backward {g - f:.4f})")


# ----------------------------------------------------------------------------- driver


def available_methods() -> tuple[list[str], list[str]]:
    """Methods that import here, and notes on those that do not."""
    methods, notes = ["reference"], []
    from xfit.projector import fused

    if fused.available():
        methods.append("fused")
    else:
        notes.append("xfit fused skipped: numba not importable (pip install numba)")
    for name, mod in (("diffdrr", "diffdrr.drr"), ("nanodrr", "nanodrr.drr")):
        try:
            __import__(mod)
            __import__("torchio")
        except Exception as e:  # noqa: BLE001
            notes.append(f"{name} skipped: {type(e).__name__}: {e} (pip install .[bench])")
        else:
            methods.append(name)
    return methods, notes


def _child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps(memory_case(args.memory_of, args.n, args.detector)))
    else:
        print(json.dumps(time_case(args.methods.split(","), args.n, args.detector, args.repeats, args.out)))


def _spawn(args: argparse.Namespace, n: int, detector: int, extra: list[str]) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--n",
        str(n),
        "--detector",
        str(detector),
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
        *extra,
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


LABELS = {"reference": "xfit reference", "fused": "xfit fused", "diffdrr": "DiffDRR 0.6.1", "nanodrr": "nanodrr torch"}


def report_case(n: int, det: int, timing: dict, memory: dict, tmp: str) -> None:
    """Print one case: times, memory, differences, then the speed-ups of xfit over each peer."""
    recs = timing["methods"]
    images = {m: np.load(os.path.join(tmp, f"{m}.npy")) for m in recs}
    print(f"\n{n}^3 volume, {det}^2 detector ({timing['n_samples']} samples per ray for xfit and nanodrr)")
    head = (
        f"  {'method':<15} {'fwd s':>7} {'f+b s':>7} {'fwd MB':>7} {'f+b MB':>7} | "
        f"{'vs DiffDRR: max':>15} {'mean':>7} | {'geometry check':>14}"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    peer = images.get("diffdrr")
    for m, rec in recs.items():
        mem = memory.get(m, {})
        line = (
            f"  {LABELS[m]:<15} {rec['fwd_s']:7.3f} {rec['fwdbwd_s']:7.3f} "
            f"{mem.get('fwd_mb', float('nan')):7.0f} {mem.get('fwdbwd_mb', float('nan')):7.0f} | "
        )
        if peer is not None:
            diff = np.abs(images[m] - peer) / np.abs(peer).max()
            line += f"{diff.max():15.4f} {diff.mean():7.4f} | "
        else:
            line += f"{'':>15} {'':>7} | "
        check = rec["geometry_check_mm"]
        line += f"{check:11.1e} mm" if check is not None else f"{'':>14}"
        print(line)
    if "fused" in images:
        d = np.abs(images["fused"] - images["reference"]) / np.abs(images["reference"]).max()
        print(f"  fused vs reference: max {d.max():.1e}, mean {d.mean():.1e} (relative to the reference's max)")
    for ours in ("fused", "reference"):
        for theirs in ("diffdrr", "nanodrr"):
            if ours in recs and theirs in recs:
                a, b = recs[ours], recs[theirs]
                print(
                    f"  speed-up of {LABELS[ours]} over {LABELS[theirs]}: forward "
                    f"{b['fwd_s'] / a['fwd_s']:.2f}x, forward+backward {b['fwdbwd_s'] / a['fwdbwd_s']:.2f}x"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only 64^3/128^2, 2 repeats")
    parser.add_argument("--all", action="store_true", help="also 64^3/256^2 and 128^3/128^2")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (median printed)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch (and numba) threads (default 1: stable timings on a shared CPU)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the per-method memory processes")
    parser.add_argument(
        "--fit", action="store_true", help="instead: the fit's projector per step (reference vs fused), with --threads"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--methods", default="", help=argparse.SUPPRESS)
    parser.add_argument("--memory-of", default="", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--detector", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    if args.quick:
        args.repeats = 2
    if args.fit:
        fit_steps(args.threads, args.repeats)
        return
    cases = [(64, 128), (128, 256)]
    if args.all:
        cases = [(64, 128), (64, 256), (128, 128), (128, 256)]
    if args.quick:
        cases = [(64, 128)]
    methods, notes = available_methods()
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), cone beam sdd={SDD_MM} sod={SOD_MM} "
        f"angle={ANGLE_DEG}, median of {args.repeats} interleaved rounds; memory = peak RSS increase; "
        f"differences relative to DiffDRR's maximum"
    )
    for note in notes:
        print("note: " + note)
    for n, det in cases:
        with tempfile.TemporaryDirectory() as tmp:
            timing = _spawn(args, n, det, ["--methods", ",".join(methods), "--out", tmp])
            if "error" in timing:
                print(f"\n{n}^3 {det}^2: failed: {timing['error']}")
                continue
            memory = {} if args.no_memory else {m: _spawn(args, n, det, ["--memory-of", m]) for m in methods}
            memory = {m: r for m, r in memory.items() if "error" not in r}
            report_case(n, det, timing, memory, tmp)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
