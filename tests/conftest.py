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


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    """Three small spine CTs in xfit's layout, centred on T12, L1 and L2 (levels T11-L3)."""
    out = tmp_path_factory.mktemp("phantoms")
    return write_xfit_collection(out, 3, centres=["T12", "L1", "L2"], levels=("T11", "T12", "L1", "L2", "L3"))
