"""The generator's short bf16 path against its reference arithmetic: ``python bench/synthesis_paths.py``.

Times the forward + backward of the shipped prior's synthesis network at 64³, batch 1, under
bfloat16 autocast, as the fit runs it: W+ alone without noise maps (the start's inversion, four
fifths of a fit) and W+ with the noise maps (the X-ray stage). Each case runs with
``xfit.prior.networks.SHORT_PATH`` on (the style scale before the upsampling, the lrelu gain in
the demodulation, the bias by ``addcmul``, the activation in place) and off (the reference
arithmetic in bf16), alternately in one process; prints the medians, their ratio and how far the
two outputs are apart against the output's spread.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from reconstruct import cpu_line
from timing import median_seconds

from xfit.prior import networks
from xfit.prior.checkpoint import load_prior

ROOT = Path(__file__).resolve().parents[1]


def step(synthesis, w_plus: torch.Tensor, noise: list[torch.Tensor] | None) -> torch.Tensor:
    """One forward + backward under bf16 autocast; the float32 output ``[1, C, R, R, R]``."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = synthesis(w_plus, noise=noise, noise_mode="none")
    out = out.float()
    out.square().mean().backward()
    w_plus.grad = None
    return out.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", default=str(ROOT / "xfit" / "data" / "prior-64.safetensors"))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(cpu_line())
    prior = load_prior(args.prior)
    synthesis = prior.G.synthesis.eval().requires_grad_(False)
    w = prior.w_mean.view(1, 1, -1).expand(1, prior.G.num_ws, -1).clone().requires_grad_(True)
    maps = [torch.zeros(s).requires_grad_(True) for s in synthesis.noise_shapes()]
    for name, noise in (("W+ alone (the inversion)", None), ("W+ and noise maps (the X-ray stage)", maps)):
        seconds, outs = {True: [], False: []}, {}
        for short in (True, False):
            networks.SHORT_PATH = short
            outs[short] = step(synthesis, w, noise)
        for short in (True, False) * args.reps:  # alternately, so that drift hits both alike
            networks.SHORT_PATH = short
            seconds[short].append(median_seconds(lambda: step(synthesis, w, noise), 1, warmup=0))
        networks.SHORT_PATH = True
        t_short, t_ref = statistics.median(seconds[True]), statistics.median(seconds[False])
        diff = (outs[True] - outs[False]).abs().mean() / outs[False].std()
        print(
            f"{name}: short {t_short:.3f} s, reference {t_ref:.3f} s per forward + backward "
            f"({t_ref / t_short:.2f}x); outputs apart by {diff:.4f} of their std"
        )


if __name__ == "__main__":
    main()
