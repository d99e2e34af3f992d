"""X-rays: an image (PNG/JPEG/TIFF with a JSON sidecar, or DICOM) and its view geometry.

A simulated X-ray is a 16-bit PNG holding ``round(65535 * p / line_integral_scale)`` of the line
integral ``p`` (bright = attenuating) with a JSON sidecar (``ap.png`` -> ``ap.json``). DICOM tags
are mapped to the geometry by :mod:`xfit.io.dicom`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..errors import GeometryError, InputError
from ..geometry import View, validate_sidecar
from .files import PathLike, _check_writable, _to_numpy
from .images import read_image, write_png8, write_png16
from .text import read_sidecar, write_sidecar

#: Defaults used for an X-ray without sidecar or DICOM geometry (once its angle is given).
DEFAULT_SDD_MM = 1800.0
DEFAULT_SOD_MM = 1500.0

_DICOM_SUFFIXES = (".dcm", ".dicom")


def sidecar_path(image_path: PathLike) -> Path:
    """The JSON sidecar next to an image: ``ap.png`` -> ``ap.json``."""
    return Path(image_path).with_suffix(".json")


@dataclass
class XRay:
    """An X-ray image with its view.

    Attributes:
        image: ``[R, C]`` float32, bright = attenuating, in the conventions' orientation (already
            un-flipped / inverted). Line integrals when ``line_integral_scale`` is known, else
            intensities in ``[0, 1]``.
        view: the :class:`~xfit.geometry.View` (``shape`` = image shape).
        line_integral_scale: the PNG scale of the sidecar, or None for uncalibrated images.
        path: the file read.
        sources: for each geometry value (``angle_deg``, ``sdd_mm``, ``sod_mm``,
            ``pixel_spacing_mm``, ``projection``, ``orientation``, ``invert``...), the DICOM tag,
            option, sidecar key or default that supplied it (recorded in ``report.json``).
    """

    image: np.ndarray
    view: View
    line_integral_scale: float | None
    path: Path
    sources: dict[str, str] = field(default_factory=dict)
    #: how the file's pixel array became :attr:`image`: (transposed, rows flipped, columns
    #: flipped), applied in that order; see :func:`stored_to_image`
    orientation: tuple[bool, bool, bool] = (False, False, False)
    #: (rows, cols) of the file's pixel array
    stored_shape: tuple[int, int] | None = None


def stored_to_image(
    rc: Sequence[float], stored_shape: Sequence[int], orientation: Sequence[bool]
) -> tuple[float, float]:
    """A pixel (row, col) of the file's own array (as a viewer shows it) -> the same pixel of the
    image as xfit orients it (:attr:`XRay.image`: transposed, then rows, then columns flipped)."""
    transpose, flip_ud, flip_lr = (bool(x) for x in orientation)
    (r, c), (rows, cols) = (float(x) for x in rc), (int(n) for n in stored_shape)
    if transpose:
        r, c, rows, cols = c, r, cols, rows
    if flip_ud:
        r = rows - 1 - r
    if flip_lr:
        c = cols - 1 - c
    return r, c


def write_xray(
    path_png: PathLike,
    line_integrals: np.ndarray | Tensor,
    view: View,
    *,
    line_integral_scale: float | None = None,
    force: bool = False,
) -> float:
    """Write a DRR as a 16-bit PNG plus its JSON sidecar (both atomically).

    Pixel value ``round(65535 * p / scale)`` clipped to ``[0, 65535]`` (bright = attenuating).

    Args:
        path_png: output image path (the sidecar goes to :func:`sidecar_path`).
        line_integrals: ``[R, C]`` line integrals ``p`` (dimensionless), ``R, C = view.shape``.
        view: the view of the image.
        line_integral_scale: value of ``p`` mapped to 65535; default
            ``max(10, ceil(1.05 * max p))``.
    Returns:
        The scale used.
    Raises:
        InputError: wrong shape or non-finite values. GeometryError: shape differs from the view.
        OutputExistsError: the PNG or sidecar exists and ``force`` is false (nothing is written).
    """
    path_png = Path(path_png)
    p = _to_numpy(line_integrals).astype(np.float64)
    if p.ndim != 2:
        raise InputError(f"line integrals must be 2D [R, C], got shape {p.shape}")
    if tuple(p.shape) != tuple(view.shape):
        raise GeometryError(f"image shape {p.shape} differs from the view's detector shape {view.shape}")
    if not np.all(np.isfinite(p)):
        raise InputError("line integrals hold NaN or infinite values")
    if line_integral_scale is None:
        line_integral_scale = max(10.0, float(math.ceil(float(p.max()) * 1.05)))
    scale = float(line_integral_scale)
    if not math.isfinite(scale) or scale <= 0:
        raise InputError(f"line_integral_scale must be > 0, got {line_integral_scale!r}")
    side = sidecar_path(path_png)
    for target in (path_png, side):
        _check_writable(target, force)
    pixels = np.clip(np.rint(65535.0 * p / scale), 0, 65535).astype(np.uint16)
    write_png16(path_png, pixels, force=force)
    write_sidecar(side, view.to_sidecar(line_integral_scale=scale), force=force)
    return scale


def write_radiograph(
    path_png: PathLike,
    codes: np.ndarray,
    bits: int,
    view: View,
    *,
    invert: bool = False,
    force: bool = False,
) -> Path:
    """Write a processed (uncalibrated) radiograph as PNG plus sidecar, both atomically.

    ``bits`` <= 8: an 8-bit PNG of the codes; else a 16-bit PNG with the codes spread over the
    full range (``round(code * 65535 / (2^bits - 1))``, so reading divides back to ``[0, 1]``).
    The sidecar holds the view, no ``line_integral_scale`` (the image is not line integrals) and
    ``invert: true`` for MONOCHROME1 images (bone dark), so :func:`read_xray` reads them right.

    Args:
        codes: ``[R, C]`` integer codes in ``[0, 2^bits - 1]``; view: its view (shape = codes.shape).
    Raises:
        InputError: bad codes or bit depth. OutputExistsError: a file exists and ``force`` is false.
    """
    path_png = Path(path_png)
    arr = _to_numpy(codes)
    top = (1 << int(bits)) - 1 if isinstance(bits, (int, np.integer)) and 1 <= bits <= 16 else None
    if top is None or arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > top:
        raise InputError(
            f"codes must be [R, C] integers in [0, 2^bits - 1] with bits in 1..16, got {arr.dtype} "
            f"{arr.shape} and bits {bits!r}"
        )
    if tuple(arr.shape) != tuple(view.shape):
        raise GeometryError(f"image shape {arr.shape} differs from the view's detector shape {view.shape}")
    side = sidecar_path(path_png)
    for target in (path_png, side):
        _check_writable(target, force)
    if bits <= 8:
        write_png8(path_png, np.rint(arr.astype(np.float64) * 255.0 / top).astype(np.uint8), force=force)
    else:
        write_png16(path_png, np.rint(arr.astype(np.float64) * 65535.0 / top).astype(np.uint16), force=force)
    data = view.to_sidecar(line_integral_scale=None)
    if invert:
        data["invert"] = True
    write_sidecar(side, data, force=force)
    return path_png


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom(path: PathLike) -> tuple[np.ndarray, dict]:
    """Read a single-frame DICOM X-ray and the geometry its tags give (see :mod:`xfit.io.dicom`).

    RescaleSlope/Intercept (and a VOILUTSequence) are applied, MONOCHROME1 / PresentationLUTShape
    INVERSE are inverted (so bright = attenuating), and the result is min-max normalized to
    ``[0, 1]``. The image is returned as stored (not yet flipped to the beam's-eye view:
    :func:`read_xray` does that from PatientOrientation).

    Returns:
        ``([R, C] float32 image, geometry dict)`` with the sidecar keys the tags supply:
        ``angle_deg`` (ViewPosition, or the C-arm PositionerPrimaryAngle as theta = 180 - angle),
        ``sdd_mm``, ``sod_mm``, ``pixel_spacing_mm`` (detector plane) and ``pose`` (a cranial or
        caudal tilt). An unusable pixel spacing tag (``PixelSpacing 0\\0``) gives no
        ``pixel_spacing_mm``.
    Raises:
        InputError: unreadable file, no pixel data, multi-frame or colour data, contradictory tags.
    """
    from .dicom import read_dataset

    info = read_dataset(path)
    return info.image, dict(info.values)


def read_pixels(path: PathLike) -> np.ndarray:
    """The image of an X-ray file as stored, without its geometry: :func:`read_dicom`'s image for
    DICOM, :func:`read_image` otherwise (for checks on the pixels alone).

    Raises:
        InputError: a missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if _is_dicom(path):
        from .dicom import read_dataset

        return read_dataset(path).image
    return read_image(path)


def _geometry_sources(data: dict, overrides: dict, sidecar_name: str | None, defaulted: set) -> dict[str, str]:
    """Which option, sidecar key or default supplied each geometry value of a non-DICOM image."""
    names = {
        "angle_deg": "--angles",
        "sdd_mm": "--sdd",
        "sod_mm": "--sod",
        "pixel_spacing_mm": "--pixel-spacing",
        "projection": "--projection",
    }
    out: dict[str, str] = {}
    for key in ("angle_deg", "sdd_mm", "sod_mm", "pixel_spacing_mm", "projection", "offset_px", "pose"):
        if overrides.get(key) is not None:
            out[key] = f"option {key} ({names.get(key, key)})"
        elif key in defaulted:
            out[key] = f"default ({data[key]:g} mm)"
        elif data.get(key) is not None:
            out[key] = f"{sidecar_name} {key}"
    return out


def read_xray(
    path: PathLike,
    *,
    angle_deg: float | None = None,
    sdd_mm: float | None = None,
    sod_mm: float | None = None,
    pixel_spacing_mm: float | Sequence[float] | None = None,
    projection: str | None = None,
    flip_lr: bool | None = None,
    invert: bool = False,
) -> XRay:
    """Read an X-ray (PNG/JPEG/TIFF or DICOM) and its geometry.

    PNG/JPEG/TIFF: geometry from the JSON sidecar (if present), then the keyword arguments
    (``None`` = not given, they win). Without a sidecar, sdd/sod default to 1800/1500 mm; the
    angle and the pixel spacing must come from somewhere.

    DICOM: the tags give the view, orientation, spacing and distances (:mod:`xfit.io.dicom`, one
    table); a sidecar or keyword argument may fill what the tags lack but must agree with what
    they give (else :class:`InputError` naming both). The image is transposed/flipped to the
    beam's-eye view from PatientOrientation (or, without it, from how such images are stored,
    with a warning).

    Intensities: 16-bit / 8-bit are divided by 65535 / 255 (DICOM is min-max normalized). If
    ``invert`` (or the sidecar's ``invert``) is set, ``x -> 1 - x``. If the sidecar holds a
    ``line_integral_scale``, the image is multiplied by it (line integrals). ``flip_lr`` (argument,
    else sidecar) means the stored image is mirrored left-right, so it is flipped back here.

    Returns:
        :class:`XRay` with ``image`` ``[R, C]`` float32 and ``sources`` (which tag, option,
        sidecar key or default supplied each geometry value).
    Raises:
        InputError: unreadable image or sidecar, contradictory DICOM tags / options.
        GeometryError: missing angle or pixel spacing, or an impossible geometry.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    for name, value in (("flip_lr", flip_lr), ("invert", invert)):
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise InputError(f"{name} must be True or False, got {value!r}")
    side = sidecar_path(path)
    has_sidecar = side.is_file() and side != path
    if not has_sidecar and side != path and os.path.lexists(side):  # a folder, dangling link, loop
        raise InputError(f"{side}: the sidecar of {path.name} is not a readable file")
    side_data: dict[str, Any] = {}
    if has_sidecar:
        try:
            side_data = validate_sidecar(read_sidecar(side))
        except GeometryError as exc:
            raise GeometryError(f"{side}: {exc}") from exc
    overrides = dict(
        angle_deg=angle_deg,
        sdd_mm=sdd_mm,
        sod_mm=sod_mm,
        pixel_spacing_mm=pixel_spacing_mm,
        projection=projection,
    )
    if _is_dicom(path):
        from .dicom import read_dataset, resolve

        info = read_dataset(path)
        defaults = None if has_sidecar else {"sdd_mm": DEFAULT_SDD_MM, "sod_mm": DEFAULT_SOD_MM}
        image, data, sources = resolve(
            info,
            path,
            sidecar=side_data,
            sidecar_name=side.name,
            options=overrides,
            flip_lr=None if flip_lr is None else bool(flip_lr),
            defaults=defaults,
        )
        orientation = tuple(data.pop("_orientation"))
        stored_shape = image.shape[::-1] if orientation[0] else image.shape
        overrides = {}  # merged (and checked against the tags) by resolve
        do_flip = False  # done by resolve
        if side_data.get("invert"):
            sources["invert"] = f"{side.name} invert" + (f" (after {sources['invert']})" if "invert" in sources else "")
    else:
        image = read_image(path)
        data = dict(side_data)
        defaulted: set = set()
        if not has_sidecar:
            for key, value in (("sdd_mm", DEFAULT_SDD_MM), ("sod_mm", DEFAULT_SOD_MM)):
                if key not in data:
                    data[key] = value
                    defaulted.add(key)
        side_flip = data.get("flip_lr")
        do_flip = bool(side_flip) if flip_lr is None else bool(flip_lr)
        orientation, stored_shape = (False, False, do_flip), image.shape
        sources = _geometry_sources(data, overrides, side.name, defaulted)
        if flip_lr is not None:
            sources["orientation"] = f"option flip_lr (--flip-lr) = {do_flip}"
        elif side_flip is not None:
            sources["orientation"] = f"{side.name} flip_lr = {do_flip}"
        else:
            sources["orientation"] = "default (stored as the beam's-eye view)"
        if data.get("invert"):
            sources["invert"] = f"{side.name} invert"
    if invert:
        after = f" (after {sources['invert']})" if "invert" in sources else ""
        sources["invert"] = "option invert (--invert)" + after
    if data.get("shape") is not None and tuple(data["shape"]) != tuple(image.shape):
        raise GeometryError(
            f"{side}: shape {data['shape']} differs from the image's {list(image.shape)} "
            f"pixels (rows, cols) of {path.name}"
        )
    if data.get("pixel_spacing_mm") is None and overrides.get("pixel_spacing_mm") is None:
        where = f"in {side.name} " if has_sidecar else ""
        raise GeometryError(f"{path}: the pixel spacing is unknown: give pixel_spacing_mm {where}or --pixel-spacing")
    if data.get("angle_deg") is None and overrides.get("angle_deg") is None:
        raise GeometryError(f"{path}: the view angle is unknown: give angle_deg in a sidecar or --angles")
    do_invert = bool(invert) or bool(side_data.get("invert"))
    scale = data.get("line_integral_scale")
    view_data = {k: v for k, v in data.items() if k not in ("flip_lr", "line_integral_scale", "invert", "shape")}
    try:
        view = View.from_sidecar(view_data, image.shape, **overrides)
    except GeometryError as exc:
        raise GeometryError(f"{path}: {exc}") from exc
    for key in ("sdd_mm", "sod_mm", "projection"):  # what nothing gave: the View's defaults
        if key not in sources:
            value = getattr(view, key)
            sources[key] = f"default ({value:g} mm)" if isinstance(value, float) else f"default ({value})"
    if do_invert:
        image = 1.0 - image
    if do_flip:
        image = np.fliplr(image)
    if scale is not None:
        scale = float(scale)  # validated by the schema: finite, in (0, 1e6]
        image = image * np.float32(scale)
    return XRay(
        image=np.ascontiguousarray(image, dtype=np.float32),
        view=view,
        line_integral_scale=scale,
        path=path,
        sources=sources,
        orientation=orientation,
        stored_shape=tuple(int(n) for n in stored_shape),
    )
