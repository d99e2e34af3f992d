"""Settings of test-time fitting (:class:`FitConfig`), read from ``xfit/configs/fit.yaml``.

Every field has a default here; ``xfit/configs/fit.yaml`` (shipped inside the package) repeats them
so that the defaults are visible and editable in one place (a test checks that the two agree). The whole config is
saved with the fit's outputs (``FitResult.config``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..configs import CONFIG_DIR
from ..devices import AMP_CHOICES
from ..errors import InputError

#: Default config file, shipped inside the package (:mod:`xfit.configs`).
DEFAULT_FIT_CONFIG = CONFIG_DIR / "fit.yaml"

NOISE_INITS = ("zero", "randn")
#: The networks that can start a fit (``init_network``, :mod:`xfit.fitting.hybrid`): those whose
#: output is a CT (TransVert and IGCN output shapes).
INIT_NETWORKS = ("xctrsnet", "ear", "x2ct-cnn", "x2ct-gan")


def network_parts(name: str) -> list[str]:
    """The networks of an ``init_network``: ``"xctrsnet@style+x2ct-cnn"`` ->
    ``["xctrsnet@style", "x2ct-cnn"]`` (a ``+`` joins networks whose volumes are averaged)."""
    return str(name).split("+")


def _sound_network(name: object) -> bool:
    """``NAME`` or ``NAME@TAG`` with NAME in :data:`INIT_NETWORKS` (the tag of a shipped variant),
    or several of them joined by ``+`` (each once)."""
    from ..baselines.common import is_tag, split_tag

    if not isinstance(name, str):
        return False
    parts = network_parts(name)
    if len(set(parts)) != len(parts):
        return False
    return all(b in INIT_NETWORKS and (t is None or is_tag(t)) for b, t in map(split_tag, parts))


#: Intensity maps between a re-projection and its X-ray that the data term is invariant to.
INTENSITY_MAPS = ("affine", "monotone")
#: Data terms: multi-scale NCC, or its mean with the multi-scale NCC of gradient magnitudes.
DATA_TERMS = ("ncc", "ncc+gradient")
#: Voxel weights of the data-consistency step (:mod:`xfit.fitting.consistency`).
CONSISTENCY_WEIGHTS = ("edges+gap", "edges", "flat")


@dataclass
class FitConfig:
    """Optimisation settings of :func:`xfit.fitting.fit`.

    Attributes:
        steps: steps per restart: Adam steps, or with ``optimizer: lbfgs`` loss evaluations of
            L-BFGS (each one generator pass, the cost of one Adam step).
        optimizer: ``adam`` or ``lbfgs``: the optimiser of the coarse and fine stages (the align
            and residual stages always use Adam). L-BFGS (strong-Wolfe line search, no learning
            rate) suits the deterministic MAP objective when the start is near the answer.
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
            instead of random perturbations of restart 0's start (0 = off). Not when the fit
            starts from a network's volume: its short warm schedule is for starts near the
            answer, so restarts 1.. then start near restart 0's (``init_perturbation``).
        optimize_noise: optimise the per-layer noise maps as well as W+.
        lambda_w: weight of the Gaussian prior on every w of W+.
        lambda_c: weight of the von Mises (cosine) prior between pairs of w's.
        lambda_n: weight of the standard-normal prior on the noise maps.
        lambda_perceptual: weight of the perceptual term (LPIPS or its fallback).
        perceptual_net: LPIPS network: ``"alex"`` (the one xfit implements, :func:`xfit.metrics.lpips_alex`).
        scales: avg-pool factors of the multi-scale NCC data term.
        coarse_fraction: first fraction of steps fitted at half detector resolution.
        coarse_generator: during those steps also stop the generator one block early (the skip
            output at half the volume resolution): about 4x cheaper per step than the full
            generator (measured for the 64^3 prior, bench/reconstruct.py).
        footprint: the data term only uses pixels whose ray crosses at least this fraction of the
            longest chord through the prior's field of view (0 = every pixel). Without it the
            sharp silhouette of the field-of-view cube dominates the correlation.
        background: fit a smooth additive background per view (for X-rays larger than the FOV):
            ``true``, ``false``, or ``auto`` (on when the X-rays vary outside the cube's shadow,
            :func:`xfit.fitting.optimize.needs_background`; off for crop-sized X-rays, where a
            background can only stand in for anatomy that the volume should explain).
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
        transform: fit a global similarity transform of the volume (rotation about three axes,
            translation, isotropic scale; :mod:`xfit.fitting.transform`) with W+ and noise.
        lr_transform: its Adam learning rate (units of its sigmas).
        align_steps: with ``transform``, steps of a first stage that fits the transform (and the
            background) alone, W+ and noise frozen at their start: global registration before
            the shape moves.
        transform_sigma_deg, transform_sigma_mm, transform_sigma_log_scale: std of its Gaussian
            prior on each rotation-vector component (deg), each translation (mm) and the log
            of the scale.
        lambda_transform: weight of that prior.
        residual_steps: steps of the last stage that fits a smooth HU residual volume with W+
            and noise frozen (0 = off; :mod:`xfit.fitting.residual`).
        residual_grid: control points per side of the residual.
        lr_residual: its Adam learning rate (units of 100 HU).
        lambda_residual: weight of its size + curvature penalty.
        step_mm: projector ray-marching step (``None``: one voxel of the rendered grid; on a
            64^3 phantom crop the DRRs differ from half-voxel steps by < 0.03 % of their maximum,
            and the projector forward+backward is twice as fast).
        ensemble: return the mean over the restarts (HU and label probability) of those whose
            data term is within ``ensemble_tol`` of the best one's, instead of the best restart
            alone: an estimate of the posterior mean (MMSE) rather than one posterior mode. The
            restarts agree where the X-rays decide and differ where they do not, so the mean
            drops the texture that the X-rays cannot pin down.
        ensemble_tol: relative data-term tolerance of the ensemble (0.2: within 20 % of the best).
        consistency_steps: CGLS iterations of the data-consistency step after the fit (0 = off;
            :mod:`xfit.fitting.consistency`): a correction off the prior's range that makes the
            volume's projections agree with the X-rays. Skipped, and said so in the report, with
            a monotone intensity map, ``mask_saturated``, ``refine_pose`` or ``transform``, and
            when a view's re-projection explains its X-ray with an NCC below
            :data:`~xfit.fitting.consistency.MIN_VIEW_NCC` (not line integrals). With a fitted
            background (whole-torso X-rays) it explains the footprint's residual after the
            background, high-passed (``consistency_highpass_px``).
        consistency_highpass_px: with a fitted background, the Gaussian (detector pixels) whose
            local mean is taken out of the step's residual: the background's misfit, left to the
            background (0: none; :func:`~xfit.fitting.consistency.highpass`).
        consistency_weights: ``edges+gap`` (the correction goes where the start network's
            volume has edges and where the fit and that volume disagree), ``edges`` (edges only;
            of the fit's own volume without a start network) or ``flat`` (spread evenly along each
            ray); :func:`~xfit.fitting.consistency.step_weights`.
        blend_start: weight of the start network's volume in the output, mixed with the fitted
            volume before the data-consistency step (0: the fitted volume alone; needs a network
            start): two estimates whose errors are partly independent, averaged (0.5: +0.34 to
            +0.47 dB and +0.05 to +0.08 SSIM on development phantoms with the unfinished
            network; ``docs/fit.md``, "The output as the mean of two estimates"). 0.75, the
            default since the shipped networks were finished: the better the network, the more
            weight its volume deserves (``docs/fit.md``, "A finished start network").
        blend_start_whole_body: ``blend_start`` instead when the fit starts from
            ``init_network_whole_body`` (X-rays of a whole torso); ``null``: ``blend_start``
            always. Through a whole torso the fit's volume is the weaker of the two estimates
            (0.75, the default: +0.025 SSIM in 10 of 10 development phantoms, +0.03 dB, -0.001
            Dice; ``docs/fit.md``, "Through a whole torso, the network deserves more weight").
        blend_labels: with ``blend_start``, also mix the vertebra label's probability: the
            prior's label channel and the start network's segmentation probability at the same
            weight, thresholded at 0.5 (false: the labels are the prior's alone; true, the
            default since 2026-12-07: +0.006 Dice, better in 9 of 10 development phantoms,
            ``bench/label_levers.py``).
        init_network: ``null``, or a network with CT output (``xctrsnet``, ``ear``, ``x2ct-cnn``,
            ``x2ct-gan``; ``NAME@TAG`` for a shipped variant, e.g. ``xctrsnet@style``: X-CTRSNet
            fine-tuned on clinical-style radiographs too) whose reconstruction of the
            X-rays, inverted into W+ at the generator's coarse resolution
            (:mod:`xfit.fitting.hybrid`), starts restart 0 instead of ``w_mean`` (an explicit
            ``w_init`` wins). ``A+B`` starts from the mean of several networks' volumes (and the
            first one's vertebra mask); the default since 2026-12-07 late evening is
            ``xctrsnet@style+x2ct-cnn@style`` (+0.23 dB on ideal DRRs, +0.26 dB on the clinical
            presets, development phantoms 100-119; ``docs/fit.md``). A user's ``init_checkpoint``
            needs a single network (``xfit reconstruct --checkpoint`` keeps the first one).
        init_network_whole_body: the network that starts the fit instead of ``init_network`` when
            the X-rays are of a whole torso, not of the cube alone (no view shows the cube's
            silhouette, :func:`xfit.fitting.optimize.shows_torso`), as uncollimated radiographs are
            (default ``xctrsnet@wholebody``: X-CTRSNet fine-tuned on whole-torso X-rays too,
            :mod:`xfit.baselines.wholebody`); ``null``: ``init_network`` for every input. Unused
            without ``init_network`` or with a given ``init_checkpoint`` (the user's network).
        init_network_other_angles: the network that starts the fit instead when the views'
            angles are not those the chosen network was trained on (beyond its nominal angles +- its
            trained jitter, :func:`xfit.baselines.infer.angles_off`), e.g. a 60 degree pair for a
            network trained at 0 and 90 (default ``xctrsnet@jitter+x2ct-cnn@jitter``: the mean of
            X-CTRSNet and X2CT-CNN trained with the second view anywhere in 40-140 degrees). When
            it does not cover the angles either, or is ``null``, no network starts the fit: it
            starts at ``w_mean`` without an anchor, since a network fed views it was not trained on
            pulls the fit toward a wrong volume (docs/fit.md, "Non-orthogonal views"). Unused
            with a given ``init_checkpoint``.
        init_network_angle_tolerance_deg: how far (deg) beyond a network's trained angles (+- its
            jitter) a view may be and still count as trained: small errors of a nominal angle cost
            a network little (X-CTRSNet, trained at exactly 0 and 90: -0.1 dB at 1 degree off, -0.6
            at 2, -3.1 at 5; ``results/geometry``).
        init_network_steps: steps of that inversion (0: no inversion; the fit starts at
            ``w_mean`` and the network's volume acts only through the anchor terms).
        init_network_resolution: generator resolution of that inversion (``null``: the coarse
            stage's, half the prior's; a smaller power of two is cheaper and coarser).
        warm_steps, warm_lr, warm_coarse_fraction, warm_optimizer: ``steps``, ``lr``,
            ``coarse_fraction`` and ``optimizer`` of
            a fit that starts from a network's volume inverted into W+ (``init_network``): a start
            near the answer wants a few small steps at full resolution, where a start at
            ``w_mean`` wants many large ones from coarse to fine. ``null``: the cold values.
        init_network_fine_steps: steps that continue the inversion with the full-resolution
            generator, from where the coarse one ends (0: none). The coarse inversion leaves the
            finest layers' styles where they started; these steps fit them to the network's
            volume before the X-rays are fitted.
        init_network_optimizer: ``adam`` or ``lbfgs``: the optimiser of both parts of that
            inversion (:func:`xfit.fitting.invert.invert_volume`); with ``lbfgs`` the two step
            counts are L-BFGS iterations (at most 1.25 generator passes each).
        init_network_label_weight: weight of the label BCE against the network's vertebra mask,
            beside the intensity MSE against its volume, in that inversion (0: its HU alone).
        lambda_anchor: weight of the anchor's intensity term: the mean squared difference, on the
            prior's unit scale, between the generated volume and that network's volume during the
            whole fit (:func:`xfit.fitting.objective.anchor_term`; needs ``init_network``).
        lambda_anchor_label: weight of the anchor's label term: the BCE of the generated label
            channel against the network's vertebra mask. The X-rays see the label channel only
            through the anatomy the generator ties to it, so the network's mask is most of what
            decides it.
        amp: bfloat16 autocast of the generator (``auto``: on CUDA, and on a CPU with native
            bf16 units, AMX or AVX512-BF16, where it measured about 2x faster for the generator's
            forward + backward; ``bf16``; ``off``). Its output differs from float32 by about
            1 HU on average; the projector and the loss stay float32. The resolved choice is
            in ``FitResult.config["amp_resolved"]``.
        intensity_map: how a re-projection may differ from its X-ray in intensity: ``affine``
            (a gain and an offset, which the NCC data term ignores) or ``monotone`` (a per-view
            monotone piecewise-linear map with ``intensity_knots`` knots, fitted jointly with W+
            and applied to each re-projection before the data term: a vendor's contrast curve,
            :func:`xfit.fitting.objective.monotone_map`).
        intensity_knots: knots of that map (over -3..3 standard deviations of the re-projection).
        lr_intensity_map: Adam learning rate of its log-slopes.
        lambda_intensity_map: weight of the Gaussian prior on those log-slopes (0 = identity map).
        mask_saturated: drop from the data term the pixels of each X-ray at its lowest or highest
            value (saturated anatomy, collimated borders and burned-in markers of processed
            radiographs), one pixel around them, and constant border rows and columns
            (:func:`xfit.fitting.objective.saturation_mask`).
        data_term: ``ncc`` (multi-scale NCC) or ``ncc+gradient`` (the mean of it and the
            multi-scale NCC of gradient magnitudes, which weighs edges over smooth intensity).
        seed: seed of restart perturbations and random noise initialisation.
    """

    steps: int = 80
    optimizer: str = "adam"
    restarts: int = 1
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
    background: bool | str = "auto"
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
    transform: bool = False
    lr_transform: float = 0.05
    align_steps: int = 20
    transform_sigma_deg: float = 10.0
    transform_sigma_mm: float = 5.0
    transform_sigma_log_scale: float = 0.1
    lambda_transform: float = 0.01
    residual_steps: int = 0
    residual_grid: int = 8
    lr_residual: float = 0.05
    lambda_residual: float = 1.0
    step_mm: float | None = None
    ensemble: bool = False
    ensemble_tol: float = 0.2
    consistency_steps: int = 3
    consistency_weights: str = "edges+gap"
    consistency_highpass_px: float = 3.0
    blend_start: float = 0.75
    blend_start_whole_body: float | None = 0.75
    blend_labels: bool = True
    init_network: str | None = "xctrsnet@style+x2ct-cnn@style"
    init_network_whole_body: str | None = "xctrsnet@wholebody"
    init_network_other_angles: str | None = "xctrsnet@jitter+x2ct-cnn@jitter"
    init_network_angle_tolerance_deg: float = 3.0
    init_network_steps: int = 30
    init_network_resolution: int | None = None
    init_network_fine_steps: int = 30
    init_network_optimizer: str = "lbfgs"
    init_network_label_weight: float = 0.1
    warm_steps: int | None = 20
    warm_lr: float | None = None
    warm_coarse_fraction: float | None = 0.0
    warm_optimizer: str | None = None
    lambda_anchor: float = 5.0
    lambda_anchor_label: float = 5.0
    amp: str = "auto"
    intensity_map: str = "affine"
    intensity_knots: int = 8
    lr_intensity_map: float = 0.1
    lambda_intensity_map: float = 0.001
    mask_saturated: bool = False
    data_term: str = "ncc"
    seed: int = 0

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["scales"] = list(self.scales)
        return d

    def warm(self) -> FitConfig:
        """These settings for a fit that starts from a network's volume: ``warm_steps``,
        ``warm_lr``, ``warm_coarse_fraction`` and ``warm_optimizer`` in place of ``steps``, ``lr``,
        ``coarse_fraction`` and ``optimizer`` where they are set."""
        pairs = (
            ("steps", "warm_steps"),
            ("lr", "warm_lr"),
            ("coarse_fraction", "warm_coarse_fraction"),
            ("optimizer", "warm_optimizer"),
        )
        changes = {cold: getattr(self, warm) for cold, warm in pairs if getattr(self, warm) is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def transform_sigmas(self):
        """The :class:`~xfit.fitting.transform.TransformSigmas` of these settings."""
        from .transform import TransformSigmas

        return TransformSigmas(self.transform_sigma_deg, self.transform_sigma_mm, self.transform_sigma_log_scale)


#: Optimisers of the inversion of a volume into W+ (:func:`xfit.fitting.invert.invert_volume`)
#: and of the X-ray fit's coarse and fine stages (``optimizer``, ``warm_optimizer``).
INVERSION_OPTIMIZERS = ("adam", "lbfgs")
#: Documented ranges (inclusive) of the integer settings.
INT_RANGES = {
    "steps": (1, 1_000_000),
    "restarts": (1, 1024),
    "init_samples": (0, 100_000),
    "background_grid": (2, 256),
    "early_stop_window": (1, 1_000_000),
    "max_divergences": (0, 100),
    "residual_steps": (0, 1_000_000),
    "consistency_steps": (0, 1000),
    "align_steps": (0, 1_000_000),
    "residual_grid": (2, 64),
    "seed": (0, 2**32 - 1),
    "init_network_steps": (0, 100_000),
    "init_network_fine_steps": (0, 100_000),
    "intensity_knots": (3, 64),
}
#: Documented ranges (inclusive) of the float settings.
FLOAT_RANGES = {
    "lr": (0.0, 10.0),
    "lr_rampup": (0.0, 1.0),
    "lr_rampdown": (0.0, 1.0),
    "init_perturbation": (0.0, 100.0),
    "consistency_highpass_px": (0.0, 1000.0),
    "blend_start": (0.0, 1.0),
    "init_network_label_weight": (0.0, 1e6),
    "lambda_w": (0.0, 1e6),
    "lambda_c": (0.0, 1e6),
    "lambda_n": (0.0, 1e6),
    "lambda_perceptual": (0.0, 1e6),
    "coarse_fraction": (0.0, 1.0),
    "footprint": (0.0, 1.0),
    "lambda_background": (0.0, 1e6),
    "early_stop_tol": (0.0, 1.0),
    "lr_pose": (0.0, 100.0),
    "pose_sigma_deg": (0.0, 180.0),
    "pose_sigma_mm": (0.0, 1000.0),
    "lambda_pose": (0.0, 1e6),
    "lr_transform": (0.0, 10.0),
    "transform_sigma_deg": (0.0, 90.0),
    "transform_sigma_mm": (0.0, 1000.0),
    "transform_sigma_log_scale": (0.0, 2.0),
    "lambda_transform": (0.0, 1e6),
    "lr_residual": (0.0, 10.0),
    "lambda_residual": (0.0, 1e6),
    "ensemble_tol": (0.0, 100.0),
    "lambda_anchor": (0.0, 1e6),
    "lambda_anchor_label": (0.0, 1e6),
    "lr_intensity_map": (0.0, 10.0),
    "lambda_intensity_map": (0.0, 1e6),
    "init_network_angle_tolerance_deg": (0.0, 180.0),
}
#: Settings that must be > 0 (not just >= 0).
POSITIVE = (
    "lr",
    "pose_sigma_deg",
    "pose_sigma_mm",
    "transform_sigma_deg",
    "transform_sigma_mm",
    "transform_sigma_log_scale",
)
BOOLS = (
    "optimize_noise",
    "refine_pose",
    "coarse_generator",
    "transform",
    "ensemble",
    "mask_saturated",
    "blend_labels",
)
MAX_SCALE = 64
MAX_STEP_MM = 100.0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate(cfg: FitConfig) -> None:
    """Typed schema: integers and numbers are never booleans or strings, every number is finite
    and in its documented range (:data:`INT_RANGES`, :data:`FLOAT_RANGES`), booleans are booleans."""

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise InputError(f"fit config: {msg}")

    for name, (lo, hi) in INT_RANGES.items():
        value = getattr(cfg, name)
        need(_is_int(value), f"{name} must be an integer, got {value!r}")
        need(lo <= value <= hi, f"{name} must be in [{lo}, {hi}], got {value}")
    for name, (lo, hi) in FLOAT_RANGES.items():
        value = getattr(cfg, name)
        need(_is_number(value) and math.isfinite(value), f"{name} must be a finite number, got {value!r}")
        need(lo <= value <= hi, f"{name} must be in [{lo:g}, {hi:g}], got {value!r}")
        object.__setattr__(cfg, name, float(value))
    for name in POSITIVE:
        need(getattr(cfg, name) > 0, f"{name} must be > 0, got {getattr(cfg, name)!r}")
    need(
        isinstance(cfg.noise_init, str) and cfg.noise_init in NOISE_INITS,
        f"noise_init must be one of {', '.join(NOISE_INITS)}, got {cfg.noise_init!r}",
    )
    need(
        isinstance(cfg.perceptual_net, str) and cfg.perceptual_net == "alex",
        f"perceptual_net must be 'alex' (the LPIPS network xfit implements), got {cfg.perceptual_net!r}",
    )
    for name in BOOLS:
        value = getattr(cfg, name)
        need(isinstance(value, bool), f"{name} must be true or false, got {value!r}")
    for key in ("init_network", "init_network_whole_body", "init_network_other_angles"):
        value = getattr(cfg, key)
        need(
            value is None or _sound_network(value),
            f"{key} must be null or one of {', '.join(INIT_NETWORKS)} (NAME@TAG for a shipped "
            f"variant, e.g. xctrsnet@style; A+B for the mean of two networks' volumes), got {value!r}",
        )
    for key in ("optimizer", "init_network_optimizer", "warm_optimizer"):
        value = getattr(cfg, key)
        need(
            (value is None and key == "warm_optimizer") or (isinstance(value, str) and value in INVERSION_OPTIMIZERS),
            f"{key} must be one of {', '.join(INVERSION_OPTIMIZERS)}"
            f"{' or null' if key == 'warm_optimizer' else ''}, got {value!r}",
        )
    need(
        isinstance(cfg.amp, str) and cfg.amp in AMP_CHOICES,
        f"amp must be one of {', '.join(AMP_CHOICES)}, got {cfg.amp!r}",
    )
    need(
        isinstance(cfg.intensity_map, str) and cfg.intensity_map in INTENSITY_MAPS,
        f"intensity_map must be one of {', '.join(INTENSITY_MAPS)}, got {cfg.intensity_map!r}",
    )
    need(
        isinstance(cfg.consistency_weights, str) and cfg.consistency_weights in CONSISTENCY_WEIGHTS,
        f"consistency_weights must be one of {', '.join(CONSISTENCY_WEIGHTS)}, got {cfg.consistency_weights!r}",
    )
    need(
        isinstance(cfg.data_term, str) and cfg.data_term in DATA_TERMS,
        f"data_term must be one of {', '.join(DATA_TERMS)}, got {cfg.data_term!r}",
    )
    need(
        isinstance(cfg.background, bool) or cfg.background == "auto",
        f"background must be true, false or auto, got {cfg.background!r}",
    )
    scales = cfg.scales
    need(
        isinstance(scales, (list, tuple))
        and len(scales) > 0
        and all(_is_int(s) and 1 <= s <= MAX_SCALE for s in scales),
        f"scales must be a non-empty list of integers in [1, {MAX_SCALE}], got {scales!r}",
    )
    cfg.scales = tuple(scales)
    for name, lo, hi, integer in (
        ("warm_steps", 1, 1_000_000, True),
        ("warm_lr", 0.0, 10.0, False),
        ("warm_coarse_fraction", 0.0, 1.0, False),
        ("blend_start_whole_body", 0.0, 1.0, False),
    ):
        value = getattr(cfg, name)
        if value is None:
            continue
        ok = _is_int(value) if integer else _is_number(value) and math.isfinite(value)
        kind = "an integer" if integer else "a number"
        need(ok and lo <= value <= hi, f"{name} must be null or {kind} in [{lo:g}, {hi:g}], got {value!r}")
        need(name != "warm_lr" or value > 0, f"warm_lr must be > 0, got {value!r}")
        if not integer:
            object.__setattr__(cfg, name, float(value))
    r = cfg.init_network_resolution
    need(
        r is None or (_is_int(r) and 4 <= r <= 4096 and r & (r - 1) == 0),
        f"init_network_resolution must be null or a power of two >= 4, got {r!r}",
    )
    if cfg.step_mm is not None:
        need(
            _is_number(cfg.step_mm) and math.isfinite(cfg.step_mm) and 0 < cfg.step_mm <= MAX_STEP_MM,
            f"step_mm must be null or a number in (0, {MAX_STEP_MM:g}], got {cfg.step_mm!r}",
        )
        cfg.step_mm = float(cfg.step_mm)


def fit_config_from_dict(data: Mapping[str, Any]) -> FitConfig:
    """Build a :class:`FitConfig`; unknown keys raise :class:`InputError`."""
    if not isinstance(data, Mapping):
        raise InputError(f"fit config must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(FitConfig)}
    unknown = sorted((k for k in data if k not in known), key=str)
    if unknown:
        raise InputError(f"unknown fit config key(s): {', '.join(map(str, unknown))}")
    return FitConfig(**dict(data))


def load_fit_config(path: str | Path | None = None, **overrides: Any) -> FitConfig:
    """Read a fit config from YAML and apply keyword overrides (``None`` values are ignored).

    Args:
        path: YAML file; ``None`` reads the shipped ``xfit/configs/fit.yaml`` (:data:`DEFAULT_FIT_CONFIG`).
        overrides: field values that win over the file.
    Raises:
        InputError: unreadable file, unknown keys or invalid values (the typed schema of
            :func:`_validate`; the file is read as YAML 1.2 by :func:`xfit.io.read_yaml_mapping`).
    """
    from ..io.text import read_yaml_mapping

    data: dict[str, Any] = {}
    file = Path(path) if path is not None else DEFAULT_FIT_CONFIG
    from_file = path is not None or file.is_file()
    if from_file:
        data.update(read_yaml_mapping(file, "fit config"))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return fit_config_from_dict(data)
    except InputError as exc:
        raise InputError(f"{file}: {exc}" if from_file and path is not None else str(exc)) from exc
