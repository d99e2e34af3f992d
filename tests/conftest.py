"""Fixtures several test modules share (a module opts in with ``pytestmark`` or by naming them)."""

import pytest
import torch

from spine_synth import write_xfit_collection


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (results independent of the machine's core count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_prior():
    """The tiny prior architecture (32^3 at 2.5 mm), randomly initialised with seed 0, with
    non-zero noise strengths and its w statistics from 2000 samples (in memory, not saved)."""
    from pathlib import Path

    from xfit.prior.checkpoint import Prior, compute_w_stats
    from xfit.prior.config import load_config
    from xfit.prior.networks import build_generator

    torch.manual_seed(0)
    cfg = load_config("tiny")
    G = build_generator(cfg).eval().requires_grad_(False)
    for layer in G.synthesis.layers:
        layer.noise_strength.fill_(0.1)
    w_mean, w_std = compute_w_stats(G, n=2000)
    return Prior(G=G, w_mean=w_mean, w_std=w_std, config=cfg, meta={}, sha256="0" * 64,
                 path=Path("tiny.safetensors"))


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    """Three small spine CTs in xfit's layout, centred on T12, L1 and L2 (levels T11-L3)."""
    out = tmp_path_factory.mktemp("phantoms")
    return write_xfit_collection(out, 3, centres=["T12", "L1", "L2"], levels=("T11", "T12", "L1", "L2", "L3"))
