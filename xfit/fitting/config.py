"""Settings of test-time fitting (:class:`FitConfig`), read from ``configs/fit.yaml``.

Every field has a default here; ``configs/fit.yaml`` repeats them so that the defaults are
visible and editable in one place (a test checks that the two agree). The whole config is
saved with the fit's outputs (``FitResult.config``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError

#: Default config file (repository copy); missing in an installed wheel, then defaults apply.
DEFAULT_FIT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fit.yaml"

NOISE_INITS = ("zero", "randn")


@dataclass
class FitConfig:
    """Optimisation settings of :func:`xfit.fitting.fit`.

    Attributes:
        steps: Adam steps per restart.
        restarts: independent fits, run batched in one generator call (B = restarts).
        lr: peak Adam learning rate of W+, in units of ``w_std`` (W+ is parametrised as
            ``w_mean + w_std * u``) and of the noise maps.
        lr_rampup: fraction of steps of the linear learning-rate ramp-up (stylegan2-ada: 0.05).
        lr_rampdown: fraction of steps of the cosine ramp-down at the end (stylegan2-ada: 0.25).
        init_perturbation: std (in units of ``w_std``) of the random start of restarts 1.. (restart
            0 always starts at ``w_mean``).
        noise_init: ``"zero"`` (the mode of the noise prior, default) or ``"randn"``.
        init_samples: draw this many random prior samples, score their data term (at the coarse
            stage's resolution, no gradients) and start restarts 1.. from the best of them
            instead of random perturbations of restart 0's start (0 = off).
        optimize_noise: optimise the per-layer noise maps as well as W+.
        lambda_w: weight of the Gaussian prior on every w of W+.
        lambda_c: weight of the von Mises (cosine) prior between pairs of w's.
        lambda_n: weight of the standard-normal prior on the noise maps.
        lambda_perceptual: weight of the perceptual term (LPIPS or its fallback).
        perceptual_net: LPIPS backbone, ``"alex"`` or ``"vgg"``.
        scales: avg-pool factors of the multi-scale NCC data term.
        coarse_fraction: first fraction of steps fitted at half detector resolution.
        coarse_generator: during those steps also stop the generator one block early (the skip
            output at half the volume resolution): about 4x cheaper per step than the full
            generator (measured for the 64^3 prior, bench/reconstruct.py).
        footprint: the data term only uses pixels whose ray crosses at least this fraction of the
            longest chord through the prior's field of view (0 = every pixel). Without it the
            sharp silhouette of the field-of-view cube dominates the correlation.
        background: fit a smooth additive background per view (for X-rays larger than the FOV).
        background_grid: control points per side of the background grid.
        lambda_background: weight of the background size + smoothness penalty.
        early_stop_tol: stop when the relative improvement of every restart's total over
            ``early_stop_window`` steps is below this (0 disables).
        early_stop_window: steps of that window.
        max_divergences: re-runs of one restart (each at half the learning rate) before it is
            given up.
        refine_pose: also fit each view's angle (degrees) and 3D shift (mm).
        lr_pose: Adam learning rate of the pose (degrees and mm per step).
        pose_sigma_deg, pose_sigma_mm: std of the Gaussian prior on the angle and shift corrections.
        lambda_pose: weight of that prior.
        step_mm: projector ray-marching step (``None``: one voxel of the rendered grid; on a
            64^3 phantom crop the DRRs differ from half-voxel steps by < 0.03 % of their maximum,
            and the projector forward+backward is twice as fast).
        seed: seed of restart perturbations and random noise initialisation.
    """

    steps: int = 80
    restarts: int = 2
    lr: float = 0.05
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    init_perturbation: float = 0.5
    noise_init: str = "zero"
    init_samples: int = 16
    optimize_noise: bool = True
    lambda_w: float = 0.1
    lambda_c: float = 0.05
    lambda_n: float = 10.0
    lambda_perceptual: float = 0.0
    perceptual_net: str = "alex"
    scales: tuple[int, ...] = (1, 2, 4)
    coarse_fraction: float = 0.5
    coarse_generator: bool = True
    footprint: float = 0.9
    background: bool = True
    background_grid: int = 4
    lambda_background: float = 0.01
    early_stop_tol: float = 1e-3
    early_stop_window: int = 30
    max_divergences: int = 3
    refine_pose: bool = False
    lr_pose: float = 0.1
    pose_sigma_deg: float = 5.0
    pose_sigma_mm: float = 5.0
    lambda_pose: float = 0.01
    step_mm: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["scales"] = list(self.scales)
        return d


def _validate(cfg: FitConfig) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise InputError(f"fit config: {msg}")

    for name in ("steps", "restarts", "background_grid", "early_stop_window", "seed", "init_samples"):
        value = getattr(cfg, name)
        need(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer")
    need(cfg.steps >= 1, "steps must be >= 1")
    need(cfg.restarts >= 1, "restarts must be >= 1")
    need(cfg.init_samples >= 0, "init_samples must be >= 0")
    need(cfg.background_grid >= 2, "background_grid must be >= 2")
    need(cfg.early_stop_window >= 1, "early_stop_window must be >= 1")
    need(isinstance(cfg.max_divergences, int) and cfg.max_divergences >= 0,
         "max_divergences must be an integer >= 0")
    floats = ("lr", "lr_rampup", "lr_rampdown", "init_perturbation", "lambda_w", "lambda_c",
              "lambda_n", "lambda_perceptual", "coarse_fraction", "footprint", "lambda_background",
              "early_stop_tol", "lr_pose", "pose_sigma_deg", "pose_sigma_mm", "lambda_pose")
    for name in floats:
        value = getattr(cfg, name)
        need(isinstance(value, (int, float)) and not isinstance(value, bool)
             and math.isfinite(value) and value >= 0, f"{name} must be a number >= 0, got {value!r}")
        object.__setattr__(cfg, name, float(value))
    need(cfg.lr > 0, "lr must be > 0")
    need(cfg.pose_sigma_deg > 0 and cfg.pose_sigma_mm > 0, "pose sigmas must be > 0")
    for name in ("lr_rampup", "lr_rampdown", "coarse_fraction", "footprint"):
        need(getattr(cfg, name) <= 1, f"{name} must be in [0, 1]")
    need(cfg.noise_init in NOISE_INITS, f"noise_init must be one of {NOISE_INITS}")
    need(cfg.perceptual_net in ("alex", "vgg"), "perceptual_net must be 'alex' or 'vgg'")
    for name in ("optimize_noise", "background", "refine_pose", "coarse_generator"):
        need(isinstance(getattr(cfg, name), bool), f"{name} must be true or false")
    try:
        scales = tuple(int(s) for s in cfg.scales)
    except (TypeError, ValueError):
        scales = ()
    need(len(scales) > 0 and all(s >= 1 for s in scales), "scales must be integers >= 1")
    cfg.scales = scales
    if cfg.step_mm is not None:
        need(isinstance(cfg.step_mm, (int, float)) and cfg.step_mm > 0, "step_mm must be > 0")
        cfg.step_mm = float(cfg.step_mm)


def fit_config_from_dict(data: Mapping[str, Any]) -> FitConfig:
    """Build a :class:`FitConfig`; unknown keys raise :class:`InputError`."""
    if not isinstance(data, Mapping):
        raise InputError(f"fit config must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(FitConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown fit config key(s): {', '.join(unknown)}")
    return FitConfig(**dict(data))


def load_fit_config(path: str | Path | None = None, **overrides: Any) -> FitConfig:
    """Read a fit config from YAML and apply keyword overrides (``None`` values are ignored).

    Args:
        path: YAML file; ``None`` reads ``configs/fit.yaml`` when present (defaults otherwise).
        overrides: field values that win over the file.
    Raises:
        InputError: unreadable file, unknown keys or invalid values.
    """
    import yaml

    data: dict[str, Any] = {}
    file = Path(path) if path is not None else DEFAULT_FIT_CONFIG
    if path is not None or file.is_file():
        try:
            loaded = yaml.safe_load(file.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read fit config {file}: {exc}") from exc
        if loaded is not None and not isinstance(loaded, Mapping):
            raise InputError(f"fit config {file} must be a YAML mapping")
        data.update(loaded or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    return fit_config_from_dict(data)
