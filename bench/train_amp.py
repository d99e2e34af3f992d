"""Training throughput of the prior with and without bfloat16 autocast (CPU or CUDA).

Usage::

    python bench/train_amp.py [--config 64] [--config tiny] [--steps 4] [--rounds 2] [--threads 2]

For each config it builds one :class:`xfit.prior.train.Trainer` per mode (``off``, ``bf16``, same
seed) on synthetic reals (random volumes in [-1, 1]), runs one warm-up step (step 0, which is
also the lazy R1 step) and then times ``--steps`` plain steps; the modes alternate for
``--rounds`` rounds so that load from other jobs on a shared machine hits both alike. It prints
the median images/s per mode and the speed-up, and a JSON line with every timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def _time_steps(trainer, reals: torch.Tensor, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(reals)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> None:
    from xfit.prior.config import load_config
    from xfit.prior.train import Trainer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", default=None)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    results = {}
    for name in a.config or ["64"]:
        cfg = load_config(name)
        b, r = cfg.training.batch_size, cfg.resolution
        reals = (torch.rand(b, 2, r, r, r, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
        trainers = {m: Trainer(cfg, device, amp=m) for m in ("off", "bf16")}
        for tr in trainers.values():
            tr.train_step(reals)  # warm-up (and the R1 step)
        times: dict[str, list[float]] = {m: [] for m in trainers}
        for _ in range(a.rounds):
            for m, tr in trainers.items():
                times[m].append(_time_steps(tr, reals, a.steps))
        ips = {m: b / statistics.median(ts) for m, ts in times.items()}
        results[name] = {"img_per_s": ips, "s_per_step": times, "speedup_bf16": ips["bf16"] / ips["off"]}
        print(
            f"config {name}: fp32 {ips['off']:.2f} img/s, bf16 autocast {ips['bf16']:.2f} img/s "
            f"(x{ips['bf16'] / ips['off']:.2f}); {a.threads} thread(s), {a.steps} steps x {a.rounds} rounds"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
