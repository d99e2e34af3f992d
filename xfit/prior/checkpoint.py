"""Prior checkpoints and training state: safetensors + JSON metadata, no pickle.

**Prior** (``save_prior`` / ``load_prior``): one ``.safetensors`` file holding

* every tensor of the EMA generator (parameters and buffers: ``w_avg``, ``noise_const``),
  named ``G.<state_dict key>``;
* ``w_mean`` and ``w_std`` (``[w_dim]``): statistics of w = mapping(z) used by fitting;
* metadata entry ``xfit``: JSON ``{"format": "xfit-prior", "format_version": 1, "config": ...,
  "resolution", "spacing_mm", "hu_window", "label_names", "num_ws", "w_dim", "training": ...}``.

The loader rebuilds the generator from ``config`` and accepts the file only if the tensor names
and shapes match that architecture exactly.

**Training state** (``save_training_state`` / ``load_training_state``): a separate safetensors
file with arbitrary named tensors and a JSON ``meta`` (step, optimizer param groups, RNG states;
see :func:`flatten_optimizer` and :func:`capture_rng_state`).

**Training snapshot** (``save_snapshot`` / ``load_snapshot``): a compact file to carry a run across
sessions: the tensors of ``G``, ``G_ema`` and ``D`` in float16 (or bfloat16; ``*.w_avg``, the
tracked mean w, stays float32), and metadata ``{"format": "xfit-train-snapshot", "step", "kimg",
"world_size", "config", "dtype", "summary"}``. No optimizer moments: with Adam's beta1 = 0 the
first moment is not used and the second moment, restarted at zero, is bias-corrected from the
first step and re-estimated within a few hundred steps (beta2 = 0.99); the random streams are
reseeded from the step. Continuing from a snapshot is therefore not bit-exact, unlike ``--resume``.

**Provenance.** The prior's ``training`` metadata holds ``levels`` (crops per level name) and
``levels_text``; :func:`levels_seen` reads them back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import (
    FORMAT_VERSION,
    check_finite,
    check_names_shapes,
    load_tensors,
    read_safetensors,
    save_safetensors,
    state_dict_tensors,
    take_prefix,
    xfit_meta,
)
from ..errors import CheckpointError, InputError
from .config import PriorConfig
from .networks import Generator, build_generator

PRIOR_FORMAT = "xfit-prior"
TRAIN_STATE_FORMAT = "xfit-train-state"
SNAPSHOT_FORMAT = "xfit-train-snapshot"
SNAPSHOT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Prior:
    """A loaded prior: frozen EMA generator plus w statistics and metadata.

    Attributes:
        G: generator in eval mode, ``requires_grad=False`` on every parameter.
        w_mean, w_std: ``[w_dim]`` mean and std of mapping(z) over random z.
        config: the :class:`PriorConfig` it was trained with.
        meta: the full ``xfit`` metadata dictionary.
        sha256: hex digest of the checkpoint file.
        path: the file it was loaded from.
    """

    G: Generator
    w_mean: Tensor
    w_std: Tensor
    config: PriorConfig
    meta: dict
    sha256: str
    path: Path

    @property
    def resolution(self) -> int:
        """Output volume side R (voxels)."""
        return self.config.resolution

    @property
    def spacing_mm(self) -> float:
        """Isotropic voxel spacing in mm."""
        return self.config.spacing_mm

    @property
    def hu_window(self) -> tuple[float, float]:
        """(low, high) HU mapped to [-1, 1] by the intensity channel."""
        return self.config.hu_window

    @property
    def label_names(self) -> tuple[str, ...]:
        """Names of the label-logit channels 1.. of the generator output."""
        return self.config.label_names

    @property
    def num_ws(self) -> int:
        """Number of ws in a w_plus."""
        return self.G.num_ws


# ----------------------------------------------------------------------------------------------
# Tensors of this format


def _skeleton(cfg: PriorConfig) -> Generator:
    """A generator of ``cfg``'s architecture on the CPU, its weights to be replaced.

    Built on the CPU rather than the ``meta`` device: the first meta build imports torch's
    compiler stack (about 0.9 s here; a command that runs a torch optimiser imports it later
    anyway, sampling and previews need not), the CPU build of the 64³ prior takes ~25 ms. The
    global RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        return build_generator(cfg)


def _expected_shapes(cfg: PriorConfig, G: Generator | None = None) -> dict[str, tuple[int, ...]]:
    G = _skeleton(cfg) if G is None else G
    shapes = {f"G.{k}": tuple(v.shape) for k, v in G.state_dict().items()}
    shapes["w_mean"] = shapes["w_std"] = (cfg.w_dim,)
    return shapes


# ----------------------------------------------------------------------------------------------
# Prior


def save_prior(
    path: str | Path,
    G_ema: Generator,
    w_mean: Tensor,
    w_std: Tensor,
    config: PriorConfig,
    summary: Mapping[str, Any] | None = None,
    label_names: tuple[str, ...] | list[str] | None = None,
    force: bool = False,
    half: bool = False,
) -> Path:
    """Write a prior checkpoint (atomically).

    Args:
        path: output ``.safetensors`` file.
        G_ema: the EMA generator, built from ``config``.
        w_mean, w_std: ``[w_dim]`` statistics (see :func:`compute_w_stats`).
        config: the training config.
        summary: JSON-able training summary (kimg, losses, data, timings...).
        label_names: overrides ``config.label_names`` (same count).
        force: overwrite an existing file.
        half: store the generator's tensors as float16 (half the size, for shipping; loading
            converts back to float32).

    Returns:
        The written path.

    Raises:
        InputError: generator/statistics do not match ``config``, or summary is not JSON-able.
        OutputExistsError: ``path`` exists and ``force`` is false.
    """
    if label_names is not None:
        if len(label_names) != len(config.label_names):
            raise InputError(
                f"label_names {list(label_names)} must have {len(config.label_names)} entries like the config"
            )
        config = dataclasses.replace(config, label_names=tuple(label_names))
    tensors = state_dict_tensors(G_ema, "G")
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    tensors["w_mean"], tensors["w_std"] = w_mean.detach().float(), w_std.detach().float()
    problem = check_names_shapes(tensors, _expected_shapes(config))
    if problem:
        raise InputError(f"generator does not match the config: {problem}")
    meta = {
        "format": PRIOR_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "resolution": config.resolution,
        "spacing_mm": config.spacing_mm,
        "hu_window": list(config.hu_window),
        "label_names": list(config.label_names),
        "num_ws": G_ema.num_ws,
        "w_dim": config.w_dim,
        "training": dict(summary or {}),
    }
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise InputError(f"prior metadata is not JSON-serialisable: {exc}") from exc
    return save_safetensors(Path(path), tensors, {"xfit": text}, force)


def load_prior(path: str | Path, device: str | torch.device = "cpu") -> Prior:
    """Load and validate a prior checkpoint.

    Args:
        path: ``.safetensors`` file written by :func:`save_prior`.
        device: where to put the generator and statistics.

    Returns:
        A :class:`Prior` with a frozen generator in eval mode.

    Raises:
        CheckpointError: missing/unreadable file, not safetensors, no xfit metadata, unknown
            format or version, invalid config, or tensors not matching the architecture.
    """
    path = Path(path)
    data, header = read_safetensors(path, "prior checkpoint")
    meta = xfit_meta(header, path, PRIOR_FORMAT)
    try:
        config = PriorConfig.from_dict(meta.get("config"))
    except InputError as exc:
        raise CheckpointError(f"{path}: invalid config in metadata: {exc}") from exc
    tensors = load_tensors(data, path)
    G = _skeleton(config)
    problem = check_names_shapes(tensors, _expected_shapes(config, G))
    if problem:
        raise CheckpointError(f"{path}: tensors do not match the architecture of its config: {problem}")
    bad = sorted(k for k, v in tensors.items() if not v.is_floating_point())
    if bad:
        raise CheckpointError(f"{path}: non-floating-point tensors: {', '.join(bad[:5])}")
    tensors = {k: v.float() for k, v in tensors.items()}  # float16 shipping copies -> float32
    w_mean, w_std = tensors.pop("w_mean"), tensors.pop("w_std")
    if not (torch.isfinite(w_mean).all() and torch.isfinite(w_std).all() and (w_std > 0).all()):
        raise CheckpointError(f"{path}: w_mean/w_std must be finite with w_std > 0")
    G.load_state_dict(take_prefix(tensors, "G"), strict=True, assign=True)
    G = G.to(device).eval().requires_grad_(False)
    return Prior(
        G=G,
        w_mean=w_mean.to(device),
        w_std=w_std.to(device),
        config=config,
        meta=meta,
        sha256=hashlib.sha256(data).hexdigest(),
        path=path,
    )


@torch.no_grad()
def compute_w_stats(
    G: Generator, n: int = 10000, batch: int = 1000, seed: int = 0, device: str | torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Mean and std of w = mapping(z) (no truncation) over ``n`` seeded random z.

    Args:
        G: generator (its ``mapping`` is used).
        n: number of samples.
        batch: samples per mapping call.
        seed: seed of the z sampler.
        device: where to run (default: the mapping's device).

    Returns:
        ``(w_mean, w_std)``, each ``[w_dim]`` float32 on the CPU (std is unbiased).
    """
    if n < 2 or batch < 1:
        raise InputError(f"compute_w_stats needs n >= 2 and batch >= 1, got n={n}, batch={batch}")
    device = torch.device(device) if device is not None else G.mapping.w_avg.device
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(G.w_dim, dtype=torch.float64)
    total_sq = torch.zeros(G.w_dim, dtype=torch.float64)
    done = 0
    while done < n:
        b = min(batch, n - done)
        z = torch.randn(b, G.z_dim, generator=gen).to(device)
        w = G.mapping(z, num_ws=None, update_emas=False).to("cpu", torch.float64)
        total += w.sum(0)
        total_sq += w.square().sum(0)
        done += b
    mean = total / n
    var = (total_sq / n - mean.square()).clamp_min(0) * (n / (n - 1))
    return mean.float(), var.sqrt().float()


# ----------------------------------------------------------------------------------------------
# Training state


def save_training_state(
    path: str | Path, tensors: Mapping[str, Tensor], meta: Mapping[str, Any], force: bool = False
) -> Path:
    """Write named tensors plus JSON ``meta`` as one safetensors file (atomically).

    Raises:
        InputError: ``meta`` is not JSON-serialisable.
        OutputExistsError: ``path`` exists and ``force`` is false.
    """
    try:
        text = json.dumps({"format": TRAIN_STATE_FORMAT, "format_version": FORMAT_VERSION, "meta": dict(meta)})
    except (TypeError, ValueError) as exc:
        raise InputError(f"training-state metadata is not JSON-serialisable: {exc}") from exc
    return save_safetensors(Path(path), dict(tensors), {"xfit": text}, force)


def load_training_state(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_training_state`: ``(tensors, meta)`` on the CPU.

    Raises:
        CheckpointError: missing, not safetensors, foreign, of an unknown format/version, or
            holding NaN or Inf.
    """
    path = Path(path)
    data, header = read_safetensors(path, "training state")
    meta = xfit_meta(header, path, TRAIN_STATE_FORMAT)
    tensors = load_tensors(data, path)
    check_finite(tensors, path)
    return tensors, meta.get("meta", {})


def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str = "opt") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors and JSON.

    Tensor state entries become ``{prefix}.state.{param_index}.{name}`` (e.g.
    ``opt_g.state.3.exp_avg``); tensors inside param groups ``{prefix}.group.{i}.{key}``.

    Returns:
        ``(tensors, meta)`` where ``meta`` is JSON-able and names every tensor it refers to.

    Raises:
        InputError: a non-tensor value that JSON cannot hold.
    """
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    state_meta: dict[str, dict[str, Any]] = {}
    for idx, entries in sd["state"].items():
        item: dict[str, Any] = {}
        for name, value in entries.items():
            if isinstance(value, Tensor):
                key = f"{prefix}.state.{idx}.{name}"
                tensors[key] = value.detach().to("cpu", copy=True).contiguous()
                item[name] = {"tensor": key}
            else:
                item[name] = {"value": value}
        state_meta[str(idx)] = item
    groups = []
    for i, group in enumerate(sd["param_groups"]):
        g: dict[str, Any] = {}
        for name, value in group.items():
            if isinstance(value, Tensor):
                key = f"{prefix}.group.{i}.{name}"
                tensors[key] = value.detach().to("cpu", copy=True).contiguous()
                g[name] = {"tensor": key}
            else:
                g[name] = {"value": value, "tuple": isinstance(value, tuple)}
        groups.append(g)
    meta = {"prefix": prefix, "state": state_meta, "param_groups": groups}
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        name = type(opt).__name__
        raise InputError(f"optimizer state of {name} is not JSON-able: {exc}") from exc
    return tensors, meta


def restore_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
    """Load a state flattened by :func:`flatten_optimizer` into ``opt`` (same param layout).

    Raises:
        CheckpointError: a referenced tensor is missing or the state does not fit ``opt``.
    """

    def value(entry: Mapping[str, Any]) -> Any:
        if "tensor" in entry:
            if entry["tensor"] not in tensors:
                raise CheckpointError(f"optimizer tensor {entry['tensor']!r} is missing")
            return tensors[entry["tensor"]]
        v = entry["value"]
        return tuple(v) if entry.get("tuple") else v

    try:
        state = {int(idx): {name: value(e) for name, e in item.items()} for idx, item in meta["state"].items()}
        groups = [{name: value(e) for name, e in g.items()} for g in meta["param_groups"]]
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot restore optimizer {type(opt).__name__}: {exc}") from exc


def capture_rng_state(prefix: str = "rng") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Torch (CPU and CUDA), NumPy and Python RNG states as ``(tensors, JSON meta)``.

    Torch states are uint8 tensors ``{prefix}.torch`` and ``{prefix}.cuda.{i}``.
    """
    tensors = {f"{prefix}.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{prefix}.cuda.{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global state is what resumes)
    version, internal, gauss_next = random.getstate()
    meta = {
        "prefix": prefix,
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    return tensors, meta


def restore_rng_state(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
    """Restore states captured by :func:`capture_rng_state` (CUDA only where available)."""
    prefix = meta["prefix"]
    torch.set_rng_state(tensors[f"{prefix}.torch"])
    cuda_states = take_prefix(tensors, f"{prefix}.cuda")
    cuda = [cuda_states[k] for k in sorted(cuda_states, key=int)]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002 (as saved)
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


# ----------------------------------------------------------------------------------------------
# Compact training snapshot


def save_snapshot(
    path: str | Path,
    modules: Mapping[str, nn.Module] | Mapping[str, Tensor],
    *,
    step: int,
    kimg: float,
    config: PriorConfig,
    world_size: int = 1,
    dtype: str = "float16",
    summary: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Write a compact, resumable snapshot of the networks (atomically).

    Args:
        path: output ``.safetensors`` file.
        modules: ``{"G": G, "G_ema": G_ema, "D": D}`` modules, or already flattened tensors
            ``{"G.<key>": tensor, ...}`` (e.g. from a training state file).
        step, kimg: training progress.
        config: the training config (stored; resuming needs the same one).
        dtype: ``float16`` or ``bfloat16`` for the floating-point tensors.
        summary: JSON-able training summary to carry along (e.g. levels and data counts).

    Raises:
        InputError: unknown dtype, missing networks, or metadata that JSON cannot hold.
        OutputExistsError: ``path`` exists and ``force`` is false.
    """
    if dtype not in SNAPSHOT_DTYPES:
        raise InputError(f"snapshot dtype must be one of {', '.join(SNAPSHOT_DTYPES)}, got {dtype!r}")
    half = SNAPSHOT_DTYPES[dtype]
    tensors: dict[str, Tensor] = {}
    for name in ("G", "G_ema", "D"):
        if name not in modules and not any(k.startswith(name + ".") for k in modules):
            raise InputError(f"snapshot needs the {name} network")
    for key, value in modules.items():
        if isinstance(value, nn.Module):
            tensors.update(state_dict_tensors(value, key))
        elif key.split(".")[0] in ("G", "G_ema", "D"):
            tensors[key] = value.detach().to("cpu", copy=True).contiguous()
    tensors = {k: v.to(half) if v.is_floating_point() and not k.endswith("w_avg") else v for k, v in tensors.items()}
    meta = {
        "format": SNAPSHOT_FORMAT,
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "kimg": float(kimg),
        "world_size": int(world_size),
        "dtype": dtype,
        "config": config.to_dict(),
        "summary": dict(summary or {}),
    }
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise InputError(f"snapshot metadata is not JSON-serialisable: {exc}") from exc
    return save_safetensors(Path(path), tensors, {"xfit": text}, force)


def load_snapshot(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a snapshot: ``(float32 tensors "G.*", "G_ema.*", "D.*", metadata)`` (no pickle).

    Raises:
        CheckpointError: missing, not safetensors, foreign, of an unknown format/version, with
            an invalid config, or holding NaN or Inf.
    """
    path = Path(path)
    data, header = read_safetensors(path, "training snapshot")
    meta = xfit_meta(header, path, SNAPSHOT_FORMAT)
    try:
        PriorConfig.from_dict(meta.get("config"))
    except InputError as exc:
        raise CheckpointError(f"{path}: invalid config in metadata: {exc}") from exc
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in load_tensors(data, path).items()}
    check_finite(tensors, path)
    return tensors, meta


def snapshot_config(path: str | Path) -> PriorConfig:
    """The config a snapshot was trained with (what ``--resume-from`` must use)."""
    return PriorConfig.from_dict(load_snapshot(path)[1]["config"])


def levels_seen(prior_meta: Mapping[str, Any]) -> set[int]:
    """VerSe labels of the levels a prior was trained on (from :attr:`Prior.meta` or its
    ``training`` summary); empty when the prior records none (trained before provenance, so
    unknown: callers should say so rather than warn about a level)."""
    from ..levels import level_label

    training = prior_meta.get("training", prior_meta) if isinstance(prior_meta, Mapping) else {}
    counts = training.get("levels") if isinstance(training, Mapping) else None
    if not isinstance(counts, Mapping):
        return set()
    out = set()
    for name, n in counts.items():
        try:
            if int(n) > 0:
                out.add(level_label(str(name)))
        except (InputError, TypeError, ValueError):
            continue
    return out
