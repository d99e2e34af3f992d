"""Does ``torch.compile`` speed up the fit's generator here? ``python bench/compile_check.py``.

Times the forward + backward of the shipped prior's synthesis network at 64³, batch 1, under
bfloat16 autocast (as the fit runs it on a CPU with bf16 units), W+ and the noise maps requiring
gradients, eager against ``torch.compile`` (inductor). Prints the median of each, the ratio and
the compile time. Needs a C++ compiler for inductor on the CPU; nothing is downloaded.

Measured 2026-12-05 on an AMD EPYC (AVX512-BF16, no AMX), 2 threads, alone (medians of 10):
eager 0.28 s, compiled 0.70 s (2.5x slower); 64 s to compile the first time, 5 s from inductor's
cache. The fit does not compile (docs/speed.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from reconstruct import cpu_line
from timing import median_seconds

from xfit.prior.checkpoint import load_prior

ROOT = Path(__file__).resolve().parents[1]


def step(synthesis, w_plus: torch.Tensor, noise: list[torch.Tensor], amp: bool) -> None:
    """One forward + backward of ``synthesis`` on ``w_plus`` ``[1, num_ws, w_dim]``."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        img = synthesis(w_plus, noise=noise)
    img.float().square().mean().backward()
    w_plus.grad = None
    for n in noise:
        n.grad = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", default=str(ROOT / "xfit" / "data" / "prior-64.safetensors"))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp", choices=("bf16", "off"), default="bf16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    prior = load_prior(args.prior)
    synthesis = prior.G.requires_grad_(False).synthesis
    w_plus = (0.1 * torch.randn(1, synthesis.num_ws, synthesis.w_dim)).requires_grad_(True)
    noise = [n.requires_grad_(True) for n in synthesis.make_noise(1)]
    amp = args.amp == "bf16"
    print(f"{cpu_line()}; threads {args.threads}; amp {args.amp}")
    eager = median_seconds(lambda: step(synthesis, w_plus, noise, amp), args.reps, warmup=3)
    print(f"eager    {eager:.3f} s per forward + backward")
    t0 = time.perf_counter()
    compiled = torch.compile(synthesis, dynamic=False)
    step(compiled, w_plus, noise, amp)
    print(f"compile  {time.perf_counter() - t0:.1f} s")
    fast = median_seconds(lambda: step(compiled, w_plus, noise, amp), args.reps, warmup=3)
    print(f"compiled {fast:.3f} s per forward + backward; eager / compiled = {eager / fast:.2f}x")


if __name__ == "__main__":
    main()
