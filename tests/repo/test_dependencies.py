"""setup.cfg declares exactly the third-party packages xfit imports (docs/architecture.md,
"Dependencies"): nothing imported is undeclared, nothing declared is unused."""

import ast
import configparser
import re
import sys
from pathlib import Path

import xfit

PACKAGE = Path(xfit.__file__).resolve().parent
ROOT = PACKAGE.parent

#: Distribution of each top-level module xfit imports (the import name differs for some).
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "skimage": "scikit-image"}
#: Imported but deliberately not declared, with the reason.
OPTIONAL = {"triton": "the GPU projector's kernels; import guarded, installed with torch's CUDA wheels"}


def _imported_modules() -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere in xfit (lazy imports included) -> files."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("xfit", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(PACKAGE)))
    return found


def _declared() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in cfg["options"]["install_requires"].splitlines()]
    return {re.split(r"[<>=!~;\[ ]", line)[0].lower() for line in lines if line and not line.startswith("#")}


def test_install_requires_is_what_xfit_imports():
    used = {DISTRIBUTION.get(m, m).lower() for m in _imported_modules() if m not in OPTIONAL}
    declared = _declared()
    assert sorted(used - declared) == [], "imported but not declared in setup.cfg install_requires"
    assert sorted(declared - used) == [], "declared in setup.cfg install_requires but never imported"


def test_the_scan_sees_lazy_imports():
    """tifffile and PIL are imported inside functions only: the scan must find them."""
    found = _imported_modules()
    assert "io/images.py" in found["tifffile"] and "io/images.py" in found["PIL"]
    assert "kornia" not in found and "lpips" not in found and "torchvision" not in found
