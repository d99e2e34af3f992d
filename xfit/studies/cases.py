"""What every case-by-case study shares: resumable runs over cases, checked against the
settings and code they were made with, and the table of modes."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OutputExistsError
from ..io import atomic_write
from .code_sha import changed_parts, parts_text

#: The record of a case-by-case study's settings and code, beside its ``case*.json``.
SETTINGS_NAME = "settings.json"


def open_study(out: Path, settings: dict[str, Any], *, force: bool = False) -> None:
    """Check a study folder against the ``settings`` (JSON values: settings that decide every
    case's numbers, the prior's sha256, the code record of :mod:`.code_sha`) before any case runs,
    and record them in ``out/settings.json``: a resumed study whose settings or code changed
    would mix cases of two studies into one table.

    ``force`` removes the saved cases, summary and settings first (a fresh study).

    Raises:
        OutputExistsError: ``out`` is a file; it holds cases made with other settings or code
            (the message names them), or cases without a settings record (an older xfit wrote
            them).
        InputError: a damaged ``settings.json``.
    """
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is a file, not a folder")
    path = out / SETTINGS_NAME
    if force and out.is_dir():
        for f in [*out.glob("case*.json"), out / "summary.md", path]:
            f.unlink(missing_ok=True)
    saved = sorted(out.glob("case*.json")) if out.is_dir() else []
    if path.exists():
        try:
            old = json.loads(path.read_bytes().decode("utf-8"))
        except ValueError as exc:
            raise InputError(f"{path} is not JSON: {exc}") from None
        except RecursionError:
            raise InputError(f"{path} is not JSON: nested too deeply") from None
        if not isinstance(old, dict):
            raise InputError(f"{path} is damaged: not a JSON object")
        new = json.loads(json.dumps(settings))
        old_code, new_code = old.get("code") if isinstance(old.get("code"), dict) else {}, new.get("code", {})
        diff = sorted(k for k in old.keys() | new.keys() if k != "code" and old.get(k) != new.get(k))
        code = changed_parts(sorted(old_code.keys() | new_code.keys()), old_code, new_code)
        if code:
            diff.append(f"the code of {parts_text(code)}")
        if saved and diff:
            raise OutputExistsError(
                f"{out} holds cases of a study with other settings ({', '.join(diff)}); use another folder or --force"
            )
    elif saved:
        raise OutputExistsError(
            f"{out} holds cases of a study that recorded no settings (an older xfit wrote them); "
            "use another folder or --force"
        )
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, force=True) as tmp:
        Path(tmp).write_text(json.dumps(settings, indent=2) + "\n")


def _save_case(path: Path, res: dict[str, Any]) -> None:
    """One case's results as indented JSON, written atomically."""
    with atomic_write(path, force=True) as tmp:
        Path(tmp).write_text(json.dumps(res, indent=2) + "\n")


def _load_case(path: Path) -> dict[str, Any] | None:
    """A saved case, or ``None`` when there is none or it is damaged (not JSON, no ``modes``
    table): then, with a warning, it is computed again."""
    if not path.exists():
        return None
    try:
        res = json.loads(path.read_bytes().decode("utf-8"))
    except ValueError:  # also UnicodeDecodeError
        res = None
    if (
        isinstance(res, dict)
        and isinstance(res.get("modes"), dict)
        and all(isinstance(d, dict) for d in res["modes"].values())
    ):
        return res
    warnings.warn(f"{path} is damaged; its case is computed again")
    return None


def run_cases(
    out: Path, n: int, run_one: Callable[..., dict[str, Any]], modes: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Results of cases ``0..n-1``: each is saved to ``out/caseNN.json`` (atomically) as it
    finishes and read back on a later run, so an interrupted study resumes where it stopped.

    ``run_one(i)`` returns a JSON-ready dict with a ``modes`` entry ``{mode: {metric: value}}``.
    With ``modes``, ``run_one(i, modes)`` is called with the modes a case still lacks (all of
    them for a new case), and a saved case gains the missing ones: a study can add a mode, or
    re-run one (:func:`drop_modes`), without re-running the others. A damaged case file is
    computed again (with a warning).
    """
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i in range(n):
        path = out / f"case{i:02d}.json"
        saved = _load_case(path)
        missing = [] if modes is None else [m for m in modes if saved is None or m not in saved["modes"]]
        if saved is None or missing:
            res = run_one(i) if modes is None else run_one(i, missing)
            if saved is not None:
                res = {**saved, "modes": {**saved["modes"], **res["modes"]}}
            _save_case(path, res)
            print(
                json.dumps(
                    {
                        m: {k: round(v, 4) for k, v in d.items() if isinstance(v, (int, float))}
                        for m, d in res["modes"].items()
                    }
                ),
                flush=True,
            )
        results.append(_load_case(path))
    return results


def drop_modes(out: Path, modes: Sequence[str]) -> int:
    """Remove ``modes`` from every saved ``out/case*.json`` (atomically), so that the next
    :func:`run_cases` with ``modes`` runs them again; returns the number of files changed."""
    changed = 0
    for path in sorted(Path(out).glob("case*.json")):
        res = _load_case(path)
        if res is not None and any(m in res["modes"] for m in modes):
            res["modes"] = {k: v for k, v in res["modes"].items() if k not in modes}
            _save_case(path, res)
            changed += 1
    return changed


def mode_table(
    results: Sequence[dict[str, Any]], modes: Sequence[str], keys: Sequence[str], label: str = "mode"
) -> str:
    """Markdown table: per mode, mean ± std over the cases of each metric (non-finite values,
    such as HD95 of an empty label, left out)."""
    lines = [f"| {label} | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for mode in modes:
        cells = []
        for k in keys:
            v = np.array([r["modes"][mode][k] for r in results if k in r["modes"].get(mode, {})], dtype=float)
            v = v[np.isfinite(v)]
            cells.append(f"{v.mean():.4g} ± {v.std():.2g}" if v.size else "-")
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, text: str) -> None:
    """``out/summary.md`` (atomically), also printed."""
    with atomic_write(out / "summary.md", force=True) as tmp:
        Path(tmp).write_text(text)
    print(text)
