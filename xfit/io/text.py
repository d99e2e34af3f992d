"""Strict text input and output: JSON (no ``NaN``, no duplicate keys), YAML 1.2 configs, small
files only, and pretty JSON written atomically.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..errors import InputError
from .files import PathLike, _one_line, _os_reason, _to_numpy, atomic_write

#: Sidecars and config files larger than this are refused (they hold a few numbers).
MAX_SMALL_FILE_BYTES = 1 << 20


def _read_small_text(path: Path, what: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_SMALL_FILE_BYTES:
            raise InputError(
                f"{path}: {size} bytes is too large for a {what} (at most {MAX_SMALL_FILE_BYTES // 1024} KiB)"
            )
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is fine
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({_os_reason(exc)})") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise InputError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise InputError(f"{name} is not valid JSON (numbers must be finite)")


def parse_json_strict(text: str) -> Any:
    """``json.loads`` that rejects ``NaN``/``Infinity``, duplicate keys and absurd nesting.

    Raises:
        InputError: with the reason (and line/column for syntax errors); the caller adds the file.
    """
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc})") from exc
    except RecursionError as exc:
        raise InputError("invalid JSON (nested too deeply)") from exc


def read_sidecar(path: PathLike) -> dict:
    """Read a JSON sidecar (an object), strictly: ``NaN``/``Infinity`` literals, duplicate keys
    and files over :data:`MAX_SMALL_FILE_BYTES` are refused. The keys and values are checked
    against the sidecar schema by :func:`xfit.geometry.validate_sidecar` when the X-ray is read.

    Raises:
        InputError: missing file, invalid JSON or not a JSON object (the message names the file).
    """
    path = Path(path)
    text = _read_small_text(path, "sidecar")
    try:
        data = parse_json_strict(text)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: a sidecar must be a JSON object, got {type(data).__name__}")
    return data


def read_yaml_mapping(path: PathLike, what: str = "config") -> dict:
    """Read a YAML config file as a mapping, strictly.

    YAML 1.2 scalars: only ``true``/``false`` are booleans (``yes``, ``on``, ``n`` stay strings
    and are then rejected by the schema), ``1e-3`` is a float, duplicate keys are an error.
    An empty file is an empty mapping.

    Raises:
        InputError: missing, unreadable or too large file, invalid YAML, or not a mapping (the
            message names the file).
    """
    import yaml

    path = Path(path)
    text = _read_small_text(path, what)
    try:
        data = parse_yaml(text)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML ({_one_line(exc)})") from exc
    except RecursionError as exc:
        raise InputError(f"{path}: invalid YAML (nested too deeply)") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a {what} must be a YAML mapping of keys to values, got {type(data).__name__}")
    return data


def parse_yaml(text: str) -> Any:
    """``text`` read as strict YAML (:func:`read_yaml_mapping`'s rules: YAML 1.2 booleans and
    floats, so ``off`` stays a string, and no duplicate keys); any value, not only a mapping.

    Raises:
        InputError: a duplicate or unhashable key; yaml.YAMLError: invalid YAML.
    """
    import yaml

    return yaml.load(text, Loader=_strict_yaml_loader())  # noqa: S506 (a SafeLoader subclass)


def _make_strict_yaml_loader() -> type:
    import re

    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2 booleans and floats and no duplicate keys."""

    StrictLoader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )

    def construct_mapping(loader, node, deep=False):  # type: ignore[no-untyped-def]
        loader.flatten_mapping(node)
        out = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError as exc:
                raise InputError(f"line {key_node.start_mark.line + 1}: a key must be a plain value") from exc
            if key in out:
                raise InputError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
            out[key] = loader.construct_object(value_node, deep=deep)
        return out

    StrictLoader.add_constructor("tag:yaml.org,2002:map", construct_mapping)
    return StrictLoader


@functools.lru_cache(maxsize=1)
def _strict_yaml_loader() -> type:
    return _make_strict_yaml_loader()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (np.ndarray, Tensor)):
        return _to_numpy(obj).tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def finite_json(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with NaN and infinite floats as None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite_json(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def write_sidecar(path: PathLike, data: dict, *, force: bool = False) -> Path:
    """Write a dictionary as pretty JSON (2-space indent, trailing newline), atomically."""
    path = Path(path)
    text = json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n"
    with atomic_write(path, force=force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
