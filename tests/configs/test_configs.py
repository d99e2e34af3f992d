"""Tests of xfit.configs: the YAML configs shipped inside the package and the loaders that find
them by name (prior, fit, baselines, clinical style). The plain-install check is .ci/plain_install.sh."""

import configparser
import fnmatch
import re
from pathlib import Path

import pytest

import xfit
from xfit.configs import CONFIG_DIR, config_names, config_path, read_config_text
from xfit.errors import InputError

PACKAGE = Path(xfit.__file__).resolve().parent
ROOT = PACKAGE.parent


def test_the_configs_live_in_the_package():
    assert CONFIG_DIR.resolve() == PACKAGE / "configs"
    on_disk = sorted(p.name for p in (PACKAGE / "configs").glob("*.yaml"))
    assert config_names() == on_disk
    assert {"fit.yaml", "prior-tiny.yaml", "prior-64.yaml", "prior-128.yaml", "style-clinical.yaml"} <= set(on_disk)
    assert not (ROOT / "configs").exists()  # one copy only


def test_config_path_and_text():
    path = config_path("prior-64.yaml")
    assert path == PACKAGE / "configs" / "prior-64.yaml" and path.is_file()
    assert read_config_text("prior-64.yaml") == path.read_text(encoding="utf-8")
    assert "resolution: 64" in read_config_text("prior-64.yaml")


@pytest.mark.parametrize("name", ["prior-65.yaml", "../../setup.cfg", "../configs/fit.yaml", "__init__.py", "fit", ""])
def test_unknown_names_are_refused_with_the_list(name):
    with pytest.raises(InputError, match=r"no shipped config .*shipped: .*fit\.yaml"):
        config_path(name)
    with pytest.raises(InputError, match="no shipped config"):
        read_config_text(name)


def test_prior_names_resolve_to_the_shipped_files(tmp_path):
    from xfit.prior.config import CONFIG_NAMES, load_config
    from xfit.prior.config import config_path as prior_config_path

    for name in CONFIG_NAMES:
        assert prior_config_path(name) == config_path(f"prior-{name}.yaml")
    assert load_config("64").resolution == 64
    own = tmp_path / "prior-mine.yaml"  # a path is still read as a path
    own.write_text(read_config_text("prior-tiny.yaml"))
    assert load_config(own) == load_config("tiny")
    with pytest.raises(InputError, match="not found"):
        load_config("65")


def test_fit_default_is_the_shipped_file():
    from xfit.fitting.config import DEFAULT_FIT_CONFIG, load_fit_config

    assert DEFAULT_FIT_CONFIG == config_path("fit.yaml")
    assert load_fit_config() == load_fit_config(DEFAULT_FIT_CONFIG)


def test_every_baseline_has_its_shipped_config():
    from xfit.baselines.common import METHODS, load_config
    from xfit.baselines.common import config_path as baseline_config_path

    for method in METHODS:
        assert baseline_config_path(method) == config_path(f"baseline-{method}.yaml")
        assert load_config(method).method == method
    with pytest.raises(InputError, match="baseline config not found"):
        load_config("no-such-method")


def test_no_code_looks_for_a_configs_folder_of_the_repository():
    """Configs are found through xfit.configs only (a repository-root path breaks a plain install)."""
    pattern = re.compile(r"""parents\[\d\]\s*/\s*["']configs["']|["']\.\./configs""")
    hits = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert hits == []


def test_setup_cfg_ships_the_configs_and_checkpoints():
    """package_data names every shipped config and checkpoint (the plain install needs them)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    data = {k: [p.strip() for p in re.split(r"[,\n]", v) if p.strip()] for k, v in cfg["options.package_data"].items()}
    shipped = {f"configs/{n}" for n in config_names()} | {f"data/{p.name}" for p in (PACKAGE / "data").glob("*")}
    assert any(n.startswith("data/") for n in shipped)
    for rel in sorted(shipped):
        package, _, name = rel.partition("/")
        ok = any(fnmatch.fnmatch(rel, pat) for pat in data.get("xfit", [])) or any(
            fnmatch.fnmatch(name, pat) for pat in data.get(f"xfit.{package}", [])
        )
        assert ok, f"{rel} is not in setup.cfg [options.package_data]"
