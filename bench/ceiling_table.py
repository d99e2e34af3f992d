"""The ceiling of each prior snapshot, paired on the same cases: ``python bench/ceiling_table.py RUN...``.

Each RUN is an ``xfit evaluate`` run folder with ``ceiling`` rows (the prior's W+ and noise
fitted to the 3D truth by 200 Adam steps: what the prior can hold), or with ``--method
ceiling-lbfgs`` its ``ceiling-lbfgs`` rows (the same loss by 120 L-BFGS iterations, about 1 dB
tighter). The first RUN is the reference, usually the
prior the prior issue measures against (step 5000, ``results/heldout20_step5000``). Only the
cases that every RUN holds are compared, and each snapshot gets its mean and its paired
difference from the reference, with how many cases improved. The prior of a RUN is named by its
``settings.json`` (kimg from the file's metadata when the file there is the run's, else from a
snapshot's name ``prior-stepNNNNNN``, 4 images per step, else the name and the run's sha256).

Prints a markdown table (``-o FILE`` also writes it), the table the prior issue asks for in
``docs/measurements.md``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from xfit.studies.evaluate import read_rows, read_settings

METRICS = (
    ("psnr_db", "PSNR (dB)", 2),
    ("ssim", "SSIM", 3),
    ("dice", "vertebra Dice", 3),
    ("volume_view_ncc", "volume_view_ncc", 3),
)


def prior_name(settings: dict, batch: int) -> str:
    """``step 9000 (36 kimg)``: from the prior file's training metadata when the file here is the
    run's (same sha256), else from a snapshot's name ``prior-stepNNNNNN``, else the file's name
    and the run's sha256 (a shipped prior since replaced)."""
    from xfit.checkpoint import file_sha256

    path = Path(settings["prior"])
    sha = settings["key"]["prior_sha256"]
    here = path.is_file() and file_sha256(path) == sha
    shipped = ", shipped" if here and path.parent.as_posix().endswith("xfit/data") else ""
    if here:
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            training = json.loads(f.metadata()["xfit"]).get("training", {})
        if "steps" in training and "kimg" in training:
            return f"step {training['steps']} ({training['kimg']:g} kimg){shipped}"
    m = re.search(r"step(\d+)", path.name)
    if m:
        step = int(m.group(1))
        return f"step {step} ({step * batch / 1000:g} kimg){shipped}"
    return f"`{path.name}`" + (shipped if here else f" (sha256 {sha[:12]}, not the file there now)")


def ceiling_rows(folder: Path, method: str = "ceiling") -> dict[str, dict]:
    """Case name -> the ``method`` row (``ceiling`` or ``ceiling-lbfgs``) of a run folder
    (SystemExit if it has none)."""
    rows = read_rows(folder / "cases.csv", methods=read_settings(folder)["methods"])
    out = {r["case"]: r for r in rows if r["method"] == method}
    if not out:
        raise SystemExit(f"{folder}: no {method} rows (run xfit evaluate --methods {method})")
    return out


def table(folders: list[Path], batch: int, method: str = "ceiling") -> str:
    """The markdown table: one row per run folder, means and paired differences on the common cases."""
    runs = [(f, read_settings(f), ceiling_rows(f, method)) for f in folders]
    cases = sorted(set.intersection(*(set(rows) for _, _, rows in runs)))
    if not cases:
        raise SystemExit("the run folders share no case")
    ref = runs[0][2]
    head = "| prior | run folder | " + " | ".join(label for _, label, _ in METRICS) + " |"
    lines = [head, "|" + "---|" * (2 + len(METRICS))]
    for folder, settings, rows in runs:
        cells = []
        for key, _, digits in METRICS:
            v = np.array([rows[c][key] for c in cases], float)
            cell = f"{np.nanmean(v):.{digits}f}"
            if rows is not ref:
                d = v - np.array([ref[c][key] for c in cases], float)
                cell += f" ({np.nanmean(d):+.{digits}f}, {int(np.sum(d > 0))}/{len(cases)} up)"
            cells.append(cell)
        lines.append(f"| {prior_name(settings, batch)} | `{folder}` | " + " | ".join(cells) + " |")
    name = "Ceiling" if method == "ceiling" else f"`{method}`"
    return (
        f"{name} on {len(cases)} cases ({cases[0]} to {cases[-1]}); in brackets the paired difference "
        f"from the first row and the cases that improved.\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="run folders with ceiling rows; the first is the reference")
    ap.add_argument("-o", "--out", type=Path, help="also write the table here")
    ap.add_argument("--batch", type=int, default=4, help="images per training step (kimg from step)")
    ap.add_argument("--method", choices=("ceiling", "ceiling-lbfgs"), default="ceiling", help="which ceiling's rows")
    a = ap.parse_args()
    text = table(a.runs, a.batch, a.method)
    print(text)
    if a.out is not None:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
