"""Tests of targeting and regions of interest (xfit.fitting.roi) against the view conventions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xfit.errors import GeometryError, InputError
from xfit.fitting.optimize import half_resolution
from xfit.fitting.roi import (
    area_resample,
    auto_target,
    back_projected_spacing_mm,
    check_target,
    crop_image,
    crop_view,
    cube_corners,
    pixel_rays,
    rescale_view,
    roi_for_cube,
    triangulate,
)
from xfit.geometry import View, make_rays, rigid_pose, world_to_pixel
from xfit.projector import project

POSE = rigid_pose(
    torch.tensor([0.03, -0.02, 0.05], dtype=torch.float64), torch.tensor([4.0, -3.0, 6.0], dtype=torch.float64)
).tolist()


def _view(angle: float, projection: str = "cone", **kw) -> View:
    base = dict(
        sdd_mm=1000.0,
        sod_mm=700.0,
        shape=(60, 80),
        pixel_spacing_mm=(1.1, 0.9),
        projection=projection,
        offset_px=(2.5, -3.25),
        isocenter_mm=(5.0, -8.0, 12.0),
        pose=POSE,
    )
    base.update(kw)
    return View(angle, **base)


def _pixels(view: View, points: np.ndarray) -> np.ndarray:
    return world_to_pixel(torch.from_numpy(points), view).numpy()


def _centres_mm(view: View) -> np.ndarray:
    """World positions ``[R, C, 3]`` of a view's pixel centres (origin + length * direction)."""
    rays = make_rays([view], dtype=torch.float64)
    return (rays.origins + rays.lengths[..., None] * rays.directions)[0].numpy()


# ----------------------------------------------------------------------------- rays, triangulation


@pytest.mark.parametrize("projection", ["cone", "parallel"])
def test_pixel_rays_project_back_to_their_pixels(projection):
    view = _view(35.0, projection)
    rc = np.array([[0.0, 0.0], [12.3, 45.6], [59.4, 79.2], [-0.4, 30.0]])
    origins, directions = pixel_rays(view, rc)
    assert np.allclose(np.linalg.norm(directions, axis=1), 1.0)
    for t in (300.0, 700.0, 950.0):
        assert np.abs(_pixels(view, origins + t * directions) - rc).max() < 1e-9
    rays = make_rays([view], dtype=torch.float64)  # integer pixels agree with make_rays
    o, d = pixel_rays(view, [[7, 11]])
    assert np.allclose(o[0], rays.origins[0, 7, 11].numpy()) and np.allclose(d[0], rays.directions[0, 7, 11].numpy())


@pytest.mark.parametrize("angles", [(0.0, 90.0), (0.0, 60.0), (-20.0, 25.0, 110.0)])
@pytest.mark.parametrize("projection", ["cone", "parallel"])
def test_triangulate_recovers_known_points(angles, projection):
    views = [_view(a, projection, shape=(200, 240), pose=POSE if i else None) for i, a in enumerate(angles)]
    for point in (np.array([3.0, -4.0, 7.0]), np.array([-21.5, 13.25, -30.0])):
        pixels = [_pixels(v, point[None])[0] for v in views]
        tri = triangulate(views, pixels)
        assert np.abs(tri.point_mm - point).max() < 1e-6
        assert tri.residual_mm < 1e-6 and len(tri.distances_mm) == len(views)
        json.dumps(tri.to_dict())


def test_triangulate_reports_the_ray_distances():
    views = [_view(0.0), _view(90.0)]
    point = np.array([3.0, -4.0, 7.0])
    pixels = [_pixels(v, point[None])[0] for v in views]
    pixels[1] = pixels[1] + np.array([4.0, 0.0])  # 4 rows of 1.1 mm at ~0.7 magnification: a few mm
    tri = triangulate(views, pixels)
    assert 0.5 < tri.residual_mm < 5.0
    assert np.isclose(tri.residual_mm, np.sqrt(np.mean(np.square(tri.distances_mm))))
    with pytest.raises(InputError, match="the targets are inconsistent: .*more than 1 mm.*same vertebra"):
        triangulate(views, pixels, max_residual_mm=1.0)


def test_triangulate_rejects_bad_targets():
    views = [_view(0.0), _view(90.0)]
    centre = [(30.0, 40.0), (30.0, 40.0)]
    with pytest.raises(InputError, match="the targets are inconsistent"):
        triangulate(views, [(10.0, 10.0), (50.0, 70.0)])
    with pytest.raises(InputError, match="at least 2 views"):
        triangulate(views[:1], centre[:1])
    with pytest.raises(InputError, match="only 3.0 deg apart"):
        triangulate([_view(0.0, pose=None), _view(3.0, pose=None)], centre)
    with pytest.raises(InputError, match=r"outside image 1 \(60 x 80 pixels\)"):
        triangulate(views, [(30.0, 40.0), (59.5, 40.0)])
    assert check_target(views[0], (-0.5, 79.49), 0) == (-0.5, 79.49)
    with pytest.raises(InputError, match="outside image 0"):
        check_target(views[0], (10.0, -0.51), 0)


# ----------------------------------------------------------------------------- crop and rescale


@pytest.mark.parametrize("projection", ["cone", "parallel"])
def test_crop_view_keeps_world_positions(projection):
    view = _view(30.0, projection)
    crop = crop_view(view, 7, 12, 21, 33)
    assert crop.shape == (21, 33)
    assert np.allclose(_centres_mm(crop), _centres_mm(view)[7:28, 12:45], atol=1e-9)
    point = np.array([[4.0, 5.0, -6.0]])
    assert np.allclose(_pixels(crop, point), _pixels(view, point) - [7, 12])
    with pytest.raises(GeometryError, match="does not fit"):
        crop_view(view, 50, 0, 11, 10)


@pytest.mark.parametrize("projection", ["cone", "parallel"])
@pytest.mark.parametrize("shape", [(23, 31), (60, 80), (7, 5), (90, 100)])
def test_rescale_view_samples_the_same_area(projection, shape):
    view = _view(-40.0, projection)
    new = rescale_view(view, shape)
    f = np.array(view.shape) / np.array(shape)
    centres = _centres_mm(new).reshape(-1, 3)
    old_rc = _pixels(view, centres).reshape(shape + (2,))
    jr, jc = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    assert np.abs(old_rc[..., 0] - ((jr + 0.5) * f[0] - 0.5)).max() < 1e-8
    assert np.abs(old_rc[..., 1] - ((jc + 0.5) * f[1] - 0.5)).max() < 1e-8


@pytest.mark.parametrize("offset", [(0.0, 0.0), (3.5, -1.25)])
def test_rescale_view_agrees_with_half_resolution(offset):
    view = _view(20.0, offset_px=offset, shape=(40, 62))
    half = half_resolution(view)
    mine = rescale_view(view, (20, 31))
    assert mine.shape == half.shape
    assert np.allclose(_centres_mm(mine), _centres_mm(half), atol=1e-9)


def test_area_resample_is_an_exact_box_filter():
    rng = np.random.default_rng(0)
    img = rng.random((20, 30))
    pooled = F.avg_pool2d(torch.from_numpy(img)[None, None], 2)[0, 0].numpy()
    assert np.allclose(area_resample(img, (10, 15)), pooled)
    # 20 -> 8 rows (factor 2.5) and 30 -> 12 cols: each new pixel is the mean of 5 half-pixels
    fine = np.kron(img, np.ones((2, 2)))
    expect = fine.reshape(8, 5, 12, 5).mean((1, 3))
    assert np.allclose(area_resample(img, (8, 12)), expect)


# ----------------------------------------------------------------------------- region of interest


def test_cube_corners():
    c = cube_corners([1.0, 2.0, 3.0], 10.0)
    assert c.shape == (8, 3) and len({tuple(p) for p in c}) == 8
    assert np.allclose(c.min(0), [-4, -3, -2]) and np.allclose(c.max(0), [6, 7, 8])
    with pytest.raises(InputError):
        cube_corners([0, 0, 0], -1.0)


@pytest.mark.parametrize("projection", ["cone", "parallel"])
def test_roi_for_cube_holds_the_cube_with_margin(projection):
    view = _view(10.0, projection, shape=(400, 500), pixel_spacing_mm=(0.2, 0.25))
    centre = np.array([6.0, -7.0, 10.0])
    roi = roi_for_cube(view, centre, 30.0, margin=0.15, index=1)
    assert roi.shape == (roi.rows, roi.cols) and roi.factor == (1.0, 1.0)
    rc = _pixels(view, cube_corners(centre, 30.0))
    lo, hi = rc.min(0), rc.max(0)
    first = np.maximum(0, lo - 0.15 * (hi - lo))  # expected crop, clipped to the image
    last = np.minimum(np.array(view.shape) - 1, hi + 0.15 * (hi - lo))
    assert np.abs(np.array([roi.row0, roi.col0]) - first).max() <= 1.0
    assert np.abs(np.array([roi.row0 + roi.rows - 1, roi.col0 + roi.cols - 1]) - last).max() <= 1.0
    inner = _pixels(roi.view, cube_corners(centre, 30.0))  # the new view sees the cube inside it
    assert (inner >= -0.5).all() and (inner < np.array(roi.shape) - 0.5).all()
    assert np.allclose(inner, rc - [roi.row0, roi.col0])
    json.dumps(roi.to_dict())


def test_roi_for_cube_resamples_to_the_wanted_spacing():
    view = _view(0.0, shape=(700, 600), pixel_spacing_mm=(0.15, 0.2), pose=None)
    centre = np.array([5.0, 22.0, 12.0])  # nearer the source: back-projected spacing is finer
    bp = back_projected_spacing_mm(view, centre)
    assert np.allclose(bp, np.array([0.15, 0.2]) * (700.0 - 30.0) / 1000.0)  # depth = sod - (y - iso_y)
    roi = roi_for_cube(view, centre, 40.0, spacing_mm=1.0)
    assert all(f > 1 for f in roi.factor)
    for axis in range(2):
        assert abs(bp[axis] * roi.factor[axis] - 1.0) < 0.05
        assert np.isclose(roi.view.pixel_spacing_mm[axis], view.pixel_spacing_mm[axis] * roi.factor[axis])
    coarse = roi_for_cube(view, centre, 40.0, spacing_mm=0.01)  # never upsampled
    assert coarse.factor == (1.0, 1.0)
    tiny = roi_for_cube(view, centre, 40.0, spacing_mm=100.0)
    assert min(tiny.shape) >= 16


def test_roi_for_cube_rejects_a_cube_leaving_the_image():
    view = _view(0.0, shape=(100, 120), pixel_spacing_mm=0.5, pose=None)
    with pytest.raises(InputError, match="the region of interest around the target leaves image 1: "):
        roi_for_cube(view, [5.0, -8.0, 40.0], 30.0, index=1)
    small = roi_for_cube(view, [5.0, -8.0, 12.0], 4.0, margin=0.0)
    assert small.rows >= 16 and small.cols >= 16


def _smooth_volume() -> tuple[torch.Tensor, np.ndarray]:
    n, s = 24, 4.0
    axis = s * (np.arange(n) - (n - 1) / 2)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    mu = 0.02 * np.exp(-((x - 6) ** 2 + (y + 4) ** 2 + (z - 10) ** 2) / (2 * 14.0**2))
    mu += 0.01 * np.exp(-((x + 15) ** 2 + y**2 + (z + 12) ** 2) / (2 * 9.0**2))
    affine = np.diag([s, s, s, 1.0])
    affine[:3, 3] = -s * (n - 1) / 2
    return torch.tensor(mu, dtype=torch.float64), affine


@pytest.mark.parametrize("projection", ["cone", "parallel"])
def test_crop_image_matches_the_roi_view(projection):
    mu, affine = _smooth_volume()
    view = _view(25.0, projection, shape=(150, 170), pixel_spacing_mm=(0.7, 0.6), isocenter_mm=(3.0, -2.0, 4.0))
    full = project(mu, affine, view, step_mm=2.0)[0, 0].numpy()
    roi = roi_for_cube(view, [4.0, -1.0, 8.0], 40.0, spacing_mm=1.3)
    assert all(f > 1.5 for f in roi.factor) and any(f != int(f) for f in roi.factor)
    direct = project(mu, affine, roi.view, step_mm=2.0)[0, 0].numpy()
    cropped = crop_image(full, roi)
    assert cropped.shape == roi.shape == direct.shape
    assert np.abs(cropped - direct).max() < 0.02 * direct.max()
    with pytest.raises(InputError, match="was made for"):
        crop_image(full[:-1], roi)


# ----------------------------------------------------------------------------- automatic targeting


def _vertebra(x, y, z):
    """A 'vertebra-like' blob: an ellipsoidal body with a bright cortical shell and an arch ring."""
    r = np.sqrt((x / 20) ** 2 + (y / 15) ** 2 + (z / 12) ** 2)
    body = np.where(r < 1, np.where(r > 0.85, 0.06, 0.03), 0.0)
    rho = np.sqrt(x**2 + (y + 28) ** 2)
    ring = np.where((rho - 11) ** 2 + (z / 1.5) ** 2 < 3.5**2, 0.05, 0.0)
    return body + ring


def _grid(shape, spacing, origin):
    affine = np.diag([spacing] * 3 + [1.0])
    affine[:3, 3] = origin
    idx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return affine, [spacing * i + o for i, o in zip(idx, origin)]


def _scene(true_mm: np.ndarray):
    """Soft-tissue volume holding the blob at ``true_mm`` and two weaker plain blobs; the template."""
    affine, (x, y, z) = _grid((104, 80, 80), 2.5, [-128.75, -98.75, -98.75])
    mu = np.where((x / 120) ** 2 + (y / 90) ** 2 < 1, 0.02, 0.0)
    mu += _vertebra(x - true_mm[0], y - true_mm[1], z - true_mm[2])
    for c in ([-60, 30, -40], [50, 40, -60]):
        mu += np.where((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < 15**2, 0.015, 0.0)
    taffine, (tx, ty, tz) = _grid((64,) * 3, 1.25, [-1.25 * 63 / 2] * 3)
    template = torch.tensor(_vertebra(tx, ty, tz), dtype=torch.float32)
    return torch.tensor(mu, dtype=torch.float32), affine, template, taffine


@pytest.mark.parametrize("true_mm", [(18.0, -12.0, 25.0), (-30.0, 20.0, -15.0)])
def test_auto_target_finds_the_vertebra(true_mm):
    true_mm = np.array(true_mm)
    mu, affine, tmu, taffine = _scene(true_mm)
    views = [View(a, sdd_mm=1200, sod_mm=900, shape=(240, 300), pixel_spacing_mm=1.0) for a in (0.0, 90.0)]
    images = [d.numpy() for d in project(mu, affine, views, step_mm=2.0)[0]]
    found = auto_target(images, views, tmu, taffine)
    assert np.linalg.norm(found.point_mm - true_mm) < 5.0
    assert found.candidates[0][1] == found.score and len(found.candidates) == 5
    points = np.array([p for p, _ in found.candidates])
    gaps = np.linalg.norm(points[:, None] - points[None], axis=-1) + 1e3 * np.eye(len(points))
    assert gaps.min() >= 20.0 - 2.5  # distinct before the sub-grid refinement (half a step each)
    assert [s for _, s in found.candidates] == sorted((s for _, s in found.candidates), reverse=True)
    for view, rc in zip(views, found.pixels_rc):
        assert np.allclose(rc, _pixels(view, found.point_mm[None])[0])
    json.dumps(found.to_dict())
    near = auto_target(images, views, tmu, taffine, search_mm=60.0, top_k=1)  # cube around the isocentre
    assert len(near.candidates) == 1 and np.all(np.abs(near.point_mm) <= 30.0 + 2.0)


def test_auto_target_on_large_fine_images():
    true_mm = np.array([18.0, -12.0, 25.0])
    mu, affine, tmu, taffine = _scene(true_mm)
    big = [View(a, sdd_mm=1200, sod_mm=900, shape=(1000, 1250), pixel_spacing_mm=0.3) for a in (0.0, 90.0)]
    coarse = [rescale_view(v, (200, 250)) for v in big]  # 5 x 5 blocks of the 0.3 mm pixels
    images = [np.kron(d.numpy(), np.ones((5, 5))) for d in project(mu, affine, coarse, step_mm=2.0)[0]]
    found = auto_target(images, big, tmu, taffine)  # its time: bench/auto_target.py
    assert np.linalg.norm(found.point_mm - true_mm) < 5.0


def test_auto_target_reports_the_tilt_of_a_tilted_vertebra():
    """A vertebra tilted 30 degrees about x (sagittal tilt) is found, in the 30 degree pose."""
    true_mm = np.array([10.0, -5.0, 15.0])
    affine, (x, y, z) = _grid((104, 80, 80), 2.5, [-128.75, -98.75, -98.75])
    c, s = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    dy, dz = y - true_mm[1], z - true_mm[2]
    local = (x - true_mm[0], c * dy + s * dz, -s * dy + c * dz)  # R(-30 deg about x) (p - centre)
    mu = np.where((x / 120) ** 2 + (y / 90) ** 2 < 1, 0.02, 0.0) + _vertebra(*local)
    _, _, tmu, taffine = _scene(true_mm)
    views = [View(a, sdd_mm=1200, sod_mm=900, shape=(240, 300), pixel_spacing_mm=1.0) for a in (0.0, 90.0)]
    images = [d.numpy() for d in project(torch.tensor(mu, dtype=torch.float32), affine, views, step_mm=2.0)[0]]
    found = auto_target(images, views, tmu, taffine)
    assert np.linalg.norm(found.point_mm - true_mm) < 5.0
    assert found.tilts_deg[0] == [30.0, 0.0, 0.0]
    assert found.to_dict()["tilt_deg"] == [30.0, 0.0, 0.0]
    upright = auto_target(images, views, tmu, taffine, tilts_deg=[(0.0, 0.0, 0.0)])
    assert upright.score < found.score and upright.tilts_deg[0] == [0.0, 0.0, 0.0]


def test_highpass_removes_constants_and_ramps():
    from xfit.fitting.roi import _highpass

    r, c = np.meshgrid(np.arange(40.0), np.arange(50.0), indexing="ij")
    ramp = torch.from_numpy(3.0 + 0.2 * r - 0.1 * c)
    hp = _highpass(ramp, 2.0).numpy()
    assert np.abs(hp[8:-8, 8:-8]).max() < 1e-9  # a Gaussian blur keeps a linear function
    spike = torch.zeros(41, 41, dtype=torch.float64)
    spike[20, 20] = 1.0
    out = _highpass(spike, 2.0).numpy()
    assert out[20, 20] == pytest.approx(1 - 1 / (2 * np.pi * 4), rel=0.02)  # 1 minus the Gaussian's peak
    assert abs(out.sum()) < 1e-9


def test_auto_target_rejects_bad_input():
    _, _, tmu, taffine = _scene(np.zeros(3))
    view = View(0.0, sdd_mm=1200, sod_mm=900, shape=(240, 300), pixel_spacing_mm=1.0)
    with pytest.raises(InputError, match="one image per view"):
        auto_target([np.zeros((240, 300))] * 2, [view], tmu, taffine)
    with pytest.raises(InputError, match="shape"):
        auto_target([np.zeros((240, 299))], [view], tmu, taffine)
    with pytest.raises(InputError, match="flat image"):
        auto_target([np.zeros((240, 300))], [view], torch.zeros(8, 8, 8), taffine)
    with pytest.raises(InputError, match="smaller than the template"):
        auto_target([np.zeros((20, 20))], [view.with_(shape=(20, 20))], tmu, taffine)
    with pytest.raises(InputError, match="search grid"):
        auto_target([np.zeros((240, 300))], [view], tmu, taffine, spacing_mm=0.5)
    with pytest.raises(InputError, match="tilts_deg"):
        auto_target([np.zeros((240, 300))], [view], tmu, taffine, tilts_deg=[])
    with pytest.raises(InputError, match="tilts_deg"):
        auto_target([np.zeros((240, 300))], [view], tmu, taffine, tilts_deg=[(float("nan"), 0.0, 0.0)])
    with pytest.raises(InputError, match="highpass_mm"):
        auto_target([np.zeros((240, 300))], [view], tmu, taffine, highpass_mm=-1.0)


def test_roi_for_cube_crops_a_cube_slightly_off_the_image_with_a_warning():
    view = _view(0.0, shape=(100, 120), pixel_spacing_mm=0.5, pose=None)
    with pytest.warns(UserWarning, match="the fit sees"):
        roi = roi_for_cube(view, [0.0, 0.0, 7.7], 30.0, index=0)
    assert roi.rows < 100 and (roi.row0 == 0 or roi.row0 + roi.rows == 100)  # cut at the edge
