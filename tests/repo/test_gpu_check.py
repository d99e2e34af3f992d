"""bench/gpu_check.py runs end to end on the CPU (Triton interpreter, tiny sizes): the script a
GPU session runs is tested without a GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_gpu_check_dry_run_writes_its_report(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    (report,) = tmp_path.glob("*.json")
    data = json.loads(report.read_text())
    agree = data["projector"]["agreement"]["6^3/5^2"]
    assert agree["forward_max_rel"] < 1e-4 and agree["adjoint_max_rel"] < 1e-4  # Triton == reference
    assert all(v > 0 for v in data["projector"]["rays_per_s"]["6^3/5^2"].values())
    assert data["fit"]["tiny"]["steps"] == 2 and data["training"]["returncode"] == 0
    assert report.with_suffix(".md").read_text().startswith("# GPU check: dry run")


def test_gpu_check_without_cuda_is_one_line(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 2 and "no CUDA device" in res.stderr and "Traceback" not in res.stderr
    assert not any(tmp_path.iterdir())
