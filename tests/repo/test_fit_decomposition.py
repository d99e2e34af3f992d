"""``bench/fit_decomposition.py``: the error of an estimate split around the network's."""

from __future__ import annotations

import numpy as np
from bench_scripts import load_bench


def _split():
    return load_bench("fit_decomposition").split


def test_split_adds_up_and_reads_the_direction():
    split = _split()
    rng = np.random.default_rng(0)
    t = rng.uniform(-500, 1000, (16, 16, 16))  # noise stays inside the window
    n = t + rng.normal(0, 80, t.shape)  # a network's error
    # a step toward the truth beats the network; a step across it does not
    toward, across = n + 0.5 * (t - n), n + rng.normal(0, 40, t.shape)
    a, b = split(toward, n, t), split(across, n, t)
    for x, s in ((toward, a), (across, b)):
        mse = np.mean((x - t) ** 2)
        mse_net = np.mean((n - t) ** 2)
        assert np.isclose(mse, mse_net + s["dist"] - s["cross"], rtol=1e-9)
        assert np.isclose(s["psnr"], 10 * np.log10(2500**2 / mse))
    assert a["cos"] > 0.99 and a["cos"] > a["cos_needed"] and a["psnr"] > a["psnr_net"]
    assert abs(b["cos"]) < 0.1 and b["cos"] < b["cos_needed"] and b["psnr"] < b["psnr_net"]


def test_split_clips_to_the_window():
    split = _split()
    t = np.full((4, 4, 4), 1400.0)
    x, n = t + 50.0, t + 300.0  # the network's 1700 HU counts as the window's 1500, as in PSNR
    s = split(x, n, t)
    assert np.isclose(s["dist"], 50.0**2) and np.isclose(s["psnr_net"], 10 * np.log10(2500**2 / 100.0**2))
