"""The YAML configs shipped inside the package (``xfit/configs/*.yaml``), found through
:mod:`importlib.resources` so they work from a plain ``pip install .`` as from a checkout.

* ``prior-<name>.yaml`` (``tiny``, ``64``, ``128``): the prior's architecture and training
  (``xfit train-prior --config 64``, :func:`xfit.prior.config.load_config`);
* ``fit.yaml``: the default test-time fit (:func:`xfit.fitting.config.load_fit_config`);
* ``baseline-<method>.yaml``: each baseline's training (``xfit train-baseline``);
* ``style-clinical.yaml``: the clinical-style radiograph presets, written out
  (:data:`xfit.radiograph.PRESETS`; ``xfit simulate --style-file``).

A config is named by its file name (``"fit.yaml"``); a user's own config is given by its path
and read by the same loaders.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import InputError

#: The folder of the shipped configs (installed as plain files: ``package_data`` in setup.cfg).
CONFIG_DIR: Path = Path(str(resources.files(__name__)))


def config_names() -> list[str]:
    """File names of the shipped configs, sorted (``["baseline-ear.yaml", ..., "style-clinical.yaml"]``)."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def config_path(name: str) -> Path:
    """Path of the shipped config ``name`` (a file name such as ``"prior-64.yaml"``).

    Raises:
        InputError: no shipped config has that name (the message lists those that do).
    """
    resource = resources.files(__name__).joinpath(name)
    if "/" in name or "\\" in name or not name.endswith(".yaml") or not resource.is_file():
        raise InputError(f"no shipped config {name!r} (shipped: {', '.join(config_names())})")
    return Path(str(resource))


def read_config_text(name: str) -> str:
    """The text of the shipped config ``name`` (UTF-8).

    Raises:
        InputError: no shipped config has that name.
    """
    config_path(name)  # the check and its message
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
