"""Targeting and region of interest for fitting large real radiographs.

The prior's cube is small (64^3 voxels of 1.25 mm: an 80 mm field of view) while a radiograph
is large (e.g. 2000 x 2500 pixels of 0.15 mm). This module finds where the wanted vertebra is
and which part of each image the cube sees:

* :func:`pixel_rays` / :func:`triangulate`: world point (mm) from one clicked pixel per view;
* :func:`auto_target`: the same without clicks, by matching the prior's mean vertebra;
* :func:`roi_for_cube` / :func:`crop_image`: crop (and area-average) each image around the
  cube, with the matching cropped and resampled :class:`~xfit.geometry.View`.

Views follow :mod:`xfit.geometry`; pixel coordinates are (row, col) with integer pixel centres,
as returned by :func:`~xfit.geometry.world_to_pixel`. Geometry is float64 numpy.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import GeometryError, InputError
from ..geometry import (
    View,
    check_detector_shape,
    detector_frame,
    pixel_inside,
    rotation_matrix,
    view_dict,
    world_to_pixel,
)
from ..geometry import pixel_rays as geometry_pixel_rays
from ..projector import project

#: Largest fraction of the cube's projection (per detector axis) that may lie outside an image;
#: less is cropped with a warning (a vertebra at the edge of a radiograph), more is an error.
MAX_OUTSIDE_FRACTION = 0.25
#: Smallest side (pixels) of a region of interest, before and after resampling.
MIN_ROI_SIDE = 16
#: Auto-targeting candidates closer than this (mm) are one candidate (non-maximum suppression).
MIN_CANDIDATE_DISTANCE_MM = 20.0
#: Most points of the auto-targeting search grid (about 100 MB of float64 coordinates).
MAX_SEARCH_POINTS = 4_000_000
#: Most sub-pixels per coarse pixel and axis when projecting the template (anti-aliasing).
MAX_TEMPLATE_SUPERSAMPLING = 4
#: Sigma (mm at the isocentre) of the Gaussian whose blur ``auto_target`` subtracts from the coarse
#: images and the template before correlating them: what is left are the edges of bone, not the
#: slow gradients of the body's soft tissue and outline. bench/auto_target.py measures it.
AUTO_HIGHPASS_MM = 6.0
#: Rotation vectors (degrees, world RAS) of the template poses that ``auto_target`` tries: the
#: sagittal tilt (about x, left-right) of a lumbar or thoracic vertebra spans about +-30 degrees
#: (lordosis, kyphosis), the coronal one (about y) much less (scoliosis).
AUTO_TILTS_DEG = (
    (0.0, 0.0, 0.0),
    (-15.0, 0.0, 0.0),
    (15.0, 0.0, 0.0),
    (-30.0, 0.0, 0.0),
    (30.0, 0.0, 0.0),
    (0.0, -12.0, 0.0),
    (0.0, 12.0, 0.0),
)

__all__ = [
    "ROI",
    "AutoTarget",
    "Triangulation",
    "area_resample",
    "auto_target",
    "back_projected_spacing_mm",
    "check_target",
    "closest_point",
    "crop_image",
    "crop_view",
    "cube_corners",
    "ncc_map",
    "pixel_rays",
    "rescale_view",
    "roi_for_cube",
    "triangulate",
]


# ----------------------------------------------------------------------------- small helpers


def _frame(view: View) -> dict[str, np.ndarray]:
    """Source, detector centre and axes ``u``, ``v``, ``s`` of one view, each ``[3]`` float64 mm."""
    f = detector_frame([view], dtype=torch.float64)
    return {k: t[0].numpy() for k, t in f.items()}


def _project_points(points_mm: np.ndarray, view: View) -> np.ndarray:
    """``[N, 3]`` world mm -> ``[N, 2]`` fractional (row, col) of ``view`` (float64 numpy)."""
    pts = torch.from_numpy(np.ascontiguousarray(points_mm, dtype=np.float64).reshape(-1, 3))
    return world_to_pixel(pts, view).numpy()


def _as_points(points: Any, width: int, name: str) -> np.ndarray:
    """``[N, width]`` finite float64 array from an array-like of one or N points."""
    try:
        arr = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numbers, got {points!r}") from exc
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != width:
        raise InputError(f"{name} must have {width} values per point, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} must be finite, got {points!r}")
    return arr


def _check_view(view: Any, index: int) -> View:
    if not isinstance(view, View):
        raise GeometryError(f"view {index} must be an xfit.geometry.View, got {type(view).__name__}")
    return view


def _beam_depth_mm(view: View, points_mm: np.ndarray) -> np.ndarray:
    """``[N]`` distance (mm) of points from the source along the central beam (cone beam)."""
    f = _frame(view)
    return (points_mm - f["source"]) @ (-f["s"])


def cube_corners(centre_mm: Any, fov_mm: float) -> np.ndarray:
    """The 8 corners ``[8, 3]`` (world mm) of the axis-aligned cube of side ``fov_mm`` at ``centre_mm``."""
    centre = _as_points(centre_mm, 3, "centre_mm")[0]
    if isinstance(fov_mm, bool) or not isinstance(fov_mm, numbers.Real) or not (math.isfinite(fov_mm) and fov_mm > 0):
        raise InputError(f"fov_mm must be a positive number, got {fov_mm!r}")
    signs = np.array(np.meshgrid([-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0], indexing="ij")).reshape(3, -1).T
    return centre + 0.5 * float(fov_mm) * signs


# ----------------------------------------------------------------------------- rays and triangulation


def pixel_rays(view: View, pixels_rc: Any) -> tuple[np.ndarray, np.ndarray]:
    """World rays through fractional pixels of a view.

    Args:
        view: the view (offset_px, isocenter_mm, pose and projection are honoured).
        pixels_rc: ``[N, 2]`` (or one ``[2]``) fractional (row, col); pixel centres are integers.
    Returns:
        ``(origins, directions)``, each ``[N, 3]`` float64 world mm: the source (cone beam) or a
        point ``sdd_mm`` before the pixel (parallel beam), and unit directions source -> detector.
    """
    rays = geometry_pixel_rays(view, torch.from_numpy(np.ascontiguousarray(_as_points(pixels_rc, 2, "pixels_rc"))))
    return rays.origins.contiguous().numpy(), rays.directions.contiguous().numpy()  # not views of one row


def check_target(view: View, rc: Any, index: int) -> tuple[float, float]:
    """``(row, col)`` of a target pixel, checked to lie in image ``index``.

    Raises:
        InputError: not two finite numbers, or row/col outside ``[-0.5, rows - 0.5)`` /
            ``[-0.5, cols - 0.5)`` (the pixel edges of the image).
    """
    points = _as_points(rc, 2, f"the target in image {index}")
    if points.shape[0] != 1:
        raise InputError(f"the target in image {index} must be one (row, col), got {points.shape[0]} points")
    row, col = points[0]
    rows, cols = view.shape
    if not pixel_inside((row, col), (rows, cols)):
        raise InputError(f"the target (row {row:g}, col {col:g}) lies outside image {index} ({rows} x {cols} pixels)")
    return float(row), float(col)


@dataclass
class Triangulation:
    """Closest point to the rays through one target pixel per view.

    Attributes:
        point_mm: ``[3]`` world point (mm).
        residual_mm: RMS distance (mm) of the point to the rays.
        distances_mm: distance (mm) of the point to each view's ray.
    """

    point_mm: np.ndarray
    residual_mm: float
    distances_mm: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "point_mm": [float(x) for x in self.point_mm],
            "residual_mm": float(self.residual_mm),
            "distances_mm": [float(x) for x in self.distances_mm],
        }


def _largest_angle_deg(directions: np.ndarray) -> float:
    """Largest angle (degrees, in [0, 90]) between any two of the lines ``[V, 3]``."""
    cos = np.abs(directions @ directions.T).clip(0.0, 1.0)
    return float(np.degrees(np.arccos(cos.min())))


def closest_point(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Least-squares closest point ``[3]`` to lines ``o_i + t d_i`` (``[V, 3]`` each, unit d).

    Solves ``sum_i (I - d_i d_i^T) p = sum_i (I - d_i d_i^T) o_i``.
    """
    proj = np.eye(3) - directions[:, :, None] * directions[:, None, :]  # [V,3,3]
    return np.linalg.solve(proj.sum(0), np.einsum("vij,vj->i", proj, origins))


def _line_distances(point: np.ndarray, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """``[V]`` distances (mm) of ``point`` to the lines ``o_i + t d_i``."""
    rel = point - origins
    return np.linalg.norm(rel - (rel * directions).sum(1, keepdims=True) * directions, axis=1)


def triangulate(
    views: Sequence[View], pixels_rc: Sequence[Any], *, max_residual_mm: float = 10.0, min_angle_deg: float = 5.0
) -> Triangulation:
    """World point marked by one target pixel (row, col) in each of V >= 2 views.

    Args:
        views: V views.
        pixels_rc: V fractional (row, col) pixels, one per view, in the views' images.
        max_residual_mm: largest accepted RMS distance (mm) of the point to the rays.
        min_angle_deg: smallest accepted largest angle between the rays (degrees).
    Raises:
        InputError: fewer than 2 views, a count mismatch, a pixel outside its image, rays closer
            to parallel than ``min_angle_deg``, or rays passing further than ``max_residual_mm``
            from their closest point (the targets mark different places).
    """
    views, pixels = list(views), list(pixels_rc)
    if len(views) < 2:
        raise InputError(f"triangulating a target needs at least 2 views, got {len(views)}")
    if len(pixels) != len(views):
        raise InputError(f"one target per view is needed: {len(views)} views but {len(pixels)} targets")
    rays = [pixel_rays(_check_view(v, i), check_target(v, rc, i)) for i, (v, rc) in enumerate(zip(views, pixels))]
    origins = np.concatenate([o for o, _ in rays])
    directions = np.concatenate([d for _, d in rays])
    angle = _largest_angle_deg(directions)
    if angle < min_angle_deg:
        raise InputError(
            f"the targets do not triangulate: the views are only {angle:.1f} deg apart "
            f"(at least {min_angle_deg:g} deg are needed)"
        )
    point = closest_point(origins, directions)
    distances = _line_distances(point, origins, directions)
    residual = float(np.sqrt(np.mean(distances**2)))
    if residual > max_residual_mm:
        raise InputError(
            f"the targets are inconsistent: their rays pass {residual:.1f} mm (RMS) from their "
            f"closest common point (more than {max_residual_mm:g} mm); check that each --target "
            "marks the same vertebra in every image"
        )
    return Triangulation(point_mm=point, residual_mm=residual, distances_mm=[float(d) for d in distances])


# ----------------------------------------------------------------------------- detector crops and resampling


def crop_view(view: View, row0: int, col0: int, rows: int, cols: int) -> View:
    """The sub-detector whose pixel (r, c) is pixel ``(row0 + r, col0 + c)`` of ``view``.

    Same world positions: only ``shape`` and ``offset_px`` change
    (``offset' = offset + start + (size - old_size) / 2`` per axis).

    Raises:
        GeometryError: the crop is empty or leaves the detector.
    """
    n_rows, n_cols = view.shape
    for name, start, size, n in (("row", row0, rows, n_rows), ("col", col0, cols, n_cols)):
        if int(start) != start or int(size) != size or size < 1 or start < 0 or start + size > n:
            raise GeometryError(f"a crop of {size} {name}s from {name} {start} does not fit a detector of {n} {name}s")
    off = (view.offset_px[0] + row0 + (rows - n_rows) / 2, view.offset_px[1] + col0 + (cols - n_cols) / 2)
    return view.with_(shape=(int(rows), int(cols)), offset_px=off)


def rescale_view(view: View, shape: Sequence[int]) -> View:
    """The same detector area sampled with ``shape`` (rows, cols) pixels.

    The outer edges of the first and last pixels stay put: new pixel ``j`` is centred at old
    fractional pixel ``(j + 0.5) * f - 0.5`` with ``f = old / new`` per axis; spacing is scaled by
    ``f`` and ``offset_px`` divided by it. Agrees with ``half_resolution`` for even sizes.
    """
    rows, cols = check_detector_shape(shape)
    fr, fc = view.shape[0] / rows, view.shape[1] / cols
    (dr, dc), (o_r, o_c) = view.pixel_spacing_mm, view.offset_px
    return view.with_(shape=(rows, cols), pixel_spacing_mm=(dr * fr, dc * fc), offset_px=(o_r / fr, o_c / fc))


def _area_resample_axis(image: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Exact area average of ``image`` along ``axis`` onto ``size`` equal bins (any factor)."""
    n = image.shape[axis]
    if size == n:
        return image
    moved = np.moveaxis(image, axis, 0)
    cum = np.concatenate([np.zeros((1,) + moved.shape[1:]), np.cumsum(moved, axis=0)])  # integral at 0..n
    edges = np.arange(size + 1) * (n / size)
    i0 = np.minimum(np.floor(edges).astype(np.int64), n - 1)
    w = (edges - i0)[:, None]
    at_edges = cum[i0] * (1 - w) + cum[i0 + 1] * w  # piecewise-linear integral: exact
    return np.moveaxis(np.diff(at_edges, axis=0) * (size / n), 0, axis)


def area_resample(image: Any, shape: Sequence[int]) -> np.ndarray:
    """Area-averaged (box-filtered) resampling of a ``[R, C]`` image to ``shape`` (float64).

    Each new pixel is the exact mean of the old image over its area (fractional overlaps
    weighted), i.e. ``avg_pool2d`` for integer factors and consistent with :func:`rescale_view`
    for any factor. Meant for downsampling (anti-aliased); upsampling repeats pixels.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise InputError(f"an image must be 2D [rows, cols], got shape {img.shape}")
    rows, cols = check_detector_shape(shape)
    return _area_resample_axis(_area_resample_axis(img, rows, 0), cols, 1)


# ----------------------------------------------------------------------------- region of interest


@dataclass
class ROI:
    """Region of one image that the prior's cube sees, and its resampled geometry.

    Attributes:
        index: view index.
        row0, col0, rows, cols: the crop, in pixels of the original image.
        shape: (rows, cols) after resampling.
        view: the cropped and resampled :class:`~xfit.geometry.View` (matches ``crop_image``).
        factor: original pixels per new pixel, (row, col), each >= 1.
        image_shape: (rows, cols) of the original image.
    """

    index: int
    row0: int
    col0: int
    rows: int
    cols: int
    shape: tuple[int, int]
    view: View
    factor: tuple[float, float]
    image_shape: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (the view as :func:`~xfit.geometry.view_dict`)."""
        return {
            "index": self.index,
            "row0": self.row0,
            "col0": self.col0,
            "rows": self.rows,
            "cols": self.cols,
            "shape": list(self.shape),
            "factor": [float(f) for f in self.factor],
            "image_shape": list(self.image_shape),
            "view": view_dict(self.view),
        }


def _crop_range(lo: float, hi: float, n: int) -> tuple[int, int]:
    """``(start, size)`` of the pixels whose areas meet ``[lo, hi]`` (fractional pixel coordinates),
    clipped to ``[0, n)`` and grown (centred, within the image) to at least ``MIN_ROI_SIDE``."""
    start = max(0, int(math.floor(lo + 0.5)))
    stop = min(n, int(math.floor(hi + 0.5)) + 1)
    need = min(n, MIN_ROI_SIDE) - (stop - start)
    if need > 0:
        start = min(max(0, start - need // 2), n - (stop - start + need))
        stop = start + min(n, MIN_ROI_SIDE)
    return start, stop - start


def back_projected_spacing_mm(view: View, point_mm: Any) -> tuple[float, float]:
    """Detector pixel spacing (row, col) back-projected to the depth of ``point_mm`` (mm).

    Cone beam: ``spacing * depth / sdd`` with ``depth`` the distance from the source along the
    central beam; parallel beam: the detector spacing.
    """
    if view.projection != "cone":
        return view.pixel_spacing_mm
    depth = float(_beam_depth_mm(view, _as_points(point_mm, 3, "point_mm"))[0])
    return (view.pixel_spacing_mm[0] * depth / view.sdd_mm, view.pixel_spacing_mm[1] * depth / view.sdd_mm)


def _resampled_size(size: int, spacing_mm: float, wanted_mm: float | None) -> int:
    """Pixels after resampling ``size`` pixels of ``spacing_mm`` to about ``wanted_mm`` (never more)."""
    if wanted_mm is None or wanted_mm <= spacing_mm:
        return size
    return max(min(size, MIN_ROI_SIDE), int(round(size * spacing_mm / wanted_mm)))


def roi_for_cube(
    view: View, centre_mm: Any, fov_mm: float, *, margin: float = 0.15, spacing_mm: float | None = None, index: int = 0
) -> ROI:
    """The pixels of a view whose rays cross a cube, cropped and optionally downsampled.

    The 8 corners of the axis-aligned cube of side ``fov_mm`` (mm) at ``centre_mm`` (world mm)
    are projected; their bounding box is enlarged by ``margin`` times its size on each side and
    clipped to the image (at least ``MIN_ROI_SIDE`` pixels per side when the image has them).
    When the crop's spacing back-projected to the depth of ``centre_mm`` is finer than
    ``spacing_mm`` (mm), it is resampled (any factor >= 1) to pixels of about ``spacing_mm``.

    Raises:
        InputError: more than :data:`MAX_OUTSIDE_FRACTION` of the cube's projection (without
            margin) lies outside the image along an axis (less: a warning, and the crop stops
            at the image's edge).
        GeometryError: the cube reaches behind the source of a cone-beam view.
    """
    corners = cube_corners(centre_mm, fov_mm)
    if margin < 0 or not math.isfinite(margin):
        raise InputError(f"margin must be >= 0, got {margin!r}")
    if spacing_mm is not None and not (math.isfinite(spacing_mm) and spacing_mm > 0):
        raise InputError(f"spacing_mm must be a positive number, got {spacing_mm!r}")
    if view.projection == "cone" and (_beam_depth_mm(view, corners) <= 0).any():
        raise GeometryError(f"the {fov_mm:g} mm cube around the target reaches behind the source of view {index}")
    rc = _project_points(corners, view)
    lo, hi = rc.min(0), rc.max(0)
    (n_rows, n_cols) = view.shape
    size = np.array([n_rows, n_cols], dtype=np.float64)
    outside = (np.maximum(0, -0.5 - lo) + np.maximum(0, hi - (size - 0.5))) / np.maximum(hi - lo, 1e-9)
    if outside.max() > 0:
        c = corners.mean(0)
        where = (
            f"the {fov_mm:g} mm cube at ({c[0]:.1f}, {c[1]:.1f}, {c[2]:.1f}) mm projects to rows "
            f"{lo[0]:.0f}..{hi[0]:.0f}, cols {lo[1]:.0f}..{hi[1]:.0f} of a {n_rows} x {n_cols} image"
        )
        if outside.max() > MAX_OUTSIDE_FRACTION:
            raise InputError(
                f"the region of interest around the target leaves image {index}: {where} "
                f"({100 * outside.max():.0f} % outside, at most {100 * MAX_OUTSIDE_FRACTION:.0f} %)"
            )
        warnings.warn(f"image {index}: {where}; the fit sees {100 * (1 - outside.max()):.0f} % of it along that axis")
    grow = margin * (hi - lo)
    row0, rows = _crop_range(lo[0] - grow[0], hi[0] + grow[0], n_rows)
    col0, cols = _crop_range(lo[1] - grow[1], hi[1] + grow[1], n_cols)
    bp_r, bp_c = back_projected_spacing_mm(view, corners.mean(0))
    shape = (_resampled_size(rows, bp_r, spacing_mm), _resampled_size(cols, bp_c, spacing_mm))
    new_view = rescale_view(crop_view(view, row0, col0, rows, cols), shape)
    return ROI(
        index=index,
        row0=row0,
        col0=col0,
        rows=rows,
        cols=cols,
        shape=shape,
        view=new_view,
        factor=(rows / shape[0], cols / shape[1]),
        image_shape=(n_rows, n_cols),
    )


def crop_image(image: Any, roi: ROI) -> np.ndarray:
    """The ROI's crop of a ``[R, C]`` image, area-averaged to ``roi.shape`` (float64).

    The resampling is :func:`area_resample` (exact box filter over each new pixel: anti-aliased
    and consistent with :func:`rescale_view`), so the result matches ``roi.view``.

    Raises:
        InputError: the image is not 2D or not of the shape the ROI was made for.
    """
    img = np.asarray(image.detach().cpu() if isinstance(image, Tensor) else image, dtype=np.float64)
    if img.shape != tuple(roi.image_shape):
        raise InputError(
            f"image {roi.index} has shape {img.shape}, but its region of interest was made for {tuple(roi.image_shape)}"
        )
    crop = img[roi.row0 : roi.row0 + roi.rows, roi.col0 : roi.col0 + roi.cols]
    return area_resample(crop, roi.shape)


# ----------------------------------------------------------------------------- automatic targeting


@dataclass
class AutoTarget:
    """Where the template (the prior's mean vertebra) matches the images best.

    Attributes:
        point_mm: ``[3]`` world point (mm) of the template's centre at the best match.
        score: mean over views of the normalised cross-correlation there (in [-1, 1]).
        candidates: up to ``top_k`` distinct matches ``(point_mm, score)``, best first
            (at least ``MIN_CANDIDATE_DISTANCE_MM`` apart); the first is the best.
        pixels_rc: per view, ``(row, col)`` of ``point_mm`` in the original image.
        tilts_deg: per candidate, the rotation vector (degrees) of the template pose that
            matched best there.
    """

    point_mm: np.ndarray
    score: float
    candidates: list[tuple[list[float], float]]
    pixels_rc: list[tuple[float, float]]
    tilts_deg: list[list[float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "point_mm": [float(x) for x in self.point_mm],
            "score": float(self.score),
            "tilt_deg": self.tilts_deg[0],
            "candidates": [
                {"point_mm": [float(x) for x in p], "score": float(s), "tilt_deg": t}
                for (p, s), t in zip(self.candidates, self.tilts_deg)
            ],
            "pixels_rc": [[float(r), float(c)] for r, c in self.pixels_rc],
        }


def ncc_map(image: Tensor, template: Tensor) -> Tensor:
    """Zero-normalised cross-correlation of ``template`` ``[h, w]`` at every full placement in
    ``image`` ``[H, W]``: ``[H - h + 1, W - w + 1]``, entry (i, j) for the template's top-left
    pixel at (i, j); 0 where the image window is flat."""
    x = ((image - image.mean()) / image.std().clamp_min(1e-12))[None, None]
    tz = template - template.mean()
    n = tz.numel()
    num = F.conv2d(x, tz[None, None])[0, 0]
    s1 = F.avg_pool2d(x, tuple(tz.shape), stride=1)[0, 0] * n
    s2 = F.avg_pool2d(x * x, tuple(tz.shape), stride=1)[0, 0] * n
    denom = (s2 - s1 * s1 / n).clamp_min(0).sqrt() * tz.norm()
    flat = denom <= 1e-9 * float(denom.max().clamp_min(1e-300)) + 1e-300
    return torch.where(flat, torch.zeros_like(num), num / denom.clamp_min(1e-300)).clamp(-1.0, 1.0)


def _bilinear(grid: Tensor, rc: Tensor, fill: float) -> Tensor:
    """Bilinear samples ``[N]`` of ``grid`` ``[H, W]`` at fractional (row, col) ``[N, 2]``;
    ``fill`` outside (blended over the last pixel)."""
    padded = F.pad(grid, (1, 1, 1, 1), value=fill)
    h, w = padded.shape
    r = (rc[:, 0] + 1).clamp(0, h - 1)
    c = (rc[:, 1] + 1).clamp(0, w - 1)
    r0 = r.floor().long().clamp(max=h - 2)
    c0 = c.floor().long().clamp(max=w - 2)
    wr, wc = r - r0, c - c0
    top = padded[r0, c0] * (1 - wc) + padded[r0, c0 + 1] * wc
    bottom = padded[r0 + 1, c0] * (1 - wc) + padded[r0 + 1, c0 + 1] * wc
    return top * (1 - wr) + bottom * wr


def _template_view(view: View, spacing_mm: tuple[float, float], corners_mm: np.ndarray) -> View:
    """Small view of ``view``'s geometry, centred on its principal point, with detector spacing
    ``spacing_mm`` and just large enough for the projected ``corners_mm`` ``[8, 3]``."""
    probe = view.with_(shape=(1, 1), pixel_spacing_mm=spacing_mm, offset_px=(0.0, 0.0))
    half = np.ceil(np.abs(_project_points(corners_mm, probe)).max(0)).astype(int) + 1
    return probe.with_(shape=tuple(int(x) for x in 2 * half + 1))


def _template_image(
    view: View, mu: Tensor, affine: np.ndarray, rotation: np.ndarray | None = None
) -> tuple[Tensor, np.ndarray]:
    """Anti-aliased DRR ``[h, w]`` of the template placed at ``view``'s isocentre (rotated about
    its centre by ``rotation`` ``[3, 3]``, if given), trimmed to its support, and the fractional
    (row, col) ``[2]`` of the template centre in it."""
    shape = np.array(mu.shape, dtype=np.float64)
    moved = affine.copy()
    if rotation is not None:
        moved[:3, :3] = np.asarray(rotation, dtype=np.float64) @ affine[:3, :3]
    moved[:3, 3] = np.asarray(view.isocenter_mm) - moved[:3, :3] @ ((shape - 1) / 2)
    edges = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in shape], indexing="ij")).reshape(3, -1).T
    corners = edges @ moved[:3, :3].T + moved[:3, 3]
    tview = _template_view(view, view.pixel_spacing_mm, corners)
    voxel = float(np.linalg.norm(affine[:3, :3], axis=0).min())
    iso_spacing = min(back_projected_spacing_mm(view, np.asarray(view.isocenter_mm)))
    sub = int(min(MAX_TEMPLATE_SUPERSAMPLING, max(1, math.ceil(iso_spacing / voxel))))
    fine = rescale_view(tview, (tview.shape[0] * sub, tview.shape[1] * sub))
    with torch.no_grad():
        drr = project(mu, torch.from_numpy(moved).to(mu.dtype), [fine], backend="reference")[0, 0]
    drr = area_resample(drr.double().numpy(), tview.shape)
    anchor = _project_points(np.asarray(view.isocenter_mm), tview)[0]
    keep_r = np.flatnonzero(drr.max(1) > 1e-3 * drr.max())
    keep_c = np.flatnonzero(drr.max(0) > 1e-3 * drr.max())
    if drr.max() <= 0 or keep_r.size < 2 or keep_c.size < 2:
        raise InputError("template_mu projects to a flat image: it needs some positive attenuation")
    drr = drr[keep_r[0] : keep_r[-1] + 1, keep_c[0] : keep_c[-1] + 1]
    return torch.from_numpy(drr), anchor - np.array([keep_r[0], keep_c[0]])


def _highpass(image: Tensor, sigma_px: float) -> Tensor:
    """``image`` ``[H, W]`` minus its Gaussian blur of ``sigma_px`` (edges replicated)."""
    from scipy import ndimage

    x = image.double().numpy()
    return torch.from_numpy(x - ndimage.gaussian_filter(x, sigma_px, mode="nearest"))


def _coarse(image: np.ndarray, view: View, spacing_mm: float) -> tuple[np.ndarray, View]:
    """Image and view area-averaged to pixels of about ``spacing_mm`` at the isocentre (never finer
    than the original)."""
    bp = back_projected_spacing_mm(view, np.asarray(view.isocenter_mm))
    shape = tuple(_resampled_size(n, s, spacing_mm) for n, s in zip(view.shape, bp))
    return area_resample(image, shape), rescale_view(view, shape)


def _search_grid(views: Sequence[View], step_mm: float, search_mm: float | None) -> np.ndarray:
    """``[n, n, n, 3]`` world points (mm), spacing ``step_mm``, centred at the mean isocentre:
    a cube of side ``search_mm``, or by default one holding every view's field at its isocentre."""
    centre = np.mean([v.isocenter_mm for v in views], axis=0)
    if search_mm is None:
        half = max(
            0.5 * max(n * s for n, s in zip(v.shape, v.iso_pixel_spacing_mm))
            + max(abs(o) * s for o, s in zip(v.offset_px, v.iso_pixel_spacing_mm))
            + float(np.linalg.norm(np.asarray(v.isocenter_mm) - centre))
            for v in views
        )
    else:
        half = 0.5 * float(search_mm)
    n = 2 * int(half // step_mm) + 1
    if n**3 > MAX_SEARCH_POINTS:
        raise InputError(
            f"the target search grid would have {n**3} points (at most {MAX_SEARCH_POINTS}): "
            "give a larger spacing_mm or a smaller search_mm"
        )
    axis = step_mm * (np.arange(n) - n // 2)
    return centre + np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)


def _local_maxima(scores: Tensor, limit: int = 5000) -> Tensor:
    """Flat indices of the ``limit`` best 3x3x3 local maxima of ``scores`` ``[n, n, n]``, best first."""
    pooled = F.max_pool3d(scores[None, None], 3, stride=1, padding=1)[0, 0]
    flat = torch.nonzero((scores >= pooled).flatten())[:, 0]
    order = torch.argsort(scores.flatten()[flat], descending=True)
    return flat[order[:limit]]


def _refine(scores: Tensor, index: tuple[int, int, int]) -> np.ndarray:
    """Sub-grid offset ``[3]`` (grid steps, in [-0.5, 0.5]) of a maximum by a parabola per axis."""
    out = np.zeros(3)
    for axis in range(3):
        lo, hi = list(index), list(index)
        lo[axis] -= 1
        hi[axis] += 1
        if lo[axis] < 0 or hi[axis] >= scores.shape[axis]:
            continue
        a, b, c = float(scores[tuple(lo)]), float(scores[index]), float(scores[tuple(hi)])
        curvature = a - 2 * b + c
        if curvature < 0:
            out[axis] = float(np.clip(0.5 * (a - c) / curvature, -0.5, 0.5))
    return out


def _suppress(grid: np.ndarray, scores: Tensor, top_k: int) -> list[tuple[np.ndarray, float, int]]:
    """Best distinct local maxima (``MIN_CANDIDATE_DISTANCE_MM`` apart), refined sub-grid:
    ``(point_mm, score, flat grid index)``."""
    step = float(np.linalg.norm(grid[1, 0, 0] - grid[0, 0, 0])) if grid.shape[0] > 1 else 0.0
    flat_grid = grid.reshape(-1, 3)
    chosen: list[tuple[np.ndarray, float, int]] = []
    for flat in _local_maxima(scores).tolist():
        p = flat_grid[flat]
        if any(np.linalg.norm(p - q) < MIN_CANDIDATE_DISTANCE_MM for q, _, _ in chosen):
            continue
        index = tuple(int(i) for i in np.unravel_index(flat, scores.shape))
        chosen.append((p + step * _refine(scores, index), float(scores[index]), int(flat)))
        if len(chosen) == top_k:
            break
    return chosen


def auto_target(
    images: Sequence[Any],
    views: Sequence[View],
    template_mu: Tensor,
    template_affine: Any,
    *,
    combine: str = "mean",
    tilts_deg: Sequence[Sequence[float]] = AUTO_TILTS_DEG,
    highpass_mm: float = AUTO_HIGHPASS_MM,
    spacing_mm: float = 4.0,
    search_mm: float | None = None,
    top_k: int = 5,
) -> AutoTarget:
    """Find the vertebra in the images without clicks, by template matching in 3D.

    Method: each image is area-averaged to pixels of about ``spacing_mm`` at its isocentre; the
    template (``template_mu`` placed at the isocentre) is projected at that pixel size
    (supersampled, area-averaged, trimmed to its support) and its zero-normalised
    cross-correlation (NCC) map over the coarse image is computed (placements where it does not
    fit entirely count -1), after both are high-passed (minus their Gaussian blur of
    ``highpass_mm``; 0 = off). A grid of candidate points (step ``spacing_mm``; a cube of side
    ``search_mm`` around the mean isocentre, or by default one covering every view's field) is
    scored by the mean over views of the NCC maps sampled bilinearly at the points' projections.
    This is repeated for the template in each pose of ``tilts_deg`` (one 3D rotation for all
    views; a pose whose projection does not fit in an image is skipped), and each point keeps its
    best pose. Local maxima are refined to sub-grid precision by a parabola per axis and the best
    ``top_k`` that are ``MIN_CANDIDATE_DISTANCE_MM`` apart are returned.

    Args:
        images: V images ``[R_v, C_v]`` (bright = attenuating), each of its view's shape.
        views: V views.
        template_mu: ``[I, J, K]`` attenuation (1/mm), e.g. the prior's mean vertebra.
        template_affine: ``[4, 4]`` voxel index -> world mm of the template, centred at the origin.
        combine: how a point's per-view scores combine: ``"mean"`` or ``"min"`` (worst view).
        tilts_deg: rotation vectors (degrees, world RAS) of the template poses tried; the
            default ``AUTO_TILTS_DEG`` covers sagittal tilts of +-30 and coronal ones of +-12.
        highpass_mm: sigma (mm at the isocentre) of that high-pass filter (0 = none).
        spacing_mm: coarse pixel size at the isocentre and search grid step (mm).
        search_mm: optional side (mm) of the searched cube around the isocentre.
        top_k: number of distinct candidates returned.
    Raises:
        InputError: mismatched images/views, non-finite images, a flat template, a template
            larger than a coarse image, or a search grid that is too large.
    """
    views, images = [_check_view(v, i) for i, v in enumerate(views)], list(images)
    if not views or len(images) != len(views):
        raise InputError(f"auto_target needs one image per view, got {len(images)} images and {len(views)} views")
    if not (math.isfinite(spacing_mm) and spacing_mm > 0) or (search_mm is not None and not search_mm > 0):
        raise InputError(f"spacing_mm and search_mm must be positive, got {spacing_mm!r} and {search_mm!r}")
    if not (math.isfinite(highpass_mm) and highpass_mm >= 0):
        raise InputError(f"highpass_mm must be >= 0, got {highpass_mm!r}")
    if int(top_k) < 1:
        raise InputError(f"top_k must be at least 1, got {top_k!r}")
    mu = torch.as_tensor(template_mu).detach().to("cpu", torch.float32)
    if mu.ndim != 3:
        raise InputError(f"template_mu must be [I, J, K], got shape {tuple(mu.shape)}")
    affine = np.asarray(
        template_affine.detach().cpu() if isinstance(template_affine, Tensor) else template_affine, dtype=np.float64
    )
    tilts = np.asarray(tilts_deg, dtype=np.float64).reshape(-1, 3) if len(tilts_deg) else np.zeros((0, 3))
    if not len(tilts) or not np.isfinite(tilts).all():
        raise InputError(f"tilts_deg must hold at least one finite rotation vector (degrees), got {tilts_deg!r}")
    rotations = rotation_matrix(torch.from_numpy(np.radians(tilts))).numpy()
    grid = _search_grid(views, float(spacing_mm), search_mm)
    points = torch.from_numpy(grid.reshape(-1, 3))
    coarse = []
    for i, (image, view) in enumerate(zip(images, views)):
        img = np.asarray(image.detach().cpu() if isinstance(image, Tensor) else image, dtype=np.float64)
        if img.shape != view.shape or not np.isfinite(img).all():
            raise InputError(f"image {i} must be finite and of its view's shape {view.shape}, got shape {img.shape}")
        coarse_img, coarse_view = _coarse(img, view, float(spacing_mm))
        coarse_img = torch.from_numpy(coarse_img)
        if highpass_mm:
            coarse_img = _highpass(coarse_img, highpass_mm / spacing_mm)
        coarse.append((coarse_img, coarse_view, world_to_pixel(points, coarse_view)))
    top, top_pose = None, None  # [N] best pose's score and index per grid point
    too_small = None
    for pose, rotation in enumerate(rotations):
        per_view = []
        for i, (coarse_img, coarse_view, rc) in enumerate(coarse):
            template, anchor = _template_image(coarse_view, mu, affine, rotation)
            if highpass_mm:
                pad = int(math.ceil(2 * highpass_mm / spacing_mm))
                template = _highpass(F.pad(template, (pad, pad, pad, pad)), highpass_mm / spacing_mm)
                anchor = anchor + pad
            if template.shape[0] > coarse_img.shape[0] or template.shape[1] > coarse_img.shape[1]:
                too_small = i  # this pose does not fit in the image (a small detector): skip it
                break
            per_view.append(_bilinear(ncc_map(coarse_img, template), rc - torch.from_numpy(anchor), fill=-1.0))
        if len(per_view) < len(coarse):
            continue
        stacked = torch.stack(per_view)
        score = stacked.amin(0) if combine == "min" else stacked.mean(0)
        if top is None:
            top, top_pose = score, torch.zeros(score.shape, dtype=torch.long)
        else:
            better = score > top
            top, top_pose = torch.where(better, score, top), torch.where(better, pose, top_pose)
    if top is None:
        i = int(too_small)
        raise InputError(
            f"image {i} ({views[i].shape[0]} x {views[i].shape[1]} pixels) is smaller than the "
            "template's projection: give a smaller spacing_mm or a larger image"
        )
    found = _suppress(grid, top.reshape(grid.shape[:3]), int(top_k))
    best, score, _ = found[0]
    pixels = [tuple(float(x) for x in _project_points(best, v)[0]) for v in views]
    return AutoTarget(
        point_mm=best,
        score=score,
        pixels_rc=pixels,
        candidates=[([float(x) for x in p], s) for p, s, _ in found],
        tilts_deg=[[float(x) for x in tilts[int(top_pose[i])]] for _, _, i in found],
    )
