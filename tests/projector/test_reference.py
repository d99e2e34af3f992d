"""Tests of the reference X-ray projector (xfit.projector): analytic DRRs, adjoint, gradients,
orientation conventions, chunking and input validation."""

import math

import numpy as np
import pytest
import torch

from xfit.errors import GeometryError, InputError
from xfit.geometry import View, make_rays, rigid_pose, world_to_pixel
from xfit.projector import backproject, get_backend, project, project_rays, reference

F64 = torch.float64


@pytest.fixture(autouse=True)
def _reference_backend(monkeypatch):
    """These tests check the reference (the oracle): "auto" means it even where numba is installed
    (the fused CPU kernels are compared with it in tests/projector/test_fused.py)."""
    monkeypatch.setenv("XFIT_PROJECTOR", "reference")


# ----------------------------------------------------------------------------- helpers


def make_affine(shape, spacing, centre_mm, flip_x=False, dtype=F64):
    """Voxel index -> world affine with the volume's middle voxel at ``centre_mm``."""
    diag = torch.tensor(spacing, dtype=dtype) * torch.tensor([-1.0 if flip_x else 1.0, 1.0, 1.0], dtype=dtype)
    aff = torch.eye(4, dtype=dtype)
    aff[:3, :3] = torch.diag(diag)
    mid = torch.tensor([(n - 1) / 2 for n in shape], dtype=dtype)
    aff[:3, 3] = torch.tensor(centre_mm, dtype=dtype) - diag * mid
    return aff


def voxel_centres(shape, affine):
    """World coordinates ``[I, J, K, 3]`` of the voxel centres."""
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=affine.dtype) for n in shape], indexing="ij"), -1)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def ellipsoid_volume(shape, affine, centre, radii, value, supersample=4):
    """Partial-volume ellipsoid: ``value`` x fraction of ``supersample^3`` sub-voxels inside."""
    centre, radii = torch.tensor(centre, dtype=F64), torch.tensor(radii, dtype=F64)
    base = (voxel_centres(shape, affine) - centre) / radii  # [I,J,K,3], ellipsoid -> unit ball
    offsets = (torch.arange(supersample, dtype=F64) + 0.5) / supersample - 0.5
    inside = torch.zeros(shape, dtype=F64)
    for sub in torch.cartesian_prod(offsets, offsets, offsets):
        inside += (((base + (affine[:3, :3] @ sub) / radii) ** 2).sum(-1) <= 1).to(F64)
    return value * inside / supersample**3


def ellipsoid_integrals(rays, centre, radii, value):
    """Closed-form line integrals through an axis-aligned ellipsoid, and the normalised radius
    of closest approach rho (rho < 1: the ray enters the ellipsoid)."""
    centre, radii = torch.tensor(centre, dtype=F64), torch.tensor(radii, dtype=F64)
    o = (rays.origins.to(F64) - centre) / radii
    d = rays.directions.to(F64) / radii
    a, b, c = (d * d).sum(-1), (o * d).sum(-1), (o * o).sum(-1) - 1
    disc = (b * b - a * c).clamp(min=0)
    rho2 = (c + 1 - b * b / a).clamp(min=0)
    return value * 2 * disc.sqrt() / a, rho2.sqrt()


def gaussian_volume(shape, affine, centre, sigma, peak):
    x = voxel_centres(shape, affine) - torch.tensor(centre, dtype=affine.dtype)
    return peak * torch.exp(-(x * x).sum(-1) / (2 * sigma**2))


def gaussian_integrals(rays, centre, sigma, peak):
    """Closed-form line integrals of an isotropic Gaussian along infinite lines."""
    w = torch.tensor(centre, dtype=F64) - rays.origins.to(F64)
    d = rays.directions.to(F64)
    dist2 = (w * w).sum(-1) - (w * d).sum(-1) ** 2
    return peak * sigma * math.sqrt(2 * math.pi) * torch.exp(-dist2 / (2 * sigma**2))


def test_views(projection, angles, shape=(48, 48), spacing_mm=1.0):
    sdd, sod = 400.0, 250.0
    scale = sdd / sod if projection == "cone" else 1.0
    return [
        View(a, sdd_mm=sdd, sod_mm=sod, shape=shape, pixel_spacing_mm=spacing_mm * scale, projection=projection)
        for a in angles
    ]


test_views.__test__ = False  # a helper, not a test


SHAPE = (40, 44, 36)
SPACING = (1.0, 0.9, 1.1)
ANGLES = (0.0, 37.0, 90.0, 200.0)


# ----------------------------------------------------------------------------- 1. analytic DRRs


ELLIPSOID = dict(centre=(2.0, -3.0, 1.5), radii=(14.0, 11.0, 12.0), value=0.02)


@pytest.fixture(scope="module", params=[False, True], ids=["ras", "flip_x"])
def ellipsoid(request):
    affine = make_affine(SHAPE, SPACING, (1.0, -2.0, 1.0), flip_x=request.param)
    return ellipsoid_volume(SHAPE, affine, **ELLIPSOID), affine


@pytest.mark.parametrize("projection", ["parallel", "cone"])
def test_ellipsoid_matches_analytic(projection, ellipsoid):
    mu, affine = ellipsoid
    views = test_views(projection, ANGLES)
    drr = project(mu, affine, views)[0]
    exact, rho = ellipsoid_integrals(make_rays(views, dtype=F64), **ELLIPSOID)
    # the hard edge is not band-limited: compare away from a ~3 voxel band around the silhouette
    interior, exterior = rho < 0.75, rho > 1.2
    assert interior.sum() > 500 and exterior.sum() > 500
    err = (drr - exact).abs() / exact.max()
    assert err[interior].max() < 0.01
    assert err[exterior].max() < 1e-12
    # and in the band the error is still bounded by the blur of one voxel
    assert err.max() < 0.15


@pytest.mark.parametrize("projection", ["parallel", "cone"])
def test_gaussian_matches_analytic(projection):
    affine = make_affine(SHAPE, SPACING, (1.0, -2.0, 1.0))
    centre, sigma, peak = (1.5, -1.0, 2.0), 5.0, 0.03
    mu = gaussian_volume(SHAPE, affine, centre, sigma, peak)
    views = test_views(projection, ANGLES)
    drr = project(mu, affine, views)[0]
    exact = gaussian_integrals(make_rays(views, dtype=F64), centre, sigma, peak)
    assert (drr - exact).abs().max() / exact.max() < 0.01
    # total attenuation is conserved (mean signed error ~ 0)
    assert abs((drr - exact).mean()) / exact.max() < 1e-3


def test_rays_missing_the_volume_give_zero():
    mu = torch.ones(1, 1, 6, 6, 6, dtype=F64)
    view = View(0.0, sdd_mm=300, sod_mm=200, shape=(3, 3), offset_px=(0.0, 40.0), projection="parallel")
    assert torch.equal(project(mu, torch.eye(4, dtype=F64), [view]), torch.zeros(1, 1, 3, 3, dtype=F64))


def test_uniform_volume_chord_is_its_voxel_extent():
    # a uniform volume of I voxels has the integral of I whole voxels (support box [-1, n])
    shape, spacing = (10, 12, 8), (2.0, 1.5, 1.0)
    affine = make_affine(shape, spacing, (0.0, 0.0, 0.0))
    view = View(0.0, shape=(1, 1), projection="parallel", pixel_spacing_mm=0.5, offset_px=(0.3, 0.2))
    drr = project(torch.full(shape, 0.1, dtype=F64), affine, [view])
    # AP ray along -y crosses J = 12 voxels of 1.5 mm
    assert torch.allclose(drr, torch.full_like(drr, 0.1 * 12 * 1.5), rtol=1e-9)


def _trilinear_zero_padded(vol, p):
    """Plain numpy trilinear interpolation of ``vol`` at index-space point ``p`` (zeros outside)."""
    base = np.floor(p).astype(int)
    value = 0.0
    for corner in np.ndindex(2, 2, 2):
        idx = base + np.array(corner)
        if np.all(idx >= 0) and np.all(idx < vol.shape):
            value += vol[tuple(idx)] * np.prod(1 - np.abs(p - idx))
    return value


def test_discretisation_matches_the_documented_recipe():
    """Re-implements the module docstring (slab on [-1, n], one N per call, midpoint rule) in numpy."""
    rng = np.random.default_rng(5)
    vol = rng.random((5, 6, 4))
    rot = rigid_pose(torch.tensor([0.3, -0.2, 0.5], dtype=F64), torch.zeros(3, dtype=F64))[:3, :3]
    affine = torch.eye(4, dtype=F64)
    affine[:3, :3] = rot @ torch.diag(torch.tensor([1.5, 1.0, 2.0], dtype=F64))
    affine[:3, 3] = torch.tensor([-3.0, -2.0, -4.0], dtype=F64)
    view = View(25.0, sdd_mm=60, sod_mm=40, shape=(3, 4), pixel_spacing_mm=(3.0, 2.5))
    rays = make_rays([view], dtype=F64)
    step = 0.7
    got = project(torch.from_numpy(vol), affine, [view], step_mm=step)[0, 0].numpy()

    inv = np.linalg.inv(affine.numpy())
    o = rays.origins[0].reshape(-1, 3).numpy() @ inv[:3, :3].T + inv[:3, 3]
    d = rays.directions[0].reshape(-1, 3).numpy() @ inv[:3, :3].T
    lo, hi = -1.0, np.array(vol.shape, dtype=float)
    with np.errstate(divide="ignore"):
        ta, tb = (lo - o) / d, (hi - o) / d
    t0 = np.maximum(np.minimum(ta, tb).max(1), 0.0)
    t1 = np.minimum(np.maximum(ta, tb).min(1), rays.lengths[0].reshape(-1).numpy())
    t1 = np.where(t1 > t0, t1, t0)
    n = int(np.ceil((t1 - t0).max() / step))
    expected = []
    for i in range(len(o)):
        dt = (t1[i] - t0[i]) / n
        ts = t0[i] + (np.arange(n) + 0.5) * dt
        expected.append(dt * sum(_trilinear_zero_padded(vol, o[i] + t * d[i]) for t in ts))
    expected = np.array(expected).reshape(3, 4)
    assert expected.max() > 1.0 and (expected == 0).sum() < 12
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------- 2. adjoint


@pytest.mark.parametrize("projection", ["parallel", "cone"])
def test_backproject_is_the_adjoint(projection):
    g = torch.Generator().manual_seed(1)
    shape = (9, 11, 10)
    affine = make_affine(shape, (1.2, 1.0, 0.9), (0.5, -0.5, 1.0))
    views = [
        View(a, sdd_mm=200, sod_mm=120, shape=(7, 8), pixel_spacing_mm=2.0, projection=projection)
        for a in (0.0, 37.0, 110.0)
    ]
    x = torch.rand(2, 1, *shape, generator=g, dtype=F64)
    y = torch.rand(2, 3, 7, 8, generator=g, dtype=F64)
    ax = project(x, affine, views, chunk_rays=13)
    aty = backproject(y, affine, views, shape, chunk_rays=17)
    assert aty.shape == (2, 1, *shape)
    lhs, rhs = (ax * y).sum(), (x * aty).sum()
    assert lhs > 1.0
    assert torch.allclose(lhs, rhs, rtol=1e-12)


def test_backproject_differentiable_in_images():
    shape = (4, 5, 4)
    view = View(20.0, sdd_mm=200, sod_mm=120, shape=(3, 2), pixel_spacing_mm=3.0)
    y = torch.rand(1, 1, 3, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: backproject(t, torch.eye(4, dtype=F64), [view], shape), (y,))


# ----------------------------------------------------------------------------- 3. gradients

TINY_SHAPE = (5, 5, 5)


def tiny_setup(projection="cone"):
    g = torch.Generator().manual_seed(3)
    mu = (0.05 * torch.rand(1, 1, *TINY_SHAPE, generator=g, dtype=F64)).requires_grad_()
    affine = make_affine(TINY_SHAPE, (2.0, 1.8, 2.2), (0.3, -0.2, 0.1))
    views = [
        View(a, sdd_mm=150, sod_mm=100, shape=(4, 3), pixel_spacing_mm=(2.5, 3.0), projection=projection)
        for a in (11.0, 73.0)
    ]
    return mu, affine, views


@pytest.mark.parametrize("projection", ["parallel", "cone"])
def test_gradcheck_mu(projection):
    mu, affine, views = tiny_setup(projection)
    assert torch.autograd.gradcheck(lambda m: project(m, affine, views), (mu,))


@pytest.mark.parametrize("projection", ["parallel", "cone"])
def test_gradcheck_angle_and_mu(projection):
    mu, affine, views = tiny_setup(projection)
    angle = torch.tensor([11.0, 73.0], dtype=F64, requires_grad=True)
    fn = lambda m, a: project(m, affine, views, angle_deg=a, chunk_rays=5)
    assert torch.autograd.gradcheck(fn, (mu, angle), atol=1e-6)


def test_gradcheck_pose():
    mu, affine, views = tiny_setup("cone")
    rotvec = torch.tensor([[0.02, -0.03, 0.01], [0.0, 0.05, -0.02]], dtype=F64, requires_grad=True)
    shift = torch.tensor([[0.4, -0.3, 0.2], [-0.1, 0.2, 0.5]], dtype=F64, requires_grad=True)
    fn = lambda r, t: project(mu.detach(), affine, views, pose=rigid_pose(r, t))
    assert torch.autograd.gradcheck(fn, (rotvec, shift), atol=1e-6)


def test_gradcheck_affine_translation():
    mu, affine, views = tiny_setup("parallel")

    def fn(shift):
        top = torch.cat([affine[:3, :3], shift[:, None]], 1)
        return project(mu.detach(), torch.cat([top, affine[3:]], 0), views)

    assert torch.autograd.gradcheck(fn, (affine[:3, 3].clone().requires_grad_(),), atol=1e-6)


# ----------------------------------------------------------------------------- 4. cone -> parallel


def test_cone_beam_tends_to_parallel_beam():
    shape = (24, 24, 24)
    affine = make_affine(shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    mu = gaussian_volume(shape, affine, (3.0, -2.0, 1.0), 3.0, 0.05) + ellipsoid_volume(
        shape, affine, (-2.0, 1.0, 0.0), (6.0, 4.0, 8.0), 0.02, supersample=2
    )
    parallel = View(37.0, sdd_mm=400, sod_mm=250, shape=(20, 20), pixel_spacing_mm=1.2, projection="parallel")
    reference_drr = project(mu, affine, [parallel])
    diffs = []
    for sod in (300.0, 1e3, 1e4, 9.9e4):  # sdd stays within the 1e5 mm limit of View
        sdd = sod + 300.0
        cone = parallel.with_(projection="cone", sod_mm=sod, sdd_mm=sdd, pixel_spacing_mm=1.2 * sdd / sod)
        diffs.append(float((project(mu, affine, [cone]) - reference_drr).abs().max() / reference_drr.max()))
    assert all(a > b for a, b in zip(diffs, diffs[1:])), diffs
    assert diffs[-1] < 1e-3 and diffs[-1] < diffs[0] / 50, diffs


# ----------------------------------------------------------------------------- 5. orientation


@pytest.mark.parametrize("projection", ["parallel", "cone"])
@pytest.mark.parametrize(
    "angle, blob, where",
    [
        (0.0, (12.0, 0.0, 0.0), "left"),  # patient's right on the AP image left
        (90.0, (0.0, 12.0, 0.0), "right"),  # anterior on the lateral image right
        (0.0, (0.0, 0.0, 12.0), "top"),  # superior at the top
        (90.0, (0.0, 0.0, 12.0), "top"),
    ],
)
def test_orientation_table(projection, angle, blob, where):
    shape = (32, 32, 32)
    affine = make_affine(shape, (1.5, 1.5, 1.5), (0.0, 0.0, 0.0))
    mu = gaussian_volume(shape, affine, blob, 2.5, 0.05)
    view = test_views(projection, [angle], shape=(64, 64))[0]
    drr = project(mu, affine, [view])[0, 0]
    rr, cc = torch.meshgrid(torch.arange(64.0, dtype=F64), torch.arange(64.0, dtype=F64), indexing="ij")
    centroid = torch.stack([(drr * rr).sum(), (drr * cc).sum()]) / drr.sum()
    half = 31.5
    assert {"left": centroid[1] < half - 5, "right": centroid[1] > half + 5, "top": centroid[0] < half - 5}[where]
    expected = world_to_pixel(torch.tensor([blob], dtype=F64), view)[0]
    assert (centroid - expected).abs().max() < 0.5


# ----------------------------------------------------------------------------- 6. chunks, shapes, dtypes


def test_chunking_does_not_change_values_or_gradients():
    mu, affine, views = tiny_setup("cone")
    views = [v.with_(shape=(6, 7)) for v in views]
    results = []
    for chunk in (None, 3, 1000):
        m = mu.detach().clone().requires_grad_()
        angle = torch.tensor([11.0, 73.0], dtype=F64, requires_grad=True)
        out = project(m, affine, views, angle_deg=angle, chunk_rays=chunk)
        (out * torch.linspace(0, 1, out.numel(), dtype=F64).reshape(out.shape)).sum().backward()
        results.append((out.detach(), m.grad, angle.grad))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_shapes_and_dtypes(batch, dtype):
    shape = (8, 9, 7)
    mu = torch.rand(batch, 1, *shape, dtype=dtype)
    affines = torch.stack(
        [make_affine(shape, (1.0, 1.1, 0.9), (b * 1.5, 0.0, -b * 1.0), dtype=dtype) for b in range(batch)]
    )
    views = [View(a, sdd_mm=200, sod_mm=120, shape=(5, 6), pixel_spacing_mm=2.0) for a in (0.0, 45.0, 90.0)]
    out = project(mu, affines, views)
    assert out.shape == (batch, 3, 5, 6) and out.dtype == dtype
    for b in range(batch):  # each volume with its own affine, same as projecting it alone
        alone = project(mu[b, 0], affines[b].numpy(), views)
        assert alone.shape == (1, 3, 5, 6)
        assert torch.allclose(out[b], alone[0], rtol=1e-5 if dtype == torch.float32 else 1e-12)
    assert torch.allclose(project(mu[:, 0], affines, views), out)
    if dtype == torch.float32:  # float32 agrees with float64 to single precision
        ref = project(mu.double(), affines.double(), views)
        assert torch.allclose(out.double(), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def test_project_rays_any_ray_shape_and_backend_choice():
    mu = torch.rand(2, 1, 6, 6, 6, dtype=F64)
    rays = make_rays([View(30.0, sdd_mm=200, sod_mm=120, shape=(3, 4))], dtype=F64)
    flat = type(rays)(rays.origins.reshape(12, 3), rays.directions.reshape(12, 3), rays.lengths.reshape(12))
    eye = torch.eye(4, dtype=F64)
    out = project_rays(mu, eye, flat, backend="reference")
    assert out.shape == (2, 12)
    assert torch.allclose(out.reshape(2, 1, 3, 4), project_rays(mu, eye, rays))
    assert get_backend("auto", torch.device("cpu")) is reference


def test_invalid_inputs_raise():
    mu = torch.rand(1, 1, 6, 6, 6)
    eye = torch.eye(4)
    view = View(0.0, shape=(3, 3))
    with pytest.raises(InputError):
        project(torch.rand(6, 6), eye, [view])
    with pytest.raises(InputError):
        project(torch.rand(1, 2, 6, 6, 6), eye, [view])
    with pytest.raises(InputError):
        project(torch.rand(6, 1, 6), eye, [view])
    with pytest.raises(GeometryError):
        project(mu, torch.eye(3), [view])
    with pytest.raises(GeometryError):
        project(mu, torch.eye(4).expand(3, 4, 4), [view])
    nan = eye.clone()
    nan[0, 3] = float("nan")
    with pytest.raises(GeometryError):
        project(mu, nan, [view])
    with pytest.raises(GeometryError):
        project(mu, torch.diag(torch.tensor([1.0, 0.0, 1.0, 1.0])), [view])
    with pytest.raises(GeometryError):
        project(mu, eye, [view, view.with_(shape=(4, 3))])
    with pytest.raises(GeometryError):
        project(mu, eye, [])
    with pytest.raises(InputError):
        project(mu, eye, [view], step_mm=-1.0)
    with pytest.raises(InputError):
        project(mu, eye, [view], chunk_rays=0)
    with pytest.raises(InputError):
        project(mu, eye, [view], backend="cuda")
    with pytest.raises(InputError):
        backproject(torch.rand(1, 2, 3, 3), eye, [view], (6, 6, 6))  # 2 image views, 1 view


def test_triton_backend_request_is_explicit():
    from xfit import projector

    if projector._triton() is not None:
        pytest.skip("triton backend available here")
    with pytest.raises(InputError):
        project(torch.rand(1, 1, 4, 4, 4), torch.eye(4), [View(0.0, shape=(2, 2))], backend="triton")


# ----------------------------------------------------------------------------- 7. memory


def test_chunks_bound_the_working_set(monkeypatch):
    """Every march (forward, backward recompute and adjoint) sees at most SAMPLES_PER_CHUNK samples."""
    budget = 2**12
    monkeypatch.setattr(reference, "SAMPLES_PER_CHUNK", budget)
    seen = []
    for name in ("march", "march_adjoint"):
        original = getattr(reference, name)

        def spy(*args, _original=original, **kwargs):
            t_near, n = args[-3], args[-1]
            seen.append(t_near.numel() * n)
            return _original(*args, **kwargs)

        monkeypatch.setattr(reference, name, spy)
    mu = torch.rand(2, 1, 12, 12, 12, dtype=F64, requires_grad=True)
    angle = torch.tensor([0.0, 30.0], dtype=F64, requires_grad=True)
    views = [View(0.0, sdd_mm=200, sod_mm=120, shape=(16, 16), pixel_spacing_mm=1.0)] * 2
    out = project(mu, torch.eye(4, dtype=F64), views, angle_deg=angle)
    n_forward = len(seen)
    out.sum().backward()
    backproject(out.detach(), torch.eye(4, dtype=F64), views, (12, 12, 12), angle_deg=angle.detach())
    total = sum(seen[:n_forward])  # B x rays x samples of the whole call
    assert total > 5 * budget and n_forward >= total / budget
    assert len(seen) == 3 * n_forward  # forward, backward recompute, adjoint: same chunks
    assert max(seen) <= budget


def test_auto_backend_warns_once_when_cuda_falls_back(monkeypatch):
    import warnings

    from xfit import projector

    monkeypatch.setattr(projector, "_triton", lambda: None)
    monkeypatch.delenv(projector.BACKEND_ENV)  # "auto" itself
    projector._warn_fallback.cache_clear()
    with pytest.warns(UserWarning, match="reference backend"):
        assert projector.get_backend("auto", torch.device("cuda")) is projector.reference
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert projector.get_backend("auto", torch.device("cuda")) is projector.reference  # once only
        assert projector.resolved_backend("auto", torch.device("cpu")) in ("reference", "fused")  # CPU: no warning
    projector._warn_fallback.cache_clear()
