#!/usr/bin/env bash
# A plain (non-editable) `pip install .` works from another folder: the configs and the shipped
# checkpoints travel inside the package (xfit/configs/, xfit/data/). Offline and fast: the venv
# sees the already installed dependencies (--system-site-packages, so torch is not reinstalled),
# pip installs only xfit (--no-deps --no-index --no-build-isolation), from a copy of the sources
# (so no build/ or *.egg-info is left in the checkout).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m venv --system-site-packages --without-pip "$work/venv"  # pip and setuptools: the system's
mkdir "$work/src" "$work/elsewhere"
cp -r "$repo/setup.cfg" "$repo/pyproject.toml" "$repo/README.md" "$repo/xfit" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
"$work/venv/bin/python" -m pip install -q --no-deps --no-index --no-build-isolation --disable-pip-version-check "$work/src"
rm -rf "$work/src"  # nothing may be read from the sources any more
cd "$work/elsewhere"
unset PYTHONPATH
"$work/venv/bin/xfit" train-prior --help > /dev/null
"$work/venv/bin/python" - <<'EOF'
import sys
from pathlib import Path

import xfit

venv = Path(sys.prefix).resolve()
here = Path(xfit.__file__).resolve().parent
assert here.is_relative_to(venv), f"xfit imported from {here}, not from the plain install in {venv}"

from xfit.baselines.common import load_config as load_baseline_config
from xfit.configs import config_names, config_path
from xfit.fitting.config import DEFAULT_FIT_CONFIG, load_fit_config
from xfit.prior.config import load_config
from xfit.radiograph import PRESETS, load_styles
from xfit.reconstruct import DEFAULT_PRIOR

assert load_config("64").resolution == 64  # what `xfit train-prior --config 64` resolves
assert DEFAULT_FIT_CONFIG.resolve().is_relative_to(here) and DEFAULT_FIT_CONFIG.is_file()
load_fit_config()
for method in ("x2ct-cnn", "x2ct-gan", "ear", "transvert", "xctrsnet", "igcn"):
    assert load_baseline_config(method).method == method
assert load_styles(str(config_path("style-clinical.yaml"))) == PRESETS
assert {"fit.yaml", "prior-tiny.yaml", "prior-64.yaml", "prior-128.yaml"} <= set(config_names()), config_names()
assert DEFAULT_PRIOR.is_file() and DEFAULT_PRIOR.resolve().is_relative_to(here)
assert (here / "data" / "baseline-x2ct-cnn.safetensors").is_file()  # the shipped baselines
print(f"plain install: xfit {xfit.__version__} from {here}, {len(config_names())} configs, prior shipped")
EOF
