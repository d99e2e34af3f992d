"""Tests of the view conventions in xfit.geometry (docs/architecture.md, 'Views')."""

import math

import pytest
import torch

from xfit.errors import GeometryError
from xfit.geometry import (
    View,
    detector_frame,
    make_rays,
    parse_angles,
    rigid_pose,
    rotation_matrix,
    world_to_pixel,
)


def test_ap_frame_matches_conventions():
    f = detector_frame([View(0.0, sdd_mm=1000, sod_mm=600)], dtype=torch.float64)
    assert torch.allclose(f["source"][0], torch.tensor([0.0, 600.0, 0.0], dtype=torch.float64))
    assert torch.allclose(f["centre"][0], torch.tensor([0.0, -400.0, 0.0], dtype=torch.float64))
    assert torch.allclose(f["u"][0], torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(f["v"][0], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))


@pytest.mark.parametrize("projection", ["cone", "parallel"])
def test_orientation_table(projection):
    # AP: patient's right (+x) on the image left; superior (+z) at the top.
    ap = View(0.0, shape=(101, 101), projection=projection)
    rc = world_to_pixel(torch.tensor([[20.0, 0, 0], [0, 0, 20.0]]), ap)
    assert rc[0, 1] < 50 and abs(rc[0, 0] - 50) < 1e-6
    assert rc[1, 0] < 50 and abs(rc[1, 1] - 50) < 1e-6
    # 90 degree left lateral: anterior (+y) on the image right.
    lat = View(90.0, shape=(101, 101), projection=projection)
    rc = world_to_pixel(torch.tensor([[0.0, 20.0, 0]]), lat)
    assert rc[0, 1] > 50


def test_pixel_positions_and_magnification():
    view = View(0.0, sdd_mm=1800, sod_mm=1500, shape=(11, 21), pixel_spacing_mm=(0.5, 0.25))
    assert math.isclose(view.magnification, 1.2)
    # a point 10 mm to the patient's right at the isocentre is magnified by 1.2 on the detector
    rc = world_to_pixel(torch.tensor([[10.0, 0.0, 0.0]]), view)
    assert torch.allclose(rc[0], torch.tensor([5.0, 10.0 - 12.0 / 0.25], dtype=torch.float64))


def test_rays_hit_their_pixels():
    views = [View(a, shape=(5, 7), pixel_spacing_mm=(2.0, 3.0), offset_px=(0.5, -1.0)) for a in (0, 37.5)]
    rays = make_rays(views, dtype=torch.float64)
    assert rays.origins.shape == (2, 5, 7, 3)
    assert torch.allclose(rays.directions.norm(dim=-1), torch.ones(2, 5, 7, dtype=torch.float64))
    ends = rays.origins + rays.lengths[..., None] * rays.directions
    for v_idx, view in enumerate(views):
        rc = world_to_pixel(ends[v_idx].reshape(-1, 3), view)
        rr, cc = torch.meshgrid(torch.arange(5.0), torch.arange(7.0), indexing="ij")
        assert torch.allclose(rc, torch.stack([rr, cc], -1).reshape(-1, 2).double(), atol=1e-6)


def test_parallel_rays_are_parallel():
    rays = make_rays([View(30.0, projection="parallel", shape=(3, 4))], dtype=torch.float64)
    d = rays.directions.reshape(-1, 3)
    assert torch.allclose(d, d[:1].expand_as(d))
    assert torch.allclose(d[0], torch.tensor([-0.5, -math.sqrt(3) / 2, 0.0], dtype=torch.float64))


def test_pose_identity_and_translation():
    base = View(20.0, shape=(3, 3))
    eye = torch.eye(4, dtype=torch.float64)
    shifted = eye.clone()
    shifted[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    r0 = make_rays([base], dtype=torch.float64)
    r1 = make_rays([base.with_(pose=eye.tolist())], dtype=torch.float64)
    r2 = make_rays([base], pose=shifted[None], dtype=torch.float64)
    assert torch.allclose(r0.origins, r1.origins)
    assert torch.allclose(r2.origins - r0.origins, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))


def test_gradients_wrt_angle_and_pose():
    view = View(10.0, shape=(2, 3), pixel_spacing_mm=(1.0, 1.0))

    def f_angle(a):
        return make_rays([view], angle_deg=a, dtype=torch.float64).origins

    assert torch.autograd.gradcheck(f_angle, (torch.tensor([10.0], dtype=torch.float64, requires_grad=True),))

    def f_pose(rv, t):
        pose = rigid_pose(rv, t)[None]
        r = make_rays([view], pose=pose, dtype=torch.float64)
        return r.origins + r.directions

    rv = torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f_pose, (rv, t))


def test_rotation_matrix_is_rotation():
    rv = torch.randn(5, 3, dtype=torch.float64)
    r = rotation_matrix(rv)
    eye = torch.eye(3, dtype=torch.float64).expand(5, 3, 3)
    assert torch.allclose(r @ r.transpose(-1, -2), eye, atol=1e-12)
    assert torch.allclose(rotation_matrix(torch.zeros(3, dtype=torch.float64)), eye[0])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sdd_mm=-1.0),
        dict(sod_mm=0.0),
        dict(sdd_mm=1000, sod_mm=1000),
        dict(sdd_mm=1000, sod_mm=1200),
        dict(projection="fan"),
        dict(pixel_spacing_mm=(0.0, 1.0)),
        dict(shape=(0, 5)),
        dict(angle_deg=float("nan")),
        dict(pose=[[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
    ],
)
def test_invalid_views_raise(kwargs):
    with pytest.raises(GeometryError):
        View(**kwargs)


def test_sidecar_round_trip_and_validation():
    view = View(90.0, sdd_mm=1200, sod_mm=1000, shape=(64, 48), pixel_spacing_mm=(0.4, 0.5))
    data = view.to_sidecar(line_integral_scale=10.0)
    assert list(data) == [
        "angle_deg",
        "sdd_mm",
        "sod_mm",
        "pixel_spacing_mm",
        "projection",
        "flip_lr",
        "line_integral_scale",
    ]
    assert View.from_sidecar(data, (64, 48)) == view
    assert View.from_sidecar(data, (64, 48), angle_deg=80.0).angle_deg == 80.0
    with pytest.raises(GeometryError, match="unknown sidecar key"):
        View.from_sidecar({**data, "sdd": 3}, (64, 48))
    with pytest.raises(GeometryError):
        View.from_sidecar({**data, "sod_mm": 5000}, (64, 48))
    with pytest.raises(GeometryError, match="angle"):
        View.from_sidecar({"sdd_mm": 1000, "sod_mm": 500}, (4, 4))


def test_parse_angles():
    assert parse_angles("0, 90") == [0.0, 90.0]
    for bad in ("", "0,,90", "ap,lat", "0;90", "nan"):
        with pytest.raises(GeometryError):
            parse_angles(bad)


# ----------------------------------------------------------------------------- issue 12: documented ranges


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(angle_deg=True), "angle_deg"),
        (dict(angle_deg=1e308), "angle_deg"),
        (dict(sdd_mm=1e9, sod_mm=10.0), "sdd_mm"),
        (dict(shape=(100000, 100000)), "too large"),
        (dict(shape=(True, 4)), "whole numbers"),
        (dict(shape=(4.5, 4)), "whole numbers"),
        (dict(pixel_spacing_mm=(1.0, 1e6)), "pixel_spacing_mm"),
        (dict(pixel_spacing_mm=(True, 1.0)), "pixel_spacing_mm"),
        (dict(offset_px=(1e9, 0.0)), "offset_px"),
        (dict(isocenter_mm=(0.0, 0.0, 1e12)), "isocenter_mm"),
        (dict(projection=["cone"]), "projection"),
    ],
)
def test_view_ranges(kwargs, words):
    with pytest.raises(GeometryError, match=words):
        View(**kwargs)


def test_detector_limits_and_angles():
    from xfit.geometry import MAX_DETECTOR_SIDE, check_detector_shape, parse_angles

    assert check_detector_shape((MAX_DETECTOR_SIDE, 16)) == (MAX_DETECTOR_SIDE, 16)
    with pytest.raises(GeometryError, match="too large"):
        check_detector_shape((MAX_DETECTOR_SIDE + 1, 16))
    assert parse_angles("-360,360") == [-360.0, 360.0]
    with pytest.raises(GeometryError, match="360"):
        parse_angles("0,361")
    assert View(angle_deg=365.0).angle_deg == 365.0  # fitted angles may leave [-360, 360] a little


@pytest.mark.parametrize("projection", ["cone", "parallel"])
def test_pixel_rays_match_the_detector_grid_and_project_back(projection):
    from xfit.geometry import pixel_rays

    pose = ((1.0, 0.0, 0.0, 1.5), (0.0, 0.6, -0.8, 0.0), (0.0, 0.8, 0.6, -2.0), (0.0, 0.0, 0.0, 1.0))
    view = View(
        angle_deg=37.0,
        sdd_mm=1000.0,
        sod_mm=600.0,
        shape=(21, 17),
        pixel_spacing_mm=(1.2, 0.8),
        offset_px=(1.5, -2.0),
        projection=projection,
        isocenter_mm=(5.0, -3.0, 2.0),
        pose=pose,
    )
    grid = make_rays([view], dtype=torch.float64)
    rc = torch.tensor([[0.0, 0.0], [7.0, 11.0], [20.0, 16.0]], dtype=torch.float64)
    rays = pixel_rays(view, rc)
    for k, (r, c) in enumerate(rc.long().tolist()):
        assert torch.allclose(rays.origins[k], grid.origins[0, r, c], atol=1e-9)
        assert torch.allclose(rays.directions[k], grid.directions[0, r, c], atol=1e-12)
    ints = pixel_rays(view, rc.long())  # integer pixels: float64 rays, not a truncated frame
    assert ints.origins.dtype == torch.float64 and torch.equal(ints.directions, rays.directions)
    frac = torch.tensor([[3.25, 9.5], [-0.4, 16.4]], dtype=torch.float64)
    rays = pixel_rays(view, frac)
    points = rays.origins + 0.5 * rays.lengths[:, None] * rays.directions  # half way to the detector
    assert torch.allclose(world_to_pixel(points, view), frac, atol=1e-9)
