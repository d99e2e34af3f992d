"""Configuration of the 3D StyleGAN2 prior: architecture, data window and training settings.

A :class:`PriorConfig` is read from YAML (``xfit/configs/prior-<name>.yaml``) and travels with every
prior checkpoint as JSON (:meth:`PriorConfig.to_dict` / :meth:`PriorConfig.from_dict`), so a
checkpoint alone is enough to rebuild its generator.

Intensity window: HU values are clamped to ``hu_window`` (default ``(-1000, 1500)``: air to dense
cortical bone) and mapped linearly to ``[-1, 1]`` (:func:`xfit.units.hu_to_unit`), which is what the
generator's channel 0 produces; :func:`xfit.units.unit_to_hu` maps back.

Named configs (``load_config("tiny" | "64" | "128")``) are the ones shipped inside the package,
``xfit/configs/prior-<name>.yaml`` (:func:`xfit.configs.config_path`), so they work from a plain
``pip install .``; any other YAML file is given by its path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configs import config_path as shipped_config_path
from ..errors import InputError
from ..units import HU_WINDOW, hu_to_unit, unit_to_hu  # noqa: F401 (re-exported: the window maps)

#: Names accepted by :func:`load_config` besides a path.
CONFIG_NAMES = ("tiny", "64", "128")


@dataclass
class AugmentConfig:
    """Data augmentation applied to training volumes.

    Attributes:
        flip_lr: randomly mirror left-right (the RAS x axis, voxel axis I).
        rotate_deg: maximum random rotation about the z (superior) axis in degrees.
        shift_vox: maximum random integer shift per axis in voxels.
        intensity: maximum random scale and offset jitter of the unit intensity channel.
    """

    flip_lr: bool = True
    rotate_deg: float = 5.0
    shift_vox: int = 2
    intensity: float = 0.05


@dataclass
class TrainingConfig:
    """Optimisation settings of the GAN training loop (StyleGAN2 defaults where they apply).

    Attributes:
        batch_size: volumes per step.
        g_lr, d_lr: Adam learning rates of the generator and discriminator.
        betas: Adam betas.
        r1_gamma: R1 gradient-penalty weight (grows with the volume size).
        r1_interval: lazy regularisation interval for R1 in steps.
        style_mix_prob: probability of style mixing per batch.
        ema_half_life_kimg: half-life of the generator EMA in thousands of images.
        ema_rampup: EMA ramp-up ratio (``None`` for none), as in StyleGAN2-ADA.
        total_kimg: training length in thousands of images.
        lr_decay_kimg: ``(start, end)`` in thousands of images: the learning rates of G and D
            fall by a half cosine from their full value at ``start`` to ``lr_final`` times it
            at ``end`` and stay there (``None``: constant, as in StyleGAN2).
        lr_final: the fraction of the learning rates left at the end of ``lr_decay_kimg``.
        checkpoint_every: steps between training-state/prior checkpoints.
        sample_every: steps between sample previews.
        seed: global random seed.
        log_every: steps between lines of ``log.jsonl``.
        vertebra_labels: mask values that are vertebrae (a crop is centred on each).
        augment: data augmentation settings.
    """

    batch_size: int = 4
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 1.0
    r1_interval: int = 16
    style_mix_prob: float = 0.9
    ema_half_life_kimg: float = 2.0
    ema_rampup: float | None = 0.05
    total_kimg: float = 50.0
    lr_decay_kimg: tuple[float, float] | None = None
    lr_final: float = 0.1
    checkpoint_every: int = 500
    sample_every: int = 250
    seed: int = 0
    log_every: int = 10
    vertebra_labels: tuple[int, ...] = (1,)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class PriorConfig:
    """Everything needed to build, train and interpret a prior.

    Attributes:
        name: short name (``tiny``, ``64``, ``128`` or anything).
        resolution: output volume side R (power of two, >= 8); volumes are ``[B, C, R, R, R]``.
        spacing_mm: isotropic voxel spacing in mm (field of view = R * spacing_mm).
        hu_window: (low, high) HU mapped linearly to [-1, 1] (clamped).
        label_names: names of the label channels after the intensity channel.
        z_dim, w_dim: latent sizes.
        mapping_layers: fully connected layers of the mapping network.
        mapping_lr_multiplier: learning-rate multiplier of the mapping network (equalized lr).
        w_avg_beta: decay of the tracked mean w used for truncation.
        g_channels: generator width per resolution {4: C4, 8: C8, ..., R: CR}.
        d_channels: discriminator width per resolution, same keys.
        mbstd_group_size, mbstd_num_channels: minibatch standard deviation layer settings.
        training: training-loop settings.
    """

    name: str = "custom"
    resolution: int = 64
    spacing_mm: float = 1.25
    hu_window: tuple[float, float] = HU_WINDOW
    label_names: tuple[str, ...] = ("bone",)
    z_dim: int = 256
    w_dim: int = 256
    mapping_layers: int = 4
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998
    g_channels: dict[int, int] = field(default_factory=lambda: {4: 256, 8: 128, 16: 64, 32: 32, 64: 16})
    d_channels: dict[int, int] = field(default_factory=lambda: {4: 128, 8: 64, 16: 32, 32: 16, 64: 8})
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def out_channels(self) -> int:
        """Generator output channels: intensity plus one logit per label."""
        return 1 + len(self.label_names)

    @property
    def fov_mm(self) -> float:
        """Field of view (side of the cube) in mm."""
        return self.resolution * self.spacing_mm

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dictionary (tuples become lists; channel keys stay ints)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriorConfig:
        """Build and validate a config from a (possibly JSON-decoded) dictionary.

        Raises:
            InputError: unknown keys, wrong types or invalid values.
        """
        return _build(cls, data, "config")


# ----------------------------------------------------------------------------------------------
# Dictionary <-> dataclass


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise InputError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted((k for k in data if k not in fields), key=str)
    if unknown:
        raise InputError(f"unknown key(s) in {where}: {', '.join(map(str, unknown))}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        kwargs[key] = _coerce(key, value, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InputError(f"invalid {where}: {exc}") from exc


_NESTED = {"training": TrainingConfig, "augment": AugmentConfig}
_INT_FIELDS = {
    "resolution",
    "z_dim",
    "w_dim",
    "mapping_layers",
    "mbstd_group_size",
    "mbstd_num_channels",
    "batch_size",
    "r1_interval",
    "checkpoint_every",
    "sample_every",
    "seed",
    "shift_vox",
    "log_every",
}
_FLOAT_FIELDS = {
    "spacing_mm",
    "mapping_lr_multiplier",
    "w_avg_beta",
    "g_lr",
    "d_lr",
    "r1_gamma",
    "style_mix_prob",
    "ema_half_life_kimg",
    "total_kimg",
    "lr_final",
    "rotate_deg",
    "intensity",
}


def _coerce(name: str, value: Any, where: str) -> Any:
    if name in _NESTED:
        return _build(_NESTED[name], value, where)
    if name in _INT_FIELDS:
        return _to_int(value, where)
    if name in _FLOAT_FIELDS:
        return _to_float(value, where)
    if name == "ema_rampup":
        return None if value is None else _to_float(value, where)
    if name == "lr_decay_kimg":
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise InputError(f"{where} must be [start, end] in kimg or null, got {value!r}")
        return (_to_float(value[0], where), _to_float(value[1], where))
    if name in ("hu_window", "betas"):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise InputError(f"{where} must be a pair of numbers, got {value!r}")
        return (_to_float(value[0], where), _to_float(value[1], where))
    if name in ("g_channels", "d_channels"):
        if not isinstance(value, Mapping):
            raise InputError(f"{where} must map resolution -> width, got {value!r}")
        return {_to_int(k, f"{where} key", digits_ok=True): _to_int(v, f"{where}[{k}]") for k, v in value.items()}
    if name == "label_names":
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise InputError(f"{where} must be a list of names, got {value!r}")
        if not all(isinstance(v, str) and v for v in value):
            raise InputError(f"{where} must hold non-empty strings, got {value!r}")
        return tuple(value)
    if name == "flip_lr":
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false, got {value!r}")
        return value
    if name == "vertebra_labels":
        if not isinstance(value, (list, tuple)) or not value:
            raise InputError(f"{where} must be a non-empty list of label values, got {value!r}")
        return tuple(_to_int(v, where) for v in value)
    if name == "name":
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise InputError(f"{where} must be a string, got {value!r}")
        return str(value)
    raise InputError(f"{where}: unsupported key")  # pragma: no cover (fields are listed above)


def _to_int(value: Any, where: str, *, digits_ok: bool = False) -> int:
    """An integer of the typed schema: never a boolean, a fraction or (except the channel-width
    keys, which JSON turns into strings when ``digits_ok``) a string."""
    if isinstance(value, bool):
        raise InputError(f"{where} must be an integer, got {value!r}")
    if isinstance(value, str):
        if digits_ok and value.strip().isdigit() and len(value.strip()) <= 9:
            return int(value)
        raise InputError(f"{where} must be an integer, got {value!r}")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)  # 64.0 from a JSON writer that has no integers
    if not isinstance(value, int):
        raise InputError(f"{where} must be an integer, got {value!r}")
    return value


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where} must be a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError as exc:
        raise InputError(f"{where} must be finite, got a number too large") from exc
    if not math.isfinite(value):
        raise InputError(f"{where} must be finite, got {value}")
    return value


# ----------------------------------------------------------------------------------------------
# Validation


def expected_resolutions(resolution: int) -> list[int]:
    """Resolutions of the synthesis blocks: ``[4, 8, ..., resolution]``."""
    return [2**i for i in range(2, int(math.log2(resolution)) + 1)]


#: Documented upper limits (inclusive) of the config's numbers; see :func:`_check_ranges`.
MAX_RESOLUTION = 1024
RANGES: dict[str, tuple[float, float]] = {
    "spacing_mm": (0.0, 100.0),
    "z_dim": (1, 8192),
    "w_dim": (1, 8192),
    "mapping_layers": (1, 64),
    "mapping_lr_multiplier": (0.0, 100.0),
    "mbstd_group_size": (1, 1024),
    "mbstd_num_channels": (1, 64),
    "training.batch_size": (1, 65536),
    "training.g_lr": (0.0, 10.0),
    "training.d_lr": (0.0, 10.0),
    "training.r1_gamma": (0.0, 1e6),
    "training.r1_interval": (1, 1_000_000),
    "training.ema_half_life_kimg": (0.0, 1e6),
    "training.ema_rampup": (0.0, 1e3),
    "training.total_kimg": (0.0, 1e9),
    "training.lr_final": (0.0, 1.0),
    "training.checkpoint_every": (1, 10**9),
    "training.sample_every": (1, 10**9),
    "training.log_every": (1, 10**9),
    "training.seed": (0, 2**32 - 1),
    "training.augment.rotate_deg": (0.0, 180.0),
    "training.augment.shift_vox": (0, 1024),
    "training.augment.intensity": (0.0, 1.0),
}
#: Channel widths, HU window bounds and label values must lie within these.
MAX_CHANNELS = 8192
HU_LIMITS = (-10000.0, 100000.0)
LABEL_LIMITS = (0, 32767)
MAX_LABEL_NAMES = 64


def _check_ranges(cfg: PriorConfig) -> None:
    for key, (lo, hi) in RANGES.items():
        obj: Any = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        if obj is not None and not lo <= obj <= hi:
            raise InputError(f"{key} must be in [{lo:g}, {hi:g}], got {obj!r}")
    if not all(HU_LIMITS[0] <= v <= HU_LIMITS[1] for v in cfg.hu_window):
        raise InputError(f"hu_window must lie within [{HU_LIMITS[0]:g}, {HU_LIMITS[1]:g}] HU, got {cfg.hu_window}")
    for key in ("g_channels", "d_channels"):
        big = {k: v for k, v in getattr(cfg, key).items() if v > MAX_CHANNELS}
        if big:
            raise InputError(f"{key} widths must be at most {MAX_CHANNELS}, got {big}")
    if len(cfg.label_names) > MAX_LABEL_NAMES:
        raise InputError(f"label_names may name at most {MAX_LABEL_NAMES} channels, got {len(cfg.label_names)}")
    bad = [v for v in cfg.training.vertebra_labels if not LABEL_LIMITS[0] <= v <= LABEL_LIMITS[1]]
    if bad:
        raise InputError(f"training.vertebra_labels must be in [{LABEL_LIMITS[0]}, {LABEL_LIMITS[1]}], got {bad}")


def _validate(cfg: PriorConfig) -> None:
    r = cfg.resolution
    if isinstance(r, bool) or not isinstance(r, int) or r < 8 or r > MAX_RESOLUTION or r & (r - 1):
        raise InputError(f"resolution must be a power of two in [8, {MAX_RESOLUTION}], got {r!r}")
    if not cfg.spacing_mm > 0:
        raise InputError(f"spacing_mm must be > 0, got {cfg.spacing_mm}")
    lo, hi = cfg.hu_window
    if not lo < hi:
        raise InputError(f"hu_window must be (low, high) with low < high, got {cfg.hu_window}")
    if len(cfg.label_names) < 1:
        raise InputError("label_names must name at least one label channel")
    if len(set(cfg.label_names)) != len(cfg.label_names):
        raise InputError(f"label_names must be unique, got {cfg.label_names}")
    for key in ("z_dim", "w_dim", "mapping_layers", "mbstd_group_size", "mbstd_num_channels"):
        if getattr(cfg, key) < 1:
            raise InputError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if not cfg.mapping_lr_multiplier > 0:
        raise InputError(f"mapping_lr_multiplier must be > 0, got {cfg.mapping_lr_multiplier}")
    if not 0 <= cfg.w_avg_beta < 1:
        raise InputError(f"w_avg_beta must be in [0, 1), got {cfg.w_avg_beta}")
    want = expected_resolutions(r)
    for key in ("g_channels", "d_channels"):
        widths = getattr(cfg, key)
        if sorted(widths) != want:
            raise InputError(f"{key} must have exactly the keys {want} for resolution {r}, got {sorted(widths)}")
        bad = {k: v for k, v in widths.items() if v < 1}
        if bad:
            raise InputError(f"{key} widths must be >= 1, got {bad}")
    _validate_training(cfg.training)
    _check_ranges(cfg)


def _validate_training(t: TrainingConfig) -> None:
    positive = (
        "batch_size",
        "g_lr",
        "d_lr",
        "r1_interval",
        "ema_half_life_kimg",
        "total_kimg",
        "checkpoint_every",
        "sample_every",
        "log_every",
    )
    for key in positive:
        if not getattr(t, key) > 0:
            raise InputError(f"training.{key} must be > 0, got {getattr(t, key)}")
    if t.r1_gamma < 0:
        raise InputError(f"training.r1_gamma must be >= 0, got {t.r1_gamma}")
    if not all(0 <= b < 1 for b in t.betas):
        raise InputError(f"training.betas must be in [0, 1), got {t.betas}")
    if not 0 <= t.style_mix_prob <= 1:
        raise InputError(f"training.style_mix_prob must be in [0, 1], got {t.style_mix_prob}")
    if t.lr_decay_kimg is not None and not 0 <= t.lr_decay_kimg[0] < t.lr_decay_kimg[1]:
        raise InputError(
            f"training.lr_decay_kimg must be [start, end] with 0 <= start < end, got {list(t.lr_decay_kimg)}"
        )
    if t.ema_rampup is not None and not t.ema_rampup > 0:
        raise InputError(f"training.ema_rampup must be > 0 or null, got {t.ema_rampup}")
    a = t.augment
    if a.rotate_deg < 0 or a.shift_vox < 0 or a.intensity < 0:
        raise InputError(f"training.augment values must be >= 0, got {a}")


# ----------------------------------------------------------------------------------------------
# Loading


def config_path(name: str) -> Path:
    """Path of the shipped config ``xfit/configs/prior-<name>.yaml`` (:data:`CONFIG_NAMES`).

    Raises:
        InputError: no such shipped config.
    """
    return shipped_config_path(f"prior-{name}.yaml")


def load_config(path_or_name: str | Path) -> PriorConfig:
    """Load a prior config from a YAML file or by name (``tiny``, ``64``, ``128``).

    Raises:
        InputError: missing/unreadable file, invalid YAML, unknown keys (named), or values of
            the wrong type (booleans must be booleans, integers integers, numbers finite) or
            outside their documented ranges (:data:`RANGES`).
    """
    from ..io.text import read_yaml_mapping

    if isinstance(path_or_name, str) and path_or_name in CONFIG_NAMES:
        path = config_path(path_or_name)
    else:
        path = Path(path_or_name)
    if not path.is_file():
        raise InputError(f"config file not found: {path} (names: {', '.join(CONFIG_NAMES)})")
    data = read_yaml_mapping(path, "prior config")  # YAML 1.2 booleans/floats, no duplicate keys
    try:
        return PriorConfig.from_dict(data)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
