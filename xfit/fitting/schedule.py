"""The learning-rate schedule of the fit and of the volume inversion (stylegan2-ada's projector)."""

from __future__ import annotations

import math


def lr_schedule(t: float, rampup: float, rampdown: float) -> float:
    """stylegan2-ada projector's learning-rate factor at progress ``t`` in [0, 1].

    Linear ramp-up over the first ``rampup`` fraction, cosine ramp-down over the last
    ``rampdown`` fraction, 1 in between.
    """
    t = min(max(t, 0.0), 1.0)
    ramp = 1.0 if rampdown <= 0 else min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if rampup > 0:
        ramp *= min(1.0, t / rampup)
    return ramp
