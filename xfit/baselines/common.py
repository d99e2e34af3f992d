"""What every feed-forward baseline shares: its config, the view geometry of its X-rays, the
footprint images its networks see, the 2D-to-3D lifting along the rays, labels by threshold, and
its checkpoint file.

**Geometry.** A baseline reconstructs the prior's cube (``resolution^3`` voxels at ``spacing_mm``,
RAS-aligned, centred on the target; the world origin = the views' isocentre when no target is
given). Its X-rays are simulated exactly as ``xfit simulate`` makes them (:func:`xfit.projector
.project` of ``hu_to_mu`` of the crop, :class:`xfit.geometry.View` with the defaults of
:func:`xfit.studies.evaluate.default_views`: 128 x 128 pixels of 1 mm, SDD 1800 mm, SOD 1500 mm,
cone beam, angles 0 and 90).

**Footprint.** Each X-ray is resampled (bilinearly) onto a ``resolution^2`` image of the cube's
footprint on the detector: the square of side ``fov * magnification`` centred on the projection
of the cube centre, rows pointing to the feet (detector row axis) and columns along the detector
column axis. Each footprint is standardised to zero mean and unit variance, so the networks, like
the fit's data term, do not depend on the X-ray's gain and offset (uncalibrated images work).

**Lifting.** "Expanding a 2D feature map along its beam axis" (X2CT-GAN's connection B, EAR's
dimension enhancement) is done for any geometry by sampling the footprint feature map at the
projection of each voxel centre of the 3D grid (:class:`Lifter`): for an orthogonal parallel-beam
view this is exactly the papers' copy along the beam axis; for the cone beam it follows the rays
(about 3 % magnification change across the 80 mm cube) and it stays right for other angles,
tilted poses and other detectors.

**Checkpoint.** One ``.safetensors`` file: the generator's tensors ``G.<key>`` (float32, or
float16 for shipped files) and a metadata entry ``xfit`` = JSON ``{"format": "xfit-baseline",
"format_version": 1, "method", "config", "training"}`` (:func:`save_model`); the loader
(:func:`xfit.baselines.registry.load_model`) rebuilds the network from ``config`` and accepts the
file only when names and shapes match exactly. No pickle.

This module sits below the model modules and imports none of them; the per-method architecture
defaults (:data:`DEFAULT_ARCHS`) live here so that a config is checked without building its
network, and :mod:`xfit.baselines.registry` maps each method to its network.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..configs import CONFIG_DIR  # the shipped configs, xfit/configs/
from ..errors import InputError
from ..geometry import View, world_to_pixel
from .methods import METHODS, PART1_METHODS, PART2_METHODS  # noqa: F401 (re-exported)

MODEL_FORMAT = "xfit-baseline"
#: Loss terms each method may weight (``training.weights``).
LOSS_TERMS = {
    "x2ct-cnn": ("recon", "proj"),
    "x2ct-gan": ("adv", "recon", "proj"),
    "ear": ("recon", "edge", "freq", "proj"),
    "transvert": ("recon", "adv"),
    "xctrsnet": ("recon", "perc", "dice", "dice_gt", "rsc"),
    "igcn": ("pos", "map", "laplacian", "normal"),
}
#: Methods trained with an LSGAN discriminator (the trainer builds one for them).
ADVERSARIAL = ("x2ct-gan", "transvert")
#: Methods whose network outputs a CT volume; the others output only the vertebra's shape, and
#: :func:`xfit.baselines.infer.predict` renders that shape as a two-level "CT" (see there).
CT_OUTPUT = {"x2ct-cnn": True, "x2ct-gan": True, "ear": True, "transvert": False, "xctrsnet": True, "igcn": False}
#: Methods with a segmentation (or shape) output: their labels are their own, not the threshold.
SEGMENTATION_OUTPUT = {
    "x2ct-cnn": False,
    "x2ct-gan": False,
    "ear": False,
    "transvert": True,
    "xctrsnet": True,
    "igcn": True,
}
#: Reconstructions without a segmentation output get their vertebra label from this threshold
#: (see :func:`labels_from_hu`).
LABEL_THRESHOLD_HU = 150.0


def check_method(method: str) -> str:
    """The method name, or InputError naming the known ones."""
    if method not in METHODS:
        raise InputError(f"unknown baseline method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def split_tag(name: str) -> tuple[str, str | None]:
    """``"xctrsnet@style"`` -> ``("xctrsnet", "style")``: a method and the tag of one of its
    checkpoints (``xfit/data/baseline-<method>-<tag>.safetensors`` when shipped); ``None`` when
    untagged, ``""`` for a bare ``@`` (no tag: see :func:`is_tag`)."""
    base, sep, tag = str(name).partition("@")
    return base, (tag if sep else None)


def is_tag(tag: str | None) -> bool:
    """Whether ``tag`` is a checkpoint tag: letters, digits, ``-`` and ``_``, not empty."""
    return bool(tag) and str(tag).replace("-", "").replace("_", "").isalnum()


# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class ViewsConfig:
    """Views of the simulated training X-rays (the defaults are ``xfit simulate``'s and the
    study's). ``angle_jitter_deg``: each angle is drawn uniformly in ``angle +- jitter`` per
    example; one number for every view, or one per view (``[0, 50]``: the AP stays at 0 degrees,
    the second view anywhere in 40..140)."""

    angles_deg: list[float] = field(default_factory=lambda: [0.0, 90.0])
    angle_jitter_deg: float | list[float] = 0.0
    sdd_mm: float = 1800.0
    sod_mm: float = 1500.0
    detector: list[int] = field(default_factory=lambda: [128, 128])
    pixel_spacing_mm: list[float] = field(default_factory=lambda: [1.0, 1.0])
    projection: str = "cone"

    def views(self, angles: Sequence[float] | None = None) -> list[View]:
        return [
            View(
                float(a),
                sdd_mm=self.sdd_mm,
                sod_mm=self.sod_mm,
                shape=tuple(self.detector),
                pixel_spacing_mm=tuple(self.pixel_spacing_mm),
                projection=self.projection,
            )
            for a in (self.angles_deg if angles is None else angles)
        ]

    def jitters(self) -> list[float]:
        """Angle jitter (degrees, >= 0) of each view of ``angles_deg``; InputError if malformed."""
        j = self.angle_jitter_deg
        vals = list(j) if isinstance(j, (list, tuple)) else [j] * len(self.angles_deg)
        if len(vals) != len(self.angles_deg) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and 0 <= x <= 180 for x in vals
        ):
            raise InputError(
                f"views.angle_jitter_deg must be a number in [0, 180] or one per view "
                f"({len(self.angles_deg)}), got {j!r}"
            )
        return [float(x) for x in vals]


@dataclass
class TrainConfig:
    """Optimisation settings. ``schedule``: ``constant`` or ``cosine`` (cosine annealing after a
    linear warm-up of ``warmup_steps``). ``weights``: loss weights by term name (per method)."""

    batch_size: int = 2
    steps: int = 20000
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0
    d_lr: float = 2e-4
    schedule: str = "constant"
    warmup_steps: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    weights: dict[str, float] = field(default_factory=dict)


def _unit_number(value: object) -> bool:
    """Whether ``value`` is a finite number (not a bool) in [0, 1]: a probability or a strength."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


@dataclass
class StyleConfig:
    """Training augmentation with processed radiographs (issue 28): each example is, with
    ``probability``, handed as clinical-style radiographs (:func:`xfit.radiograph.radiograph`, the
    lumbar AP / lateral preset of each view, the line integrals taken as water) at a strength
    drawn uniformly in ``[min_strength, max_strength]``, instead of line integrals.
    ``probability`` 0 (the default) is off: the trainer draws nothing for it."""

    probability: float = 0.0
    min_strength: float = 0.0
    max_strength: float = 1.0

    def check(self, views: Sequence[Any]) -> None:
        """InputError for values outside [0, 1], ``min_strength > max_strength``, or (when on) a
        preset whose collimation or marker does not fit the views' detectors."""
        for k in ("probability", "min_strength", "max_strength"):
            v = getattr(self, k)
            if not _unit_number(v):
                raise InputError(f"style.{k} must be a number in [0, 1], got {v!r}")
        if self.min_strength > self.max_strength:
            raise InputError(
                f"style.min_strength {self.min_strength:g} exceeds style.max_strength {self.max_strength:g}"
            )
        if self.probability > 0:
            from ..radiograph import PRESETS, check_style, check_style_for_view, preset_for

            for v in views:
                check_style_for_view(
                    check_style(dataclasses.replace(PRESETS[preset_for(v)], strength=float(self.max_strength))), v
                )


@dataclass
class WholeBodyConfig:
    """Training augmentation with whole-torso X-rays: each example's line integrals get, with
    ``probability``, the X-ray of a torso outside the cube added (one of ``count`` phantoms from
    seed ``seed`` on, ``fov_mm`` across; :mod:`xfit.baselines.wholebody`), as a radiograph that
    is not collimated to the crop shows it. ``probability`` 0 (the default) is off."""

    probability: float = 0.0
    fov_mm: float = 320.0
    count: int = 32
    seed: int = 100_000

    def check(self, resolution: int, spacing_mm: float) -> None:
        """InputError for a probability outside [0, 1], a torso not wider than the cube, a count
        outside 1..4096 or a negative seed."""
        if not _unit_number(self.probability):
            raise InputError(f"whole_body.probability must be a number in [0, 1], got {self.probability!r}")
        cube_mm = resolution * spacing_mm
        f = self.fov_mm
        if not (isinstance(f, (int, float)) and math.isfinite(f) and cube_mm < f <= 1000):
            raise InputError(
                f"whole_body.fov_mm must be wider than the cube ({cube_mm:g} mm) and at most 1000, got {f!r}"
            )
        if not (isinstance(self.count, int) and 1 <= self.count <= 4096):
            raise InputError(f"whole_body.count must be an integer in [1, 4096], got {self.count!r}")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise InputError(f"whole_body.seed must be an integer >= 0, got {self.seed!r}")


@dataclass
class BaselineConfig:
    """A baseline: method, cube, architecture widths (``arch``, per method), views, training,
    and the optional augmentations, both off by default: clinical-style radiographs (``style``,
    :class:`StyleConfig`) and whole-torso X-rays (``whole_body``, :class:`WholeBodyConfig`)."""

    method: str
    name: str = ""
    resolution: int = 64
    spacing_mm: float = 1.25
    hu_window: list[float] = field(default_factory=lambda: [-1000.0, 1500.0])
    arch: dict[str, Any] = field(default_factory=dict)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    style: StyleConfig = field(default_factory=StyleConfig)
    whole_body: WholeBodyConfig = field(default_factory=WholeBodyConfig)

    def __post_init__(self) -> None:
        check_method(self.method)
        if int(self.resolution) < 16 or int(self.resolution) & (int(self.resolution) - 1):
            raise InputError(f"resolution must be a power of two >= 16, got {self.resolution}")
        if not (math.isfinite(float(self.spacing_mm)) and float(self.spacing_mm) > 0):
            raise InputError(f"spacing_mm must be a positive number, got {self.spacing_mm}")
        lo, hi = (float(x) for x in self.hu_window)
        if not lo < hi:
            raise InputError(f"hu_window must be [low, high] with low < high, got {self.hu_window}")
        t = self.training
        if t.schedule not in ("constant", "cosine"):
            raise InputError(f"training.schedule must be constant or cosine, got {t.schedule!r}")
        for k in ("batch_size", "steps", "checkpoint_every", "log_every"):
            if int(getattr(t, k)) < 1:
                raise InputError(f"training.{k} must be >= 1, got {getattr(t, k)}")
        allowed = LOSS_TERMS[self.method]
        bad = sorted(set(t.weights) - set(allowed))
        if bad:
            raise InputError(
                f"training.weights: unknown term(s) {', '.join(bad)} for {self.method} (known: {', '.join(allowed)})"
            )
        _check_arch(self)
        if len(self.views.angles_deg) < 1:
            raise InputError("views.angles_deg needs at least one angle")
        self.views.jitters()
        self.style.check(self.views.views())  # GeometryError on impossible views
        self.whole_body.check(int(self.resolution), float(self.spacing_mm))

    @property
    def fov_mm(self) -> float:
        return float(self.resolution) * float(self.spacing_mm)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "config") -> BaselineConfig:
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: expected a mapping, got {type(data).__name__}")
        d = dict(data)
        _no_unknown(d, cls, where)
        if "method" not in d:
            raise InputError(f"{where}: missing key 'method'")
        views = d.pop("views", {}) or {}
        training = d.pop("training", {}) or {}
        style = d.pop("style", {}) or {}
        whole_body = d.pop("whole_body", {}) or {}
        for sub, sub_cls, name in (
            (views, ViewsConfig, "views"),
            (training, TrainConfig, "training"),
            (style, StyleConfig, "style"),
            (whole_body, WholeBodyConfig, "whole_body"),
        ):
            if not isinstance(sub, Mapping):
                raise InputError(f"{where}: {name} must be a mapping")
            _no_unknown(sub, sub_cls, f"{where}: {name}")
        try:
            return cls(
                views=ViewsConfig(**_typed(views, ViewsConfig, f"{where}: views")),
                training=TrainConfig(**_typed(training, TrainConfig, f"{where}: training")),
                style=StyleConfig(**_typed(style, StyleConfig, f"{where}: style")),
                whole_body=WholeBodyConfig(**_typed(whole_body, WholeBodyConfig, f"{where}: whole_body")),
                **_typed(d, cls, where),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{where}: {exc}") from exc


#: Architecture keys per method: (kind, minimum list length); kinds ``int`` or ``ints``.
ARCH_KEYS = {
    "x2ct-cnn": {"enc": ("ints", 2), "dec": ("ints", 2), "fc_hidden": ("int", 0)},
    "x2ct-gan": {"enc": ("ints", 2), "dec": ("ints", 2), "fc_hidden": ("int", 0), "disc": ("ints", 1)},
    "ear": {"stem": ("int", 0), "enc": ("ints", 3), "cbam_reduction": ("int", 0)},
    "transvert": {"enc": ("ints", 2), "map": ("int", 0), "dec": ("ints", 1), "disc": ("ints", 1)},
    "xctrsnet": {"enc": ("ints", 2), "path": ("ints", 2), "seg": ("ints", 2)},
    "igcn": {"enc": ("ints", 1), "gcn": ("ints", 1), "gt_points": ("int", 0), "template_step": ("int", 0)},
}


_X2CT_ARCH = {"enc": [8, 16, 32, 64, 64], "dec": [8, 16, 32, 64, 64], "fc_hidden": 128, "disc": [16, 32, 64]}
#: Default architecture widths per method (a config's ``arch`` overrides them key by key); each
#: model module names its own as ``DEFAULT_ARCH``.
DEFAULT_ARCHS = {
    "x2ct-cnn": _X2CT_ARCH,
    "x2ct-gan": _X2CT_ARCH,
    "ear": {"stem": 8, "enc": [16, 32, 64, 96], "cbam_reduction": 4},
    "transvert": {"enc": [16, 32, 64], "map": 32, "dec": [32, 16, 8], "disc": [16, 32, 64]},
    "xctrsnet": {"enc": [16, 32, 64], "path": [8, 16, 32], "seg": [8, 16, 32]},
    "igcn": {"enc": [16, 32, 64, 64], "gcn": [64, 64, 64], "gt_points": 2000, "template_step": 2},
}


def _check_arch(cfg: BaselineConfig) -> None:
    """InputError for unknown architecture keys, non-positive widths or too many levels."""
    keys = ARCH_KEYS[cfg.method]
    unknown = sorted(set(cfg.arch) - set(keys))
    if unknown:
        raise InputError(f"arch: unknown key(s) {', '.join(unknown)} for {cfg.method} (known: {', '.join(keys)})")
    good = lambda x: isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 4096  # noqa: E731
    for k, v in cfg.arch.items():
        kind, n = keys[k]
        if kind == "int" and not good(v):
            raise InputError(f"arch.{k} must be an integer in [1, 4096], got {v!r}")
        if kind == "ints" and (not isinstance(v, (list, tuple)) or len(v) < n or not all(good(x) for x in v)):
            raise InputError(f"arch.{k} must be a list of at least {n} integers in [1, 4096], got {v!r}")
    a = cfg.arch
    DEFAULT_ARCH = DEFAULT_ARCHS[cfg.method]
    if cfg.method.startswith("x2ct"):
        enc, dec = a.get("enc", DEFAULT_ARCH["enc"]), a.get("dec", DEFAULT_ARCH["dec"])
        if len(enc) != len(dec):
            raise InputError(f"arch.enc and arch.dec need one width per level, got {len(enc)} and {len(dec)}")
        levels = len(enc)
    elif cfg.method == "ear":
        levels = len(a.get("enc", DEFAULT_ARCH["enc"])) + 1
    elif cfg.method == "transvert":
        enc, dec = a.get("enc", DEFAULT_ARCH["enc"]), a.get("dec", DEFAULT_ARCH["dec"])
        if len(enc) != len(dec):
            raise InputError(f"arch.enc and arch.dec need one width per level, got {len(enc)} and {len(dec)}")
        levels = len(enc) + 1
    elif cfg.method == "igcn":
        levels = len(a.get("enc", DEFAULT_ARCH["enc"]))
        if len(cfg.views.angles_deg) != 1:
            raise InputError(
                f"igcn takes a single projection: views.angles_deg needs one angle, got {cfg.views.angles_deg}"
            )
    else:
        enc, path = a.get("enc", DEFAULT_ARCH["enc"]), a.get("path", DEFAULT_ARCH["path"])
        if len(enc) != len(path):
            raise InputError(f"arch.enc and arch.path need one width per scale, got {len(enc)} and {len(path)}")
        levels = max(len(enc), len(a.get("seg", DEFAULT_ARCH["seg"]))) + 1
    if int(cfg.resolution) >> (levels - 1) < 2:
        raise InputError(f"arch: {levels} levels are too many for resolution {cfg.resolution}")


def _no_unknown(d: Mapping[str, Any], cls: type, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _typed(d: Mapping[str, Any], cls: type, where: str) -> dict[str, Any]:
    """Coerce scalars to the dataclass field's type (bool is not a number; numbers finite)."""
    out = {}
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    for k, v in d.items():
        t = str(types[k])
        if t in ("int", "float"):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"{where}: {k} must be a finite number, got {v!r}")
            if t == "int" and float(v) != int(v):
                raise InputError(f"{where}: {k} must be an integer, got {v!r}")
            v = int(v) if t == "int" else float(v)
        elif t == "str" and not isinstance(v, str):
            raise InputError(f"{where}: {k} must be a string, got {v!r}")
        elif t.startswith("list") and not isinstance(v, (list, tuple)):
            raise InputError(f"{where}: {k} must be a list, got {v!r}")
        elif t.startswith("dict") and not isinstance(v, Mapping):
            raise InputError(f"{where}: {k} must be a mapping, got {v!r}")
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def config_path(name: str) -> Path:
    """``xfit/configs/baseline-<name>.yaml`` for a method or config name, else the path itself."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml", ".json") or p.exists():
        return p
    return CONFIG_DIR / f"baseline-{name}.yaml"


def load_config(path_or_name: str | Path) -> BaselineConfig:
    """Read a baseline config (YAML or JSON) by path or by name (``x2ct-cnn`` ...)."""
    import yaml

    path = config_path(str(path_or_name))
    if not path.is_file():
        raise InputError(f"baseline config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read the config: {' '.join(str(exc).split())}") from exc
    return BaselineConfig.from_dict(data or {}, where=str(path))


# ----------------------------------------------------------------------------------------------
# Cube, footprints, lifting


def cube_affine(resolution: int, spacing_mm: float, centre_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Affine of the RAS-aligned reconstruction cube centred on ``centre_mm``."""
    a = np.eye(4)
    a[:3, :3] *= float(spacing_mm)
    a[:3, 3] = np.asarray(centre_mm, dtype=np.float64) - float(spacing_mm) * (resolution - 1) / 2
    return a


def _footprint_frame(view: View, centre: Tensor, fov_mm: float) -> tuple[Tensor, Tensor]:
    """(centre pixel (row, col), half side in pixels (row, col)) of the cube's footprint."""
    c = world_to_pixel(centre[None], view)[0]
    mag = view.sdd_mm / view.sod_mm if view.projection == "cone" else 1.0
    dr, dc = view.pixel_spacing_mm
    half = torch.tensor([fov_mm / 2 * mag / dr, fov_mm / 2 * mag / dc], dtype=torch.float64)
    return c, half


def footprint(image: Tensor, view: View, centre_mm: Sequence[float], fov_mm: float, res: int) -> Tensor:
    """Resample one X-ray ``[R, C]`` onto the standardised ``[res, res]`` footprint of the cube."""
    centre = torch.as_tensor(np.asarray(centre_mm, dtype=np.float64))
    c, half = _footprint_frame(view, centre, fov_mm)
    t = (torch.arange(res, dtype=torch.float64) + 0.5) / res * 2 - 1
    rows = c[0] + t * half[0]
    cols = c[1] + t * half[1]
    nr, nc = view.shape
    gy = rows / max(nr - 1, 1) * 2 - 1
    gx = cols / max(nc - 1, 1) * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), -1)[None].float()
    img = image.float()[None, None]
    fp = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]
    return (fp - fp.mean()) / (fp.std() + 1e-6)


def footprints(
    images: Tensor, views: Sequence[Sequence[View]], centre_mm: Sequence[float], fov_mm: float, res: int
) -> Tensor:
    """``[B, V, R, C]`` X-rays with per-example views ``views[b][v]`` -> ``[B, V, res, res]``."""
    return torch.stack(
        [
            torch.stack([footprint(images[b, v], views[b][v], centre_mm, fov_mm, res) for v in range(images.shape[1])])
            for b in range(images.shape[0])
        ]
    )


class Lifter:
    """Samples 2D footprint feature maps at the projections of 3D voxel centres.

    Args:
        views: per example, its V views (``views[b][v]``).
        centre_mm: cube centre; fov_mm: cube side.
    """

    def __init__(self, views: Sequence[Sequence[View]], centre_mm: Sequence[float], fov_mm: float) -> None:
        self.views = [list(v) for v in views]
        self.centre = torch.as_tensor(np.asarray(centre_mm, dtype=np.float64))
        self.fov = float(fov_mm)
        self._grids: dict[tuple[int, int], Tensor] = {}

    @property
    def num_views(self) -> int:
        return len(self.views[0])

    def grid(self, v: int, r: int) -> Tensor:
        """``[B, r^3, 1, 2]`` grid_sample coordinates (x = column, y = row) of view ``v``."""
        key = (v, r)
        if key not in self._grids:
            s = self.fov / r
            ax = (torch.arange(r, dtype=torch.float64) + 0.5 - r / 2) * s
            pts = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3) + self.centre
            out = []
            for views in self.views:
                view = views[v]
                c, half = _footprint_frame(view, self.centre, self.fov)
                pix = world_to_pixel(pts, view)
                n = (pix - c) / half
                out.append(torch.stack([n[:, 1], n[:, 0]], -1))
            self._grids[key] = torch.stack(out)[:, :, None, :].float()
        return self._grids[key]

    def lift(self, feat: Tensor, v: int, r: int) -> Tensor:
        """``[B, C, h, w]`` footprint features of view ``v`` -> ``[B, C, r, r, r]``."""
        g = self.grid(v, r).to(device=feat.device, dtype=feat.dtype)
        out = F.grid_sample(feat, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.reshape(feat.shape[0], feat.shape[1], r, r, r)

    def project(self, v: int, points: Tensor) -> Tensor:
        """Differentiable footprint coordinates ``[B, N, 2]`` (x = column, y = row, -1..1 across
        the footprint, as :meth:`grid`) of points ``[B, N, 3]`` given in mm from the cube centre."""
        out = []
        for b, views in enumerate(self.views):
            view = views[v]
            c, half = _footprint_frame(view, self.centre, self.fov)
            pix = world_to_pixel(points[b].double() + self.centre.to(points.device), view)
            n = (pix - c.to(points.device)) / half.to(points.device)
            out.append(torch.stack([n[:, 1], n[:, 0]], -1))
        return torch.stack(out).to(points.dtype)

    def grid3(self, v: int, r: int) -> Tensor:
        """``[B, r, r, r, 3]`` 5D grid_sample coordinates (x = column, y = row, z = depth) of
        view ``v`` for the voxel centres of an ``r^3`` cube: (column, row) as :meth:`grid`, depth
        = distance along the central beam (source -> detector) from the cube centre, in units of
        half the cube side."""
        key = (v, r, 3)
        if key not in self._grids:
            from ..geometry import detector_frame

            s = self.fov / r
            ax = (torch.arange(r, dtype=torch.float64) + 0.5 - r / 2) * s
            pts = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
            depth = []
            for views in self.views:
                beam = -detector_frame([views[v]], dtype=torch.float64)["s"][0]
                depth.append((pts @ beam) / (self.fov / 2))
            xy = self.grid(v, r)[:, :, 0, :]
            g = torch.cat([xy, torch.stack(depth)[..., None].float()], -1)
            self._grids[key] = g.reshape(len(self.views), r, r, r, 3)
        return self._grids[key]

    def lift_volume(self, feat: Tensor, v: int, r: int) -> Tensor:
        """View-aligned 3D features ``[B, C, D, h, w]`` of view ``v`` (D along its beam, source
        side first; h, w the footprint's rows and columns) -> ``[B, C, r, r, r]`` in the cube's
        voxel order. For orthogonal parallel views this is the papers' axis permutation (the
        tests check it); otherwise it follows the rays as :meth:`lift` does."""
        g = self.grid3(v, r).to(device=feat.device, dtype=feat.dtype)
        return F.grid_sample(feat, g, mode="bilinear", padding_mode="zeros", align_corners=False)


def footprint_pixels(rc: Tensor, view: View, centre_mm: Sequence[float], fov_mm: float, res: int) -> Tensor:
    """Detector pixels ``[N, 2]`` (row, col) of ``view`` -> the same points in pixels of its
    ``[res, res]`` footprint (see :func:`footprint`; pixel centres at integers)."""
    centre = torch.as_tensor(np.asarray(centre_mm, dtype=np.float64))
    c, half = _footprint_frame(view, centre, fov_mm)
    n = (rc.double() - c) / half  # [-1, 1] across the footprint
    return (n + 1) * res / 2 - 0.5


def annotation_disc(centres: Tensor, res: int, radius_px: float = 1.0) -> Tensor:
    """TransVert's annotation image: 1 on the pixels within ``radius_px`` of each centre.

    Args:
        centres: ``[..., 2]`` (row, col) in footprint pixels.
    Returns:
        ``[..., res, res]`` float32 of 0 / 1 (all 0 when the centre is off the image).
    """
    ax = torch.arange(res, dtype=torch.float64)
    dr = ax.view(*([1] * (centres.dim() - 1)), res, 1) - centres[..., 0, None, None].double()
    dc = ax.view(*([1] * (centres.dim() - 1)), 1, res) - centres[..., 1, None, None].double()
    return (dr.square() + dc.square() <= radius_px**2 + 1e-9).float()


# ----------------------------------------------------------------------------------------------
# Small shared pieces


#: Inputs with a spatial side at most this run :class:`Conv3d` in float32 under CPU autocast.
BF16_THIN_SIDE = 2


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that computes in float32 where CPU bfloat16 autocast is wrong.

    On CPUs with AVX512-BF16 but no AMX (seen on an AMD EPYC; docs/baselines.md), PyTorch 2.14.1's bf16
    3x3x3 convolution returns a garbage weight gradient (values up to 1e36, inf, NaN; different on
    every call) when the input depth is 2; the output and the input gradient are right.
    ``tests/baselines/test_x2ct_ear.py::test_conv3d_bf16_weight_grad_on_thin_volumes`` checks it. Volumes
    that thin are cheap, so an input ``[B, C, D, H, W]`` with a side <= :data:`BF16_THIN_SIDE`
    runs in float32 (its output cast back to the autocast dtype); everything else is unchanged,
    and the parameters are those of ``nn.Conv3d`` (same state-dict keys)."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and min(x.shape[2:]) <= BF16_THIN_SIDE:
            dtype = torch.get_autocast_dtype("cpu")
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float()).to(dtype)
        return super().forward(x)


def conv3(cin: int, cout: int, stride: int = 1) -> Conv3d:
    return Conv3d(cin, cout, 3, stride, 1)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_shape(x: Tensor, shape: Sequence[int | None], name: str) -> None:
    """InputError unless ``x`` has ``len(shape)`` dims and each given size (None = any)."""
    if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise InputError(f"{name} must have shape {want}, got {list(x.shape)}")


def labels_from_hu(hu: np.ndarray, threshold_hu: float = LABEL_THRESHOLD_HU) -> np.ndarray:
    """Vertebra label of a reconstruction without a segmentation output: the connected
    component of ``hu > threshold_hu`` nearest the cube centre, holes filled (uint8 0/1)."""
    return centred_component(hu > threshold_hu)


def centred_component(mask: np.ndarray) -> np.ndarray:
    """The connected component of a boolean ``[I, J, K]`` mask nearest the cube centre, holes
    filled (uint8 0/1): the vertebra of interest, in the fit's label convention."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(mask.shape, np.uint8)
    idx = np.argwhere(lab > 0)
    centre = (np.array(mask.shape) - 1) / 2
    nearest = lab[tuple(idx[np.argmin(((idx - centre) ** 2).sum(1))])]
    return ndimage.binary_fill_holes(lab == nearest).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Model checkpoint


def save_model(
    path: str | Path,
    model: nn.Module,
    cfg: BaselineConfig,
    summary: Mapping[str, Any] | None = None,
    *,
    half: bool = False,
    force: bool = False,
) -> Path:
    """Write a baseline checkpoint (atomically; float16 tensors with ``half``)."""
    from ..checkpoint import FORMAT_VERSION, save_safetensors

    tensors = {f"G.{k}": (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    meta = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "method": cfg.method,
        "config": cfg.to_dict(),
        "training": dict(summary or {}),
    }
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"baseline metadata is not JSON-serialisable: {exc}") from exc
    return save_safetensors(Path(path), tensors, {"xfit": text}, force)
