"""No import circles between the modules of ``xfit`` (issue 30): every import, at module level or
inside a function, is an arrow from the importing file to the imported one, and no file may reach
itself along the arrows. The one arrow left out is a module reading ``__version__`` from the
package's facade ``xfit/__init__.py`` (which re-exports the public API from below)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "xfit"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: modules it imports}`` over the ``.py`` files under ``root`` (names of
    ``from package import submodule`` point at the submodule, other names at the package)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    if target == "xfit" and alias.name == "__version__":
                        continue  # the version string of the facade
                    sub = f"{target}.{alias.name}"
                    if sub in files:
                        edges[mod].add(sub)
                    elif target in files:
                        edges[mod].add(target)
            elif isinstance(node, ast.Import):
                edges[mod].update(a.name for a in node.names if a.name in files)
        edges[mod].discard(mod)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_xfit_has_no_import_circles():
    assert circles(import_graph()) == []


def test_the_check_finds_a_circle(tmp_path):
    pkg = tmp_path / "xfit"
    (pkg / "baselines").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "baselines" / "__init__.py").write_text("")
    (pkg / "baselines" / "common.py").write_text("def build():\n    from .ear import EAR\n")
    (pkg / "baselines" / "ear.py").write_text("from .common import build\n")
    assert circles(import_graph(pkg)) == [["xfit.baselines.common", "xfit.baselines.ear"]]
