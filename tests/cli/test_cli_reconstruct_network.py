"""The command line of the fit's newer options: ``--method ceiling`` and ``--checkpoint`` of the
network that starts the fit. Bad input: one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import assert_user_error, run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
XRAYS = (EXAMPLES / "ap.png", EXAMPLES / "lat.png")
SHIPPED_NET = Path(__file__).resolve().parents[2] / "xfit" / "data" / "baseline-xctrsnet.safetensors"


@pytest.fixture(scope="module")
def tiny(tiny_prior_file) -> Path:
    return tiny_prior_file()


def test_ceiling_without_a_truth_is_refused(tmp_path):
    out = tmp_path / "out"
    assert_user_error(run("reconstruct", *XRAYS, "--method", "ceiling", "-o", out), "--gt")
    assert not out.exists()


def test_ceiling_with_fit_options_is_refused(tmp_path):
    out = tmp_path / "out"
    res = run("reconstruct", *XRAYS, "--method", "ceiling", "--gt", EXAMPLES / "ct.nii.gz", "--steps", "3", "-o", out)
    assert_user_error(res, "--steps", "ceiling")
    assert not out.exists()


def test_init_network_off_the_prior_grid_is_refused(tmp_path, tiny):
    """The shipped X-CTRSNet reconstructs 64^3 at 1.25 mm; the tiny prior is 32^3 at 2.5 mm."""
    out = tmp_path / "out"
    res = run("reconstruct", *XRAYS, "--prior", tiny, "--checkpoint", SHIPPED_NET, "--steps", "2", "-o", out)
    assert_user_error(res, "cannot start this fit")
    assert not out.exists()


def test_init_checkpoint_without_init_network_is_refused(tmp_path):
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("init_network: null\n")
    out = tmp_path / "out"
    res = run("reconstruct", *XRAYS, "--config", cfg, "--checkpoint", SHIPPED_NET, "-o", out)
    assert_user_error(res, "init_network")
    assert not out.exists()


@pytest.mark.parametrize(
    "text,word",
    [("anchor: 1\n", "anchor"), ("init_network: igcn\n", "init_network"), ("background: maybe\n", "background")],
)
def test_bad_fit_config_keys_are_refused(tmp_path, text, word):
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    assert_user_error(run("reconstruct", *XRAYS, "--config", cfg, "-o", out), word)
    assert not out.exists()


def test_ceiling_reconstruction_with_a_truth(tmp_path, tiny):
    """``--method ceiling --gt`` writes the usual folder; its report says it is the oracle."""
    out = tmp_path / "out"
    res = run(
        "reconstruct",
        *XRAYS,
        "--prior",
        tiny,
        "--method",
        "ceiling",
        "--gt",
        EXAMPLES / "ct.nii.gz",
        "-o",
        out,
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert "ceiling" in json.dumps(report)
    assert (out / "recon.nii.gz").is_file() and (out / "labels.nii.gz").is_file()


def test_constant_images_are_refused_by_a_baseline_too(tmp_path):
    """The fit refused constant X-rays; a baseline wrote a reconstruction of them (exit 0)."""
    import shutil

    import numpy as np
    from PIL import Image

    for name in ("ap", "lat"):
        Image.fromarray(np.full((128, 128), 1000, np.uint16)).save(tmp_path / f"{name}.png")
        shutil.copyfile(EXAMPLES / f"{name}.json", tmp_path / f"{name}.json")
    out = tmp_path / "out"
    res = run("reconstruct", tmp_path / "ap.png", tmp_path / "lat.png", "--method", "x2ct-cnn", "-o", out)
    assert_user_error(res, "constant")
    assert not out.exists()


def test_results_command_speaks_one_line(tmp_path):
    assert_user_error(run("results", "--readme", tmp_path / "missing.md", "--results", tmp_path), "missing.md")


def test_a_given_checkpoint_stands_for_the_first_network_of_an_ensemble_start(tmp_path):
    """The default starts from the mean of two networks; ``--checkpoint`` names one file, which
    takes the first one's place and starts the fit alone."""
    from xfit.fitting import load_fit_config
    from xfit.fitting.config import network_parts
    from xfit.reconstruct import ReconstructSettings, fit_setup

    default = load_fit_config(None).init_network
    assert len(network_parts(default)) == 2
    _, cfg = fit_setup(ReconstructSettings(checkpoint=SHIPPED_NET))
    assert cfg.init_network == network_parts(default)[0]
    _, cfg = fit_setup(ReconstructSettings())
    assert cfg.init_network == default
