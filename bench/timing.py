"""One way to time a call in the benches: the median wall time over repeats.

Imported by the bench scripts that sit next to it (``python bench/<script>.py`` puts ``bench/``
on the import path).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(
    fn: Callable[[], object], reps: int, *, sync: Callable[[], None] | None = None, warmup: int = 1
) -> float:
    """Median wall seconds of ``fn()`` over ``reps`` calls, after ``warmup`` untimed calls.

    ``sync`` (for example ``torch.cuda.synchronize``) runs before each timer starts and before it
    stops, so queued device work is counted in the call that queued it.
    """
    wait = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, reps)):
        wait()
        t0 = time.perf_counter()
        fn()
        wait()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
