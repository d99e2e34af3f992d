"""``bench/data_consistency.py``: its X-rays of a finer grid and its oracle weights."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from bench_scripts import load_bench

from xfit.geometry import View
from xfit.metrics import ncc
from xfit.phantoms import make_phantom
from xfit.studies.evaluate import project_hu


def _bench():
    return load_bench("data_consistency")


def test_fine_xrays_are_the_same_phantom_on_a_finer_grid():
    bench = _bench()
    ctx = SimpleNamespace(prior=SimpleNamespace(config=SimpleNamespace(resolution=16, spacing_mm=2.5)))
    views = [View(a, shape=(24, 24), pixel_spacing_mm=(2.0, 2.0)) for a in (0.0, 90.0)]
    coarse = make_phantom(3, size=16, spacing_mm=2.5, centre="vertebra")
    obs = bench.observation("fine", SimpleNamespace(seed=3), ctx, views)
    other = make_phantom(4, size=16, spacing_mm=2.5, centre="vertebra")
    ideal = project_hu(coarse.hu, coarse.affine, views)
    for fine, ref, wrong in zip(obs.images, ideal, project_hu(other.hu, other.affine, views)):
        assert fine.shape == ref.shape and not np.allclose(fine, ref)
        # the same anatomy drawn at twice the resolution (and the cube's edge 1.25 mm finer)
        assert ncc(fine, ref) > 0.8 and ncc(fine, ref) > ncc(fine, wrong) + 0.3


def test_oracle_weights_follow_the_error():
    bench = _bench()
    truth = np.zeros((12, 12, 12))
    hu = truth.copy()
    hu[2:4, 2:4, 2:4] = 300.0  # the error sits in one corner
    w = bench.oracle_weights(hu, truth)
    assert abs(w.mean() - 1.05) < 1e-9 and w.min() >= 0.05
    assert w[3, 3, 3] > 20 * w[9, 9, 9]
