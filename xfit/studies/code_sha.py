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

One exception: the fit's defaults (the field defaults of ``FitConfig`` in
``fitting/config.py``, :data:`DEFAULTS_ONLY`) are left out of their part's hash. Every fit row
records the values it ran with (``settings.json``'s ``fit_settings``, compared on resume, reuse and
merge), and no other method reads them, so a new default reruns the fit rows alone instead of
every oracle and network row too. Records written before that rule hold the part's plain hash;
the record keeps it beside, under ``PART:plain`` (:data:`PLAIN`), so that they still match
while the sources are byte for byte the same.
"""

from __future__ import annotations

import ast
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
#: Source files (relative to the package) whose named dataclass's field defaults and docstrings
#: do not count in their part's hash: the fit's defaults, which the fit rows record as values.
DEFAULTS_ONLY = {"fitting/config.py": "FitConfig"}
#: Suffix of a record's second entry for a part holding a :data:`DEFAULTS_ONLY` file: the sha256
#: of its plain sources, as records written before this rule (2026-12-07) hold under the part's own name.
PLAIN = ":plain"
#: Changes of a part's sources verified to change no number: ``{part: {sha256 after: sha256
#: before}}``, each the part's record as :func:`code_record` writes it (defaults left out). A record
#: of the sources before then matches the sources after (:func:`changed_parts`; entries chain), and
#: :func:`upgrade_record` rewrites it. Only for a change that leaves every computation as it was (a
#: refactor, the same arithmetic by a shorter path), shown twice: by a test that holds the new code
#: to the old one's results bit for bit, and by rows of a committed folder recomputed with the new
#: code to the last digit on the CPU type that made them. Each entry's evidence is in
#: docs/evaluation.md, "Changes that move no number".
NEUTRAL: dict[str, dict[str, str]] = {}


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


def _part_files(package: Path, part: str) -> list[Path]:
    """The ``*.py`` files of a part, in path order.

    Raises:
        ValueError: the part is not in the package.
    """
    path = package / part
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise ValueError(f"{part}: no such module or folder in {package}")
    return files


@functools.cache
def _sources_sha256(package: Path, part: str, plain: bool = False) -> str:
    """sha256 of a part's sources, read once per process (the code does not change under it);
    a :data:`DEFAULTS_ONLY` file without its dataclass's defaults unless ``plain``."""
    h = hashlib.sha256()
    for f in _part_files(package, part):
        rel = f.relative_to(package).as_posix()
        data = f.read_bytes()
        if not plain and rel in DEFAULTS_ONLY:
            data = without_defaults(data, DEFAULTS_ONLY[rel])
        h.update(rel.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


def without_defaults(source: bytes, cls: str) -> bytes:
    """The module ``source`` (Python) with the field defaults and docstrings of its class ``cls``
    removed, unparsed (comments and layout do not survive either).

    Raises:
        ValueError: no class ``cls`` at the module's top level.
    """
    tree = ast.parse(source)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)
    if node is None:
        raise ValueError(f"no class {cls} in the module")
    body = []
    for stmt in node.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue  # the class's and its fields' docstrings
        if isinstance(stmt, ast.AnnAssign) and stmt.simple:
            stmt.value = None
        body.append(stmt)
    node.body = body or [ast.Pass()]
    return ast.unparse(tree).encode()


def code_record(parts: Iterable[str]) -> dict[str, str]:
    """``{part: sha256}`` for the given parts: ``settings.json``'s ``code``; a part holding a
    :data:`DEFAULTS_ONLY` file also ``{part + PLAIN: sha256 of its plain sources}``."""
    out = {}
    for p in dict.fromkeys(parts):
        out[p] = part_sha256(p)
        if p not in LIBRARIES and _holds_defaults_only(p):
            out[p + PLAIN] = _sources_sha256(PACKAGE, p, plain=True)
    return out


def _holds_defaults_only(part: str) -> bool:
    """Whether the part is, or is a folder above, a :data:`DEFAULTS_ONLY` file of the package."""
    return any((f == part or f.startswith(part.rstrip("/") + "/")) and (PACKAGE / f).is_file() for f in DEFAULTS_ONLY)


def parts_text(parts: Sequence[str], most: int = 4) -> str:
    """``prior, fitting`` (at most ``most`` names, then `` ...``): the parts a message names."""
    return ", ".join(parts[:most]) + (" ..." if len(parts) > most else "")


def equivalent_shas(part: str, sha: str | None) -> list[str]:
    """``sha`` (a record of ``part``) and every earlier record that :data:`NEUTRAL` declares
    equivalent to it, newest first (``[]`` for ``None``)."""
    out: list[str] = []
    while sha is not None and sha not in out:
        out.append(sha)
        sha = NEUTRAL.get(part, {}).get(sha)
    return out


def changed_parts(parts: Iterable[str], old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """The ``parts`` whose sha256 differs between an ``old`` ``code`` record and the ``new`` one
    (a part missing from ``old``, as in a folder written before xfit recorded code, counts as
    changed). An old hash equal to the new record's plain one (:data:`PLAIN`: a record written
    before the defaults were left out, of the same sources), or to one that :data:`NEUTRAL`
    declares equivalent to the new one, counts as the same; the ``PLAIN`` entries themselves are
    no parts."""
    return [
        p
        for p in parts
        if not p.endswith(PLAIN)
        and (old.get(p) is None or old.get(p) not in [*equivalent_shas(p, new.get(p)), new.get(p + PLAIN)])
    ]


def upgrade_record(old: Mapping[str, str]) -> dict[str, str]:
    """``old`` with each part recorded by its plain hash (before :data:`DEFAULTS_ONLY`) that
    still matches today's sources, or by a hash that :data:`NEUTRAL` declares equivalent to
    today's, rewritten as today's record of that part, so that it keeps matching after the next
    change; every other entry as it is."""
    out = dict(old)
    for p, sha in old.items():
        if p.endswith(PLAIN) or p in LIBRARIES:
            continue
        now = code_record([p])
        plain_match = p + PLAIN not in old and _holds_defaults_only(p) and sha == now.get(p + PLAIN)
        if plain_match or (sha != now[p] and sha in equivalent_shas(p, now[p])):
            out.update(now)
    return out
