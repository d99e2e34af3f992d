"""2D images: reading 8/16-bit grayscale PNG/JPEG/TIFF (RGB converted to luminance) and writing
8/16-bit PNGs, atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from ..errors import InputError
from ..geometry import MAX_DETECTOR_PIXELS, MAX_DETECTOR_SIDE
from .files import PathLike, _one_line, _to_numpy, atomic_write

_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luminance weights


def _to_gray(arr: np.ndarray) -> np.ndarray:
    """``[R, C, 3|4]`` colour (alpha dropped) or ``[R, C, 2]`` gray+alpha -> ``[R, C]`` luminance."""
    if arr.shape[-1] == 2:
        return arr[..., 0]
    gray = arr[..., :3].astype(np.float64) @ _LUMA
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(np.rint(gray), 0, np.iinfo(arr.dtype).max).astype(arr.dtype)
    return gray.astype(arr.dtype)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        series = tif.series[0]
        axes, arr = series.axes, series.asarray()
    if "S" in axes:  # colour samples, maybe planar (SYX)
        arr = np.moveaxis(arr, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    squeeze = tuple(i for i, a in enumerate(axes) if a not in "YXS" and arr.shape[i] == 1)
    arr = np.squeeze(arr, axis=squeeze) if squeeze else arr
    axes = "".join(a for i, a in enumerate(axes) if i not in squeeze)
    if axes not in ("YX", "YXS"):
        raise InputError(f"{path}: expected one 2D image, got a stack with axes {axes} shape {arr.shape}")
    return arr


def _check_image_size(path: Path, rows: int, cols: int) -> None:
    if rows > MAX_DETECTOR_SIDE or cols > MAX_DETECTOR_SIDE or rows * cols > MAX_DETECTOR_PIXELS:
        raise InputError(
            f"{path}: {rows}x{cols} pixels is too large for an X-ray (at most {MAX_DETECTOR_SIDE} "
            f"per side and {MAX_DETECTOR_PIXELS} in all; downsample it)"
        )


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(str(path)) as im:
        _check_image_size(path, im.size[1], im.size[0])  # from the header, before decoding
        if getattr(im, "n_frames", 1) > 1:
            raise InputError(f"{path}: expected one 2D image, got a stack of {im.n_frames} frames")
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        arr = np.asarray(im)
        if im.mode == "I":  # 32-bit integer container (some 16-bit files)
            if arr.size and (arr.min() < 0 or arr.max() > 65535):
                raise InputError(f"{path}: 32-bit integer images are not supported (8/16-bit only)")
            arr = arr.astype(np.uint16)
    return arr.astype(arr.dtype.newbyteorder("=")) if arr.dtype.byteorder not in "=|" else arr


def read_image_raw(path: PathLike) -> tuple[np.ndarray, int]:
    """Read a 2D grayscale image without rescaling.

    RGB(A) images are converted to luminance (BT.601). Float images (e.g. float TIFF) are
    returned as float32 with ``bit_depth = 0``.

    Returns:
        ``([R, C] uint8 | uint16 | float32, bit_depth)`` with bit_depth 8, 16 or 0 (float).
    Raises:
        InputError: missing or unreadable file, 3D stacks, unsupported pixel types, NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    is_tiff = path.suffix.lower() in (".tif", ".tiff")
    try:
        arr = _read_tiff(path) if is_tiff else _read_pil(path)
    except InputError:
        raise
    except Exception as exc:
        if not is_tiff:
            raise InputError(f"{path}: cannot read as an image ({type(exc).__name__}: {_one_line(exc)})") from exc
        try:
            arr = _read_pil(path)
        except InputError:
            raise
        except Exception as exc2:
            raise InputError(f"{path}: cannot read as an image ({type(exc2).__name__}: {_one_line(exc2)})") from exc2
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4):
        arr = _to_gray(arr)
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a 2D grayscale image, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{path}: the image is empty (shape {arr.shape})")
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255, 8
    if arr.dtype == np.uint8:
        return arr, 8
    if arr.dtype == np.uint16:
        return arr, 16
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{path}: the image holds NaN or infinite values")
        return arr, 0
    if np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 65535:
        return arr.astype(np.uint16), 16
    raise InputError(f"{path}: unsupported pixel type {arr.dtype} (8/16-bit grayscale expected)")


def read_image(path: PathLike) -> np.ndarray:
    """Read an 8/16-bit grayscale PNG/JPEG/TIFF as float32 ``[R, C]`` in ``[0, 1]``.

    8-bit values are divided by 255, 16-bit by 65535; RGB(A) is converted to luminance. Float
    images are min-max normalized unless already within ``[0, 1]``.

    Raises:
        InputError: missing or unreadable file, 3D stacks, unsupported pixel types.
    """
    arr, bits = read_image_raw(path)
    if bits == 8:
        return arr.astype(np.float32) / np.float32(255.0)
    if bits == 16:
        return arr.astype(np.float32) / np.float32(65535.0)
    return _normalize(arr)


def _normalize(arr: np.ndarray) -> np.ndarray:
    """Float image to ``[0, 1]``: kept if already inside, else min-max (constant -> zeros)."""
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr
    if hi <= lo:
        return np.zeros_like(arr)
    return (arr - lo) / np.float32(hi - lo)


def _write_png(path: PathLike, image: np.ndarray, *, force: bool) -> Path:
    from PIL import Image

    path = Path(path)
    with atomic_write(path, force=force) as tmp:
        Image.fromarray(image).save(str(tmp), format="PNG")
    return path


def write_png16(path: PathLike, image_uint16: np.ndarray | Tensor, *, force: bool = False) -> Path:
    """Write a ``[R, C]`` uint16 image as a 16-bit grayscale PNG, atomically."""
    arr = _to_numpy(image_uint16)
    if arr.ndim != 2:
        raise InputError(f"{path}: a 16-bit PNG must be 2D [R, C], got shape {arr.shape}")
    if arr.dtype != np.uint16:
        raise InputError(f"{path}: write_png16 expects uint16 data, got {arr.dtype}")
    return _write_png(path, np.ascontiguousarray(arr), force=force)


def write_png8(path: PathLike, image_uint8_or_rgb: np.ndarray | Tensor, *, force: bool = False) -> Path:
    """Write a ``[R, C]`` gray or ``[R, C, 3|4]`` RGB(A) uint8 image as PNG (previews), atomically."""
    arr = _to_numpy(image_uint8_or_rgb)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise InputError(f"{path}: expected [R, C] or [R, C, 3|4], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(f"{path}: write_png8 expects uint8 data, got {arr.dtype}")
    return _write_png(path, np.ascontiguousarray(arr), force=force)
