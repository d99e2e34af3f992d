"""``xfit study angles|geometry|noise``: one :func:`xfit.studies.evaluate.evaluate` run per
condition, then every metric against the condition.

* **angles** (EAR's experiment): the first view at 0 degrees, the second at each of
  ``--second-angle`` (e.g. ``60:140:10``). Methods get the true geometry. Evaluate a baseline
  twice by naming a tagged copy with its own checkpoint, e.g. ``x2ct-cnn`` (trained at 90) and
  ``x2ct-cnn@jitter`` (trained with angle jitter).
* **geometry**: the X-rays are made with the true views, but each method is handed views whose
  angles are off by ``--angle-error`` degrees (random sign per view) with the true isocentre,
  then views whose isocentres are off by ``--shift-error`` mm (random direction) with true angles:
  two one-dimensional sweeps that share the error-free condition. ``fit-pose`` is the fit with
  ``refine_pose``.
* **noise**: Poisson noise at each ``--dose`` (unattenuated photons per pixel, the noise model
  of ``xfit simulate --dose``).

Each condition is a full evaluate run folder ``OUT/<condition>/`` (resumable; finished conditions
are skipped). ``OUT/curve.csv`` holds per condition, method and metric the mean, std and count,
``OUT/curve_<axis>.png`` plots them with error bars (± one std), and ``OUT/summary.md`` has the
table and the wall time of each condition.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..io import atomic_write
from .evaluate import LABELS, METRICS, ORACLE_METHODS, EvalSpec, evaluate, read_rows, rewrite_summary

#: Metrics drawn against the condition.
CURVE_KEYS = ("psnr_db", "ssim", "dice", "third_view_ncc")


@dataclass(frozen=True)
class Condition:
    """One point of a sweep: its folder name, the swept axis and value, the spec changes."""

    name: str
    axis: str
    value: float
    overrides: tuple[tuple[str, Any], ...]


def parse_values(text: str, what: str, lo: float, hi: float) -> list[float]:
    """``"0,1,2,5"`` or ``"START:STOP:STEP"`` (STOP included) -> values in [lo, hi]."""
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3 or not parts[2] > 0 or parts[1] < parts[0]:
                raise ValueError
            n = int(math.floor((parts[1] - parts[0]) / parts[2] + 1e-9)) + 1
            if n > 1000:
                raise InputError(f"{what} {text!r}: more than 1000 values")
            values = [round(parts[0] + i * parts[2], 9) for i in range(n)]
        else:
            values = [float(p) for p in text.split(",")]
    except ValueError:
        raise InputError(f"cannot read {what} {text!r}: expected a list like 0,1,2 or START:STOP:STEP") from None
    bad = [v for v in values if not (math.isfinite(v) and lo <= v <= hi)]
    if bad or not values:
        raise InputError(f"{what} must lie in [{lo:g}, {hi:g}], got {text!r}")
    if len(set(values)) != len(values):
        raise InputError(f"{what} {text!r} repeats a value")
    return values


#: Each sweep axis and the prefix of its condition folders, named ``<prefix><value:g>``.
AXIS_PREFIX = {"second_angle_deg": "angle_", "angle_error_deg": "angle_error_", "shift_error_mm": "shift_error_",
               "photons": "dose_"}


def condition(axis: str, value: float, overrides: tuple = ()) -> Condition:
    """The condition at ``value`` on ``axis``, in its folder ``<prefix><value:g>``."""
    return Condition(f"{AXIS_PREFIX[axis]}{value:g}", axis, value, overrides)


def angle_conditions(second_angles: Sequence[float], first: float = 0.0) -> list[Condition]:
    """The second view at each angle; raises InputError for (almost) parallel pairs."""
    out = []
    for a in second_angles:
        sep = abs((a - first + 180.0) % 360.0 - 180.0)
        if sep < 10.0 or sep > 170.0:
            raise InputError(f"second angle {a:g} deg is within 10 deg of the first view's line ({first:g} deg): "
                             "the pair sees the same projection")
        out.append(condition("second_angle_deg", a, (("angles", (first, float(a))),)))
    return out


def geometry_conditions(angle_errors: Sequence[float], shift_errors: Sequence[float]) -> list[Condition]:
    """Angle errors with the true isocentre, then shift errors with true angles (0 once)."""
    out = [condition("angle_error_deg", e, (("angle_error_deg", float(e)),)) for e in angle_errors]
    out += [condition("shift_error_mm", e, (("shift_error_mm", float(e)),))
            for e in shift_errors if not (e == 0 and 0 in angle_errors)]
    return out


def noise_conditions(doses: Sequence[float]) -> list[Condition]:
    """Poisson noise at each dose (photons per pixel)."""
    return [condition("photons", d, (("photons", float(d)),)) for d in doses]


def _axes(cond: Condition, conds: Sequence[Condition]) -> list[str]:
    """The axes a condition belongs to (the error-free geometry point belongs to both)."""
    if cond.value == 0 and cond.axis in ("angle_error_deg", "shift_error_mm"):
        return sorted({c.axis for c in conds})
    return [cond.axis]


def curve_rows(results: dict[Condition, list[dict[str, Any]]], conds: Sequence[Condition]) -> list[dict[str, Any]]:
    """Per axis, condition value, method and metric: mean, std and n over the cases."""
    out = []
    for c in conds:
        rows = results.get(c, [])
        methods = list(dict.fromkeys(r["method"] for r in rows))
        for axis in _axes(c, conds):
            for m in methods:
                for k in METRICS:
                    v = np.array([r[k] for r in rows if r["method"] == m], dtype=float)
                    v = v[np.isfinite(v)]
                    out.append({"axis": axis, "value": c.value, "method": m, "metric": k, "n": int(v.size),
                                "mean": float(v.mean()) if v.size else math.nan, "std": float(v.std()) if v.size else math.nan})
    return sorted(out, key=lambda r: (r["axis"], r["value"]))


def write_curve_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["axis", "value", "method", "metric", "n", "mean", "std"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in w.fieldnames})
    with atomic_write(path, force=True) as tmp:
        Path(tmp).write_text(buf.getvalue())


AXIS_LABELS = {"second_angle_deg": "angle of the second view (deg; first at 0)", "angle_error_deg": "angle error handed (deg)",
               "shift_error_mm": "isocentre error handed (mm)", "photons": "dose (photons per pixel)"}


def plot_curves(out: Path, rows: Sequence[dict[str, Any]]) -> list[Path]:
    """``curve_<axis>.png``: one panel per :data:`CURVE_KEYS`, mean ± std per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..preview import figure_to_png

    paths = []
    for axis in dict.fromkeys(r["axis"] for r in rows):
        methods = list(dict.fromkeys(r["method"] for r in rows if r["axis"] == axis and r["n"]))
        cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
        colour = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}  # the same in every panel
        fig, axes = plt.subplots(1, len(CURVE_KEYS), figsize=(4 * len(CURVE_KEYS) + 1.6, 3.2), squeeze=False)
        handles = {}
        for ax, k in zip(axes[0], CURVE_KEYS):
            sel = [r for r in rows if r["axis"] == axis and r["metric"] == k and r["n"]]
            for m in dict.fromkeys(r["method"] for r in sel):
                pts = sorted((r["value"], r["mean"], r["std"]) for r in sel if r["method"] == m)
                x, y, e = (np.array(t) for t in zip(*pts))
                handles[m] = ax.errorbar(x, y, yerr=e, marker="o", ms=3, capsize=2, label=m, color=colour[m])
            ax.set_xlabel(AXIS_LABELS.get(axis, axis), fontsize=8)
            ax.set_title(k, fontsize=9)
            if axis == "photons":
                ax.set_xscale("log")
        # one legend for every method, also those (shape only) missing from some panels
        fig.legend([handles[m] for m in methods if m in handles], [m for m in methods if m in handles],
                   loc="center right", fontsize=7)
        fig.subplots_adjust(right=1 - 1.5 / fig.get_figwidth(), wspace=0.3)
        paths.append(figure_to_png(fig, out / f"curve_{axis}.png"))
    return paths


def _best(sel: Sequence[dict[str, Any]], value: float, key: str, digits: int) -> str:
    """``method (mean)`` of the best mean at one condition (oracles left out), or ``-``."""
    cands = [r for r in sel if r["value"] == value and r["n"] and math.isfinite(r["mean"])
             and r["method"].split("@", 1)[0] not in ORACLE_METHODS]
    if not cands:
        return "-"
    pick = (min if METRICS.get(key, False) else max)(cands, key=lambda r: r["mean"])
    return f"`{pick['method']}` {pick['mean']:.{digits}f}"


def summary_markdown(rows: Sequence[dict[str, Any]], walls: dict[str, float], conds: Sequence[Condition],
                     reused: dict[str, int] | None = None) -> str:
    """One table per axis (rows: method, columns: conditions; last row the best method) for each
    curve metric, and wall times (and how many rows of a condition were copied from another run,
    not timed here). A cell averaged over fewer cases than the condition has says so (n=K of N)."""
    text = ""
    for axis in dict.fromkeys(r["axis"] for r in rows):
        values = sorted({r["value"] for r in rows if r["axis"] == axis})
        text += f"### {AXIS_LABELS.get(axis, axis)}\n\n"
        for k in CURVE_KEYS:
            text += f"**{k}** (mean ± std)\n\n| method | " + " | ".join(f"{v:g}" for v in values) + " |\n"
            text += "|---" * (len(values) + 1) + "|\n"
            sel = [r for r in rows if r["axis"] == axis and r["metric"] == k]
            full = {v: max(r["n"] for r in sel if r["value"] == v) for v in values}  # cases of the condition
            digits = 1 if k == "psnr_db" else 3
            for m in dict.fromkeys(r["method"] for r in sel):
                cell = {r["value"]: r for r in sel if r["method"] == m}
                text += f"| {LABELS.get(m.split('@')[0], m)} (`{m}`) | " + " | ".join(
                    f"{cell[v]['mean']:.{digits}f} ± {cell[v]['std']:.{digits}f}"
                    + (f" (n={cell[v]['n']} of {full[v]})" if cell[v]["n"] < full[v] else "")
                    if v in cell and cell[v]["n"] else "-" for v in values) + " |\n"
            text += "| **best** | " + " | ".join(_best(sel, v, k, digits) for v in values) + " |\n\n"
    text += "Wall time per condition (summed over its runs, on the machines its settings.json names): " + ", ".join(
        f"{c.name} {walls.get(c.name, math.nan) / 60:.1f} min"
        + (f" (+{reused[c.name]} rows reused from another run)" if reused and reused.get(c.name) else "")
        for c in conds) + "\n"
    return text


def run_sweep(base: EvalSpec, conds: Sequence[Condition], out: str | Path, *, workers: int = 1,
              force: bool = False, progress: bool = True, reuse: Sequence[str | Path] = ()) -> list[dict[str, Any]]:
    """Evaluate every condition into ``out/<condition>/`` (taking the rows of ``reuse`` folders
    with the same settings, see :func:`xfit.studies.evaluate.reuse_rows`); write the curves;
    return their rows."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for c in conds:
        spec = dataclasses.replace(base, **dict(c.overrides))
        evaluate(spec, out / c.name, workers=workers, force=force, progress=progress, reuse=reuse)
    return write_sweep(out, conds)


def folder_conditions(out: str | Path) -> list[Condition]:
    """The conditions of a sweep folder, read from its condition folder names (for rewriting
    the curves of a sweep that has not finished; ``overrides`` are left empty)."""
    prefixes = sorted(AXIS_PREFIX.items(), key=lambda kv: -len(kv[1]))  # angle_error_ before angle_
    conds = []
    for p in sorted(Path(out).iterdir()):
        if not (p / "settings.json").is_file():
            continue
        for axis, prefix in prefixes:
            if p.name.startswith(prefix):
                try:
                    c = condition(axis, float(p.name[len(prefix):]))
                except ValueError:
                    break
                if c.name == p.name and math.isfinite(c.value):  # a folder this module named (not angle_060, angle_nan)
                    conds.append(c)
                break
    axes = list(AXIS_PREFIX)
    return sorted(conds, key=lambda c: (axes.index(c.axis), c.value))


def write_sweep(out: str | Path, conds: Sequence[Condition] | None = None) -> list[dict[str, Any]]:
    """``curve.csv``, ``curve_<axis>.png`` and ``summary.md`` from the condition folders' rows as
    they are now (``conds``: default :func:`folder_conditions`); returns the curve rows."""
    out = Path(out)
    conds = folder_conditions(out) if conds is None else list(conds)
    if not conds:
        raise InputError(f"{out}: no condition folder of a sweep")
    results, walls, reused = {}, {}, {}
    for c in conds:
        meta = json.loads((out / c.name / "settings.json").read_text())
        results[c] = read_rows(out / c.name / "cases.csv") if (out / c.name / "cases.csv").is_file() else []
        walls[c.name] = float(meta.get("wall_seconds", math.nan))
        reused[c.name] = sum(meta.get("reused_rows", {}).values())
    rows = curve_rows(results, conds)
    write_curve_csv(out / "curve.csv", rows)
    plot_curves(out, rows)
    with atomic_write(out / "summary.md", force=True) as tmp:
        Path(tmp).write_text(summary_markdown(rows, walls, conds, reused))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xfit.studies.sweeps OUT [OUT ...]``: rewrite each sweep folder's curves and
    summaries from the rows it holds now (a sweep stopped part way shows what it has, with n); an
    evaluate run folder (with its own settings.json) gets its summary rewritten."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m xfit.studies.sweeps", description=main.__doc__)
    ap.add_argument("folders", nargs="+")
    args = ap.parse_args(argv)
    try:
        for f in args.folders:
            if (Path(f) / "settings.json").is_file():
                rewrite_summary(f)
                continue
            for c in folder_conditions(f):  # each condition's own summary, then the sweep's
                rewrite_summary(Path(f) / c.name)
            write_sweep(f)
    except (InputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
