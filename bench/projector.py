"""Benchmark of the reference X-ray projector against DiffDRR 0.6.1's Siddon renderer.

Usage::

    python bench/projector.py [--quick] [--repeats N] [--threads T]

For each case (volume n^3, detector d^2, one cone-beam view) it reports forward and
forward+backward wall time (median of ``--repeats``), the peak resident-memory increase of the
process over its resident memory before the first projection (Linux VmHWM after resetting it
through ``/proc/self/clear_refs``, else ``ru_maxrss``; each method/case runs in its own subprocess; on CUDA it would be
``torch.cuda.max_memory_allocated``) and, when DiffDRR is importable (``pip install .[bench]``),
the same for DiffDRR on identical geometry plus the max/mean difference of the two DRRs relative
to DiffDRR's maximum. The geometry mapping to DiffDRR is checked by comparing its source and pixel
positions with :func:`xfit.geometry.make_rays` (printed as ``geometry check``).
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
    drr = DRR(subject, sdd=view.sdd_mm, height=rows, width=cols, delx=dc, dely=dr,
              reverse_x_axis=True, renderer="siddon")
    # DiffDRR applies reorient first, then the pose: world = pose @ reorient @ camera
    pose = camera_to_world(view) @ torch.linalg.inv(reorient.double())
    return drr, RigidTransform(pose.float())


# ----------------------------------------------------------------------------- one measurement


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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


def run_case(method: str, n: int, detector: int, repeats: int, out_npy: str) -> dict:
    """Time forward and forward+backward of one method on one case (run in a fresh process)."""
    mu, affine = phantom(n)
    view = view_for(detector)
    result: dict = {"method": method, "n": n, "detector": detector}
    if method == "xfit":
        from xfit.projector import project

        def forward(m):
            return project(m, affine.float(), [view], backend="reference")[0, 0]
    else:
        drr, pose = diffdrr_setup(mu, affine, view)
        source, target = drr.detector(pose, None)
        from xfit.geometry import make_rays

        rays = make_rays([view], dtype=torch.float64)
        pixels = (rays.origins + rays.lengths[..., None] * rays.directions).reshape(-1, 3)
        result["geometry_check_mm"] = max(
            float((source[0, 0].double() - rays.origins[0, 0, 0]).abs().max()),
            float((target[0].double() - pixels).abs().max()),
        )

        def forward(m):
            drr.density = m
            return drr(pose)[0, 0]

    _reset_peak_rss()
    base = _current_rss_mb()  # after setup, before the first projection
    with torch.no_grad():
        image = forward(mu)  # warm-up (and the image to compare)
    np.save(out_npy, image.detach().numpy().astype(np.float64), allow_pickle=False)
    with torch.no_grad():
        result["fwd_s"] = _median_time(lambda: forward(mu), repeats)
    result["fwd_mb"] = _peak_rss_mb() - base
    weights = torch.rand(view.shape, generator=torch.Generator().manual_seed(0))

    def forward_backward():
        m = mu.clone().requires_grad_()
        (forward(m) * weights).sum().backward()

    result["fwdbwd_s"] = _median_time(forward_backward, repeats)
    result["fwdbwd_mb"] = _peak_rss_mb() - base
    return result


# ----------------------------------------------------------------------------- driver


def diffdrr_available() -> bool:
    try:
        import diffdrr.drr  # noqa: F401
        import torchio  # noqa: F401
    except Exception:
        return False
    return True


def _child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    print(json.dumps(run_case(args.method, args.n, args.detector, args.repeats, args.out)))


def _spawn(method: str, n: int, detector: int, args: argparse.Namespace, out: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--method", method, "--n", str(n), "--detector", str(detector),
           "--repeats", str(args.repeats), "--threads", str(args.threads), "--out", out]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the smallest case, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: stable timings on a shared CPU)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="xfit", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--detector", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    if args.quick:
        args.repeats = 1
    cases = [(64, 128)] if args.quick else [(64, 128), (64, 256), (128, 128), (128, 256)]
    have_diffdrr = diffdrr_available()
    print(f"torch {torch.__version__}, {args.threads} thread(s), cone beam sdd={SDD_MM} sod={SOD_MM} "
          f"angle={ANGLE_DEG}, median of {args.repeats}; memory = peak RSS increase")
    if not have_diffdrr:
        print("note: DiffDRR not importable (pip install .[bench]); comparison skipped")
    header = (f"{'volume':>7} {'det':>4} | {'fwd s':>7} {'f+b s':>7} {'fwd MB':>7} {'f+b MB':>7} | "
              f"{'DiffDRR fwd':>11} {'f+b':>7} {'fwd MB':>7} {'f+b MB':>7} | {'ratio fwd':>9} {'f+b':>5} | "
              f"{'max rel diff':>12} {'mean':>6}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for n, det in cases:
            ours_npy, theirs_npy = os.path.join(tmp, "ours.npy"), os.path.join(tmp, "theirs.npy")
            ours = _spawn("xfit", n, det, args, ours_npy)
            theirs = _spawn("diffdrr", n, det, args, theirs_npy) if have_diffdrr else {}
            if "error" in ours:
                print(f"{n:>5}^3 {det:>4} | xfit failed: {ours['error']}")
                continue
            line = (f"{n:>5}^3 {det:>4} | {ours['fwd_s']:7.3f} {ours['fwdbwd_s']:7.3f} "
                    f"{ours['fwd_mb']:7.0f} {ours['fwdbwd_mb']:7.0f} | ")
            if theirs and "error" not in theirs:
                a, b = np.load(ours_npy), np.load(theirs_npy)
                diff = np.abs(a - b) / np.abs(b).max()
                line += (f"{theirs['fwd_s']:11.3f} {theirs['fwdbwd_s']:7.3f} {theirs['fwd_mb']:7.0f} "
                         f"{theirs['fwdbwd_mb']:7.0f} | {ours['fwd_s'] / theirs['fwd_s']:9.2f} "
                         f"{ours['fwdbwd_s'] / theirs['fwdbwd_s']:5.2f} | {diff.max():12.4f} {diff.mean():6.4f}"
                         f"   (geometry check {theirs['geometry_check_mm']:.1e} mm)")
            elif theirs:
                line += f"DiffDRR failed: {theirs['error']}"
            else:
                line += "(DiffDRR skipped)"
            print(line, flush=True)


if __name__ == "__main__":
    main()
