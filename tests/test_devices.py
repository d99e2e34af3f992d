"""Device questions: ``--device`` strings (tests/reliability/test_entry_point_contract.py covers the
CLI) and the bfloat16 autocast decision."""

from __future__ import annotations

import pytest
import torch

from xfit.devices import amp_enabled, autocast, cpu_bf16_units
from xfit.errors import InputError

AMD = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
INTEL = "processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile avx512_bf16\n"
OLD = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


@pytest.mark.parametrize("text, units", [(AMD, ("avx512_bf16",)), (INTEL, ("amx_bf16", "avx512_bf16")), (OLD, ())])
def test_cpu_bf16_units_reads_the_flags(tmp_path, text, units):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert cpu_bf16_units.__wrapped__(str(path)) == units


def test_cpu_bf16_units_without_cpuinfo(tmp_path):
    assert cpu_bf16_units.__wrapped__(str(tmp_path / "missing")) == ()


def test_amp_enabled_choices(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_enabled("bf16", cpu) and not amp_enabled("off", cuda) and amp_enabled("auto", cuda)
    assert not amp_enabled("auto", torch.device("mps"))
    assert amp_enabled("auto", cpu, cpu_auto=True) and not amp_enabled("auto", cpu, cpu_auto=False)
    monkeypatch.setattr("xfit.devices.cpu_bf16_units", lambda: ("avx512_bf16",))
    assert amp_enabled("auto", cpu)
    monkeypatch.setattr("xfit.devices.cpu_bf16_units", lambda: ())
    assert not amp_enabled("auto", cpu)
    with pytest.raises(InputError, match="amp must be one of"):
        amp_enabled("fp8", cpu)


def test_autocast_switch():
    x = torch.randn(2, 3)
    with autocast(torch.device("cpu"), True):
        assert (x @ x.T).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), False):
        assert (x @ x.T).dtype == torch.float32
