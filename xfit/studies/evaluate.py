"""``xfit evaluate``: every method on every held-out case, a per-case CSV, a summary, a panel.

**Cases.** Held-out phantoms (``phantoms=N``: seeds ``first_seed..``; the shipped prior and
baselines were trained on seeds 1000-1799, the README example is seed 9001), or the vertebra
crops of a CT folder in any layout ``train-prior`` reads (``data=DIR``). The ground truth is
the prior's cube (64³ at 1.25 mm, RAS-aligned) centred on the vertebra, placed at the world
origin, with that vertebra's mask.

**X-rays.** Simulated noiselessly through the crop (or, for phantoms with ``whole_body_fov_mm``,
through the whole torso drawn on a grid of that field of view) with the study views: cone beam,
SDD 1800 mm, SOD 1500 mm, isocentre at the vertebra. What a method is *handed*
(:class:`Observation`) may differ from what made the images: the geometry study hands views with
angle and isocentre errors, the noise study adds Poisson noise, the style study hands processed
radiographs (:mod:`xfit.radiograph`'s clinical presets at ``style_strength``; :func:`observe`).
Every method reconstructs the cube at the world origin, where the truth lies.

**Methods** (:data:`METHODS`): ``fit`` (the method, :func:`xfit.fitting.fit`, started like
``xfit reconstruct``), ``fit-pose`` (the same with ``refine_pose``), ``mean`` (the prior's mean
volume), ``best-of-n`` (of N prior samples, the one whose projections agree best with the
X-rays), ``best-of-n-oracle`` (of the same samples, the one closest to the truth in PSNR: an upper
bound of sample selection that no real method can reach), ``ceiling`` (the prior's W+ and noise
fitted to the 3D truth, :mod:`xfit.fitting.invert`: the oracle upper bound of any reconstruction on
the prior's manifold, 200 Adam steps), ``ceiling-lbfgs`` (the same loss by 120 L-BFGS iterations:
a tighter bound), ``ceiling-hu`` (the same L-BFGS fit to the truth's HU alone, without its mask:
the bound of what attenuation tells the prior, whose label channel then follows the HU), and the
baselines ``x2ct-cnn``,
``x2ct-gan``, ``ear``, ``transvert``, ``xctrsnet``, ``igcn`` (:func:`xfit.baselines.infer.predict`;
IGCN gets the first view only; TransVert and IGCN output a shape, no CT, so only their label
columns are filled). A method name may carry a tag,
``x2ct-cnn@jitter``, to evaluate a second checkpoint of the same method beside the first.

**Metrics** per case and method (:data:`METRICS`): :func:`xfit.metrics.volume_metrics` (HU clipped
to [-1000, 1500], PSNR and SSIM with data range 2500 HU, MAE in HU, vertebra Dice, HD95 and average
symmetric surface distance in mm, EAR's frequency distance on the window scaled to [-1, 1]),
``view_ncc`` (agreement of the re-projection with the images handed to the method, through the
views it was handed, over the whole detector), ``volume_view_ncc`` (the same for the volume alone,
over the central region that the cube covers (:data:`CENTRAL_FRACTION`): a fit whose own volume
explains its X-rays scores like the ceiling; one that leans on a fitted background scores lower)
and ``third_view_ncc`` (agreement of the re-projection with the truth's
projection at a third angle that no method saw, through the true geometry).

**Output folder.** ``settings.json``, ``cases.csv`` (one row per case and method, rewritten
atomically after each case, so an interrupted run resumes and skips what is done; methods can be
added to a finished run; ``reuse`` copies in the rows of other run folders made with the same
settings, such as the 90-degree point of the angle sweep from a plain evaluate run),
``summary.md`` (mean ± std, and a paired Wilcoxon signed-rank test of each method against the
reference method), ``panel.png`` (the methods on the same slices), and ``slices/`` (the mid
slices the panel is drawn from).

**A run folder cannot lie.** ``cases.csv`` is read strictly (:func:`parse_rows`): a row that is
torn, not numeric, of an unknown case or method, or repeated is never averaged: a resumed run
drops it and computes it again (one warning), a summary refuses it (one line); a summary cell
averaged over fewer cases than its method's rows says ``(n=K of N)``. A damaged slice file is
made again or left out of the panel. A run checks everything before it writes anything, holds
``OUT/.lock`` while it writes (a second writer is refused), and ``force`` replaces an old folder
only once the new one is complete, and never one that holds the run's prior, checkpoint, CT
folder or fit config.

**Shards.** ``shard=(K, N)`` runs the K-th of N contiguous blocks of the cases
(:func:`shard_cases`) into a folder of its own, whose ``settings.json`` records the shard;
:mod:`xfit.studies.shards` merges the N folders into the folder of the whole run.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import time
import types
import typing
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..allocator import keep_freed_memory
from ..baselines.common import CT_OUTPUT, is_tag, split_tag
from ..baselines.methods import METHODS as BASELINE_METHODS
from ..checkpoint import file_sha256
from ..errors import InputError, OutputExistsError
from ..geometry import View
from ..io import LOCK_NAME, atomic_folder, atomic_write, check_output_folder, portable_path
from ..io import folder_lock as run_lock  # a run or sweep folder is held while it is written
from ..metrics import ncc, psnr, volume_metrics
from ..phantoms import make_phantom
from ..projector import project
from ..units import HU_WINDOW, hu_to_mu, unit_to_hu
from .code_sha import BASELINE_PARTS, COMMON_PARTS, changed_parts, code_record, parts_text

#: Every metric column of ``cases.csv``, and whether lower is better.
METRICS: dict[str, bool] = {
    "psnr_db": False,
    "ssim": False,
    "mae_hu": True,
    "mae_mask_hu": True,
    "dice": False,
    "hd95_mm": True,
    "asd_mm": True,
    "freq_dist": True,
    "view_ncc": False,
    "volume_view_ncc": False,
    "third_view_ncc": False,
    "seconds": True,
}
#: Columns of the summary table.
SUMMARY_KEYS = ("psnr_db", "ssim", "mae_hu", "dice", "hd95_mm", "volume_view_ncc", "third_view_ncc", "seconds")
#: The HU window of every volume metric (``volume_metrics``' default).
HU_RANGE = HU_WINDOW
BASELINES = BASELINE_METHODS
PRIOR_METHODS = ("fit", "fit-pose", "mean", "best-of-n", "best-of-n-oracle", "ceiling", "ceiling-lbfgs", "ceiling-hu")
#: The oracle methods: they see the truth (upper bounds, never a method a user can run on X-rays).
ORACLE_METHODS = ("best-of-n-oracle", "ceiling", "ceiling-lbfgs", "ceiling-hu")
#: ``volume_view_ncc`` compares pixels whose ray crosses at least this fraction of the cube's
#: longest chord (the fit's default footprint): the central region, where the cube explains it all.
CENTRAL_FRACTION = 0.9
LABELS = {
    "fit": "xfit fit",
    "fit-pose": "xfit fit, pose refined",
    "mean": "prior mean volume",
    "best-of-n": "best of {n} samples (by X-ray NCC)",
    "best-of-n-oracle": "best of {n} samples (oracle, PSNR to truth)",
    "ceiling": "prior fitted to the 3D truth (oracle ceiling)",
    "ceiling-lbfgs": "prior fitted to the 3D truth by L-BFGS (tighter oracle ceiling)",
    "ceiling-hu": "prior fitted to the 3D truth's HU alone by L-BFGS (oracle, no mask)",
    "x2ct-cnn": "X2CT-CNN",
    "x2ct-gan": "X2CT-GAN",
    "ear": "EAR",
    "transvert": "TransVert (shape only)",
    "xctrsnet": "X-CTRSNet",
    "igcn": "IGCN (one view, shape only)",
}
#: The columns that score a CT; left empty for a method without CT output (TransVert, IGCN).
CT_METRICS = ("psnr_db", "ssim", "mae_hu", "mae_mask_hu", "freq_dist", "view_ncc", "volume_view_ncc", "third_view_ncc")


# ----------------------------------------------------------------------------------------------
# Cases and what a method is handed


@dataclass
class Case:
    """One held-out case on the prior grid (centred at the world origin) with its X-rays.

    Attributes:
        seed: phantom seed (``-1`` for a crop of a CT folder).
        hu: ``[R, R, R]`` float32 truth in HU.
        vertebra: ``[R, R, R]`` bool mask of the centred vertebra.
        images: one ``[rows, cols]`` noiseless line-integral image per study view.
        name: ``phantom0003`` or ``<case>:<level>``.
    """

    seed: int
    hu: np.ndarray
    vertebra: np.ndarray
    images: list[np.ndarray]
    name: str = ""


@dataclass
class Observation:
    """What a method is handed: the images and the views it is told they were taken with."""

    images: list[np.ndarray]
    views: list[View]


def default_views(angles: Sequence[float], detector: int, pixel_spacing_mm: float) -> list[View]:
    """Views of the study: isocentre at the prior grid centre (world origin)."""
    return [View(a, shape=(detector, detector), pixel_spacing_mm=(pixel_spacing_mm,) * 2) for a in angles]


def make_case(seed: int, prior, views: Sequence[View], whole_body_fov_mm: float | None = None) -> Case:
    """Phantom ``seed`` on the prior's grid and its noiseless X-rays.

    With ``whole_body_fov_mm`` the X-rays integrate the whole torso of the same phantom drawn
    on a ``whole_body_fov_mm`` grid (as real radiographs do), while the ground truth stays the
    prior-grid crop (the central block of that grid).
    """
    cfg = prior.config
    ph = make_phantom(seed, size=cfg.resolution, spacing_mm=cfg.spacing_mm, centre="vertebra")
    src = (
        ph
        if whole_body_fov_mm is None
        else make_phantom(
            seed, size=cfg.resolution, spacing_mm=cfg.spacing_mm, centre="vertebra", fov_mm=whole_body_fov_mm
        )
    )
    return Case(seed, ph.hu, ph.vertebra_mask, project_hu(src.hu, src.affine, views), f"phantom{seed:04d}")


def project_hu(hu: np.ndarray, affine: np.ndarray, views: Sequence[View]) -> list[np.ndarray]:
    """Noiseless line integrals ``[rows, cols]`` of a ``[I, J, K]`` HU volume, one per view."""
    mu = hu_to_mu(torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32)))[None, None]
    with torch.no_grad():
        return [project(mu, affine, [v])[0, 0].numpy() for v in views]


def observe(
    case: Case,
    views: Sequence[View],
    *,
    angle_error_deg: float = 0.0,
    shift_error_mm: float = 0.0,
    photons: float | None = None,
    seed: int = 0,
    style_strength: float | None = None,
) -> Observation:
    """The case as a method sees it.

    Each view handed over has its angle off by ``±angle_error_deg`` (random sign) and its
    isocentre off by ``shift_error_mm`` in a random 3D direction; with ``photons`` the images
    carry Poisson noise of that many unattenuated photons per pixel (``xfit simulate --dose``).
    With ``style_strength`` each image is the processed radiograph of its line integrals
    (:func:`xfit.radiograph.radiograph`, the clinical preset of its true view at that strength,
    the line integrals taken as water: no per-tissue paths), bright = attenuating, in [0, 1].
    The draws depend only on ``seed`` and the case, so every method sees the same observation.
    """
    from ..simulate import add_poisson_noise

    rng = np.random.default_rng([seed, max(case.seed, 0), int(hashlib.sha256(case.name.encode()).hexdigest()[:8], 16)])
    given = []
    for v in views:
        sign = rng.choice([-1.0, 1.0])
        d = rng.normal(size=3)
        d *= shift_error_mm / max(float(np.linalg.norm(d)), 1e-12)
        given.append(
            dataclasses.replace(
                v,
                angle_deg=v.angle_deg + sign * angle_error_deg,
                isocenter_mm=tuple(float(a + b) for a, b in zip(v.isocenter_mm, d)),
            )
        )
    images = [np.asarray(im, np.float32) for im in case.images]
    if photons is not None:
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        images = [add_poisson_noise(torch.from_numpy(im), photons, gen).numpy() for im in images]
    if style_strength is not None:
        images = styled_images(case, views, images, style_strength, seed)
    return Observation(images, given)


def styled_images(
    case: Case, views: Sequence[View], images: Sequence[np.ndarray], strength: float, seed: int = 0
) -> list[np.ndarray]:
    """The clinical-style radiographs ``[R, C]`` float32 of line integrals through ``views`` at
    ``strength`` (their noise seeded by ``seed``, the case and the view: deterministic)."""
    from ..radiograph import PRESETS, preset_for, radiograph

    name_hash = int(hashlib.sha256(case.name.encode()).hexdigest()[:8], 16)
    out = []
    for i, (im, v) in enumerate(zip(images, views)):
        style = dataclasses.replace(PRESETS[preset_for(v)], strength=float(strength))
        rad = radiograph(np.asarray(im, np.float64), v, style, seed=(seed, max(case.seed, 0), name_hash, 28, i))
        out.append(rad.image.astype(np.float32))
    return out


def data_cases(
    ct_dir: str | Path,
    prior,
    *,
    layout: str | None = None,
    levels: str | None = None,
    masks_dir: str | Path | None = None,
    class_map: str | Path | None = None,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, hu [R, R, R], vertebra [R, R, R] bool)`` of every vertebra crop of a CT folder.

    The crops are ``train-prior``'s (:func:`xfit.prior.data.load_training_set` with the prior's
    resolution, spacing and HU window): the HU is clamped to that window.
    """
    from ..levels import parse_levels
    from ..prior.data import DataSettings, load_training_set

    cfg = prior.config
    settings = DataSettings(
        cfg.resolution, cfg.spacing_mm, tuple(cfg.hu_window), tuple(parse_levels(levels)) if levels else None
    )
    data = load_training_set(
        ct_dir, settings, layout=layout, masks_dir=masks_dir, class_map=class_map, progress=False, workers=1
    )
    out = []
    for i, name in enumerate(data.sources):
        crop = data.volumes[i].float()
        hu = unit_to_hu(crop[0], tuple(cfg.hu_window)).numpy().astype(np.float32)
        out.append((name, hu, crop[1].numpy() > 0))
    return out


# ----------------------------------------------------------------------------------------------
# The settings of a run


@dataclass
class EvalSpec:
    """Everything that decides a run's numbers (``settings.json``).

    ``methods`` and ``checkpoints`` may grow on a resumed run; everything else must match.
    """

    prior: str
    methods: tuple[str, ...] = ("fit", "mean", "best-of-n")
    checkpoints: dict[str, str] = field(default_factory=dict)
    phantoms: int | None = 20
    first_seed: int = 0
    data: str | None = None
    layout: str | None = None
    levels: str | None = None
    max_cases: int | None = None
    angles: tuple[float, ...] = (0.0, 90.0)
    detector: int = 128
    pixel_spacing_mm: float = 1.0
    third_view_deg: float = 45.0
    whole_body_fov_mm: float | None = None
    n_random: int = 32
    fit_config: str | None = None
    warm_start: bool = True
    angle_error_deg: float = 0.0
    shift_error_mm: float = 0.0
    photons: float | None = None
    seed: int = 0
    style_strength: float | None = None

    def key(self) -> dict[str, Any]:
        """The settings a resumed run must share (the prior by its sha256, not its path, so a
        run folder moves with a checkout). Optional fields (:data:`OPTIONAL_KEYS`) at ``None``
        are left out, so the runs made before they existed keep their keys."""
        d = dataclasses.asdict(self)
        for k in ("methods", "checkpoints", "prior"):
            d.pop(k)
        for k in OPTIONAL_KEYS:
            if d[k] is None:
                d.pop(k)
        d["prior_sha256"] = _file_sha(self.prior)
        d["angles"] = [float(a) for a in self.angles]
        return d


#: Fields of :meth:`EvalSpec.key` absent from a run folder when ``None`` (added after runs were committed).
OPTIONAL_KEYS = ("style_strength",)
#: Range of ``style_strength`` (0: ideal 16-bit images, 1: the clinical presets).
STYLE_STRENGTH_RANGE = (0.0, 1.0)


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"fit,mean,x2ct-cnn@jitter"`` -> names; unknown methods and repeats raise InputError."""
    names = [m.strip() for m in (text.split(",") if isinstance(text, str) else text)]
    known = PRIOR_METHODS + BASELINES
    for m in names:
        base, tag = split_tag(m)
        if base not in known:
            raise InputError(
                f"unknown method {m!r}; choose from {', '.join(known)} (a baseline may carry a tag: x2ct-cnn@jitter)"
            )
        if tag is not None and (base not in BASELINES or not is_tag(tag)):
            raise InputError(f"{m!r}: only a baseline takes a tag, made of letters, digits, - and _")
    if not names or len(set(names)) != len(names):
        raise InputError(f"methods {text!r}: give each method once")
    return tuple(names)


def _file_sha(path: str | Path) -> str:
    """sha256 of a file, read once per (path, size, mtime): ``EvalSpec.key`` asks for the prior's often."""
    st = Path(path).stat()
    return _sha_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def method_checkpoint(spec: EvalSpec, method: str) -> Path:
    """Checkpoint of a baseline method: ``--checkpoint METHOD=FILE``, else the shipped one
    (``x2ct-cnn@jitter`` -> ``xfit/data/baseline-x2ct-cnn-jitter.safetensors``)."""
    from ..baselines.infer import shipped_checkpoint

    if spec.checkpoints.get(method):
        return Path(spec.checkpoints[method])
    base, _, tag = method.partition("@")
    return shipped_checkpoint(base, tag or None)


#: The methods whose numbers depend on the fit config.
FIT_METHODS = ("fit", "fit-pose")
#: Cases shown in ``panel.png`` (the first ones).
PANEL_CASES = 3


def fit_settings(spec: EvalSpec) -> dict[str, Any]:
    """The fit config the fit methods run with (``fit_config``, else ``xfit/configs/fit.yaml``), as JSON
    values: recorded in ``settings.json`` so that an edited config is not mixed into old rows."""
    from ..fitting import load_fit_config

    return json.loads(json.dumps(dataclasses.asdict(load_fit_config(spec.fit_config))))


def init_network_sha(spec: EvalSpec) -> str | None:
    """sha256 of the networks that may start the fit methods (the fit config's ``init_network``,
    ``init_network_whole_body`` and ``init_network_other_angles``, the shipped files of their
    names or tags), joined by ``+``; ``None`` when the config sets none. A network whose file is
    absent is left out (the fit then starts from ``w_mean`` and says so in its report)."""
    from ..baselines.infer import shipped_checkpoint
    from ..fitting import load_fit_config
    from ..fitting.config import network_parts

    cfg = load_fit_config(spec.fit_config)
    if cfg.init_network is None:
        return None
    shas = []
    names = (cfg.init_network, cfg.init_network_whole_body, cfg.init_network_other_angles)
    for name in dict.fromkeys(p for n in names if n is not None for p in network_parts(n)):
        path = shipped_checkpoint(*split_tag(name))  # the fit methods here run the shipped networks
        if path.is_file():
            shas.append(_file_sha(path))
    return "+".join(shas) or None


def method_sources(spec: EvalSpec) -> dict[str, str]:
    """Per method, the sha256 of the files its numbers come from: a baseline's checkpoint; the
    prior, and for the fit methods also the network that starts them (``PRIOR+NETWORK``), so that
    a changed shipped network is not mixed into old rows on ``--resume`` or ``--reuse``."""
    out = {}
    net = init_network_sha(spec) if any(m in FIT_METHODS for m in spec.methods) else None
    for m in spec.methods:
        base, _ = split_tag(m)
        if base in BASELINES:
            path = method_checkpoint(spec, m)
            if not path.is_file():
                raise InputError(
                    f"{m}: checkpoint {path} not found"
                    + (
                        ""
                        if spec.checkpoints.get(m)
                        else f" (none ships yet: train one with `xfit train-baseline {base} CT_DIR -o RUN`"
                        f" and pass --checkpoint {m}=RUN/baseline.safetensors)"
                    )
                )
            out[m] = _file_sha(path)
        else:
            out[m] = _file_sha(spec.prior) + (f"+{net}" if m in FIT_METHODS and net is not None else "")
    return out


def method_parts(method: str) -> tuple[str, ...]:
    """The parts of the package one method's rows depend on (:mod:`xfit.studies.code_sha`): the
    common ones, and ``baselines/`` for a baseline and for the fit methods, whose start is a network."""
    if method in PRIOR_METHODS and method not in FIT_METHODS:
        return COMMON_PARTS
    return COMMON_PARTS + BASELINE_PARTS


def method_code(methods: Sequence[str]) -> dict[str, str]:
    """``settings.json``'s ``code``: the sha256 of every part the ``methods`` depend on."""
    return code_record(p for m in methods for p in method_parts(m))


def code_changes(methods: Collection[str], old: dict[str, Any], new: dict[str, str]) -> dict[str, list[str]]:
    """Per method of ``methods`` whose code differs between a folder's settings ``old`` and the
    ``new`` code record, the parts that differ (all of them when ``old`` records none)."""
    changes = {m: changed_parts(method_parts(m), old.get("code", {}), new) for m in methods}
    return {m: parts for m, parts in changes.items() if parts}


def code_text(changes: dict[str, list[str]], old: dict[str, Any]) -> str:
    """``fit, ceiling (prior, fitting)``, or ``... (no code recorded: an older xfit wrote it)``."""
    parts = list(dict.fromkeys(p for ps in changes.values() for p in ps))
    why = parts_text(parts) if old.get("code") else "no code recorded: an older xfit wrote it"
    return f"{', '.join(changes)} ({why})"


# ----------------------------------------------------------------------------------------------
# Methods


@dataclass
class Recon:
    """A method's volume on the case's grid: ``hu`` ``[R, R, R]`` float32, ``vertebra`` bool."""

    hu: np.ndarray
    vertebra: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


class Context:
    """What the methods of one process share: the spec, the prior, the fit config, a per-case memo."""

    def __init__(self, spec: EvalSpec) -> None:
        from ..fitting import load_fit_config
        from ..prior.checkpoint import load_prior

        self.spec = spec
        self.prior = load_prior(spec.prior)
        self.cfg = load_fit_config(spec.fit_config)
        self.memo: dict[str, Any] = {}

    @property
    def affine(self) -> np.ndarray:
        from ..prior.sample import prior_affine

        return prior_affine(self.prior)


def _fit(ctx: Context, case: Case, obs: Observation, **overrides: Any) -> Recon:
    from ..fitting import fit
    from ..fitting.encoder import warm_start_w_plus

    cfg = dataclasses.replace(ctx.cfg, **overrides) if overrides else ctx.cfg
    w_init, start = (
        warm_start_w_plus(ctx.prior, obs.images, obs.views)
        if ctx.spec.warm_start
        else (None, "w_mean (warm start off)")
    )
    res = fit(
        ctx.prior,
        obs.images,
        obs.views,
        cfg,
        seed=ctx.spec.seed,
        w_init=w_init,
        centre_mm=(0.0, 0.0, 0.0),
        progress=False,
    )
    return Recon(res.hu, res.label_prob > 0.5, {"start": start if w_init is not None else res.start})


def _mean(ctx: Context, case: Case, obs: Observation) -> Recon:
    from ..prior.sample import generate_hu

    p = ctx.prior
    with torch.no_grad():
        hu, logit = generate_hu(p, p.w_mean.view(1, 1, -1).expand(1, p.G.num_ws, -1))
    return Recon(hu[0].numpy(), logit[0].numpy() > 0)


def _samples(ctx: Context, case: Case, obs: Observation) -> tuple[Recon, Recon]:
    """(best by X-ray NCC, best by PSNR to the truth) of the same ``n_random`` prior samples."""
    if "samples" not in ctx.memo:
        from ..prior.sample import generate_hu, sample_w_plus

        t0 = time.perf_counter()
        ws = sample_w_plus(ctx.prior, ctx.spec.n_random, seed=10_000 + max(case.seed, 0))
        best_x = best_o = None
        for i in range(ctx.spec.n_random):
            with torch.no_grad():
                hu, logit = generate_hu(ctx.prior, ws[i : i + 1])
            r = Recon(hu[0].numpy(), logit[0].numpy() > 0)
            agree = float(np.mean([ncc(p, im) for p, im in zip(project_hu(r.hu, ctx.affine, obs.views), obs.images)]))
            score = psnr(np.clip(r.hu, *HU_RANGE), np.clip(case.hu, *HU_RANGE), HU_RANGE[1] - HU_RANGE[0])
            if best_x is None or agree > best_x[0]:
                best_x = (agree, r)
            if best_o is None or score > best_o[0]:
                best_o = (score, r)
        seconds = {"seconds": time.perf_counter() - t0}  # the draw both choices share
        ctx.memo["samples"] = (
            Recon(best_x[1].hu, best_x[1].vertebra, seconds),
            Recon(best_o[1].hu, best_o[1].vertebra, seconds),
        )
    return ctx.memo["samples"]


def _ceiling(ctx: Context, case: Case, obs: Observation) -> Recon:
    """The oracle ceiling: the prior's W+ and noise fitted to the 3D truth (HU and vertebra mask).

    No reconstruction that stays on the prior's manifold can be closer to the truth, so the gap
    between ``fit`` and ``ceiling`` is what the search loses, and the gap between ``ceiling`` and
    the truth is what the prior lacks."""
    from ..fitting.invert import CEILING_STEPS, invert_volume

    inv = invert_volume(ctx.prior, case.hu, case.vertebra, steps=CEILING_STEPS)
    return Recon(inv.hu, inv.label_prob > 0.5, {"seconds": inv.seconds})


def _ceiling_lbfgs(ctx: Context, case: Case, obs: Observation, mask: bool = True) -> Recon:
    """The tighter oracle ceiling: the same loss as :func:`_ceiling` minimised by L-BFGS
    (:data:`~xfit.fitting.invert.CEILING_LBFGS_STEPS` iterations), which finds 0.5-0.6 dB more in
    the same prior than the 200 Adam steps (``docs/fit.md``, "The ceiling").

    ``mask`` false (``ceiling-hu``): the attenuation-only oracle, without the truth's vertebra
    mask in the loss, so the label channel is whatever the prior pairs with the fitted HU. X-rays
    carry attenuation and no mask: the two ceilings' Dice apart is what the mask adds, which no
    reconstruction from X-rays through this prior's label channel can see (``docs/fit.md``,
    "What the ceiling's Dice measures")."""
    from ..fitting.invert import CEILING_LBFGS_STEPS, invert_volume

    label = case.vertebra if mask else None
    inv = invert_volume(ctx.prior, case.hu, label, steps=CEILING_LBFGS_STEPS, optimizer="lbfgs")
    return Recon(inv.hu, inv.label_prob > 0.5, {"seconds": inv.seconds})


def _baseline(ctx: Context, case: Case, obs: Observation, method: str) -> Recon:
    """A trained baseline; a single-view method (IGCN) gets the first view (AP)."""
    from ..baselines.infer import load_baseline, predict
    from ..io import Volume, resample_onto

    base, ckpt = method.split("@", 1)[0], method_checkpoint(ctx.spec, method)
    n = len(load_baseline(base, ckpt).config.views.angles_deg)
    hu, labels, affine, notes = predict(base, ckpt, obs.images[:n], obs.views[:n])
    if hu.shape != case.hu.shape or not np.allclose(affine, ctx.affine):
        hu = resample_onto(Volume(hu, affine), ctx.affine, case.hu.shape).data
        labels = (
            resample_onto(Volume(labels.astype(np.float32), affine), ctx.affine, case.hu.shape, cval=0.0).data > 0.5
        )
    return Recon(
        np.asarray(hu, np.float32), np.asarray(labels, bool), {"labels": notes["labels"], "ct_output": CT_OUTPUT[base]}
    )


#: name -> ``method(ctx, case, observation) -> Recon``.
METHODS: dict[str, Callable[[Context, Case, Observation], Recon]] = {
    "fit": _fit,
    "fit-pose": lambda ctx, case, obs: _fit(ctx, case, obs, refine_pose=True),
    "mean": _mean,
    "best-of-n": lambda ctx, case, obs: _samples(ctx, case, obs)[0],
    "best-of-n-oracle": lambda ctx, case, obs: _samples(ctx, case, obs)[1],
    "ceiling": _ceiling,
    "ceiling-lbfgs": _ceiling_lbfgs,
    "ceiling-hu": lambda ctx, case, obs: _ceiling_lbfgs(ctx, case, obs, mask=False),
}
for _b in BASELINES:
    METHODS[_b] = lambda ctx, case, obs, _m=_b: _baseline(ctx, case, obs, _m)


def run_method(ctx: Context, name: str, case: Case, obs: Observation) -> Recon:
    """Method ``name`` (``base@tag`` for a tagged baseline) on one case."""
    base = name.split("@", 1)[0]
    if base in BASELINES:
        return _baseline(ctx, case, obs, name)
    return METHODS[base](ctx, case, obs)


def score(ctx: Context, case: Case, obs: Observation, recon: Recon, true_views: Sequence[View]) -> dict[str, float]:
    """The metric columns of one reconstruction (see the module docstring)."""
    m = volume_metrics(
        recon.hu, case.hu, recon.vertebra, case.vertebra, ctx.prior.config.spacing_mm, with_asd=True, with_freq=True
    )
    handed = project_hu(recon.hu, ctx.affine, obs.views)
    m["view_ncc"] = float(np.mean([ncc(p, im) for p, im in zip(handed, obs.images)]))
    m["volume_view_ncc"] = volume_view_ncc(handed, obs.images, central_masks(ctx, obs.views))
    third = dataclasses.replace(true_views[0], angle_deg=float(ctx.spec.third_view_deg))
    if "truth_third" not in ctx.memo:  # the truth's projection is the same for every method of the case
        ctx.memo["truth_third"] = project_hu(case.hu, ctx.affine, [third])[0]
    m["third_view_ncc"] = ncc(project_hu(recon.hu, ctx.affine, [third])[0], ctx.memo["truth_third"])
    if not recon.extra.get("ct_output", True):  # a shape drawn as two HU levels is no CT to score
        m.update(dict.fromkeys(CT_METRICS, math.nan))
    return m


def central_masks(ctx: Context, views: Sequence[View]) -> list[np.ndarray]:
    """Per view ``[rows, cols]`` bool: the central region of :data:`CENTRAL_FRACTION` (memoised per case)."""
    if "central" not in ctx.memo:
        from ..fitting.optimize import view_footprints

        masks = view_footprints(views, ctx.affine, int(ctx.prior.config.resolution), CENTRAL_FRACTION)
        ctx.memo["central"] = masks
    return ctx.memo["central"]


def volume_view_ncc(
    projections: Sequence[np.ndarray], images: Sequence[np.ndarray], masks: Sequence[np.ndarray]
) -> float:
    """Mean over views of the NCC between the projection of a volume alone (no background, no
    gain: NCC ignores gain and offset) and the X-ray it was handed, over each view's central
    mask: how much of the X-rays the returned volume itself explains."""
    return float(np.mean([ncc(p[m], im[m]) for p, im, m in zip(projections, images, masks)]))


def mid_slices(hu: np.ndarray) -> np.ndarray:
    """``[3, R, R]`` float16: the axial, coronal and sagittal mid slices (display orientation)."""
    from ..preview import axial, coronal, sagittal

    return np.stack([axial(hu), coronal(hu), sagittal(hu)]).astype(np.float16)


# ----------------------------------------------------------------------------------------------
# One case, in any process


_ctx: Context | None = None


def _context(spec: EvalSpec) -> Context:
    global _ctx  # noqa: PLW0603 (one context per worker process, rebuilt when the spec changes)
    if _ctx is None or _ctx.spec != spec:
        _ctx = Context(spec)
    return _ctx


def case_names(spec: EvalSpec) -> list[str]:
    """The names of the run's cases, in order (reads a CT folder's crops once)."""
    if spec.data is None:
        return [f"phantom{s:04d}" for s in range(spec.first_seed, spec.first_seed + int(spec.phantoms or 0))]
    return [c[0] for c in _data(spec)][: spec.max_cases]


#: The most shards of a run (``--shard K/N``).
MAX_SHARDS = 100_000


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)``: shard K of N, K counting from 1 (a 0-based array index I is
    ``$((I + 1))/N``).

    Raises:
        InputError: not two whole numbers ``K/N`` with ``1 <= K <= N <= MAX_SHARDS``.
    """
    k_text, sep, n_text = str(text).partition("/")
    if (
        not sep
        or not (k_text.isascii() and k_text.isdigit() and n_text.isascii() and n_text.isdigit())
        or len(k_text) > 9
        or len(n_text) > 9
    ):
        raise InputError(f"--shard {text!r}: expected K/N, shard K of N counted from 1 (e.g. 1/4)")
    k, n = int(k_text), int(n_text)
    if not 1 <= n <= MAX_SHARDS:
        raise InputError(f"--shard {text!r}: N must lie in [1, {MAX_SHARDS}]")
    if not 1 <= k <= n:
        raise InputError(f"--shard {text!r}: K counts from 1 to N={n} (a 0-based array index I is $((I + 1))/{n})")
    return k, n


def shard_cases(names: Sequence[str], shard: tuple[int, int] | None) -> list[tuple[int, str]]:
    """``(index in the run, name)`` of the cases of shard ``(K, N)`` (all cases for ``None``): the
    K-th of N contiguous blocks, cases ``(K-1)*M//N`` to ``K*M//N - 1`` of the run's ``M``.

    Raises:
        InputError: more shards than cases (whichever K: some shard would have no case).
    """
    if shard is None:
        return list(enumerate(names))
    k, n = shard
    if n > len(names):
        raise InputError(
            f"shard {k}/{n}: {n} shards for {len(names)} case(s) leave some without a case; "
            f"use at most {len(names)} shards"
        )
    return list(enumerate(names))[(k - 1) * len(names) // n : k * len(names) // n]


_data_memo: dict[str, list] = {}


def _data(spec: EvalSpec) -> list[tuple[str, np.ndarray, np.ndarray]]:
    key = json.dumps([spec.data, spec.layout, spec.levels, _file_sha(spec.prior)])  # what the crops depend on
    if key not in _data_memo:
        _data_memo[key] = data_cases(spec.data, _context(spec).prior, layout=spec.layout, levels=spec.levels)
    return _data_memo[key]


def build_case(spec: EvalSpec, index: int, views: Sequence[View]) -> Case:
    """Case ``index`` of the run with its noiseless X-rays through the true views."""
    ctx = _context(spec)
    if spec.data is None:
        return make_case(spec.first_seed + index, ctx.prior, views, spec.whole_body_fov_mm)
    name, hu, vert = _data(spec)[index]
    return Case(-1, hu, vert, project_hu(hu, ctx.affine, views), name)


def evaluate_case(
    spec: EvalSpec, index: int, methods: Sequence[str]
) -> tuple[str, list[dict[str, Any]], dict[str, np.ndarray]]:
    """Run ``methods`` on case ``index``: ``(case name, CSV rows, {method or 'truth': mid slices})``."""
    ctx = _context(spec)
    ctx.memo = {}
    views = default_views(spec.angles, spec.detector, spec.pixel_spacing_mm)
    case = build_case(spec, index, views)
    obs = observe(
        case,
        views,
        angle_error_deg=spec.angle_error_deg,
        shift_error_mm=spec.shift_error_mm,
        photons=spec.photons,
        seed=spec.seed,
        style_strength=spec.style_strength,
    )
    rows, slices = [], {"truth": mid_slices(case.hu)}
    for m in methods:
        t0 = time.perf_counter()
        recon = run_method(ctx, m, case, obs)
        seconds = float(recon.extra.get("seconds", time.perf_counter() - t0))
        row = {"case": case.name, "method": m, **score(ctx, case, obs, recon, views), "seconds": seconds}
        rows.append(row)
        slices[m] = mid_slices(recon.hu)
    return case.name, rows, slices


def _worker_init(threads: int) -> None:
    keep_freed_memory()
    torch.set_num_threads(max(1, threads))


def _worker(args: tuple[dict[str, Any], int, list[str]]):
    spec_d, index, methods = args
    return evaluate_case(_spec_from_dict(spec_d), index, methods)


def _spec_from_dict(d: dict[str, Any]) -> EvalSpec:
    d = dict(d)
    d["methods"] = tuple(d["methods"])
    if "angles" in d:
        d["angles"] = tuple(d["angles"])
    return EvalSpec(**d)


# ----------------------------------------------------------------------------------------------
# The run: settings, resume, CSV

#: The entries of ``settings.json`` and their types (``key`` is checked field by field: :data:`KEY_TYPES`).
SETTINGS_TYPES: dict[str, Any] = {
    "key": dict[str, Any],
    "prior": str,
    "methods": list[str],
    "checkpoints": dict[str, str],
    "sources": dict[str, str],
    "code": dict[str, str],
    "fit_settings": dict[str, Any],
    "wall_seconds": float,
    "machine": str,
    "panel_cells": list[str],
    "reused_rows": dict[str, int],
    "shard": dict[str, Any],
}
#: The fields of ``settings.json``'s ``key`` and their types (:meth:`EvalSpec.key`).
KEY_TYPES: dict[str, Any] = {
    **{k: v for k, v in typing.get_type_hints(EvalSpec).items() if k not in ("prior", "methods", "checkpoints")},
    "prior_sha256": str,
}


def _fits(value: Any, kind: Any) -> bool:
    """Whether a JSON value is of ``kind``: ``str``, ``bool``, ``int``, ``float`` (finite, not a
    bool), ``None``, ``Any``, a union, ``tuple[X, ...]`` or ``list[X]`` (a JSON list), ``dict[str, X]``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin in (tuple, list):
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _fits(v, args[1]) for k, v in value.items())
    if kind is Any:
        return True
    if kind in (None, type(None)):
        return value is None
    if kind in (int, float) and isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


#: The most phantoms of a run (``xfit evaluate --phantoms``).
MAX_PHANTOMS = 100_000


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing a key given twice (JSON would keep the last silently)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {k!r} appears twice")
        out[k] = v
    return out


def read_settings(folder: str | Path) -> dict[str, Any]:
    """A run folder's ``settings.json``, checked: a JSON object with ``key``, ``methods`` and
    ``prior``, each entry of its type (:data:`SETTINGS_TYPES`, :data:`KEY_TYPES`), known methods.

    Raises:
        InputError: one line naming the file and what is wrong (truncated or not text, nested
            too deeply, a key given twice, not an object, a missing, unknown or mistyped entry, a
            phantom count or seed out of range, an unknown or repeated method).
    """
    path = Path(folder) / "settings.json"
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_unique_keys)
    except ValueError as exc:  # also UnicodeDecodeError, and a key given twice
        raise InputError(f"{path} is not JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{path} is not JSON: nested too deeply") from None
    missing = [k for k in ("key", "methods", "prior") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise InputError(f"{path} is not an evaluate run's (no {', '.join(missing)})")
    wrong = [k for k, kind in SETTINGS_TYPES.items() if k in meta and not _fits(meta[k], kind)]
    if not wrong:
        wrong = [f"key.{k}" for k, v in meta["key"].items() if k not in KEY_TYPES or not _fits(v, KEY_TYPES[k])]
    if wrong:
        raise InputError(f"{path} is damaged: unknown or mistyped {', '.join(wrong)}")
    absent = [
        f"key.{k}" for k in KEY_TYPES if k not in meta["key"] and k not in OPTIONAL_KEYS
    ]  # a default would be reported instead
    if absent:
        raise InputError(f"{path} is damaged: no {', '.join(absent)}")
    key = meta["key"]
    if (key["phantoms"] is not None and not 1 <= key["phantoms"] <= MAX_PHANTOMS) or not 0 <= key[
        "first_seed"
    ] <= 2**32 - 1:
        raise InputError(
            f"{path} is damaged: key.phantoms {key['phantoms']} or key.first_seed {key['first_seed']} "
            f"out of range (1 to {MAX_PHANTOMS} phantoms, seeds 0 to 2**32-1)"
        )
    try:
        parse_methods(meta["methods"])
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    if "shard" in meta and not _sound_shard(meta["shard"]):
        raise InputError(
            f"{path} is damaged: shard {json.dumps(meta['shard'])[:80]} is not "
            '{"index": K, "count": N, "cases": [names]} with 1 <= K <= N'
        )
    return meta


def _sound_shard(entry: Any) -> bool:
    """Whether a ``settings.json`` ``shard`` entry is ``{"index": K, "count": N, "cases": [...]}``
    with ``1 <= K <= N <= MAX_SHARDS`` and distinct case names."""
    return (
        isinstance(entry, dict)
        and set(entry) == {"index", "count", "cases"}
        and _fits(entry["index"], int)
        and _fits(entry["count"], int)
        and 1 <= entry["index"] <= entry["count"] <= MAX_SHARDS
        and _fits(entry["cases"], list[str])
        and len(entry["cases"]) > 0
        and len(set(entry["cases"])) == len(entry["cases"])
    )


def shard_of(meta: dict[str, Any]) -> tuple[int, int] | None:
    """``(K, N)`` of a shard folder's checked settings (:func:`read_settings`), ``None`` for a whole run."""
    entry = meta.get("shard")
    return None if entry is None else (entry["index"], entry["count"])


def shard_text(shard: tuple[int, int] | None) -> str:
    """``shard 2/4`` or ``a whole run``."""
    return "a whole run" if shard is None else f"shard {shard[0]}/{shard[1]}"


def spec_from_settings(meta: dict[str, Any]) -> EvalSpec:
    """The :class:`EvalSpec` a run's checked settings (:func:`read_settings`) were made with."""
    key = {k: v for k, v in meta["key"].items() if k != "prior_sha256"}
    return _spec_from_dict(
        {**key, "prior": meta["prior"], "methods": meta["methods"], "checkpoints": meta.get("checkpoints", {})}
    )


def _parse_row(
    fields: Sequence[str], header: Sequence[str], cases: Collection[str] | None, methods: Collection[str] | None
) -> tuple[dict[str, Any], str | None]:
    """One ``cases.csv`` record as a row (metrics as floats, empty cells left out) and what is
    wrong with it (``None`` when it is sound)."""
    if len(fields) != len(header):
        return {}, f"{len(fields)} fields, the header has {len(header)}"
    raw = dict(zip(header, fields))
    row: dict[str, Any] = {"case": raw["case"], "method": raw["method"]}
    try:
        known = parse_methods([raw["method"]]) == (raw["method"],)
    except InputError:
        known = False
    if not known or (methods is not None and raw["method"] not in methods):
        return row, f"method {raw['method']!r} is not one of this run's"
    if not raw["case"] or (cases is not None and raw["case"] not in cases):
        return row, f"case {raw['case']!r} is not one of this run's"
    for k in METRICS:
        if raw.get(k, "") != "":
            try:
                row[k] = float(raw[k])
            except ValueError:
                return row, f"{k} {raw[k]!r} is not a number"
            lo, hi = METRIC_RANGES[k]
            v = row[k]
            if not math.isnan(v) and not (lo - 1e-6 <= v <= hi + 1e-6 and (math.isfinite(v) or k in INF_METRICS)):
                return row, f"{k} {raw[k]!r} is not a value it can take ([{lo:g}, {hi:g}]" + (
                    ", inf" if k in INF_METRICS else ""
                ) + ")"
    return row, None


#: The values each metric column can take as computed (NaN aside: :data:`NAN_METRICS`,
#: :func:`unfilled`); :data:`INF_METRICS` may also be ``inf`` (identical volumes; one mask empty).
#: A cell outside is damage. MAE is bounded by the HU window, NCC and SSIM by 1, the frequency
#: distance (log10 of an RMS of differences in [-2, 2], plus 1e-8) by -8 and log10(2 sqrt 2) < 1.
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "psnr_db": (0.0, math.inf),
    "ssim": (-1.0, 1.0),
    "mae_hu": (0.0, HU_RANGE[1] - HU_RANGE[0]),
    "mae_mask_hu": (0.0, HU_RANGE[1] - HU_RANGE[0]),
    "dice": (0.0, 1.0),
    "hd95_mm": (0.0, math.inf),
    "asd_mm": (0.0, math.inf),
    "freq_dist": (-8.0, 1.0),
    "view_ncc": (-1.0, 1.0),
    "volume_view_ncc": (-1.0, 1.0),
    "third_view_ncc": (-1.0, 1.0),
    "seconds": (0.0, math.inf),
}
INF_METRICS = ("psnr_db", "hd95_mm", "asd_mm")


#: Metric columns added after the first committed runs: a ``cases.csv`` older than the column
#: lacks it (its values are not measured); every other metric column must be in the header.
LATER_METRICS = ("volume_view_ncc",)
#: Metric columns that may hold NaN as computed (an empty truth mask, a constant image or
#: projection: :func:`xfit.metrics.ncc`), so NaN there is no sign of damage (:func:`unfilled`).
NAN_METRICS = ("mae_mask_hu", "view_ncc", "volume_view_ncc", "third_view_ncc")


def parse_rows(
    path: Path, *, cases: Collection[str] | None = None, methods: Collection[str] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The sound rows of a ``cases.csv`` and, in words, the records left out.

    A sound row has one field per column of the header, a method (of ``methods`` when given)
    and a case (of ``cases`` when given), a number (``nan`` included) or nothing in each metric
    cell, and is the only row of its (case, method); the last row must end its line (else it was
    torn). Metric cells become floats; an empty cell, or a column of :data:`LATER_METRICS` the
    header lacks (a file older than the column), is left out of the row: not measured.

    Returns:
        ``(rows, problems)``, each problem ``line N: ...``; a missing file has neither.
    Raises:
        InputError: the file is empty or not text, or its header is not ``case``, ``method``
            and metric columns (:data:`METRICS`), each once, every one but :data:`LATER_METRICS`.
    """
    if not path.exists():
        return [], []
    try:
        text = path.read_bytes().decode("utf-8")
        reader = csv.reader(io.StringIO(text))
        header = next(reader, [])
        records = [(reader.line_num, fields) for fields in reader if fields]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a cases.csv ({exc})") from None
    columns = ("case", "method", *METRICS)
    if not {"case", "method"} <= set(header) or len(set(header)) != len(header) or not set(header) <= set(columns):
        raise InputError(
            f"{path}: the header {','.join(header)[:100]!r} is not case,method and metric columns "
            f"({', '.join(METRICS)}), each once"
        )
    lacking = [k for k in METRICS if k not in header and k not in LATER_METRICS]
    if lacking:  # a column every run has written was cut away: its values would read as not measured
        raise InputError(f"{path}: the header lacks the column(s) {', '.join(lacking)}")
    torn = records[-1][0] if records and not text.endswith(("\n", "\r")) else None
    rows: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    problems = []
    for line, fields in records:
        row, problem = _parse_row(fields, header, cases, methods)
        if problem is None and line == torn:
            problem = "torn (the file ends inside it)"
        if problem is not None:
            problems.append(f"line {line}: {problem}")
        else:
            rows.setdefault((row["case"], row["method"]), []).append((line, row))
    for (case, method), found in rows.items():
        if len(found) > 1:
            problems.append(f"lines {', '.join(str(n) for n, _ in found)}: {len(found)} rows of {case} {method}")
    return [found[0][1] for found in rows.values() if len(found) == 1], problems


def read_rows(
    path: Path, *, cases: Collection[str] | None = None, methods: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """The rows of a ``cases.csv`` (:func:`parse_rows`), every one sound, else InputError (one
    line naming the first damaged record): a damaged row is never averaged."""
    rows, problems = parse_rows(path, cases=cases, methods=methods)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"{path}: {problems[0]}{more}; resume the run to compute it again")
    return rows


def unfilled(row: dict[str, Any]) -> list[str]:
    """The metric cells of a row that hold NaN although its method fills them with a number
    (every metric but :data:`NAN_METRICS`, which may be NaN as computed; a method without CT
    output (TransVert, IGCN) leaves :data:`CT_METRICS` NaN), or are empty although every run
    writes them (all but :data:`LATER_METRICS`): damage, computed again on resume."""
    ct = CT_OUTPUT.get(row["method"].split("@", 1)[0], True)
    return [
        k
        for k in METRICS
        if (k not in row and k not in LATER_METRICS)
        or (
            isinstance(row.get(k), float)
            and math.isnan(row[k])
            and k not in NAN_METRICS
            and (ct or k not in CT_METRICS)
        )
    ]


def known_cases(spec: EvalSpec) -> set[str] | None:
    """The case names of a phantom run; ``None`` (not checked) for a CT folder, whose crops
    would have to be read."""
    return set(case_names(spec)) if spec.data is None else None


def read_run(folder: str | Path, spec: EvalSpec | None = None) -> tuple[dict[str, Any], EvalSpec, list[dict[str, Any]]]:
    """A run folder's checked settings, its spec (rebuilt from them unless given) and its rows,
    every one sound (:func:`read_rows`). Raises InputError otherwise."""
    meta = read_settings(folder)
    spec = spec_from_settings(meta) if spec is None else spec
    cases = known_cases(spec)
    if "shard" in meta:  # a shard folder holds the cases of its shard only
        mine = meta["shard"]["cases"]
        if cases is not None and mine != [n for _, n in shard_cases(case_names(spec), shard_of(meta))]:
            raise InputError(
                f"{Path(folder) / 'settings.json'} is damaged: the cases of {shard_text(shard_of(meta))} "
                "are not those of its settings"
            )
        cases = set(mine)
    return meta, spec, read_rows(Path(folder) / "cases.csv", cases=cases, methods=meta["methods"])


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``cases.csv``, atomically (a metric a row lacks is an empty cell)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["case", "method", *METRICS], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k, "")) for k in w.fieldnames})
    with atomic_write(path, force=True) as tmp:
        Path(tmp).write_text(buf.getvalue())


def folder_entries(folder: Path) -> list[Path]:
    """What a folder holds besides its lock file (nothing when it is missing or a file)."""
    return [p for p in folder.iterdir() if p.name != LOCK_NAME] if folder.is_dir() else []


def check_folder(
    spec: EvalSpec, out: Path, names: Collection[str] | None = None, shard: tuple[int, int] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """What a run folder holds, read without writing: its checked ``settings.json`` (empty for a
    new folder), the rows kept, and in words the rows to compute again (damaged, of a case not in
    ``names`` (when given), or NaN where the method fills the column, :func:`unfilled`).

    Raises:
        OutputExistsError: ``out`` is a file, holds something other than an evaluate run, or a
            run with other settings, another shard (``shard``: ``(K, N)``, ``None`` for a whole
            run), a changed prior or checkpoint, rows of other code (:mod:`.code_sha`), or fit
            rows of another fit config.
        InputError: a damaged ``settings.json`` or ``cases.csv`` header.
    """
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is a file, not a folder")
    if not (out / "settings.json").exists():
        if folder_entries(out):
            raise OutputExistsError(f"{out} exists and is not an evaluate run; use another folder or --force")
        return {}, [], []
    old = read_settings(out)
    key = json.loads(json.dumps(spec.key()))
    if old["key"] != key:
        diff = sorted(k for k in key.keys() | old["key"].keys() if old["key"].get(k) != key.get(k))
        raise OutputExistsError(
            f"{out} holds a run with other settings ({', '.join(diff)}); use another folder or --force"
        )
    if shard_of(old) != (None if shard is None else tuple(shard)):
        hint = (
            f"give --shard {shard_of(old)[0]}/{shard_of(old)[1]} to resume it, or merge its shards with `xfit merge`"
            if shard is None
            else "use one folder per shard"
        )
        raise OutputExistsError(
            f"{out} holds {shard_text(shard_of(old))} of these settings, not {shard_text(shard)}; {hint}"
        )
    changed = [m for m, sha in method_sources(spec).items() if old.get("sources", {}).get(m, sha) != sha]
    if changed:
        raise OutputExistsError(
            f"{out}: the prior or checkpoint of {', '.join(changed)} changed since its rows "
            "were computed; use another folder or --force"
        )
    all_methods = run_methods(old, spec)
    rows, redo = parse_rows(out / "cases.csv", cases=None if names is None else set(names), methods=all_methods)
    redo += [f"{r['case']} {r['method']}: NaN or nothing in {', '.join(unfilled(r))}" for r in rows if unfilled(r)]
    rows = [r for r in rows if not unfilled(r)]
    stale = code_changes(list(dict.fromkeys(r["method"] for r in rows)), old, method_code(all_methods))
    if stale and not old.get("code"):
        raise OutputExistsError(
            f"{out}: its rows record no code (an older xfit wrote them), so they cannot be resumed; "
            "use another folder or --force"
        )
    if stale:
        raise OutputExistsError(
            f"{out}: the code of {code_text(stale, old)} changed since its rows were computed; run into "
            f"another folder with --reuse {out} to keep the rows whose code is unchanged, or use --force"
        )
    fit_cfg = fit_settings(spec)
    if any(r["method"] in FIT_METHODS for r in rows) and old.get("fit_settings", fit_cfg) != fit_cfg:
        diff = sorted(k for k in fit_cfg if old["fit_settings"].get(k) != fit_cfg[k])
        raise OutputExistsError(
            f"{out}: the fit config changed since its fit rows were computed "
            f"({', '.join(diff) or 'keys'}); use another folder or --force"
        )
    return old, rows, redo


def run_methods(old: dict[str, Any], spec: EvalSpec) -> list[str]:
    """The methods of a run folder once ``spec`` runs in it: those its ``settings.json`` (``old``)
    holds, then the new ones of ``spec``, each once."""
    return list(dict.fromkeys(old.get("methods", []) + list(spec.methods)))


def open_run(
    spec: EvalSpec, out: Path, names: Sequence[str], shard: tuple[int, int] | None = None
) -> list[dict[str, Any]]:
    """Check the run folder (:func:`check_folder`, again: under the lock), drop the rows to compute
    again from ``cases.csv`` with one warning, write ``settings.json`` (with the ``shard`` and its
    cases ``names``, for a shard); return the rows kept."""
    old, rows, redo = check_folder(spec, out, names, shard)
    if redo:
        warnings.warn(
            f"{out / 'cases.csv'}: {len(redo)} row(s) dropped, to be computed again: "
            + "; ".join(redo[:3])
            + (" ..." if len(redo) > 3 else "")
        )
        write_rows(out / "cases.csv", rows)
    methods = run_methods(old, spec)
    meta = {
        **old,
        "key": spec.key(),
        "prior": portable_path(spec.prior),
        "methods": methods,
        "checkpoints": spec.checkpoints,
        "sources": {**old.get("sources", {}), **method_sources(spec)},
        "code": {**old.get("code", {}), **method_code(methods)},
        "fit_settings": fit_settings(spec),
        "wall_seconds": float(old.get("wall_seconds", 0.0)),
    }
    if shard is not None:
        meta["shard"] = {"index": shard[0], "count": shard[1], "cases": list(names)}
    with atomic_write(out / "settings.json", force=True) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2) + "\n")
    return rows


def find_reusable(
    spec: EvalSpec, out: Path, folders: Sequence[str | Path], names: Sequence[str]
) -> list[tuple[Path, list[dict[str, Any]]]]:
    """The rows the ``reuse`` folders offer, read without writing: of each run folder (a sweep
    folder offers each of its condition folders) with the same settings key, the sound rows of
    this run's cases and of a method with the same prior or checkpoint (sha256), the same code
    (:func:`method_parts`) and, for the fit methods, the same fit config (rows with NaN where the
    method fills the column are left out).

    Raises:
        InputError: a folder not found, or a damaged ``settings.json`` or ``cases.csv`` header.
    """
    key = json.loads(json.dumps(spec.key()))
    sources, fit_cfg, code = method_sources(spec), fit_settings(spec), method_code(spec.methods)
    offers = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise InputError(f"--reuse {folder}: folder not found")
        for run in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
            if (
                run.resolve() == out.resolve()
                or not (run / "settings.json").is_file()
                or not (run / "cases.csv").is_file()
            ):
                continue
            meta = read_settings(run)
            if meta["key"] != key:
                continue
            rows, _ = parse_rows(run / "cases.csv", cases=set(names), methods=meta["methods"])
            rows = [
                r
                for r in rows
                if r["method"] in sources
                and not unfilled(r)
                and meta.get("sources", {}).get(r["method"]) == sources[r["method"]]
                and (r["method"] not in FIT_METHODS or meta.get("fit_settings") == fit_cfg)
                and not changed_parts(method_parts(r["method"]), meta.get("code", {}), code)
            ]
            if rows:
                offers.append((run, rows))
    return offers


def take_reused(
    out: Path, offers: Sequence[tuple[Path, list[dict[str, Any]]]], rows: list[dict[str, Any]]
) -> dict[str, int]:
    """Append to ``rows`` the offered rows (:func:`find_reusable`) it lacks and copy their slices
    into ``out/slices``; returns the number of rows taken per folder (empty ones left out)."""
    import shutil

    taken: dict[str, int] = {}
    for run, offered in offers:
        done = {(r["case"], r["method"]) for r in rows}
        new = [r for r in offered if (r["case"], r["method"]) not in done]
        for case, method in {(r["case"], r["method"]) for r in new} | {(r["case"], "truth") for r in new}:
            src = slice_path(run, case, method)
            if load_slices(src) is not None:  # a damaged slice of the other run is not copied
                (out / "slices").mkdir(parents=True, exist_ok=True)
                with atomic_write(out / "slices" / src.name, force=True) as tmp:
                    shutil.copyfile(src, tmp)
        rows.extend(new)
        if new:
            taken[str(run)] = len(new)
    return taken


def spec_inputs(spec: EvalSpec) -> list[str]:
    """The files and folders a run reads (prior, checkpoints, CT folder, fit config): a forced
    run refuses to replace a folder that holds one (:func:`xfit.io.check_output_folder`)."""
    return [p for p in (spec.prior, *spec.checkpoints.values(), spec.data, spec.fit_config) if p]


def check_style_strength(spec: EvalSpec) -> None:
    """A style strength in :data:`STYLE_STRENGTH_RANGE`, without ``photons`` (the clinical style
    has its own quantum noise), whose presets fit the run's detector (InputError otherwise)."""
    from ..radiograph import PRESETS, check_style, check_style_for_view, preset_for

    lo, hi = STYLE_STRENGTH_RANGE
    s = spec.style_strength
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not (math.isfinite(s) and lo <= s <= hi):
        raise InputError(f"style strength must be a number in [{lo:g}, {hi:g}], got {s!r}")
    if spec.photons is not None:
        raise InputError("Poisson noise (--dose) is the ideal images' noise: the clinical style has its own")
    for v in default_views(spec.angles, spec.detector, spec.pixel_spacing_mm):
        style = check_style(dataclasses.replace(PRESETS[preset_for(v)], strength=float(s)))
        check_style_for_view(style, v)


def check_spec(spec: EvalSpec) -> list[str]:
    """Every check of a run's settings, before anything is written: no setting that does not
    apply to the cases (``max_cases``, ``layout`` or ``levels`` with phantoms, ``first_seed`` or
    ``whole_body_fov_mm`` with a CT folder), the prior, the fit config, each baseline's checkpoint
    and its number of views against the angles, and the cases (at least one). Returns the case
    names.

    Raises:
        InputError, CheckpointError: the message names what is wrong.
    """
    from ..baselines.infer import load_baseline

    ignored = [
        what
        for what, given in (
            ("max_cases (--max-cases)", spec.data is None and spec.max_cases is not None),
            ("layout (--layout)", spec.data is None and spec.layout is not None),
            ("levels (--levels)", spec.data is None and spec.levels is not None),
            ("first_seed (--first-seed)", spec.data is not None and spec.first_seed != 0),
            ("whole_body_fov_mm (--whole-body)", spec.data is not None and spec.whole_body_fov_mm is not None),
        )
        if given
    ]
    if ignored:  # accepted, they would be recorded in settings.json and do nothing
        raise InputError(
            f"{', '.join(ignored)} only appl{'ies' if len(ignored) == 1 else 'y'} to "
            f"{'a CT folder (--data)' if spec.data is None else 'phantoms'}, not to "
            f"{'phantoms' if spec.data is None else 'a CT folder'}"
        )
    if spec.style_strength is not None:
        check_style_strength(spec)
    method_sources(spec)
    fit_settings(spec)
    _context(spec)  # loads the prior
    for m in spec.methods:
        base = m.split("@", 1)[0]
        if base in BASELINES:
            n = len(load_baseline(base, method_checkpoint(spec, m)).config.views.angles_deg)
            if len(spec.angles) < n:
                raise InputError(
                    f"{m}: the network takes {n} views; the run has {len(spec.angles)} "
                    f"({', '.join(f'{a:g}' for a in spec.angles)} deg)"
                )
    names = case_names(spec)
    if not names:
        raise InputError("no case to evaluate")
    return names


def slice_path(run: Path, case: str, method: str) -> Path:
    """Where a run folder keeps the mid slices of one case and method (or ``truth``)."""
    return run / "slices" / f"{case.replace(':', '_')}__{method}.npy"


def machine() -> str:
    """A line naming this machine: CPU model and cores used, torch, GPU if any."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}{gpu}"


def machines(meta: dict[str, Any]) -> list[str]:
    """The machine lines of a run's ``settings.json`` (a run resumed elsewhere lists each, "; "
    between them)."""
    return [m for m in str(meta.get("machine", "")).split("; ") if m]


def evaluate(
    spec: EvalSpec,
    out: str | Path,
    *,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
    reuse: Sequence[str | Path] = (),
    shard: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Run every method of ``spec`` on every case; write the folder described in the module
    docstring; return all rows. Cases run in ``workers`` processes (threads split between them);
    rows found in the ``reuse`` folders (:func:`find_reusable`) are copied, not recomputed. With
    ``shard=(K, N)`` only the cases of shard K of N run (:func:`shard_cases`), and ``settings.json``
    records the shard and its cases: :func:`xfit.studies.shards.merge` joins the N shard folders
    into the folder of the whole run.

    Every check (:func:`check_spec`, :func:`check_folder`, the ``reuse`` folders) runs before
    anything is written, and the folder is locked (:func:`run_lock`) while it is written. With
    ``force`` a folder that is not empty is replaced only once the new run is complete
    (:func:`xfit.io.atomic_folder`): an error or interrupt leaves it as it was; a folder holding
    one of the run's inputs (:func:`spec_inputs`) is refused."""
    out = Path(out)
    if shard is not None:
        parse_shard(f"{shard[0]}/{shard[1]}")
    replace = force and bool(folder_entries(out))
    if replace:  # the old folder goes once the new one is complete: it must not hold an input
        check_output_folder(out, force=True, inputs=spec_inputs(spec))
    else:
        check_folder(spec, out, shard=shard)
    cases = shard_cases(check_spec(spec), shard)
    offers = find_reusable(spec, out, reuse, [n for _, n in cases])
    with run_lock(out):
        if not replace:
            return _run(spec, out, cases, offers, workers=workers, progress=progress, shard=shard)
        with atomic_folder(out, force=True) as tmp:
            return _run(spec, tmp, cases, offers, workers=workers, progress=progress, shard=shard)


def _run(
    spec: EvalSpec,
    out: Path,
    cases: Sequence[tuple[int, str]],
    offers: Sequence[tuple[Path, list[dict[str, Any]]]],
    *,
    workers: int,
    progress: bool,
    shard: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """:func:`evaluate` once its checks passed, in the locked folder ``out``; ``cases`` are
    ``(index in the run, name)``."""
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    names = [n for _, n in cases]
    rows = open_run(spec, out, names, shard)
    reused = take_reused(out, offers, rows)
    if reused:
        write_rows(out / "cases.csv", rows)
    done = {(r["case"], r["method"]) for r in rows}
    todo = [(i, [m for m in spec.methods if (n, m) not in done]) for i, n in cases]
    todo = [(i, ms) for i, ms in todo if ms]
    bar = tqdm(total=len(todo), desc="evaluate", unit="case", disable=not progress)

    def collect(result) -> None:
        name, new, slices = result
        rows.extend(new)
        write_rows(out / "cases.csv", rows)
        save_slices(out, name, slices)
        bar.update(1)

    if workers <= 1 or len(todo) <= 1:
        for i, ms in todo:
            collect(evaluate_case(spec, i, ms))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // workers)
        spec_d = dataclasses.asdict(spec)
        with ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=(threads,)
        ) as pool:
            futures = [pool.submit(_worker, (spec_d, i, ms)) for i, ms in todo]
            try:
                for f in as_completed(futures):
                    collect(f.result())
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    bar.close()
    meta = read_settings(out)
    taken = meta.setdefault("reused_rows", {}) if reused else {}  # rows not computed here (not in wall_seconds)
    for k, n in reused.items():
        taken[k] = taken.get(k, 0) + n
    panel = list(cases[:PANEL_CASES])
    refilled = fill_panel_slices(spec, out, panel)
    worked = bool(todo or refilled)
    if worked:  # a rerun with nothing to do adds neither time nor machine
        meta["wall_seconds"] = float(meta.get("wall_seconds", 0.0)) + time.perf_counter() - t_start
    if worked or not machines(meta):
        meta["machine"] = "; ".join(dict.fromkeys([*machines(meta), machine()]))
    return finish_run(out, spec, meta, rows, names)


def finish_run(
    out: Path, spec: EvalSpec, meta: dict[str, Any], rows: list[dict[str, Any]], names: Sequence[str]
) -> list[dict[str, Any]]:
    """The last writes of a run (or of merged shards) whose rows and slices are in ``out``:
    ``panel.png`` of the first :data:`PANEL_CASES` of ``names`` (unless it would drop a cell shown
    before), ``settings.json`` (``meta``), ``cases.csv`` in the order of ``names`` and of
    ``meta["methods"]``, ``summary.md``. Returns the rows in that order."""
    methods = meta["methods"]
    panel = list(names[:PANEL_CASES])
    cells = [f"{n}/{c}" for n, got in panel_slices(out, panel, methods) for c in got]
    # a panel written before this record existed was complete when written
    old_panel = [f"{n}/{c}" for n in panel for c in ("truth", *methods)] if (out / "panel.png").is_file() else []
    if set(cells) >= set(meta.get("panel_cells", old_panel)):  # never drop a cell shown (fit slices made elsewhere)
        write_panel(out, panel, methods)
        meta["panel_cells"] = cells
    with atomic_write(out / "settings.json", force=True) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2) + "\n")
    order = {n: i for i, n in enumerate(names)}
    rows.sort(
        key=lambda r: (order.get(r["case"], len(order)), methods.index(r["method"]) if r["method"] in methods else 99)
    )
    write_rows(out / "cases.csv", rows)
    rewrite_summary(out, spec)
    return rows


def rewrite_summary(out: str | Path, spec: EvalSpec | None = None) -> Path:
    """Write ``out/summary.md`` from the run's ``cases.csv`` as committed (so the same file always
    gives the same summary) and ``settings.json`` (``spec``: default rebuilt from its key).

    Raises:
        InputError: a damaged ``settings.json`` or ``cases.csv`` (:func:`read_run`).
    """
    out = Path(out)
    meta, spec, rows = read_run(out, spec)
    text = summary_markdown(rows, meta["methods"], spec)
    if "shard" in meta:
        mine = meta["shard"]["cases"]
        text += (
            f"\nThis folder is {shard_text(shard_of(meta))} of that run: {len(mine)} case(s), {mine[0]} to "
            f"{mine[-1]}; `xfit merge` joins the {meta['shard']['count']} shard folders into one run folder.\n"
        )
    with atomic_write(out / "summary.md", force=True) as tmp:
        Path(tmp).write_text(text)
    return out / "summary.md"


def load_slices(path: Path, size: int | None = None) -> np.ndarray | None:
    """The mid slices ``[3, R, R]`` (float) of a slice file (``R == size`` when given), or ``None``
    when it is missing or damaged (truncated, pickled, not such an array): the slices are a cache,
    made again (:func:`fill_panel_slices`) or left out of the panel, never a traceback."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        return None
    if (
        arr.ndim != 3
        or arr.shape[0] != 3
        or arr.shape[1] != arr.shape[2]
        or not np.issubdtype(arr.dtype, np.floating)
        or (size is not None and arr.shape[1] != size)
    ):
        return None
    return arr


def save_slices(out: Path, name: str, slices: dict[str, np.ndarray]) -> None:
    """Write one case's mid slices (``{method or 'truth': [3, R, R]}``) under ``out/slices``."""
    (out / "slices").mkdir(exist_ok=True)
    for m, s in slices.items():
        with atomic_write(slice_path(out, name, m), force=True) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, s, allow_pickle=False)


def fill_panel_slices(spec: EvalSpec, out: Path, cases: Sequence[tuple[int, str] | str]) -> list[str]:
    """Recompute the panel cases' slices (``cases``: ``(index in the run, name)``, or the names of
    the run's first cases) that are missing for the methods of ``spec`` other than the fits (a run resumed on a
    fresh machine: slices are not committed, and rows computed elsewhere left none here; a damaged slice file
    counts as missing, :func:`load_slices`). The methods are deterministic, so the slices are those
    of the rows; the fits are too slow to rerun for a picture and stay blank. Returns the methods run."""
    ran = []
    size = int(_context(spec).prior.config.resolution)
    for i, n in (c if isinstance(c, tuple) else (j, c) for j, c in enumerate(cases)):
        missing = [m for m in spec.methods if m not in FIT_METHODS and load_slices(slice_path(out, n, m), size) is None]
        if missing or load_slices(slice_path(out, n, "truth"), size) is None:
            name, _, slices = evaluate_case(spec, i, missing)
            if name != n:
                raise ValueError(f"fill_panel_slices: {n!r} is not case {i} of the spec ({name!r} is)")
            save_slices(out, n, slices)
            ran += missing
    return list(dict.fromkeys(ran))


# ----------------------------------------------------------------------------------------------
# Summary and panel


def paired_test(rows: Sequence[dict[str, Any]], method: str, reference: str, key: str) -> tuple[int, int, float]:
    """``(n pairs, cases where method is strictly better, two-sided Wilcoxon signed-rank p)`` of
    ``method`` against ``reference`` on ``key``, over the cases both have (finite values only).
    ``p`` is NaN with fewer than two pairs or when every difference is zero. It is the exact
    distribution's for up to 50 pairs without zero or tied differences, else the normal
    approximation (tie-corrected): chosen here, not by scipy, whose ``auto`` rule has changed
    between releases (the same committed cases gave other p-values)."""
    from scipy.stats import wilcoxon

    a = {r["case"]: r.get(key, math.nan) for r in rows if r["method"] == method}
    b = {r["case"]: r.get(key, math.nan) for r in rows if r["method"] == reference}
    pairs = [(a[c], b[c]) for c in a if c in b and math.isfinite(a[c]) and math.isfinite(b[c])]
    if not pairs:
        return 0, 0, math.nan
    d = np.array([x - y for x, y in pairs]) * (-1.0 if METRICS[key] else 1.0)
    better = int((d > 0).sum())
    if len(d) < 2 or not np.any(d != 0):
        return len(d), better, math.nan
    exact = len(d) <= 50 and np.all(d != 0) and len(np.unique(np.abs(d))) == len(d)
    return len(d), better, float(wilcoxon(d, method="exact" if exact else "approx").pvalue)


def _fmt(key: str, v: np.ndarray) -> str:
    if not v.size:
        return "-"
    digits = 3 if key in ("ssim", "dice", "view_ncc", "volume_view_ncc", "third_view_ncc") else 1
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def summary_markdown(rows: Sequence[dict[str, Any]], methods: Sequence[str], spec: EvalSpec | None = None) -> str:
    """Mean ± std per method of :data:`SUMMARY_KEYS` (over the finite values; a cell over fewer
    cases than the method's rows says ``(n=K of N)``), then the paired tests against ``fit`` (or
    the first method)."""
    present = [m for m in methods if any(r["method"] == m for r in rows)]
    ref = "fit" if "fit" in present else (present[0] if present else None)
    lines = ["| method | n | " + " | ".join(SUMMARY_KEYS) + " |", "|---" * (len(SUMMARY_KEYS) + 2) + "|"]
    for m in present:
        mine = [r for r in rows if r["method"] == m]
        cells = []
        for k in SUMMARY_KEYS:
            v = np.array([r.get(k, math.nan) for r in mine], dtype=float)
            v = v[np.isfinite(v)]  # a cell over fewer cases than the method's rows says so
            cells.append(_fmt(k, v) + (f" (n={v.size} of {len(mine)})" if 0 < v.size < len(mine) else ""))
        name = LABELS.get(m.split("@", 1)[0], m) + (f" @{m.split('@', 1)[1]}" if "@" in m else "")
        name = name.replace("{n}", str(spec.n_random) if spec is not None else "N")
        lines.append(f"| {name} (`{m}`) | {len(mine)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n\n(mean ± std over the cases; lower is better for MAE, HD95 and seconds)\n"
    if ref is not None and len(present) > 1:
        keys = ("psnr_db", "ssim", "mae_hu", "dice", "third_view_ncc")
        text += (
            f"\nPaired against `{ref}` (same cases): cases where the method is better, and the two-sided "
            "Wilcoxon signed-rank p-value.\n\n| method | "
            + " | ".join(keys)
            + " |\n"
            + "|---" * (len(keys) + 1)
            + "|\n"
        )
        for m in present:
            if m == ref:
                continue
            cells = []
            for k in keys:
                n, better, p = paired_test(rows, m, ref, k)
                cells.append(f"{better}/{n}, p={p:.2g}" if n else "-")
            text += f"| `{m}` | " + " | ".join(cells) + " |\n"
    if spec is not None:
        what = (
            f"{spec.phantoms} held-out phantoms (seeds {spec.first_seed}-{spec.first_seed + (spec.phantoms or 0) - 1})"
            if spec.data is None
            else f"the vertebra crops of {spec.data}"
        )
        text += (
            f"\nCases: {what}; views {', '.join(f'{a:g}' for a in spec.angles)} deg, {spec.detector}² px of "
            f"{spec.pixel_spacing_mm:g} mm, cone beam, SDD 1800 / SOD 1500 mm"
            + (f", X-rays through the whole torso ({spec.whole_body_fov_mm:g} mm)" if spec.whole_body_fov_mm else "")
            + (
                f"; handed views off by {spec.angle_error_deg:g} deg and {spec.shift_error_mm:g} mm"
                if spec.angle_error_deg or spec.shift_error_mm
                else ""
            )
            + (f"; Poisson noise, {spec.photons:g} photons/pixel" if spec.photons else "")
            + (
                f"; clinical-style radiographs at strength {spec.style_strength:g}"
                if spec.style_strength is not None
                else ""
            )
            + f"; third view at {spec.third_view_deg:g} deg.\n"
        )
    return text


def panel_slices(out: Path, names: Sequence[str], methods: Sequence[str]) -> list[tuple[str, dict[str, Path]]]:
    """The sound slice files on disk for the panel (:func:`load_slices`, of the truth's size):
    ``(case, {'truth' or method: path})`` of each case whose truth slices are sound."""
    found = []
    for n in names:
        truth = load_slices(slice_path(out, n, "truth"))
        if truth is None:
            continue
        got = {c: slice_path(out, n, c) for c in methods}
        found.append(
            (
                n,
                {
                    "truth": slice_path(out, n, "truth"),
                    **{c: p for c, p in got.items() if load_slices(p, truth.shape[1]) is not None},
                },
            )
        )
    return found


def write_panel(out: Path, names: Sequence[str], methods: Sequence[str]) -> Path | None:
    """``panel.png``: per case a row of coronal and a row of sagittal mid slices, truth first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..preview import figure_to_png

    cols = ["truth"] + list(methods)
    grid = [(n, {c: load_slices(p) for c, p in got.items()}) for n, got in panel_slices(out, names, methods)]
    if not grid:
        return None
    fig, axes = plt.subplots(2 * len(grid), len(cols), figsize=(1.6 * len(cols), 3.3 * len(grid)), squeeze=False)
    for r, (n, sl) in enumerate(grid):
        for c, col in enumerate(cols):
            for k, plane in enumerate((1, 2)):
                ax = axes[2 * r + k, c]
                ax.axis("off")
                if col in sl:
                    ax.imshow(sl[col][plane].astype(np.float32), cmap="gray", vmin=-1000, vmax=1500)
                if r == 0 and k == 0:
                    ax.set_title(col, fontsize=8)
                if c == 0:
                    ax.text(-4, 32, f"{n}\n{'coronal' if k == 0 else 'sagittal'}", fontsize=6, ha="right", va="center")
    return figure_to_png(fig, out / "panel.png")
