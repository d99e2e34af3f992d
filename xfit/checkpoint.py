"""xfit's safetensors files: the container every checkpoint kind shares (priors, training
states and snapshots, baselines, encoders).

A checkpoint is one ``.safetensors`` file (no pickle): named tensors plus one metadata entry
``xfit``, a JSON object with at least ``format`` (the kind, e.g. ``"xfit-prior"``) and
``format_version`` (:data:`FORMAT_VERSION`). Each kind's module (:mod:`xfit.prior.checkpoint`,
:mod:`xfit.baselines.common`, :mod:`xfit.fitting.encoder`) defines its format and tensor names;
this module writes such a file atomically (:func:`save_safetensors`) and reads it back with
checks that name the file (:func:`read_safetensors`, :func:`xfit_meta`, :func:`load_tensors`,
:func:`check_names_shapes`).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import CheckpointError, OutputError, OutputExistsError
from .io import atomic_write


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (how run folders and notes name a checkpoint)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


#: Version of the ``xfit`` metadata layout this xfit writes and reads (every format).
FORMAT_VERSION = 1
#: safetensors' own limit on the JSON header size (bytes).
MAX_HEADER = 100_000_000


def state_dict_tensors(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    """``{prefix.key: tensor}`` for a module's state dict, detached contiguous CPU copies."""
    return {f"{prefix}.{k}": v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def take_prefix(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Entries ``prefix.<key>`` as ``{key: tensor}`` (inverse of :func:`state_dict_tensors`)."""
    head = prefix + "."
    return {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}


def save_safetensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str], force: bool) -> Path:
    """Write a safetensors file atomically (temporary name, then rename; normal permissions).

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false.
        OutputError: the file system refused (full, read-only, permission); names ``path``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; use --force to overwrite")
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    with atomic_write(path, force=force) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as exc:  # the writer's I/O errors (full or read-only disk) are not OSErrors
            reason = re.search(r"I/O error: (.*?)(?: \(os error \d+\))?(?: at path|$)", str(exc))
            raise OutputError(f"cannot write {path}: {reason.group(1) if reason else exc}") from exc
    return path


def check_finite(tensors: Mapping[str, Tensor], path: Path) -> None:
    """Refuse a training state or snapshot whose floating-point tensors hold NaN or Inf.

    Raises:
        CheckpointError: naming the file and the first such tensor.
    """
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CheckpointError(
            f"{path} holds NaN or Inf in {bad[0]}{more}: training cannot continue from it; "
            "use an earlier state or restart with --force"
        )


def read_safetensors(path: Path, what: str) -> tuple[bytes, dict[str, Any]]:
    """File bytes and parsed safetensors header; CheckpointError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc}") from exc
    bad = f"{path} is not a safetensors file"
    if len(data) < 8:
        raise CheckpointError(f"{bad} (only {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(MAX_HEADER, len(data) - 8):
        raise CheckpointError(f"{bad} (invalid header length)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{bad} (header is not JSON)") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{bad} (header is not a JSON object)")
    return data, header


def xfit_meta(header: dict[str, Any], path: Path, fmt: str) -> dict[str, Any]:
    """Decode and check the ``xfit`` metadata entry (format name and version)."""
    raw = (header.get("__metadata__") or {}).get("xfit")
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not an xfit {fmt} file (no 'xfit' metadata)")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise CheckpointError(f"{path}: 'xfit' metadata is not valid JSON") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path}: expected format {fmt!r}, got {got!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported format_version {meta.get('format_version')!r} (this xfit reads {FORMAT_VERSION})"
        )
    return meta


def load_tensors(data: bytes, path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file's bytes (CPU); CheckpointError naming ``path`` when corrupt."""
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError / others
        raise CheckpointError(f"{path}: corrupt safetensors data ({exc})") from exc


def check_names_shapes(tensors: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]]) -> str | None:
    """A message describing the mismatch, or ``None`` when names and shapes agree exactly."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(
        f"{k} {list(tensors[k].shape)} (expected {list(expected[k])})"
        for k in set(expected) & set(tensors)
        if tuple(tensors[k].shape) != expected[k]
    )
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            parts.append(f"{label}: {', '.join(items[:5])}{more}")
    return "; ".join(parts) or None
