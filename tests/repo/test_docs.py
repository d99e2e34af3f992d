"""The documentation's promises: the README is a short front door whose links resolve, it shows the
install and test commands ``.ci/run`` runs, the generated results page matches the committed run
folders, and no tracked text file points outside the repository."""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _links(text: str) -> list[str]:
    """Relative targets of markdown links and images (no URLs, no in-page anchors)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_readme_is_a_front_door_with_the_ci_commands():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert len(readme.splitlines()) <= 200
    for command in ('pip install -e ".[test]"', "python -m pytest -q"):
        assert command in readme and command in ci, command
    assert readme.index("## Status") < readme.index("## Set up")
    for method in ("x2ct-cnn", "x2ct-gan", "ear", "transvert", "xctrsnet", "igcn"):
        assert f"`{method}`" in readme, method


PAGES = ["README.md", "CONTRIBUTING.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    path = REPO / page
    missing = [t for t in _links(path.read_text()) if not (path.parent / t).exists()]
    assert not missing, missing


def test_results_page_is_generated_from_the_committed_run_folders():
    from xfit.studies.results import BEGIN, END, results_section

    page = (REPO / "docs" / "results.md").read_text()
    generated = results_section(REPO / "results", REPO / "docs").rstrip()
    assert f"{BEGIN}\n{generated}\n{END}" in page  # else: python -m xfit.studies.results
    assert "](../results/heldout20/panel.png)" in generated  # links from docs/ into results/


def test_no_tracked_text_file_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    # results/ holds recorded run settings (absolute paths of the machine that ran them): left as recorded
    texts = [
        f
        for f in files
        if f.endswith((".py", ".md", ".yaml", ".yml", ".cfg", ".toml"))
        and not f.startswith("results/")
        and f != "tests/repo/test_docs.py"
    ]
    pattern = re.compile(
        "|".join(
            ["shared/" + "seeds", r"\.\./" + "shared", "/" + "work/", r"\.\./NOTES" + r"\.md", "ARCHITECTURE" + r"\.md"]
        )
    )
    bad = [
        f"{f}: {m.group(0)}"
        for f in texts
        if (REPO / f).is_file()
        for m in [pattern.search((REPO / f).read_text(errors="replace"))]
        if m
    ]
    assert not bad, bad
