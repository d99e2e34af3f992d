"""The fit's levers, one at a time, on held-out phantoms: ``docs/fit_levers.md``.

Each lever is a fit config in ``bench/levers/`` (a full config: the old default plus one change,
or the new default minus one). Every lever is one ``xfit evaluate`` run folder under ``OUT``
(resumable, strict), with the oracle ``ceiling`` and the best shipped baseline evaluated once
beside them. The table gives each lever's mean PSNR, SSIM, Dice, ``volume_view_ncc`` and seconds
per case, and its paired difference from the reference lever.

    python bench/fit_levers.py -o runs/levers --phantoms 8            # screening
    python bench/fit_levers.py -o runs/levers --phantoms 8 --table docs/fit_levers.md
    python bench/fit_levers.py --dir bench/gap_levers --reference 00-default \\
        --refs-run results/heldout20 -o runs/gap --phantoms 10 --table docs/gap_levers.md
    python bench/fit_levers.py --dir bench/speed_levers --reference 00-fp32 --refs "" \
        --reference-run results/heldout20 -o runs/speed --phantoms 10 \
        --table docs/speed_levers.md --title "The fit's speed levers"

Times are wall seconds per case on the machine named in the table, with the threads given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
LEVERS = ROOT / "bench" / "levers"
KEYS = ("psnr_db", "ssim", "dice", "volume_view_ncc", "seconds")


def lever_files(names: list[str] | None, folder: Path = LEVERS) -> list[Path]:
    """The lever configs of ``folder`` in run order (``00-...yaml`` first), or those named."""
    files = sorted(folder.glob("*.yaml"))
    if names:
        by = {f.stem: f for f in files}
        missing = [n for n in names if n not in by]
        if missing:
            raise SystemExit(f"fit_levers: no lever {', '.join(missing)} in {folder}")
        files = [by[n] for n in names]
    return files


def describe(path: Path) -> str:
    """The first comment line of a lever config: what it changes."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return path.stem


def mean_cells(rows: dict[str, dict]) -> list[str]:
    """One markdown cell per column of :data:`KEYS`: the mean over the cases (finite values only)."""
    cells = []
    for k in KEYS:
        v = np.array([r[k] for r in rows.values()], float)
        v = v[np.isfinite(v)]
        cells.append(f"{v.mean():.{3 if k in ('ssim', 'dice', 'volume_view_ncc') else 2}f}" if v.size else "-")
    return cells


def table(
    out: Path,
    files: list[Path],
    reference: str,
    refs: list[str],
    reference_run: Path | None = None,
    refs_run: Path | None = None,
) -> str:
    """Markdown: one row per lever (means over the cases, and paired difference from ``reference``);
    then one row per reference method in ``refs``, from ``OUT/reference`` or, with ``refs_run``,
    from that run folder's rows of the levers' cases."""
    import json

    from xfit.studies.evaluate import machines, read_rows

    def rows_of(run: Path, method: str) -> dict[str, dict]:
        return {r["case"]: r for r in read_rows(run / "cases.csv") if r["method"] == method}

    runs = {
        f.stem: rows_of(reference_run if (f.stem == reference and reference_run) else out / f.stem, "fit")
        for f in files
    }
    if reference_run is not None and reference in runs:  # only the cases the levers ran
        cases = {c for name, got in runs.items() if name != reference for c in got}
        runs[reference] = {c: r for c, r in runs[reference].items() if c in cases}
    base = runs.get(reference, {})
    head = (
        "| lever | what it changes | n | "
        + " | ".join(KEYS)
        + " | Δ PSNR | Δ SSIM | Δ Dice |\n"
        + "|---" * (len(KEYS) + 6)
        + "|\n"
    )
    lines = []
    for f in files:
        got = runs[f.stem]
        if not got:
            continue
        cells = mean_cells(got)
        common = [c for c in got if c in base]
        dp = np.mean([got[c]["psnr_db"] - base[c]["psnr_db"] for c in common]) if common else np.nan
        ds = np.mean([got[c]["ssim"] - base[c]["ssim"] for c in common]) if common else np.nan
        dd = np.mean([got[c]["dice"] - base[c]["dice"] for c in common]) if common else np.nan
        lines.append(
            f"| `{f.stem}` | {describe(f)} | {len(got)} | "
            + " | ".join(cells)
            + f" | {dp:+.2f} | {ds:+.3f} | {dd:+.3f} |"
        )
    refrows = []
    lever_cases = {c for got in runs.values() for c in got}
    for m in refs:
        got = rows_of(refs_run if refs_run is not None else out / "reference", m)
        if refs_run is not None:
            got = {c: r for c, r in got.items() if c in lever_cases}
        if got:
            cells = mean_cells(got)
            refrows.append(f"| `{m}` | reference method | {len(got)} | " + " | ".join(cells) + " | | | |")
    meta_files = [out / f.stem / "settings.json" for f in files if (out / f.stem / "settings.json").is_file()]
    for run in (reference_run, refs_run):
        if run is not None:
            meta_files.append(run / "settings.json")
    where = sorted({m for p in meta_files for m in machines(json.loads(p.read_text()))})
    return (
        head + "\n".join(lines + refrows) + "\n\n"
        f"Δ: paired mean difference from `{reference}` over the same cases. Machines: {'; '.join(where) or '-'}.\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", required=True, type=Path, help="folder of the run folders")
    ap.add_argument("--phantoms", type=int, default=8)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument(
        "--dir",
        type=Path,
        default=LEVERS,
        help="folder of lever configs (bench/levers: quality; bench/speed_levers: speed)",
    )
    ap.add_argument("--title", default="The fit's levers", help="heading of the --table file")
    ap.add_argument("--note", default="", help="a sentence under the heading of the --table file")
    ap.add_argument("--levers", default=None, help="comma separated lever names (default: all)")
    ap.add_argument("--reference", default="00-old-default", help="lever the differences are taken from")
    ap.add_argument("--refs", default="ceiling,xctrsnet", help="methods evaluated once beside the levers")
    ap.add_argument(
        "--reference-run",
        type=Path,
        default=None,
        help="an existing run folder whose fit rows are the reference lever's (its config must be "
        "the reference lever's; the fit is deterministic on one CPU type): it is not rerun",
    )
    ap.add_argument(
        "--refs-run",
        type=Path,
        default=None,
        help="an existing run folder holding the --refs methods' rows (of the same phantoms): they are "
        "taken from it, for the levers' cases, instead of being evaluated",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table", type=Path, default=None, help="also write the table to this markdown file")
    ap.add_argument("--only-table", action="store_true", help="write the table from the folders, run nothing")
    args = ap.parse_args(argv)
    args.dir = args.dir.resolve()

    from xfit.allocator import keep_freed_memory
    from xfit.studies.evaluate import EvalSpec, evaluate

    keep_freed_memory()
    torch.set_num_threads(args.threads)
    prior = str(ROOT / "xfit" / "data" / "prior-64.safetensors")
    files = lever_files(args.levers.split(",") if args.levers else None, args.dir)
    refs = [m for m in args.refs.split(",") if m]
    if not args.only_table:
        if refs and args.refs_run is None:
            evaluate(
                EvalSpec(prior=prior, methods=tuple(refs), phantoms=args.phantoms, first_seed=args.first_seed),
                args.out / "reference",
                progress=True,
            )
        for f in files:
            if f.stem == args.reference and args.reference_run is not None:
                continue
            print(f"lever {f.stem}: {describe(f)}", flush=True)
            evaluate(
                EvalSpec(
                    prior=prior, methods=("fit",), phantoms=args.phantoms, first_seed=args.first_seed, fit_config=str(f)
                ),
                args.out / f.stem,
                progress=True,
            )
    text = table(args.out, lever_files(None, args.dir), args.reference, refs, args.reference_run, args.refs_run)
    print(text)
    if args.table is not None:
        cmd = "python bench/fit_levers.py" + (f" --dir {args.dir.relative_to(ROOT)}" if args.dir != LEVERS else "")
        head = (
            f"# {args.title}\n\nWritten by `{cmd}` (see its docstring for the command). "
            f"Held-out phantoms: seeds {args.first_seed}-{args.first_seed + args.phantoms - 1}, "
            "AP + lateral cone-beam DRRs of the 64³ crop, 128² px." + (f" {args.note}" if args.note else "") + "\n\n"
        )
        args.table.write_text(head + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
