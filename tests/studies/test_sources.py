"""The run folder's record of what each method's numbers come from (``settings.json`` sources)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xfit.baselines import infer
from xfit.studies.evaluate import EvalSpec, method_sources


def _spec(tmp_path: Path, init_network: str | None) -> EvalSpec:
    prior = tmp_path / "prior.safetensors"
    prior.write_bytes(b"prior bytes")
    cfg = tmp_path / f"fit-{init_network}.yaml"
    cfg.write_text(f"init_network: {init_network or 'null'}\n")
    return EvalSpec(prior=str(prior), methods=("fit", "mean"), fit_config=str(cfg))


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A stand-in shipped data folder holding a style X-CTRSNet file."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setattr(infer, "DATA_DIR", data)
    net = data / "baseline-xctrsnet-style.safetensors"
    net.write_bytes(b"network v1")
    (data / "baseline-xctrsnet-wholebody.safetensors").write_bytes(b"whole-body network v1")
    return net


def test_fit_source_covers_its_start_network(tmp_path, shipped):
    plain = method_sources(_spec(tmp_path, None))
    started = method_sources(_spec(tmp_path, "xctrsnet@style"))
    assert plain["mean"] == plain["fit"] == started["mean"]  # the prior alone
    assert started["fit"].startswith(plain["fit"] + "+") and started["fit"] != plain["fit"]
    shipped.write_bytes(b"network v2")  # a new shipped network: the fit's rows are not its rows
    again = method_sources(_spec(tmp_path, "xctrsnet@style"))
    assert again["fit"] != started["fit"] and again["mean"] == started["mean"]
    assert again["fit"].count("+") == 2  # the prior, the start network and the whole-torso one
    (shipped.parent / "baseline-xctrsnet-wholebody.safetensors").write_bytes(b"whole-body network v2")
    assert method_sources(_spec(tmp_path, "xctrsnet@style"))["fit"] != again["fit"]


def test_absent_start_network_is_the_prior_alone(tmp_path, shipped):
    for net in shipped.parent.iterdir():
        net.unlink()  # the fit then starts from w_mean (its report says so)
    assert method_sources(_spec(tmp_path, "xctrsnet@style"))["fit"] == method_sources(_spec(tmp_path, None))["fit"]
