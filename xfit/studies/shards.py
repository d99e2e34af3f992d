"""``xfit merge``: join the shard folders of ``xfit evaluate --shard K/N`` (or of ``xfit study ...
--shard K/N``) into the folder one process would have written.

**Shards.** ``--shard K/N`` (K counted from 1; a 0-based array index I is ``$((I + 1))/N``) runs
the K-th of N contiguous blocks of the run's cases (:func:`xfit.studies.evaluate.shard_cases`)
into its own folder, a run folder like any other (resumable, locked, ``--force`` replaces it once
complete) whose ``settings.json`` records ``shard: {index, count, cases}``. A study's shard is a
sweep folder whose condition folders each hold shard K/N of that condition (no curves yet). The
shards may run on different machines; their folders are copied back and merged.

**Merge** (:func:`merge`) refuses, with one line and before it writes anything: a folder that is
not a finished shard (a whole run, a run still being written (its lock is held), a missing row, a
damaged ``settings.json``, ``cases.csv`` or row), shards of different settings (the ``key`` of
``settings.json``, the methods and their order, the sha256 of each method's prior or checkpoint,
the fit config when a fit method runs), of different N, a shard given twice or missing, cases in
two shards, sweeps of different conditions. It writes one folder, as a whole (temporary sibling,
renamed into place; ``force`` replaces an old one only once the new one is complete), whose
``cases.csv``, ``summary.md``, ``settings.json``, ``panel.png`` and ``slices/`` (and for a study
the condition folders, ``curve.csv``, ``curve_<axis>.png`` and ``summary.md``) are byte for byte
those of one process running the whole command on the same machine, except what is measured:
the ``seconds`` column, and ``wall_seconds``, which is the sum over the shards. ``machine`` lists
each machine the shards ran on. The prior and checkpoint paths recorded are those of shard 1 (the
files are checked by their sha256, so the shards may have read them from other paths).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, OutputExistsError
from ..io import LOCK_NAME, atomic_folder, atomic_write, check_output_folder, held_lock, holder_text
from .evaluate import (
    FIT_METHODS,
    case_names,
    code_changes,
    code_text,
    finish_run,
    folder_entries,
    load_slices,
    machines,
    read_run,
    read_settings,
    run_lock,
    shard_cases,
    shard_of,
    shard_text,
    slice_path,
    spec_from_settings,
    unfilled,
)


@dataclass
class Shard:
    """One finished shard folder: its checked settings, rows and ``(K, N)``."""

    folder: Path
    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    shard: tuple[int, int]

    @property
    def cases(self) -> list[str]:
        return list(self.meta["shard"]["cases"])


def _not_being_written(folder: Path) -> None:
    """Refuse (InputError) a folder whose lock is held by a running xfit process (or one that
    cannot be told dead: another host's)."""
    holder = held_lock(folder)
    if holder is not None:
        who = holder_text(holder) or "a lock file no xfit run wrote"
        raise InputError(
            f"{folder} is being written by an xfit run ({who}); merge it once that run has finished "
            f"(or delete {folder / LOCK_NAME} if no run is going on)"
        )


def read_shard(folder: str | Path) -> Shard:
    """A finished shard folder of ``xfit evaluate --shard K/N``, checked.

    Raises:
        InputError: not a folder, not an evaluate run, a whole run (no shard), still being
            written, a damaged ``settings.json`` or ``cases.csv`` (any damaged row), or a row of
            its cases and methods missing or NaN where the method fills the column.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found")
    if not (folder / "settings.json").is_file():
        raise InputError(f"{folder} is not an evaluate run folder (no settings.json)")
    _not_being_written(folder)
    meta = read_settings(folder)
    if "shard" not in meta:
        raise InputError(f"{folder} is a whole run, not a shard (made without --shard); nothing to merge")
    meta, _, rows = read_run(folder)
    have = {(r["case"], r["method"]) for r in rows}
    missing = [f"{c} {m}" for c in meta["shard"]["cases"] for m in meta["methods"] if (c, m) not in have]
    nan = [f"{r['case']} {r['method']}" for r in rows if unfilled(r)]
    if missing or nan:
        what = missing or nan
        raise InputError(
            f"{folder}: {shard_text(shard_of(meta))} is not finished ({len(what)} row(s) "
            f"{'missing' if missing else 'NaN'}: {', '.join(what[:3])}{' ...' if len(what) > 3 else ''}); "
            "run its command again to finish it"
        )
    return Shard(folder, meta, rows, shard_of(meta))


def check_shards(shards: Sequence[Shard]) -> list[Shard]:
    """The shards of one run in the order of K, checked against each other.

    Raises:
        InputError: different N, a K given twice or missing, different settings (``key``),
            methods, prior or checkpoint (sha256), code (:mod:`.code_sha`; a shard that records
            none), fit config (when a fit method runs), a case in two shards, or (phantoms)
            cases that are not the run's.
    """
    counts = sorted({s.shard[1] for s in shards})
    if len(counts) > 1:
        by = {n: next(s for s in shards if s.shard[1] == n) for n in counts}
        raise InputError(
            f"shards of different splits: {by[counts[0]].folder} is {shard_text(by[counts[0]].shard)}, "
            f"{by[counts[1]].folder} is {shard_text(by[counts[1]].shard)}"
        )
    n = counts[0]
    seen: dict[int, Shard] = {}
    for s in shards:
        if s.shard[0] in seen:
            raise InputError(f"{seen[s.shard[0]].folder} and {s.folder} are both {shard_text(s.shard)}")
        seen[s.shard[0]] = s
    absent = [f"{k}/{n}" for k in range(1, n + 1) if k not in seen]
    if absent:
        raise InputError(
            f"shard(s) {', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''} missing: merge all {n} "
            f"shards (given: {', '.join(shard_text(s.shard) for s in sorted(shards, key=lambda s: s.shard))})"
        )
    ordered = [seen[k] for k in range(1, n + 1)]
    first = ordered[0]
    bare = [str(s.folder) for s in ordered if not s.meta.get("code")]
    if bare:
        raise InputError(
            f"{', '.join(bare[:3])}{' ...' if len(bare) > 3 else ''}: no code recorded (an older xfit wrote "
            f"{'it' if len(bare) == 1 else 'them'}); run the shards again with this xfit"
        )
    for s in ordered[1:]:
        a, b = first.meta, s.meta
        if a["key"] != b["key"]:
            diff = sorted(k for k in a["key"].keys() | b["key"].keys() if a["key"].get(k) != b["key"].get(k))
            raise InputError(
                f"{first.folder} and {s.folder} were made with other settings ({', '.join(diff)}); "
                "shards of one run share every setting"
            )
        if a["methods"] != b["methods"]:
            raise InputError(
                f"{first.folder} and {s.folder} ran other methods ({','.join(a['methods'])} against "
                f"{','.join(b['methods'])}); run the same --methods on every shard"
            )
        changed = [m for m in a["methods"] if a.get("sources", {}).get(m) != b.get("sources", {}).get(m)]
        if changed:
            raise InputError(
                f"{first.folder} and {s.folder}: the prior or checkpoint of {', '.join(changed)} differs "
                "(sha256); shards of one run use the same files"
            )
        stale = code_changes(a["methods"], b, a["code"])
        if stale:
            raise InputError(
                f"{first.folder} and {s.folder}: the code of {code_text(stale, b)} differs; "
                "shards of one run are computed by the same xfit"
            )
        if any(m in FIT_METHODS for m in a["methods"]) and a.get("fit_settings") != b.get("fit_settings"):
            diff = sorted(
                k for k in (a.get("fit_settings") or {}) if (b.get("fit_settings") or {}).get(k) != a["fit_settings"][k]
            )
            raise InputError(
                f"{first.folder} and {s.folder} fitted with other fit configs ({', '.join(diff) or 'keys'})"
            )
    owner: dict[str, Shard] = {}
    for s in ordered:
        for c in s.cases:
            if c in owner:
                raise InputError(f"the case {c} is in both {owner[c].folder} and {s.folder}")
            owner[c] = s
    spec = spec_from_settings(first.meta)
    if spec.data is None:
        names = case_names(spec)
        for k, s in enumerate(ordered, 1):
            if s.cases != [c for _, c in shard_cases(names, (k, n))]:
                raise InputError(f"{s.folder}: its cases are not those of {shard_text(s.shard)} of its settings")
    return ordered


def _merged_meta(shards: Sequence[Shard]) -> dict[str, Any]:
    """``settings.json`` of the whole run before its panel: the entries of shard 1, in the order a
    run writes them, ``wall_seconds`` summed, reused rows summed, every machine once."""
    first = shards[0].meta
    meta = {
        k: first[k] for k in ("key", "prior", "methods", "checkpoints", "sources", "code", "fit_settings") if k in first
    }
    meta["wall_seconds"] = float(math.fsum(float(s.meta.get("wall_seconds", 0.0)) for s in shards))
    reused: dict[str, int] = {}
    for s in shards:
        for k, v in s.meta.get("reused_rows", {}).items():
            reused[k] = reused.get(k, 0) + v
    if reused:
        meta["reused_rows"] = reused
    found = [m for s in shards for m in machines(s.meta)]
    if found:
        meta["machine"] = "; ".join(dict.fromkeys(found))
    return meta


def _write_run(shards: Sequence[Shard], out: Path) -> list[dict[str, Any]]:
    """Write the whole run of checked ``shards`` (:func:`check_shards`) into the new folder ``out``."""
    meta = _merged_meta(shards)
    names = [c for s in shards for c in s.cases]
    for s in shards:  # the slices (a cache: a damaged or missing one is left out, as a run would)
        for c in s.cases:
            for m in ("truth", *meta["methods"]):
                src = slice_path(s.folder, c, m)
                if load_slices(src) is not None:
                    (out / "slices").mkdir(parents=True, exist_ok=True)
                    with atomic_write(slice_path(out, c, m), force=True) as tmp:
                        shutil.copyfile(src, tmp)
    out.mkdir(parents=True, exist_ok=True)
    rows = [dict(r) for s in shards for r in s.rows]
    return finish_run(out, spec_from_settings(meta), meta, rows, names)


def _sweep_parts(folder: Path) -> dict[str, Path]:
    """The condition folders of a study shard folder, by name."""
    from .sweeps import parse_condition

    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found")
    _not_being_written(folder)
    parts = {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and parse_condition(p.name) is not None}
    if not parts:
        raise InputError(
            f"{folder} is neither an evaluate run folder (no settings.json) nor a study folder (no condition folder)"
        )
    return parts


def merge(folders: Sequence[str | Path], out: str | Path, *, force: bool = False) -> Path:
    """Merge the shard folders ``folders`` (of one evaluate run, or of one study) into ``out``
    (see the module docstring). Every check runs before anything is written.

    Raises:
        InputError: see :func:`read_shard` and :func:`check_shards`; a mix of run and study
            folders; studies of different conditions.
        OutputExistsError: ``out`` exists and is not empty, without ``force``.
        OutputError: ``out`` is, or lies in, one of the shard folders, or cannot be written.
    """
    from ..errors import OutputError
    from .sweeps import folder_conditions, write_sweep

    folders = [Path(f) for f in folders]
    if not folders:
        raise InputError("no shard folder to merge")
    out = Path(out)
    for f in folders:
        if not f.is_dir():
            raise InputError(f"{f}: folder not found")
        if f.resolve() == out.resolve() or out.resolve().is_relative_to(f.resolve()):
            raise OutputError(f"the merged folder {out} would lie in the shard folder {f}; choose another -o")
    is_run = [(f / "settings.json").is_file() for f in folders]
    if any(is_run) and not all(is_run):
        odd = folders[is_run.index(False)] if any(is_run) else folders[0]
        raise InputError(
            f"{odd} is not an evaluate run folder (no settings.json), unlike {folders[is_run.index(True)]}"
        )
    if all(is_run):
        plan = {None: check_shards([read_shard(f) for f in folders])}
    else:
        parts = [_sweep_parts(f) for f in folders]
        for f, p in zip(folders[1:], parts[1:]):
            if set(p) != set(parts[0]):
                odd = sorted(set(p) ^ set(parts[0]))
                raise InputError(
                    f"{folders[0]} and {f} hold other conditions ({', '.join(odd[:3])}); "
                    "shards of one study share every condition"
                )
        plan = {name: check_shards([read_shard(p[name]) for p in parts]) for name in parts[0]}
    check_output_folder(out, force=force or not folder_entries(out), inputs=folders)  # a lone lock: run_lock says whose
    with run_lock(out):
        if folder_entries(out) and not force:  # something appeared since the check
            raise OutputExistsError(f"output {out} exists; use --force to replace it")
        with atomic_folder(out, force=True) as tmp:
            if None in plan:
                _write_run(plan[None], tmp)
            else:
                for name, shards in plan.items():
                    _write_run(shards, tmp / name)
                write_sweep(tmp, folder_conditions(tmp))
    return out
