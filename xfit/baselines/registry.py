"""Every baseline's network by method: build one from its config, load a checkpoint.

The shared building blocks (config, footprints, lifting, labels, the checkpoint writer) live in
:mod:`xfit.baselines.common`, below the model modules (:mod:`.x2ct`, :mod:`.ear`,
:mod:`.transvert`, :mod:`.xctrsnet`, :mod:`.igcn`); this module sits above them and is the one
place that knows them all (:data:`MODELS`). A new method adds its module and one entry here (and
its config keys in :mod:`xfit.baselines.common`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import check_names_shapes, load_tensors, read_safetensors, xfit_meta
from ..errors import CheckpointError, InputError
from . import ear, igcn, transvert, x2ct, xctrsnet
from .common import MODEL_FORMAT, BaselineConfig, check_method

#: The generator class of each method (built with ``from_config(cfg)``).
MODELS: dict[str, type[nn.Module]] = {
    "x2ct-cnn": x2ct.X2CTGenerator,
    "x2ct-gan": x2ct.X2CTGenerator,
    "ear": ear.EAR,
    "transvert": transvert.TransVert,
    "xctrsnet": xctrsnet.XCTRSNet,
    "igcn": igcn.IGCN,
}


def build_model(cfg: BaselineConfig) -> nn.Module:
    """The generator (reconstruction network) of a config (:data:`MODELS`)."""
    return MODELS[check_method(cfg.method)].from_config(cfg)


@dataclass
class Baseline:
    """A loaded baseline: network (eval mode, float32), config, metadata."""

    model: nn.Module
    config: BaselineConfig
    meta: dict[str, Any]
    path: Path | None = None


def load_model(path: str | Path, method: str | None = None, device: str | torch.device = "cpu") -> Baseline:
    """Read a baseline checkpoint; with ``method``, refuse a checkpoint of another method.

    Raises:
        CheckpointError: missing, not safetensors, foreign format, another method, or tensors
            that do not match the stored architecture.
        InputError: an unknown ``method``.
    """
    if method is not None:
        check_method(method)
    path = Path(path)
    data, header = read_safetensors(path, "baseline checkpoint")
    meta = xfit_meta(header, path, MODEL_FORMAT)
    if method is not None and meta.get("method") != method:
        raise CheckpointError(f"{path} is a {meta.get('method')!r} checkpoint, not {method!r}")
    try:
        cfg = BaselineConfig.from_dict(meta.get("config") or {}, where=f"{path} config")
    except InputError as exc:
        raise CheckpointError(str(exc)) from exc
    if cfg.method != meta.get("method"):
        raise CheckpointError(f"{path}: metadata names method {meta.get('method')!r} but its config {cfg.method!r}")
    model = build_model(cfg)
    tensors = load_tensors(data, path)
    if cfg.method == "igcn" and "G.template" in tensors and "G.faces" in tensors:  # the mesh sizes are the file's
        try:
            model.set_template(tensors["G.template"].float(), tensors["G.faces"].long())
        except InputError as exc:
            raise CheckpointError(f"{path}: bad IGCN template ({exc})") from exc
    expected = {f"G.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
    bad = check_names_shapes(tensors, expected)
    if bad:
        raise CheckpointError(f"{path}: tensors do not match the {cfg.method} architecture of its config ({bad})")
    model.load_state_dict({k[2:]: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    return Baseline(model.to(device).eval().requires_grad_(False), cfg, meta, path)
