"""Keeping freed CPU memory inside the process, so that every fit step does not fault it back in.

glibc's ``malloc`` serves each block above its mmap threshold (at most 32 MiB by default) with a
fresh ``mmap`` and gives it back to the kernel on ``free``. A fit allocates and frees tensors of
tens of MiB every step (a batch of 64^3 feature maps), so each step paid for hundreds of
thousands of page faults: about a quarter of a CPU fit was system time (``docs/measurements.md``,
"Freed memory stays in the process").
:func:`keep_freed_memory` raises the mmap and trim thresholds to 1 GiB, so freed tensors stay
in the heap and the next step reuses them. The arithmetic is untouched (results are bit for
bit the same); the price is that the resident size stays near its peak until the process ends.

The command line calls it at start (and in every ``--workers`` process); a program that uses
xfit as a library can call it itself. ``XFIT_MALLOC=system`` in the environment, or glibc's own
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, leave the allocator as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: ``mallopt`` parameters (glibc ``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks up to this size (bytes) come from the heap and freed heap up to it is kept.
KEEP_BYTES = 1 << 30

#: Environment variables whose presence means the user chose the allocator's settings.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to :data:`KEEP_BYTES` (once per process).

    Returns:
        True when the thresholds are set (now or by an earlier call); False where the C library
        has no ``mallopt`` (macOS, Windows, musl) or the user opted out (see the module notes).
    """
    global _applied  # noqa: PLW0603 (applied once per process)
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("XFIT_MALLOC", "").strip().lower() == "system" or any(k in os.environ for k in USER_SETTINGS):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    results = [mallopt(M_MMAP_THRESHOLD, KEEP_BYTES), mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)]  # both, always
    _applied = all(r == 1 for r in results)
    return _applied
