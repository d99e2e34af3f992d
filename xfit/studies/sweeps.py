"""``xfit study angles|geometry|noise|style``: one :func:`xfit.studies.evaluate.evaluate` run per
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
* **style**: processed radiographs, the clinical presets of ``xfit simulate --style clinical``
  at each ``--strengths`` (0: ideal 16-bit images, an affine map of the line integrals; 1: the
  presets; :func:`xfit.radiograph.scaled`), the line integrals taken as water.

Each condition is a full evaluate run folder ``OUT/<condition>/`` (resumable; finished conditions
are skipped), named by its exact value (:func:`value_text`: ``dose_1e+06``, ``dose_1000001``,
``angle_90.0000001``), so two values never share a folder. ``OUT/curve.csv`` holds per condition,
method and metric the mean, std and count, ``OUT/curve_<axis>.png`` plots them with error bars
(± one std), and ``OUT/summary.md`` has the table and the wall time of each condition. Every check
runs before any work; a study refuses an existing folder that is not a sweep of its axes unless
``force``, which replaces the folder only once the new sweep is complete. The curves are drawn
only from condition folders that make one sweep (:func:`check_sweep_runs`): a run renamed or
copied into the folder is refused, not drawn at a value it was not run at.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OutputExistsError, XfitError
from ..io import atomic_folder, atomic_write, check_output_folder
from .evaluate import (
    LABELS,
    METRICS,
    ORACLE_METHODS,
    EvalSpec,
    check_folder,
    check_spec,
    code_changes,
    code_text,
    evaluate,
    folder_entries,
    parse_shard,
    read_run,
    rewrite_summary,
    run_lock,
    shard_cases,
    spec_inputs,
)

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
            values = [round(parts[0] + i * parts[2], 9) for i in range(n)] if n <= 1000 else []
        else:
            values = [float(p) for p in text.split(",")]
    except (ValueError, OverflowError):
        raise InputError(f"cannot read {what} {text!r}: expected a list like 0,1,2 or START:STOP:STEP") from None
    if ":" in text and not values:
        raise InputError(f"{what} {text!r}: more than 1000 values")
    bad = [v for v in values if not (math.isfinite(v) and lo <= v <= hi)]
    if bad or not values:
        raise InputError(f"{what} must lie in [{lo:g}, {hi:g}], got {text!r}")
    if len(set(values)) != len(values):
        raise InputError(f"{what} {text!r} repeats a value")
    return values


#: Each sweep axis and the prefix of its condition folders, named ``<prefix><value>`` (:func:`value_text`).
AXIS_PREFIX = {
    "second_angle_deg": "angle_",
    "angle_error_deg": "angle_error_",
    "shift_error_mm": "shift_error_",
    "photons": "dose_",
    "style_strength": "style_",
}


def value_text(value: float) -> str:
    """The shortest text that reads back as exactly ``value``: ``f"{value:g}"`` where that is exact
    (``60``, ``0.5``, ``1e+06``: every name a sweep has written), else the integer (``1000001``)
    or ``repr`` (``90.0000001``)."""
    value = float(value) + 0.0  # -0.0 -> 0.0
    short = f"{value:g}"
    if float(short) == value:
        return short
    return str(int(value)) if value.is_integer() else repr(value)


def condition(axis: str, value: float, overrides: tuple = ()) -> Condition:
    """The condition at ``value`` on ``axis``, in its folder ``<prefix><value>`` (:func:`value_text`)."""
    return Condition(f"{AXIS_PREFIX[axis]}{value_text(value)}", axis, value, overrides)


def parse_condition(name: str) -> Condition | None:
    """The condition a folder name stands for, or ``None`` for a name no sweep writes
    (``angle_060``, ``angle_nan``, ``notes``); ``overrides`` are left empty."""
    for axis, prefix in sorted(AXIS_PREFIX.items(), key=lambda kv: -len(kv[1])):  # angle_error_ before angle_
        if name.startswith(prefix):
            try:
                value = float(name[len(prefix) :])
            except ValueError:
                return None
            c = condition(axis, value) if math.isfinite(value) else None
            return c if c is not None and c.name == name else None  # not angle_060, angle_1e2
    return None


def check_conditions(conds: Sequence[Condition]) -> None:
    """Refuse (InputError) two conditions that would share a folder, before any work."""
    seen: dict[str, Condition] = {}
    for c in conds:
        if c.name in seen:
            raise InputError(
                f"the conditions {value_text(seen[c.name].value)} and {value_text(c.value)} would share "
                f"the folder {c.name}"
            )
        seen[c.name] = c


def angle_conditions(second_angles: Sequence[float], first: float = 0.0) -> list[Condition]:
    """The second view at each angle; raises InputError for (almost) parallel pairs."""
    out = []
    for a in second_angles:
        sep = abs((a - first + 180.0) % 360.0 - 180.0)
        if sep < 10.0 or sep > 170.0:
            raise InputError(
                f"second angle {a:g} deg is within 10 deg of the first view's line ({first:g} deg): "
                "the pair sees the same projection"
            )
        out.append(condition("second_angle_deg", a, (("angles", (first, float(a))),)))
    return out


def geometry_conditions(angle_errors: Sequence[float], shift_errors: Sequence[float]) -> list[Condition]:
    """Angle errors with the true isocentre, then shift errors with true angles (0 once)."""
    out = [condition("angle_error_deg", e, (("angle_error_deg", float(e)),)) for e in angle_errors]
    out += [
        condition("shift_error_mm", e, (("shift_error_mm", float(e)),))
        for e in shift_errors
        if not (e == 0 and 0 in angle_errors)
    ]
    return out


def noise_conditions(doses: Sequence[float]) -> list[Condition]:
    """Poisson noise at each dose (photons per pixel)."""
    return [condition("photons", d, (("photons", float(d)),)) for d in doses]


def style_conditions(strengths: Sequence[float]) -> list[Condition]:
    """Clinical-style radiographs at each strength in [0, 1]."""
    return [condition("style_strength", s, (("style_strength", float(s)),)) for s in strengths]


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
                    v = np.array([r.get(k, math.nan) for r in rows if r["method"] == m], dtype=float)
                    v = v[np.isfinite(v)]
                    out.append(
                        {
                            "axis": axis,
                            "value": c.value,
                            "method": m,
                            "metric": k,
                            "n": int(v.size),
                            "mean": float(v.mean()) if v.size else math.nan,
                            "std": float(v.std()) if v.size else math.nan,
                        }
                    )
    return sorted(out, key=lambda r: (r["axis"], r["value"]))


def write_curve_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``curve.csv``, atomically: the condition value exact (:func:`value_text`), statistics to 6 digits."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["axis", "value", "method", "metric", "n", "mean", "std"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(
            {
                k: (value_text(r[k]) if k == "value" else f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                for k in w.fieldnames
            }
        )
    with atomic_write(path, force=True) as tmp:
        Path(tmp).write_text(buf.getvalue())


AXIS_LABELS = {
    "second_angle_deg": "angle of the second view (deg; first at 0)",
    "angle_error_deg": "angle error handed (deg)",
    "shift_error_mm": "isocentre error handed (mm)",
    "photons": "dose (photons per pixel)",
    "style_strength": "clinical style strength (0: ideal, 1: the presets)",
}


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
        fig.legend(
            [handles[m] for m in methods if m in handles],
            [m for m in methods if m in handles],
            loc="center right",
            fontsize=7,
        )
        fig.subplots_adjust(right=1 - 1.5 / fig.get_figwidth(), wspace=0.3)
        paths.append(figure_to_png(fig, out / f"curve_{axis}.png"))
    return paths


def _best(sel: Sequence[dict[str, Any]], value: float, key: str, digits: int) -> str:
    """``method (mean)`` of the best mean at one condition (oracles left out), or ``-``."""
    cands = [
        r
        for r in sel
        if r["value"] == value
        and r["n"]
        and math.isfinite(r["mean"])
        and r["method"].split("@", 1)[0] not in ORACLE_METHODS
    ]
    if not cands:
        return "-"
    pick = (min if METRICS.get(key, False) else max)(cands, key=lambda r: r["mean"])
    return f"`{pick['method']}` {pick['mean']:.{digits}f}"


def summary_markdown(
    rows: Sequence[dict[str, Any]],
    walls: dict[str, float],
    conds: Sequence[Condition],
    reused: dict[str, int] | None = None,
) -> str:
    """One table per axis (rows: method, columns: conditions; last row the best method) for each
    curve metric, and wall times (and how many rows of a condition were copied from another run,
    not timed here). A cell averaged over fewer cases than the condition has says so (n=K of N)."""
    text = ""
    for axis in dict.fromkeys(r["axis"] for r in rows):
        values = sorted({r["value"] for r in rows if r["axis"] == axis})
        text += f"### {AXIS_LABELS.get(axis, axis)}\n\n"
        for k in CURVE_KEYS:
            text += f"**{k}** (mean ± std)\n\n| method | " + " | ".join(value_text(v) for v in values) + " |\n"
            text += "|---" * (len(values) + 1) + "|\n"
            sel = [r for r in rows if r["axis"] == axis and r["metric"] == k]
            full = {v: max(r["n"] for r in sel if r["value"] == v) for v in values}  # cases of the condition
            digits = 1 if k == "psnr_db" else 3
            for m in dict.fromkeys(r["method"] for r in sel):
                cell = {r["value"]: r for r in sel if r["method"] == m}
                text += (
                    f"| {LABELS.get(m.split('@')[0], m)} (`{m}`) | "
                    + " | ".join(
                        f"{cell[v]['mean']:.{digits}f} ± {cell[v]['std']:.{digits}f}"
                        + (f" (n={cell[v]['n']} of {full[v]})" if cell[v]["n"] < full[v] else "")
                        if v in cell and cell[v]["n"]
                        else "-"
                        for v in values
                    )
                    + " |\n"
                )
            text += "| **best** | " + " | ".join(_best(sel, v, k, digits) for v in values) + " |\n\n"
    text += (
        "Wall time per condition (summed over its runs, on the machines its settings.json names): "
        + ", ".join(
            f"{c.name} {walls.get(c.name, math.nan) / 60:.1f} min"
            + (f" (+{reused[c.name]} rows reused from another run)" if reused and reused.get(c.name) else "")
            for c in conds
        )
        + "\n"
    )
    return text


def check_sweep_folder(out: Path, conds: Sequence[Condition]) -> None:
    """Refuse (OutputExistsError) an ``out`` that is a file or holds anything but a sweep of the
    axes of ``conds``: condition folders, ``curve.csv``, ``curve_<axis>.png``, ``summary.md``."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is a file, not a folder")
    axes = {c.axis for c in conds}
    files = {"curve.csv", "summary.md", *(f"curve_{a}.png" for a in AXIS_PREFIX)}

    def ours(p: Path) -> bool:
        return getattr(parse_condition(p.name), "axis", None) in axes if p.is_dir() else p.name in files

    foreign = sorted(p.name for p in folder_entries(out) if not ours(p))
    if foreign:
        raise OutputExistsError(
            f"{out} exists and is not a sweep of {', '.join(sorted(axes))} (it holds "
            f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); use another folder or --force"
        )


def run_sweep(
    base: EvalSpec,
    conds: Sequence[Condition],
    out: str | Path,
    *,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
    reuse: Sequence[str | Path] = (),
    shard: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every condition into ``out/<condition>/`` (taking the rows of ``reuse`` folders
    with the same settings, see :func:`xfit.studies.evaluate.find_reusable`); write the curves;
    return their rows. With ``shard=(K, N)`` each condition folder holds shard K of N of its
    cases (:func:`xfit.studies.evaluate.shard_cases`) and no curve is written (an empty list is
    returned): :func:`xfit.studies.shards.merge` joins the N shard folders into the whole sweep.

    Every check runs before any work: the condition folders are distinct, each condition's
    settings pass :func:`xfit.studies.evaluate.check_spec`, and ``out`` is free or a sweep of
    these axes (:func:`check_sweep_folder`) whose condition folders hold runs of the same
    settings. ``out`` is locked while the sweep runs. With ``force`` a folder that is not empty
    is replaced only once the whole sweep is complete (no old condition is left in it)."""
    out = Path(out)
    if shard is not None:
        parse_shard(f"{shard[0]}/{shard[1]}")
    check_conditions(conds)
    specs = [(c, dataclasses.replace(base, **dict(c.overrides))) for c in conds]
    replace = force and bool(folder_entries(out))
    if replace:  # the old sweep goes once the new one is complete: it must not hold an input
        check_output_folder(out, force=True, inputs=[p for _, spec in specs for p in spec_inputs(spec)])
    else:
        check_sweep_folder(out, conds)
        for c, spec in specs:
            check_folder(spec, out / c.name, shard=shard)
    for _, spec in specs:
        shard_cases(check_spec(spec), shard)
    with run_lock(out):
        if not replace:
            return _sweep(specs, out, workers=workers, progress=progress, reuse=reuse, shard=shard)
        with atomic_folder(out, force=True) as tmp:
            return _sweep(specs, tmp, workers=workers, progress=progress, reuse=reuse, shard=shard)


def _sweep(
    specs: Sequence[tuple[Condition, EvalSpec]],
    out: Path,
    *,
    workers: int,
    progress: bool,
    reuse: Sequence[str | Path],
    shard: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_sweep` once its checks passed, in the locked folder ``out``."""
    for c, spec in specs:
        evaluate(spec, out / c.name, workers=workers, progress=progress, reuse=reuse, shard=shard)
    return [] if shard is not None else write_sweep(out, [c for c, _ in specs])


def folder_conditions(out: str | Path) -> list[Condition]:
    """The conditions of a sweep folder, read from its condition folder names (those holding a
    ``settings.json``; for rewriting the curves of a sweep that has not finished; ``overrides``
    are left empty)."""
    conds = [
        c
        for p in sorted(Path(out).iterdir())
        if (p / "settings.json").is_file() and (c := parse_condition(p.name)) is not None
    ]
    return sorted(conds, key=condition_order)


def condition_order(c: Condition) -> tuple[int, float]:
    """The order of conditions in a sweep's files: by axis (:data:`AXIS_PREFIX`), then value."""
    return list(AXIS_PREFIX).index(c.axis), c.value


#: The sweeps a study writes: their axes, and the settings (``key`` fields) those axes set.
SWEEP_KINDS = (
    ({"second_angle_deg"}, ("angles",)),
    ({"angle_error_deg", "shift_error_mm"}, ("angle_error_deg", "shift_error_mm")),
    ({"photons"}, ("photons",)),
    ({"style_strength"}, ("style_strength",)),
)


def _run_value(axis: str, key: dict[str, Any]) -> float | None:
    """The value on ``axis`` of a run made with settings ``key`` (None: no point of that axis)."""
    if axis == "second_angle_deg":
        return float(key["angles"][1]) if len(key["angles"]) == 2 else None
    if axis == "angle_error_deg":
        return float(key["angle_error_deg"]) if key["shift_error_mm"] == 0 else None
    if axis == "shift_error_mm":
        return float(key["shift_error_mm"]) if key["angle_error_deg"] == 0 else None
    if axis == "style_strength":
        return None if key.get("style_strength") is None else float(key["style_strength"])
    return None if key["photons"] is None else float(key["photons"])


def check_sweep_runs(
    out: Path,
    conds: Sequence[Condition],
    keys: Sequence[dict[str, Any]],
    metas: Sequence[dict[str, Any]] | None = None,
) -> None:
    """Refuse (InputError) a sweep folder whose condition folders do not make one sweep: the
    conditions are of one study, each run was made at the value its folder names, and the runs
    share every other setting (a folder renamed or copied in would otherwise be drawn at a value
    it was not run at, or mix cases, prior or views into the curve) and, given their checked
    settings ``metas``, the code of the methods they share (when any of them records code)."""
    axes = {c.axis for c in conds}
    kind = next(((a, fields) for a, fields in SWEEP_KINDS if axes <= a), None)
    if kind is None:
        raise InputError(f"{out}: its condition folders are of several sweeps ({', '.join(sorted(axes))})")
    first = None
    for c, key in zip(conds, keys):
        got = _run_value(c.axis, key)
        if got != c.value:
            raise InputError(
                f"{out / c.name}: a run made at {c.axis} {'none' if got is None else value_text(got)}, "
                f"not at the {value_text(c.value)} its folder name says"
            )
        rest = {k: v for k, v in key.items() if k not in kind[1]}
        if first is None:
            first = (c, rest)
        elif rest != first[1]:
            diff = sorted(k for k in rest.keys() | first[1].keys() if rest.get(k) != first[1].get(k))
            raise InputError(
                f"{out}: the runs {first[0].name} and {c.name} differ in {', '.join(diff)}: "
                "the conditions of a sweep share every other setting"
            )
    if metas and any(m.get("code") for m in metas):
        for c, meta in zip(conds[1:], metas[1:]):
            shared = [m for m in metas[0]["methods"] if m in meta["methods"]]
            stale = code_changes(shared, meta, metas[0].get("code", {}))
            if stale:
                raise InputError(
                    f"{out}: the runs {conds[0].name} and {c.name} were computed by other code "
                    f"({code_text(stale, meta)}): one curve needs one xfit"
                )


def write_sweep(out: str | Path, conds: Sequence[Condition] | None = None) -> list[dict[str, Any]]:
    """``curve.csv``, ``curve_<axis>.png`` and ``summary.md`` from the condition folders' rows as
    they are now (``conds``: default :func:`folder_conditions`); returns the curve rows.

    Raises:
        InputError: no condition folder, a damaged ``settings.json`` or ``cases.csv`` in one, or
            condition folders that do not make one sweep (:func:`check_sweep_runs`).
    """
    out = Path(out)
    conds = folder_conditions(out) if conds is None else sorted(conds, key=condition_order)  # as the folders list them
    if not conds:
        raise InputError(f"{out}: no condition folder of a sweep")
    results, walls, reused, keys, metas = {}, {}, {}, [], []
    for c in conds:
        meta, _, results[c] = read_run(out / c.name)
        walls[c.name] = float(meta.get("wall_seconds", math.nan))
        reused[c.name] = sum(meta.get("reused_rows", {}).values())
        keys.append(meta["key"])
        metas.append(meta)
    check_sweep_runs(out, conds, keys, metas)
    rows = curve_rows(results, conds)
    write_curve_csv(out / "curve.csv", rows)
    plot_curves(out, rows)
    with atomic_write(out / "summary.md", force=True) as tmp:
        Path(tmp).write_text(summary_markdown(rows, walls, conds, reused))
    return rows


def summarize_folders(folders: Sequence[str | Path]) -> None:
    """Rewrite each sweep folder's curves and summaries from the rows it holds now (a sweep
    stopped part way shows what it has, with n); an evaluate run folder (with its own
    settings.json) gets its summary rewritten (``xfit summarize OUT [OUT ...]``).

    Raises:
        InputError: a folder that is missing, or neither a run nor a sweep, or damaged.
    """
    for f in folders:
        if (Path(f) / "settings.json").exists():
            rewrite_summary(f)
            continue
        if not Path(f).is_dir():
            raise InputError(f"{f}: folder not found")
        for c in folder_conditions(f):  # each condition's own summary, then the sweep's
            rewrite_summary(Path(f) / c.name)
        write_sweep(f)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xfit.studies.sweeps OUT [OUT ...]`` (as ``xfit summarize``):
    :func:`summarize_folders`; returns the exit code (2 after one line ``xfit: error: ...``)."""
    import argparse
    import sys
    import typing
    import warnings

    from ..console import os_error_line, show_warning

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> typing.NoReturn:  # a usage error: one line, exit 2
            print(f"xfit: error: {message} (usage: {self.prog} OUT [OUT ...])", file=sys.stderr)
            raise SystemExit(2)

    ap = Parser(prog="python -m xfit.studies.sweeps", description=main.__doc__)
    ap.add_argument("folders", nargs="+")
    args = ap.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = show_warning  # xfit: warning: ..., one line
        try:
            summarize_folders(args.folders)
        except (XfitError, OSError) as exc:  # the error contract of the xfit command line
            print(f"xfit: error: {os_error_line(exc)}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
