"""xfit.allocator: freed tensors stay in the heap (fewer page faults), and the opt-outs hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from xfit import allocator

# Allocate, touch and free a 64 MiB tensor 30 times; report the minor page faults it cost.
LOOP = r"""
import json, resource, sys, torch
from xfit.allocator import keep_freed_memory
applied = keep_freed_memory()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    x = torch.empty(16 * 2**20); x.fill_(1.0); del x
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0}))
"""


def _loop(**env: str) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS and k != "XFIT_MALLOC"}
    full.update(env, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", LOOP], capture_output=True, text=True, check=True, env=full)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_freed_memory_saves_page_faults():
    kept, system = _loop(), _loop(XFIT_MALLOC="system")
    if not kept["applied"]:
        pytest.skip("this C library has no mallopt (not glibc)")
    assert system["applied"] is False
    # one 64 MiB tensor is 16384 pages: glibc's default faults them in on every allocation (30
    # rounds); kept, most rounds reuse the freed block (how many fault in anew depends on what the
    # process allocated before: 2 of 30 when ``import xfit`` loaded torch and the projector, 5-8
    # since it loads nothing)
    assert system["faults"] > 25 * 16384
    assert kept["faults"] < 10 * 16384 and kept["faults"] < system["faults"] / 3


def test_user_settings_are_respected(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("XFIT_MALLOC", " System ")
    assert allocator.keep_freed_memory() is False


def test_once_per_process(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", True)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *_: pytest.fail("mallopt called twice"))
    assert allocator.keep_freed_memory() is True
