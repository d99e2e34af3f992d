"""``bench/torso_consistency.py``: the footprint it hands the step is the cube's shadow."""

from __future__ import annotations

import numpy as np
from bench_scripts import load_bench

from xfit.geometry import View


def test_footprints_are_the_cube_shadow():
    bench = load_bench("torso_consistency")
    affine = np.diag([2.5, 2.5, 2.5, 1.0])
    affine[:3, 3] = -2.5 * 15 / 2  # a 16^3 cube of 40 mm about the isocentre
    views = [View(a, shape=(48, 48), pixel_spacing_mm=(2.0, 2.0)) for a in (0.0, 90.0)]
    for m in bench.footprints(views, affine, 16, 0.9):
        assert m.dtype == bool and m.shape == (48, 48)
        assert m[24, 24] and not m[0, 0] and not m[24, 2]
        assert 0.1 < m.mean() < 0.6  # about the cube's 40 mm of the detector's 96
