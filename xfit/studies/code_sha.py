"""The code a run's rows were computed with, so that ``--resume``, ``--reuse`` and ``xfit merge``
do not mix rows of other code into one table.

A run folder's ``settings.json`` records ``code``: for each part of the package that decides
some method's numbers (a module or a folder), the sha256 of its Python sources, and of the
versions of the numerical libraries. Every method depends on the common parts: the cases and
their X-rays, the projector, the metrics, the study code, and ``prior/`` and ``fitting/`` too,
since every row is scored on the prior's grid and its ``volume_view_ncc`` through the fit's
footprint masks. The baselines and the fits (which a network starts) also depend on
``baselines/``. A part hashes every ``*.py`` file under it, so a comment edit counts as a change
too: the check errs on the side of recomputing. What it cannot see: compiled code (oneDNN's
kernels beyond the library versions) and the CPU, which the run records as its machine.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

#: The package folder the parts are named relative to.
PACKAGE = Path(__file__).resolve().parents[1]
#: Libraries whose version is a part (their compiled code decides numbers too).
LIBRARIES = ("torch", "numpy", "scipy")
#: Parts every method's numbers depend on: the cases, their X-rays, the prior's grid, the scoring
#: (metrics, the fit's footprint masks of ``volume_view_ncc``) and the run itself.
COMMON_PARTS = (
    "geometry.py",
    "units.py",
    "levels.py",
    "metrics.py",
    "radiograph.py",
    "simulate.py",
    "devices.py",
    "checkpoint.py",
    "io",
    "phantoms",
    "projector",
    "prior",
    "fitting",
    "studies/evaluate.py",
    *LIBRARIES,
)
#: Parts of the feed-forward baselines, and of the network that starts a fit.
BASELINE_PARTS = ("baselines",)


def part_sha256(part: str) -> str:
    """sha256 of one part: a library of :data:`LIBRARIES` -> of its installed version string; a
    module or folder of the package -> of its ``*.py`` files (relative path and bytes, in path
    order). Hex, 64 digits.

    Raises:
        ValueError: the part is not in the package.
    """
    if part in LIBRARIES:
        return hashlib.sha256(f"{part} {importlib.metadata.version(part)}".encode()).hexdigest()
    return _sources_sha256(PACKAGE, part)


@functools.cache
def _sources_sha256(package: Path, part: str) -> str:
    """sha256 of a part's sources, read once per process (the code does not change under it)."""
    path = package / part
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise ValueError(f"{part}: no such module or folder in {package}")
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def code_record(parts: Iterable[str]) -> dict[str, str]:
    """``{part: sha256}`` for the given parts: ``settings.json``'s ``code``."""
    return {p: part_sha256(p) for p in dict.fromkeys(parts)}


def parts_text(parts: Sequence[str], most: int = 4) -> str:
    """``prior, fitting`` (at most ``most`` names, then `` ...``): the parts a message names."""
    return ", ".join(parts[:most]) + (" ..." if len(parts) > most else "")


def changed_parts(parts: Iterable[str], old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """The ``parts`` whose sha256 differs between two ``code`` records (a part missing from
    ``old``, as in a folder written before xfit recorded code, counts as changed)."""
    return [p for p in parts if old.get(p) is None or old.get(p) != new.get(p)]
