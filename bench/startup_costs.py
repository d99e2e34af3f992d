"""What a reconstruction pays before and around its arithmetic: module imports, in fresh processes.

Each row is the median over ``--reps`` fresh interpreters of the wall seconds of one import (or
call) after the row's own setup. ``torch.optim`` is its own row: in a fresh process the
first optimiser built (and every Adam step) imports ``torch._dynamo`` through
``torch._disable_dynamo``; a whole ``xfit reconstruct`` measured no faster without that
(docs/speed.md, "The optimisers without torch._dynamo").
With ``--example`` it also times the README example end to end (``xfit reconstruct
examples/ap.png examples/lat.png --gt examples/ct.nii.gz``, 2 threads) and prints each row as a
share of that wall time. Run it alone on the machine; say which CPU when quoting it::

    python bench/startup_costs.py [--reps 5] [--example]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: (label, statements run first untimed, statement timed), in the order a reconstruction meets them.
ROWS = [
    ("numpy", "", "import numpy"),
    ("torch", "import numpy", "import torch"),
    (
        "torch._dynamo via the first torch.optim optimiser",
        "import torch; p = torch.zeros(3, requires_grad=True); p.grad = torch.ones(3)",
        "o = torch.optim.Adam([p]); o.step()",
    ),
    ("scipy.ndimage", "import torch", "import scipy.ndimage"),
    ("nibabel", "import torch", "import nibabel"),
    ("matplotlib (Agg, pyplot)", "import torch", "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot"),
]

TIMED = """
import time
{setup}
t0 = time.perf_counter()
{stmt}
print(time.perf_counter() - t0)
"""


def fresh_seconds(setup: str, stmt: str, reps: int) -> float:
    """Median wall seconds of ``stmt`` after ``setup``, each in a fresh interpreter."""
    out = []
    for _ in range(reps):
        code = TIMED.format(setup=setup, stmt=stmt)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out.append(float(res.stdout.strip().splitlines()[-1]))
    return statistics.median(out)


def example_seconds() -> float:
    """Wall seconds of the README example's default reconstruction (2 threads)."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "xfit.cli",
            "reconstruct",
            str(root / "examples/ap.png"),
            str(root / "examples/lat.png"),
            "--gt",
            str(root / "examples/ct.nii.gz"),
            "-o",
            str(Path(tmp) / "out"),
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--example", action="store_true", help="also time the README example end to end")
    a = p.parse_args(argv)
    from reconstruct import cpu_line  # bench/reconstruct.py, beside this script

    print(cpu_line())
    wall = example_seconds() if a.example else None
    if wall is not None:
        print(f"README example, default reconstruct: {wall:.1f} s wall")
    print(f"{'what':52s} {'s':>6s}" + (f" {'of the example':>15s}" if wall else ""))
    for label, setup, stmt in ROWS:
        s = fresh_seconds(setup, stmt, a.reps)
        share = f" {100 * s / wall:14.1f}%" if wall else ""
        print(f"{label:52s} {s:6.2f}{share}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
