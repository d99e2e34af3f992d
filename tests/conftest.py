"""Fixtures several test modules share (a module opts in with ``pytestmark`` or by naming them).

The tiny prior (32³ at 2.5 mm, randomly initialised) has one home: ``tiny_prior`` in memory and
``tiny_prior_file`` on disk, both built by tests/tiny_models.py."""

from pathlib import Path

import pytest
import torch
from spine_synth import write_xfit_collection
from tiny_models import save_tiny_prior, tiny_generator


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (results independent of the machine's core count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_prior():
    """The tiny prior, randomly initialised with torch seed 0, noise strengths 0.1 and its w statistics
    from 2000 samples, in memory (not saved). Shared by the session: read it, never change it."""
    from xfit.prior.checkpoint import Prior, compute_w_stats
    from xfit.prior.config import load_config

    G = tiny_generator(torch_seed=0, noise_strength=0.1).requires_grad_(False)
    w_mean, w_std = compute_w_stats(G, n=2000)
    return Prior(
        G=G,
        w_mean=w_mean,
        w_std=w_std,
        config=load_config("tiny"),
        meta={},
        sha256="0" * 64,
        path=Path("tiny.safetensors"),
    )


@pytest.fixture(scope="session")
def tiny_prior_file(tmp_path_factory):
    """``tiny_prior_file(torch_seed=0, n=200, noise_strength=0.0) -> Path``: an untrained tiny prior
    saved as ``prior.safetensors`` (tests/tiny_models.py, ``save_tiny_prior``), written once per
    session for each set of arguments. The file is shared: read it, never change it (copy it first).
    Each call leaves torch's global generator where building the prior leaves it, as building it
    in the test would."""
    made: dict[tuple, tuple[Path, torch.Tensor]] = {}

    def make(torch_seed: int = 0, n: int = 200, noise_strength: float = 0.0) -> Path:
        key = (torch_seed, n, noise_strength)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"tiny_prior_seed{torch_seed}_n{n}")
            path = save_tiny_prior(
                folder / "prior.safetensors", torch_seed=torch_seed, n=n, noise_strength=noise_strength
            )
            made[key] = (path, torch.get_rng_state())
        path, rng = made[key]
        torch.set_rng_state(rng)
        return path

    return make


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    """Three small spine CTs in xfit's layout, centred on T12, L1 and L2 (levels T11-L3)."""
    out = tmp_path_factory.mktemp("phantoms")
    return write_xfit_collection(out, 3, centres=["T12", "L1", "L2"], levels=("T11", "T12", "L1", "L2", "L3"))
