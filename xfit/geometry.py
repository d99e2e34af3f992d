"""X-ray view geometry: the conventions of ``docs/architecture.md`` implemented once.

World frame is RAS+ in millimetres (+x patient's right, +y anterior, +z superior).

A :class:`View` is a gantry angle ``theta`` about +z through the isocentre. With
``s = (sin theta, cos theta, 0)``:

* source = iso + sod * s, detector centre = iso - (sdd - sod) * s;
* detector column axis ``u = (-cos theta, sin theta, 0)``, row axis ``v = (0, 0, -1)``;
* pixel (r, c) centre = det_centre + (c - (cols-1)/2 + offset_c) * dc * u
                                   + (r - (rows-1)/2 + offset_r) * dr * v.

theta = 0 is AP (beam anterior -> posterior, the patient's right on the image left); theta = 90
is a left lateral (source on the patient's right, anterior on the image right). An optional
4x4 rigid ``pose`` moves the whole source/detector pair about the isocentre:
``p -> iso + R (p - iso) + t``.

Parallel beam: every ray has direction ``-s`` and starts ``sdd`` before its detector pixel;
``sod`` is only used to place the detector. Pixel spacing is always given at the detector plane.

Everything that produces rays is differentiable with respect to the angle and the pose.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from .errors import GeometryError

PROJECTIONS = ("cone", "parallel")

#: Keys of a sidecar JSON, in the order they are written.
SIDECAR_KEYS = (
    "angle_deg",
    "sdd_mm",
    "sod_mm",
    "pixel_spacing_mm",
    "projection",
    "flip_lr",
    "line_integral_scale",
)
#: Optional keys a sidecar may also hold.
SIDECAR_OPTIONAL_KEYS = ("offset_px", "pose", "shape", "invert")


#: Documented ranges of view geometry (sidecars, command-line options and :class:`View`).
#: Angles given by a user (sidecar, ``--angles``) lie in [-MAX_ANGLE_DEG, MAX_ANGLE_DEG].
MAX_ANGLE_DEG = 360.0
#: A :class:`View` itself accepts angles up to this (fitted corrections may leave [-360, 360]).
MAX_VIEW_ANGLE_DEG = 3600.0
#: Source-detector and source-isocentre distances in (0, MAX_DISTANCE_MM] (100 m).
MAX_DISTANCE_MM = 1.0e5
#: Detector pixel spacing in (0, MAX_PIXEL_SPACING_MM] per axis.
MAX_PIXEL_SPACING_MM = 100.0
#: Principal point offset and isocentre coordinates: |value| <= MAX_OFFSET (pixels / mm).
MAX_OFFSET = 1.0e5
#: Detector size limits: at most MAX_DETECTOR_SIDE pixels per side and MAX_DETECTOR_PIXELS in all
#: (the rays alone take 24 bytes per pixel and view; 8192 x 4096 is about 0.8 GB of rays).
MAX_DETECTOR_SIDE = 8192
MAX_DETECTOR_PIXELS = 8192 * 4096
#: ``line_integral_scale`` of a sidecar in (0, MAX_LINE_INTEGRAL_SCALE].
MAX_LINE_INTEGRAL_SCALE = 1.0e6


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise GeometryError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise GeometryError(f"{name} must be a finite number, got {value!r}") from exc
    if not math.isfinite(value):
        raise GeometryError(f"{name} must be finite, got {value}")
    return value


def _in_range(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
    ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        left = "(" if lo_open else "["
        raise GeometryError(f"{name} must be in {left}{lo:g}, {hi:g}], got {value:g}")
    return value


def _pair(name: str, value: Any, *, positive: bool, limit: float = math.inf) -> tuple[float, float]:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, (str, bytes, Mapping)):
        raise GeometryError(f"{name} must be one number or a pair, got {value!r}")
    try:
        a, b = value
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"{name} must be one number or a pair, got {value!r}") from exc
    a, b = _finite(name, a), _finite(name, b)
    if positive and (a <= 0 or b <= 0):
        raise GeometryError(f"{name} must be > 0, got {value!r}")
    if max(abs(a), abs(b)) > limit:
        raise GeometryError(f"{name} must be at most {limit:g} in size, got {value!r}")
    return a, b


def check_detector_shape(shape: Any, name: str = "detector shape") -> tuple[int, int]:
    """``(rows, cols)`` as positive integers within the documented size limits.

    Raises:
        GeometryError: not two integers, not positive, more than :data:`MAX_DETECTOR_SIDE` per
            side or :data:`MAX_DETECTOR_PIXELS` in all (checked before anything is allocated).
    """
    try:
        rows, cols = shape
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"{name} must be (rows, cols), got {shape!r}") from exc
    for x in (rows, cols):
        if isinstance(x, bool) or not isinstance(x, numbers.Integral):
            if not (isinstance(x, float) and x.is_integer()):
                raise GeometryError(f"{name} must be whole numbers of pixels, got {shape!r}")
    rows, cols = int(rows), int(cols)
    if rows < 1 or cols < 1:
        raise GeometryError(f"{name} must be positive, got {shape!r}")
    if rows > MAX_DETECTOR_SIDE or cols > MAX_DETECTOR_SIDE or rows * cols > MAX_DETECTOR_PIXELS:
        raise GeometryError(
            f"{name} {rows}x{cols} is too large: at most {MAX_DETECTOR_SIDE} pixels per side "
            f"and {MAX_DETECTOR_PIXELS} pixels in all"
        )
    return rows, cols


@dataclass(frozen=True)
class View:
    """One X-ray view: source, detector and their placement around the isocentre.

    Attributes:
        angle_deg: gantry angle theta in degrees about +z (0 = AP, 90 = left lateral).
        sdd_mm: source-to-detector distance in mm.
        sod_mm: source-to-isocentre distance in mm (must be < sdd for cone beam).
        shape: detector (rows, cols) in pixels.
        pixel_spacing_mm: (row, col) pixel spacing in mm at the detector plane.
        projection: ``"cone"`` or ``"parallel"``.
        offset_px: principal point offset (row, col) in pixels.
        isocenter_mm: world position of the isocentre (x, y, z) in mm.
        pose: optional 4x4 rigid transform (nested tuples) applied about the isocentre.
    """

    angle_deg: float = 0.0
    sdd_mm: float = 1800.0
    sod_mm: float = 1500.0
    shape: tuple[int, int] = (128, 128)
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0)
    projection: str = "cone"
    offset_px: tuple[float, float] = (0.0, 0.0)
    isocenter_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pose: tuple[tuple[float, ...], ...] | None = field(default=None)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("angle_deg", _finite("angle_deg", self.angle_deg))
        if abs(self.angle_deg) > MAX_VIEW_ANGLE_DEG:
            raise GeometryError(f"angle_deg must be in [-{MAX_ANGLE_DEG:g}, {MAX_ANGLE_DEG:g}], got {self.angle_deg:g}")
        set_("sdd_mm", _finite("sdd_mm", self.sdd_mm))
        set_("sod_mm", _finite("sod_mm", self.sod_mm))
        if self.sdd_mm <= 0:
            raise GeometryError(f"sdd_mm must be > 0, got {self.sdd_mm}")
        if self.sod_mm <= 0:
            raise GeometryError(f"sod_mm must be > 0, got {self.sod_mm}")
        _in_range("sdd_mm", self.sdd_mm, 0.0, MAX_DISTANCE_MM, lo_open=True)
        _in_range("sod_mm", self.sod_mm, 0.0, MAX_DISTANCE_MM, lo_open=True)
        if not isinstance(self.projection, str) or self.projection not in PROJECTIONS:
            raise GeometryError(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if self.projection == "cone" and self.sod_mm >= self.sdd_mm:
            raise GeometryError(
                f"sod_mm ({self.sod_mm}) must be smaller than sdd_mm ({self.sdd_mm}): "
                "the isocentre has to lie between source and detector"
            )
        set_("shape", check_detector_shape(self.shape))
        set_(
            "pixel_spacing_mm",
            _pair("pixel_spacing_mm", self.pixel_spacing_mm, positive=True, limit=MAX_PIXEL_SPACING_MM),
        )
        set_("offset_px", _pair("offset_px", self.offset_px, positive=False, limit=MAX_OFFSET))
        try:
            iso = tuple(_finite("isocenter_mm", x) for x in self.isocenter_mm)
        except TypeError as exc:
            raise GeometryError(f"isocenter_mm must have 3 values, got {self.isocenter_mm!r}") from exc
        if any(abs(x) > MAX_OFFSET for x in iso):
            raise GeometryError(f"isocenter_mm must be within {MAX_OFFSET:g} mm of the origin, got {iso}")
        if len(iso) != 3:
            raise GeometryError(f"isocenter_mm must have 3 values, got {self.isocenter_mm!r}")
        set_("isocenter_mm", iso)
        if self.pose is not None:
            set_("pose", _validate_pose(self.pose))

    @property
    def magnification(self) -> float:
        """Detector-plane size of an object at the isocentre divided by its true size."""
        return self.sdd_mm / self.sod_mm if self.projection == "cone" else 1.0

    @property
    def iso_pixel_spacing_mm(self) -> tuple[float, float]:
        """Pixel spacing (row, col) in mm back-projected to the isocentre plane."""
        m = self.magnification
        return (self.pixel_spacing_mm[0] / m, self.pixel_spacing_mm[1] / m)

    def with_(self, **changes: Any) -> View:
        """Return a copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_sidecar(self, line_integral_scale: float | None = None, flip_lr: bool = False) -> dict:
        """Sidecar dictionary with the keys of the conventions (plus optional extras if set)."""
        out: dict[str, Any] = {
            "angle_deg": self.angle_deg,
            "sdd_mm": self.sdd_mm,
            "sod_mm": self.sod_mm,
            "pixel_spacing_mm": list(self.pixel_spacing_mm),
            "projection": self.projection,
            "flip_lr": bool(flip_lr),
            "line_integral_scale": line_integral_scale,
        }
        if any(self.offset_px):
            out["offset_px"] = list(self.offset_px)
        if self.pose is not None:
            out["pose"] = [list(row) for row in self.pose]
        return out

    @classmethod
    def from_sidecar(cls, data: Mapping[str, Any], shape: Sequence[int], **overrides: Any) -> View:
        """Build a view from a sidecar dictionary and the image shape (rows, cols).

        Unknown keys are rejected so that typos do not silently fall back to defaults.
        ``overrides`` (e.g. command-line options) win over the sidecar; ``None`` values are ignored.
        """
        data = validate_sidecar(data)
        kwargs: dict[str, Any] = {}
        for key in ("angle_deg", "sdd_mm", "sod_mm", "pixel_spacing_mm", "projection", "offset_px"):
            if data.get(key) is not None:
                kwargs[key] = data[key]
        if data.get("pose") is not None:
            kwargs["pose"] = data["pose"]
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        kwargs["shape"] = tuple(shape)
        if "angle_deg" not in kwargs:
            raise GeometryError("the view angle is unknown: give angle_deg in the sidecar or --angles")
        return cls(**kwargs)


def _validate_pose(pose: Any) -> tuple[tuple[float, ...], ...]:
    t = torch.as_tensor(pose, dtype=torch.float64)
    if t.shape != (4, 4):
        raise GeometryError(f"pose must be a 4x4 matrix, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise GeometryError("pose must be finite")
    r = t[:3, :3]
    if not torch.allclose(r @ r.T, torch.eye(3, dtype=t.dtype), atol=1e-4) or torch.det(r) < 0:
        raise GeometryError("pose rotation must be a proper rotation matrix")
    if not torch.allclose(t[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=t.dtype)):
        raise GeometryError("pose last row must be (0, 0, 0, 1)")
    return tuple(tuple(float(x) for x in row) for row in t.tolist())


def _sidecar_number(key: str, value: Any, lo: float, hi: float, *, lo_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GeometryError(f"{key} must be a number, got {value!r}")
    return _in_range(key, _finite(key, value), lo, hi, lo_open=lo_open)


def _sidecar_pair(key: str, value: Any, lo: float, hi: float, *, lo_open: bool, single: bool) -> list[float]:
    if single and isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise GeometryError(f"{key} must be {'one number or ' if single else ''}a list of two numbers, got {value!r}")
    return [_sidecar_number(key, v, lo, hi, lo_open=lo_open) for v in value]


def validate_sidecar(data: Any) -> dict[str, Any]:
    """Check a sidecar dictionary against the typed schema and return a cleaned copy.

    Schema (``null`` = not given, for every key):

    ==================== ===================================================================
    angle_deg            number in [-360, 360]
    sdd_mm, sod_mm       number in (0, 1e5]
    pixel_spacing_mm     number or [row, col], each in (0, 100]
    projection           "cone" or "parallel"
    flip_lr, invert      JSON boolean (``true``/``false``; the string "false" is an error)
    line_integral_scale  number in (0, 1e6]
    offset_px            number or [row, col], each in [-1e5, 1e5]
    pose                 4x4 list of numbers (a rigid transform, checked by :class:`View`)
    shape                [rows, cols] whole numbers within the detector size limits
    ==================== ===================================================================

    Raises:
        GeometryError: unknown keys (named), wrong types, non-finite or out-of-range values.
    """
    if not isinstance(data, Mapping):
        raise GeometryError(f"a sidecar must be a JSON object, got {type(data).__name__}")
    unknown = [k for k in data if k not in SIDECAR_KEYS and k not in SIDECAR_OPTIONAL_KEYS]
    if unknown:
        raise GeometryError(
            f"unknown sidecar key(s): {', '.join(sorted(map(str, unknown)))} "
            f"(known: {', '.join(SIDECAR_KEYS + SIDECAR_OPTIONAL_KEYS)})"
        )
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            out[key] = None
        elif key == "angle_deg":
            out[key] = _sidecar_number(key, value, -MAX_ANGLE_DEG, MAX_ANGLE_DEG, lo_open=False)
        elif key in ("sdd_mm", "sod_mm"):
            out[key] = _sidecar_number(key, value, 0.0, MAX_DISTANCE_MM, lo_open=True)
        elif key == "pixel_spacing_mm":
            out[key] = _sidecar_pair(key, value, 0.0, MAX_PIXEL_SPACING_MM, lo_open=True, single=True)
        elif key == "offset_px":
            out[key] = _sidecar_pair(key, value, -MAX_OFFSET, MAX_OFFSET, lo_open=False, single=True)
        elif key == "line_integral_scale":
            out[key] = _sidecar_number(key, value, 0.0, MAX_LINE_INTEGRAL_SCALE, lo_open=True)
        elif key == "projection":
            if not isinstance(value, str) or value not in PROJECTIONS:
                raise GeometryError(f"projection must be one of {', '.join(PROJECTIONS)}, got {value!r}")
            out[key] = value
        elif key in ("flip_lr", "invert"):
            if not isinstance(value, bool):
                raise GeometryError(
                    f"{key} must be true or false (a JSON boolean, not a string or number), got {value!r}"
                )
            out[key] = value
        elif key == "shape":
            if not isinstance(value, (list, tuple)):
                raise GeometryError(f"shape must be [rows, cols], got {value!r}")
            out[key] = list(check_detector_shape(value, "shape"))
        elif key == "pose":
            rows = value if isinstance(value, (list, tuple)) else None
            if rows is None or len(rows) != 4 or not all(isinstance(r, (list, tuple)) and len(r) == 4 for r in rows):
                raise GeometryError(f"pose must be a 4x4 list of numbers, got {value!r}")
            out[key] = [
                [_finite("pose", x) if not isinstance(x, bool) else _finite("pose", None) for x in r] for r in rows
            ]
    return out


def parse_angles(text: str) -> list[float]:
    """Parse ``"0,90"`` (degrees, comma separated) into floats; raise GeometryError otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(p == "" for p in parts):
        raise GeometryError(f"cannot read angles {text!r}: expected comma-separated degrees like 0,90")
    try:
        angles = [float(p) for p in parts]
    except ValueError as exc:
        raise GeometryError(f"cannot read angles {text!r}: expected comma-separated degrees like 0,90") from exc
    if not all(math.isfinite(a) for a in angles):
        raise GeometryError(f"angles must be finite, got {text!r}")
    if any(abs(a) > MAX_ANGLE_DEG for a in angles):
        raise GeometryError(f"angles must be in [-{MAX_ANGLE_DEG:g}, {MAX_ANGLE_DEG:g}] degrees, got {text!r}")
    return angles


# ----------------------------------------------------------------------------- rigid transforms


def rotation_matrix(axis_angle_rad: Tensor) -> Tensor:
    """Rodrigues' formula, differentiable (also at zero).

    Args:
        axis_angle_rad: ``[..., 3]`` rotation vector (axis * angle, radians).
    Returns:
        ``[..., 3, 3]`` rotation matrices.
    """
    theta2 = (axis_angle_rad**2).sum(-1, keepdim=True)[..., None]  # [...,1,1]
    small = theta2 < 1e-12
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2_safe)
    x, y, z = axis_angle_rad.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*x.shape, 3, 3)
    eye = torch.eye(3, dtype=axis_angle_rad.dtype, device=axis_angle_rad.device)
    return eye + a * k + b * (k @ k)


def rigid_pose(axis_angle_rad: Tensor, translation_mm: Tensor) -> Tensor:
    """4x4 rigid transforms ``[..., 4, 4]`` from rotation vectors and translations ``[..., 3]``."""
    r = rotation_matrix(axis_angle_rad)
    top = torch.cat([r, translation_mm[..., :, None]], -1)
    bottom = torch.zeros(*top.shape[:-2], 1, 4, dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], -2)


# ----------------------------------------------------------------------------- rays


@dataclass
class Rays:
    """Rays of a batch of views, all tensors in world millimetres.

    Attributes:
        origins: ``[V, R, C, 3]`` ray start points (the source for cone beam).
        directions: ``[V, R, C, 3]`` unit direction vectors, from source toward detector.
        lengths: ``[V, R, C]`` distance from origin to the detector pixel (mm).
    """

    origins: Tensor
    directions: Tensor
    lengths: Tensor


def detector_frame(
    views: Sequence[View],
    *,
    angle_deg: Tensor | None = None,
    pose: Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """Source position, detector centre and axes of each view, in world mm.

    Args:
        views: V views.
        angle_deg: optional ``[V]`` tensor overriding the views' angles (for gradients).
        pose: optional ``[V, 4, 4]`` rigid transforms overriding the views' poses.
    Returns:
        dict with ``source``, ``centre``, ``u``, ``v``, ``s`` (beam reversed), each ``[V, 3]``.
    """
    views = list(views)
    if not views:
        raise GeometryError("at least one view is needed")
    kw = dict(device=device, dtype=dtype)
    if angle_deg is None:
        angle_deg = torch.tensor([v.angle_deg for v in views], **kw)
    angle_deg = angle_deg.to(**kw)
    if angle_deg.shape != (len(views),):
        raise GeometryError(f"angle_deg must have shape [{len(views)}], got {tuple(angle_deg.shape)}")
    theta = torch.deg2rad(angle_deg)
    sin, cos, zero = torch.sin(theta), torch.cos(theta), torch.zeros_like(theta)
    s = torch.stack([sin, cos, zero], -1)
    u = torch.stack([-cos, sin, zero], -1)
    v = torch.tensor([0.0, 0.0, -1.0], **kw).expand_as(u)
    sod = torch.tensor([vw.sod_mm for vw in views], **kw)[:, None]
    sdd = torch.tensor([vw.sdd_mm for vw in views], **kw)[:, None]
    iso = torch.tensor([vw.isocenter_mm for vw in views], **kw)
    source_rel = sod * s
    centre_rel = -(sdd - sod) * s
    if pose is None and any(vw.pose is not None for vw in views):
        eye = torch.eye(4, dtype=torch.float64).tolist()
        pose = torch.tensor([vw.pose if vw.pose is not None else eye for vw in views], **kw)
    if pose is not None:
        pose = pose.to(**kw)
        if pose.shape != (len(views), 4, 4):
            raise GeometryError(f"pose must have shape [{len(views)}, 4, 4], got {tuple(pose.shape)}")
        rot, trans = pose[:, :3, :3], pose[:, :3, 3]
        apply = lambda p: (rot @ p[..., None])[..., 0]  # noqa: E731
        source_rel = apply(source_rel) + trans
        centre_rel = apply(centre_rel) + trans
        s, u, v = apply(s), apply(u), apply(v)
    return {"source": iso + source_rel, "centre": iso + centre_rel, "u": u, "v": v, "s": s}


def make_rays(
    views: Sequence[View],
    *,
    angle_deg: Tensor | None = None,
    pose: Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Rays:
    """Rays through every detector pixel centre of a batch of views.

    All views must share one detector shape and projection type (batch views that differ in
    separate calls).

    Args:
        views: V views.
        angle_deg: optional ``[V]`` angles in degrees overriding the views' (differentiable).
        pose: optional ``[V, 4, 4]`` poses overriding the views' (differentiable).
    Returns:
        :class:`Rays` with tensors of shape ``[V, R, C, ...]``.
    """
    views = list(views)
    if not views:
        raise GeometryError("at least one view is needed")
    shapes = {v.shape for v in views}
    projections = {v.projection for v in views}
    if len(shapes) != 1 or len(projections) != 1:
        raise GeometryError("views in one batch must share detector shape and projection")
    rows, cols = views[0].shape
    kw = dict(device=device, dtype=dtype)
    f = detector_frame(views, angle_deg=angle_deg, pose=pose, device=device, dtype=dtype)
    r = torch.arange(rows, **kw) - (rows - 1) / 2
    c = torch.arange(cols, **kw) - (cols - 1) / 2
    return rays_to_detector(views, f, r[None, :, None], c[None, None, :])


def rays_to_detector(views: Sequence[View], frame: dict[str, Tensor], r_px: Tensor, c_px: Tensor) -> Rays:
    """Rays to detector points given in pixels from the detector centre (before ``offset_px``).

    Args:
        views: V views of one projection type.
        frame: their :func:`detector_frame`.
        r_px, c_px: ``[V or 1, *S]`` row and column (pixels; 0 is the centre of the detector).
    Returns:
        :class:`Rays` with tensors of shape ``[V, *S, ...]``: from the source (cone beam) or from
        ``sdd_mm`` before the detector (parallel beam) to each point.
    """
    f, n, k = frame, len(views), r_px.dim() - 1
    kw = dict(device=r_px.device, dtype=r_px.dtype)
    per_view = lambda t: t.reshape(n, *([1] * k), *t.shape[1:])  # noqa: E731  [V, 1.., ...]
    spacing = torch.tensor([v.pixel_spacing_mm for v in views], **kw)  # [V,2] (row, col)
    offset = torch.tensor([v.offset_px for v in views], **kw)
    r_mm = (r_px + per_view(offset[:, 0])) * per_view(spacing[:, 0])  # [V,*S]
    c_mm = (c_px + per_view(offset[:, 1])) * per_view(spacing[:, 1])
    pixels = per_view(f["centre"]) + c_mm[..., None] * per_view(f["u"]) + r_mm[..., None] * per_view(f["v"])
    if views[0].projection == "cone":
        delta = pixels - per_view(f["source"])
        lengths = delta.norm(dim=-1)
        directions = delta / lengths[..., None]
        origins = per_view(f["source"]).expand_as(pixels)
    else:
        sdd = torch.tensor([v.sdd_mm for v in views], **kw)
        directions = per_view(-f["s"]).expand_as(pixels)
        lengths = per_view(sdd).expand(pixels.shape[:-1])
        origins = pixels - lengths[..., None] * directions
    return Rays(origins=origins, directions=directions, lengths=lengths)


def pixel_rays(view: View, pixels_rc: Tensor) -> Rays:
    """Rays through fractional pixels ``[N, 2]`` (row, col; pixel centres are integers) of one
    view; :class:`Rays` of shape ``[N, ...]`` in the dtype of ``pixels_rc`` (float64 for integer
    pixels, whose dtype would truncate the detector frame)."""
    if not pixels_rc.is_floating_point():
        pixels_rc = pixels_rc.to(torch.float64)
    rows, cols = view.shape
    f = detector_frame([view], device=pixels_rc.device, dtype=pixels_rc.dtype)
    rays = rays_to_detector([view], f, pixels_rc[None, :, 0] - (rows - 1) / 2, pixels_rc[None, :, 1] - (cols - 1) / 2)
    return Rays(rays.origins[0], rays.directions[0], rays.lengths[0])


def pixel_inside(rc: Sequence[float], shape: Sequence[int]) -> bool:
    """Whether a fractional pixel (row, col) lies on a detector of ``shape`` (rows, cols): inside
    the pixel edges ``[-0.5, rows - 0.5) x [-0.5, cols - 0.5)``."""
    (r, c), (rows, cols) = rc, shape
    return -0.5 <= r < rows - 0.5 and -0.5 <= c < cols - 0.5


def world_to_pixel(
    points_mm: Tensor, view: View, *, angle_deg: Tensor | None = None, pose: Tensor | None = None
) -> Tensor:
    """Project world points onto a view's detector.

    Args:
        points_mm: ``[N, 3]`` world points in mm.
    Returns:
        ``[N, 2]`` fractional pixel coordinates (row, col); pixel centres are integers.
    """
    pts = points_mm.to(torch.float64)
    f = detector_frame(
        [view],
        angle_deg=None if angle_deg is None else angle_deg.reshape(1),
        pose=None if pose is None else pose.reshape(1, 4, 4),
        dtype=torch.float64,
        device=pts.device,
    )
    src, centre, u, v, s = (f[k][0] for k in ("source", "centre", "u", "v", "s"))
    if view.projection == "cone":
        d = pts - src
        # intersect the ray src + t d with the detector plane (normal s through centre)
        t = ((centre - src) @ s) / (d @ s)
        hit = src + t[:, None] * d
    else:
        hit = pts - ((pts - centre) @ s)[:, None] * s
    rel = hit - centre
    rows, cols = view.shape
    dr, dc = view.pixel_spacing_mm
    col = rel @ u / dc + (cols - 1) / 2 - view.offset_px[1]
    row = rel @ v / dr + (rows - 1) / 2 - view.offset_px[0]
    return torch.stack([row, col], -1)


def views_from(items: Iterable[View | Mapping[str, Any]]) -> list[View]:
    """Accept Views or keyword dictionaries and return a list of Views."""
    return [v if isinstance(v, View) else View(**v) for v in items]


def view_dict(view: View) -> dict[str, Any]:
    """Plain JSON-serializable dictionary of every field of a view (for reports)."""
    d = asdict(view)
    d["shape"] = list(view.shape)
    return d
