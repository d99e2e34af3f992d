"""Benchmark of the 3D StyleGAN2 prior: generator speed/memory and training throughput.

Usage::

    python bench/prior.py [--config tiny --config 64] [--all] [--device cpu|cuda] [--repeats N]
                          [--threads T] [--train-steps S]

For each config (default ``tiny`` and ``64``; ``128`` only with ``--all`` or on CUDA) and batch
size 1 and 4 it reports the synthesis forward time and the forward+backward time to the styles
``w_plus`` with a frozen generator (what fitting does), median of ``--repeats``, and the peak
memory: on CPU the peak resident-memory increase of a fresh subprocess per case (Linux VmHWM after
resetting it through ``/proc/self/clear_refs``, else ``ru_maxrss``), on CUDA
``torch.cuda.max_memory_allocated``. Training throughput (images/s) is measured with
:class:`xfit.prior.train.Trainer` on synthetic reals (random volumes in [-1, 1]) at the config's
batch size, after one warm-up step (which includes the first lazy R1 step).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time

import torch
from timing import median_seconds


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rss_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024.0
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class _Memory:
    """Peak memory increase (MB) since :meth:`reset`: CUDA allocator or process RSS."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
        else:
            _reset_peak_rss()
            self.base = _rss_mb("VmRSS")

    def peak(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20 - self.base
        return _rss_mb("VmHWM") - self.base


# ----------------------------------------------------------------------------- one case (child)


def generator_case(config: str, batch: int, device: torch.device, repeats: int) -> dict:
    """Forward and forward+backward (to w_plus) of the synthesis network of a fresh generator."""
    from xfit.prior.config import load_config
    from xfit.prior.networks import build_generator

    cfg = load_config(config)
    torch.manual_seed(0)
    G = build_generator(cfg).to(device).eval().requires_grad_(False)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ws = G.mapping(torch.randn(batch, cfg.z_dim, device=device))
    mem = _Memory(device)
    out: dict = {"config": config, "resolution": cfg.resolution, "batch": batch, "device": str(device)}
    mem.reset()
    with torch.no_grad():
        G.synthesis(ws, noise_mode="const")  # warm-up
        out["fwd_s"] = median_seconds(lambda: G.synthesis(ws, noise_mode="const"), repeats, sync=sync, warmup=0)
    out["fwd_mb"] = mem.peak()

    def fwd_bwd():
        w = ws.detach().clone().requires_grad_(True)
        G.synthesis(w, noise_mode="const").square().mean().backward()

    mem.reset()
    fwd_bwd()
    out["fwdbwd_s"] = median_seconds(fwd_bwd, repeats, sync=sync, warmup=0)
    out["fwdbwd_mb"] = mem.peak()
    return out


def train_case(config: str, device: torch.device, steps: int) -> dict:
    """Images/s of :class:`Trainer` steps on synthetic reals at the config's batch size."""
    from xfit.prior.config import load_config
    from xfit.prior.train import Trainer

    cfg = load_config(config)
    trainer = Trainer(cfg, device)
    b, r = cfg.training.batch_size, cfg.resolution
    reals = torch.rand(b, 2, r, r, r, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    mem = _Memory(device)
    mem.reset()
    trainer.train_step(reals)  # warm-up, includes the lazy R1 step 0
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(reals)
    sync()
    dt = time.perf_counter() - t0
    return {
        "config": config,
        "resolution": r,
        "batch": b,
        "device": str(device),
        "img_per_s": steps * b / dt,
        "step_s": dt / steps,
        "train_mb": mem.peak(),
    }


# ----------------------------------------------------------------------------- driver


def _spawn(args: argparse.Namespace, **case) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        json.dumps(case),
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
        "--train-steps",
        str(args.train_steps),
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    case = json.loads(args.child)
    device = torch.device(case["device"])
    if case["kind"] == "generator":
        result = generator_case(case["config"], case["batch"], device, args.repeats)
    else:
        result = train_case(case["config"], device, args.train_steps)
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        action="append",
        default=None,
        help="config name or YAML (repeatable; default tiny and 64, plus 128 on CUDA)",
    )
    p.add_argument("--all", action="store_true", help="also the 128 config on CPU")
    p.add_argument("--device", action="append", default=None, help="cpu and/or cuda (default: both if available)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: stable timings)")
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(
        f"torch {torch.__version__}, {args.threads} CPU thread(s), median of {args.repeats}; "
        "CPU memory = peak RSS increase of a fresh process, CUDA = max_memory_allocated"
    )
    header = f"{'config':>7} {'res':>4} {'dev':>5} {'batch':>5} | {'fwd s':>8} {'f+b s':>8} {'fwd MB':>8} {'f+b MB':>8}"
    print(header)
    print("-" * len(header))
    trains = []
    for device in devices:
        configs = args.config or (["tiny", "64", "128"] if device == "cuda" or args.all else ["tiny", "64"])
        for config in configs:
            for batch in (1, 4):
                r = _spawn(args, kind="generator", config=config, batch=batch, device=device)
                if "error" in r:
                    print(f"{config:>7} {'':>4} {device:>5} {batch:>5} | failed: {r['error']}", flush=True)
                    continue
                print(
                    f"{config:>7} {r['resolution']:>4} {device:>5} {batch:>5} | {r['fwd_s']:8.3f} "
                    f"{r['fwdbwd_s']:8.3f} {r['fwd_mb']:8.0f} {r['fwdbwd_mb']:8.0f}",
                    flush=True,
                )
            trains.append(_spawn(args, kind="train", config=config, device=device))
    print()
    header = f"{'config':>7} {'res':>4} {'dev':>5} {'batch':>5} | {'img/s':>8} {'s/step':>8} {'MB':>8}"
    print(f"training throughput ({args.train_steps} steps after one warm-up, synthetic reals)")
    print(header)
    print("-" * len(header))
    for r in trains:
        if "error" in r:
            print(f"failed: {r['error']}")
            continue
        print(
            f"{r['config']:>7} {r['resolution']:>4} {r['device']:>5} {r['batch']:>5} | "
            f"{r['img_per_s']:8.2f} {r['step_s']:8.3f} {r['train_mb']:8.0f}"
        )


if __name__ == "__main__":
    main()
