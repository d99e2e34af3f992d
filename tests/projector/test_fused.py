"""The fused CPU projector (xfit.projector.fused, numba) against the reference, which is the oracle:
forward and adjoint on random volumes, cone and parallel beams, several angles, batches, rays partly
outside the volume; the adjoint identity; autograd; fallback to the reference for geometry
gradients and when numba is missing; the backend choice (argument and $XFIT_PROJECTOR)."""

import math

import pytest
import torch

from xfit import projector
from xfit.errors import InputError
from xfit.geometry import View, make_rays
from xfit.projector import backproject, fused, get_backend, project, reference, resolved_backend

needs_numba = pytest.mark.skipif(not fused.available(), reason="numba not installed (pip install numba)")

SHAPE = (9, 11, 13)


def affine(dtype=torch.float32):
    """Anisotropic, x-flipped, slightly rotated voxel -> world affine, centred near the isocentre."""
    c, s = math.cos(0.3), math.sin(0.3)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    a = torch.eye(4, dtype=torch.float64)
    a[:3, :3] = rot @ torch.diag(torch.tensor([-1.1, 0.9, 1.3], dtype=torch.float64))
    mid = torch.tensor([(n - 1) / 2 for n in SHAPE], dtype=torch.float64)
    a[:3, 3] = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64) - a[:3, :3] @ mid
    return a.to(dtype)


def views(projection="cone"):
    """Three views whose detectors (24 mm) are wider than the volume (about 12-17 mm): rays miss,
    graze and cross it."""
    kw = dict(sdd_mm=120.0, sod_mm=80.0, shape=(10, 12), pixel_spacing_mm=(2.4, 2.0), projection=projection)
    return [View(a, **kw) for a in (0.0, 37.0, 101.0)]


def volume(batch=2, dtype=torch.float32, seed=0):
    return torch.rand(batch, 1, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def close(a, b, rtol):
    return torch.allclose(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


@needs_numba
@pytest.mark.parametrize("projection", ["cone", "parallel"])
def test_forward_and_adjoint_match_the_reference(projection):
    mu, aff, vs = volume(), affine(), views(projection)
    want = project(mu, aff, vs, backend="reference")
    got = project(mu, aff, vs, backend="fused")
    assert got.shape == want.shape == (2, 3, 10, 12)
    assert (want == 0).any() and (want > 0).any()  # some rays miss, some cross
    assert close(got, want, 1e-4)
    images = torch.rand(want.shape, generator=torch.Generator().manual_seed(1))
    back_want = backproject(images, aff, vs, SHAPE, backend="reference")
    back_got = backproject(images, aff, vs, SHAPE, backend="fused")
    assert back_got.shape == back_want.shape == (2, 1, *SHAPE)
    assert close(back_got, back_want, 1e-4)


@needs_numba
def test_adjoint_identity_and_batch_items_are_independent():
    """<A x, y> == <x, A^T y> (float64), and each batch item equals its own call."""
    dtype = torch.float64
    mu, aff, vs = volume(3, dtype), affine(dtype), views()
    images = torch.rand(3, 3, 10, 12, dtype=dtype, generator=torch.Generator().manual_seed(2))
    ax = project(mu, aff, vs, backend="fused")
    aty = backproject(images, aff, vs, SHAPE, backend="fused")
    lhs, rhs = float((ax * images).sum()), float((mu * aty).sum())
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    alone = project(mu[1:2], aff, vs, backend="fused")
    assert close(ax[1:2], alone, 1e-12)


@needs_numba
def test_gradients_match_the_reference_autograd():
    """d/dmu of a weighted sum (fused adjoint) equals the reference's backward; back-projection is
    differentiable in the images (its backward is the fused forward)."""
    aff, vs = affine(), views()
    weights = torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(3))
    grads = []
    for backend in ("reference", "fused"):
        mu = volume().requires_grad_()
        (project(mu, aff, vs, backend=backend) * weights).sum().backward()
        grads.append(mu.grad)
    assert close(grads[1], grads[0], 1e-4)
    x = volume(seed=4)
    y = weights.clone().requires_grad_()
    (backproject(y, aff, vs, SHAPE, backend="fused") * x).sum().backward()
    assert close(y.grad, project(x, aff, vs, backend="reference"), 1e-4)


@needs_numba
def test_geometry_gradients_use_the_reference(monkeypatch):
    """Pose refinement needs gradients w.r.t. the rays: the fused backend hands those calls to the
    reference (its kernels never run) and the results are the reference's."""
    calls = []
    monkeypatch.setattr(fused, "march", lambda *a, **k: calls.append(1))
    aff, vs = affine(), views()
    out = {}
    for backend in ("reference", "fused"):
        mu = volume().requires_grad_()
        angle = torch.tensor([0.0, 37.0, 101.0], requires_grad=True)
        img = project(mu, aff, vs, angle_deg=angle, backend=backend)
        img.square().sum().backward()
        out[backend] = (img.detach(), mu.grad, angle.grad)
    assert not calls
    for a, b in zip(out["fused"], out["reference"]):
        assert torch.equal(a, b)


@needs_numba
def test_auto_picks_fused_on_cpu_and_the_environment_overrides(monkeypatch):
    monkeypatch.delenv(projector.BACKEND_ENV, raising=False)
    cpu = torch.device("cpu")
    assert get_backend("auto", cpu) is fused and resolved_backend("auto", cpu) == "fused"
    assert get_backend("reference", cpu) is reference
    monkeypatch.setenv(projector.BACKEND_ENV, "reference")
    assert resolved_backend("auto", cpu) == "reference"
    assert get_backend("fused", cpu) is fused  # an explicit argument is never overridden
    monkeypatch.setenv(projector.BACKEND_ENV, "numba")
    with pytest.raises(InputError, match="XFIT_PROJECTOR"):
        get_backend("auto", cpu)


def test_without_numba_auto_is_the_reference(monkeypatch):
    """xfit works without numba: "auto" falls back to the reference, "fused" is a clear error."""
    monkeypatch.delenv(projector.BACKEND_ENV, raising=False)
    monkeypatch.setattr(fused, "available", lambda: False)
    cpu = torch.device("cpu")
    assert get_backend("auto", cpu) is reference and resolved_backend("auto", cpu) == "reference"
    with pytest.raises(InputError, match="numba"):
        get_backend("fused", cpu)
    mu, aff, vs = volume(1), affine(), views()
    assert torch.equal(project(mu, aff, vs), project(mu, aff, vs, backend="reference"))
    # the module's own entry points also fall back (a CPU volume, but no kernels)
    assert torch.equal(fused.project_rays(mu, aff, make_rays(vs)), project(mu, aff, vs, backend="reference"))
