"""The docs' results page, generated from the committed result folders.

``xfit results`` (its one entry point) reads every run folder under ``results/`` (an
``xfit evaluate`` run: ``settings.json`` + ``summary.md``; an ``xfit study`` sweep:
``curve.csv`` + ``summary.md``) and rewrites ``docs/results.md`` (``--readme``) between the markers
``<!-- results:begin -->`` and ``<!-- results:end -->``. Each entry names the command's settings,
the machine and the wall time recorded by the run; no figure is typed by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from ..io import atomic_write
from .evaluate import machines, read_settings

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _evaluate_entry(folder: Path, base: Path) -> str:
    meta = read_settings(folder)
    wall = meta.get("wall_seconds")
    rel = _rel(folder, base)
    text = f"#### `{folder.name}`\n\n"
    text += (
        f"Run folder `{rel}`; prior `{Path(meta.get('prior', '?')).name}` (sha256 "
        f"{meta['key'].get('prior_sha256', '?')[:12]}); methods {', '.join(meta['methods'])}. "
    )
    text += (
        f"Machine: {meta.get('machine', 'not recorded')}; wall time {wall / 60:.0f} min in all.\n\n"
        if wall
        else f"Machine: {meta.get('machine', 'not recorded')}.\n\n"
    )
    text += (folder / "summary.md").read_text().strip() + "\n"
    if (folder / "panel.png").is_file():
        text += f"\n![{folder.name}]({rel}/panel.png)\n"
    return text


def _sweep_entry(folder: Path, base: Path) -> str:
    rel = _rel(folder, base)
    metas = [read_settings(p.parent) for p in sorted(folder.glob("*/settings.json"))]
    machine = "; ".join(dict.fromkeys(m for meta in metas for m in machines(meta))) or "not recorded"
    text = f"#### `{folder.name}` (sweep)\n\nRun folder `{rel}`; machine: {machine}.\n\n"
    text += (folder / "summary.md").read_text().strip() + "\n\n"
    text += "".join(f"![{p.stem}]({rel}/{p.name})\n" for p in sorted(folder.glob("curve_*.png")))
    return text


def _rel(folder: Path, base: Path) -> Path:
    """``folder`` as a relative link from a page in ``base`` (``../results/x`` from ``docs/``)."""
    return Path(os.path.relpath(folder.resolve(), base.resolve()))


def results_section(root: str | Path, base: str | Path = ".") -> str:
    """Markdown of every run folder under ``root`` (sorted by name), paths relative to ``base``
    (the folder of the page that shows them)."""
    root, base = Path(root), Path(base)
    if not root.is_dir():
        raise InputError(f"{root}: no results folder")
    parts = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if (folder / "curve.csv").is_file() and (folder / "summary.md").is_file():
            parts.append(_sweep_entry(folder, base))
        elif (folder / "settings.json").is_file() and (folder / "summary.md").is_file():
            parts.append(_evaluate_entry(folder, base))
    if not parts:
        return "No committed result yet.\n"
    return "\n".join(parts)


def update_readme(readme: str | Path, root: str | Path) -> bool:
    """Replace the text between the markers; returns whether the file changed."""
    readme = Path(readme)
    text = readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise InputError(f"{readme} must hold one {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    new = head + BEGIN + "\n" + results_section(root, readme.parent).rstrip() + "\n" + END + tail
    if new == text:
        return False
    with atomic_write(readme, force=True) as tmp:
        Path(tmp).write_text(new)
    return True


def readme_is_current(readme: str | Path, root: str | Path) -> bool:
    """Whether ``readme``'s results block is what :func:`update_readme` would write."""
    text = Path(readme).read_text()
    want = BEGIN + "\n" + results_section(root, Path(readme).parent).rstrip() + "\n" + END
    return want in text
