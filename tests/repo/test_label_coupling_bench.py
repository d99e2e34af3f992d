"""``bench/label_coupling.py``: the ceiling with and without its label term, on a tiny prior."""

from __future__ import annotations

import re

from bench_scripts import load_bench


def test_label_coupling_prints_both_fits_per_phantom_and_their_means(tiny_prior_file, capsys):
    bench = load_bench("label_coupling")
    assert bench.main(["--prior", str(tiny_prior_file()), "--cases", "2", "--steps", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| phantom")]
    per_case = [r for r in rows if re.match(r"\| 10[01] \|", r)]
    assert [r.split("|")[2].strip() for r in per_case] == ["HU + label", "HU only"] * 2
    means = [r for r in rows if r.startswith("| mean")]
    assert [r.split("|")[2].strip() for r in means] == ["HU + label", "HU only"]
    for r in per_case + means:
        dice, best = float(r.split("|")[5]), float(r.split("|")[6].split()[0])
        assert 0.0 <= dice <= best <= 1.0  # the best threshold includes 0.5
