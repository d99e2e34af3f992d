"""``bench/ceiling_table.py``: the ceiling per prior snapshot, paired on the common cases."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from bench_scripts import load_bench

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    return load_bench("ceiling_table")


def _psnr(folder: Path) -> dict[str, float]:
    with open(folder / "cases.csv") as f:
        return {r["case"]: float(r["psnr_db"]) for r in csv.DictReader(f) if r["method"] == "ceiling"}


def test_paired_on_common_cases(monkeypatch):
    monkeypatch.chdir(ROOT)
    ref, snap = Path("results/heldout20_step5000"), sorted(Path("results").glob("ceiling_step*"))[0]
    text = _bench().table([ref, snap], batch=4)
    a, b = _psnr(ref), _psnr(snap)
    common = sorted(set(a) & set(b))
    assert len(common) < len(a)  # heldout20 holds 20 cases, the snapshot's run fewer: only the common ones count
    assert f"Ceiling on {len(common)} cases" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`results/" in line]
    assert len(rows) == 2
    assert f"{np.mean([a[c] for c in common]):.2f} |" in rows[0]
    delta = np.mean([b[c] - a[c] for c in common])
    ups = sum(b[c] > a[c] for c in common)
    assert f"({delta:+.2f}, {ups}/{len(common)} up)" in rows[1]


def test_a_run_without_ceiling_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit, match="no ceiling rows"):
        _bench().table([Path("results/heldout20_step5000"), Path("results/style20/style_0")], batch=4)


def test_the_lbfgs_ceiling_is_its_own_table(monkeypatch):
    monkeypatch.chdir(ROOT)
    run = Path("results/heldout20")
    text = _bench().table([run], batch=4, method="ceiling-lbfgs")
    with open(run / "cases.csv") as f:
        lbfgs = [float(r["psnr_db"]) for r in csv.DictReader(f) if r["method"] == "ceiling-lbfgs"]
    assert text.startswith(f"`ceiling-lbfgs` on {len(lbfgs)} cases")
    assert f"| {np.mean(lbfgs):.2f} |" in text
    assert f"| {np.mean(list(_psnr(run).values())):.2f} |" not in text  # the Adam ceiling's rows are not read
    with pytest.raises(SystemExit, match="no ceiling-lbfgs rows"):
        _bench().table([Path("results/heldout20_step5000")], batch=4, method="ceiling-lbfgs")
