"""Checking a ``--device`` string before any work (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``auto``).

Every command that takes ``--device`` calls :func:`check_device` first, so that a device that
does not exist ends in one clear line instead of a traceback deep inside torch.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import torch

from .errors import InputError

#: Device types xfit runs on (``meta`` holds no data; ``xla``, ``tpu`` ... are not supported).
SUPPORTED = ("cpu", "cuda", "mps")

_DEVICE_RE = re.compile(r"^(?P<type>[a-z]+)(?::(?P<index>\d+))?$")


def check_device(device: str | torch.device | None) -> torch.device:
    """Validate a device string and return the :class:`torch.device` it names.

    Accepted: ``cpu``, ``cuda``, ``cuda:N`` (N below the number of visible GPUs), ``mps`` (Apple)
    and ``auto`` or ``None`` (``cuda`` when a GPU is visible, else ``cpu``). Surrounding spaces and
    upper case are tolerated.

    Raises:
        InputError: an unknown or unsupported device (``meta``, ``tpu``, ``cuda:x``), CUDA asked
            for without a usable GPU, or a GPU index out of range. The message says what exists.
    """
    if isinstance(device, torch.device):
        text = str(device)
    elif device is None:
        text = "auto"
    elif isinstance(device, str):
        text = device.strip().lower()
    else:
        raise InputError(f"--device must be a string like cpu or cuda:0, got {device!r}")
    if text in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    m = _DEVICE_RE.match(text)
    if m is None or m["type"] not in SUPPORTED:
        raise InputError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto")
    kind, index = m["type"], m["index"]
    if kind == "cpu":
        if index not in (None, "0"):
            raise InputError(f"unknown device {device!r}: there is only one cpu device (use cpu)")
        return torch.device("cpu")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"--device {text}: Apple MPS is not available on this machine; use --device cpu")
        return torch.device("mps")
    try:
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    except Exception:  # noqa: BLE001 (a broken driver install: treat as no GPU)  # pragma: no cover
        available, count = False, 0
    if not available or count == 0:
        raise InputError(
            f"--device {text}: CUDA is not available on this machine (no usable GPU or driver); use --device cpu"
        )
    if index is not None and int(index) >= count:
        raise InputError(
            f"--device {text}: there is no GPU {int(index)} (this machine has {count}: cuda:0..cuda:{count - 1})"
        )
    return torch.device(text)


# ----------------------------------------------------------------------------- bfloat16 autocast

AMP_CHOICES = ("auto", "bf16", "off")
#: CPU flags (``/proc/cpuinfo``) of native bfloat16 arithmetic: Intel AMX tiles and AVX512-BF16
#: dot products. Without them PyTorch emulates bf16, which is slower than float32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def cpu_bf16_units(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The native bfloat16 units of this CPU (a subset of :data:`BF16_CPU_FLAGS`; empty when
    none, or when ``cpuinfo`` cannot be read, as on macOS and Windows)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return tuple(f for f in BF16_CPU_FLAGS if f in flags)


def amp_enabled(amp: str, device: torch.device, cpu_auto: bool | None = None) -> bool:
    """Resolve ``amp`` (``auto`` | ``bf16`` | ``off``) to whether bfloat16 autocast is on.

    ``auto`` is on for CUDA, and on the CPU when ``cpu_auto`` says so; ``cpu_auto=None`` means
    "when the CPU has native bf16 units" (:func:`cpu_bf16_units`).

    Raises:
        InputError: another value.
    """
    if amp not in AMP_CHOICES:
        raise InputError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp == "auto":
        if device.type == "cuda":
            return True
        if device.type != "cpu":
            return False
        return bool(cpu_bf16_units()) if cpu_auto is None else bool(cpu_auto)
    return amp == "bf16"


def autocast(device: torch.device, enabled: bool):
    """``torch.autocast`` to bfloat16 on ``device`` when ``enabled`` (a no-op context otherwise)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(enabled))
