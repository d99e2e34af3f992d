"""mkdocs hook: the run folders under ``results/`` (beside ``docs/``) become part of the site.

Pages link run artefacts by their real relative path (``../results/heldout20/panel.png`` from a
page in ``docs/``), so the same link works on GitHub and in the built site. mkdocs only knows the
files under ``docs/``; this hook adds every file of ``results/`` (but its ``.md`` reports, which
would become pages) under the source path ``../results/...``, served at ``results/...``. Nothing
is copied into ``docs/``. Runs with ``mkdocs build`` (``hooks:`` in ``mkdocs.yml``).
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel


def on_files(files: Files, config) -> Files:
    docs = Path(config["docs_dir"])
    root = docs.parent / "results"
    if not root.is_dir():
        return files
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".md"):
        rel = path.relative_to(docs.parent).as_posix()  # results/<run>/<file>
        files.append(
            File(
                "../" + rel,
                src_dir=str(docs),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
                dest_uri=rel,
                inclusion=InclusionLevel.INCLUDED,
            )
        )
    return files
