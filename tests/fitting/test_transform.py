"""Similarity transform of the fitted volume (xfit.fitting.transform) and the residual volume."""

import math

import pytest
import torch

from xfit.errors import InputError
from xfit.fitting.residual import residual_penalty, smoothness_penalty, upsample_residual
from xfit.fitting.transform import (
    TransformSigmas,
    describe,
    moved_affine,
    resample_to_grid,
    similarity_matrix,
    transform_prior,
)

SIG = TransformSigmas(deg=10.0, mm=5.0, log_scale=0.1)


def params(rot_deg=(0, 0, 0), shift_mm=(0, 0, 0), scale=1.0) -> torch.Tensor:
    v = [r / SIG.deg for r in rot_deg] + [t / SIG.mm for t in shift_mm] + [math.log(scale) / SIG.log_scale]
    return torch.tensor([v], dtype=torch.float64)


def test_similarity_matrix_is_rotation_scale_shift_about_centre():
    c = torch.tensor([10.0, -5.0, 3.0], dtype=torch.float64)
    T = similarity_matrix(params((0, 0, 90), (1, 2, 3), 2.0), c, SIG)[0]
    assert torch.allclose(
        T @ torch.cat([c, torch.ones(1, dtype=c.dtype)]), torch.tensor([11.0, -3.0, 6.0, 1.0], dtype=c.dtype)
    )  # centre moves by t only
    p = c + torch.tensor([1.0, 0.0, 0.0], dtype=c.dtype)  # +x rotated 90 deg about z -> +y, doubled
    got = (T @ torch.cat([p, torch.ones(1, dtype=c.dtype)]))[:3]
    assert torch.allclose(
        got, c + torch.tensor([1.0, 2.0, 3.0], dtype=c.dtype) + torch.tensor([0.0, 2.0, 0.0], dtype=c.dtype), atol=1e-9
    )
    d = describe(params((5, -3, 2), (1, 2, 3), 1.1)[0], SIG)
    assert d["rotation_deg"] == pytest.approx([5, -3, 2]) and d["translation_mm"] == pytest.approx([1, 2, 3])
    assert d["scale"] == pytest.approx(1.1)
    assert transform_prior(params((10, 0, 0), (0, 5, 0))).item() == pytest.approx(2 / 7)
    with pytest.raises(InputError, match="7"):
        similarity_matrix(torch.zeros(1, 6), c, SIG)


def test_resample_to_grid_matches_the_moved_volume():
    """A volume moved by T and resampled back onto the fixed grid equals the volume evaluated at
    T^-1 of each fixed grid point (checked on a smooth analytic field)."""
    n, s = 24, 2.0
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, :3] *= s
    affine[:3, 3] = -s * (n - 1) / 2
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64)] * 3, indexing="ij"), -1)
    world = idx * s - s * (n - 1) / 2

    def field(p):  # smooth blob off-centre
        return torch.exp(-((p - torch.tensor([4.0, -3.0, 2.0], dtype=p.dtype)) ** 2).sum(-1) / 200.0)

    vol = field(world)[None, None]
    T = similarity_matrix(params((0, 20, 10), (3, -2, 1), 1.2), torch.zeros(3, dtype=torch.float64), SIG)
    out = resample_to_grid(vol, T, affine, fill=0.0)[0, 0]
    inv = torch.linalg.inv(T[0])
    src = world @ inv[:3, :3].T + inv[:3, 3]
    expected = field(src)
    inner = (slice(4, -4),) * 3
    assert (out[inner] - expected[inner]).abs().max() < 0.02
    wrong = field(world @ T[0, :3, :3].T + T[0, :3, 3])  # T instead of T^-1
    assert (out[inner] - wrong[inner]).abs().max() > 0.2
    assert torch.allclose(resample_to_grid(vol, torch.eye(4, dtype=torch.float64)[None], affine, 0.0), vol, atol=1e-9)
    m = moved_affine(affine, params(scale=1.5), torch.zeros(3, dtype=torch.float64), SIG)[0]
    assert torch.allclose(m[:3, :3], 1.5 * affine[:3, :3])


def test_residual_upsampling_and_penalty():
    g = torch.zeros(1, 1, 4, 4, 4)
    g[0, 0, 1, 2, 3] = 1.0
    up = upsample_residual(g, (10, 10, 10))
    assert up.shape == (1, 1, 10, 10, 10) and up[0, 0, 3, 6, 9] == pytest.approx(100.0)
    flat = torch.full((2, 1, 4, 4, 4), 0.5)
    assert residual_penalty(flat).tolist() == pytest.approx([0.25, 0.25])  # no curvature
    ramp = torch.arange(5.0).reshape(1, 5)
    assert smoothness_penalty(ramp, (1,)).item() == pytest.approx(6.0)  # linear: curvature 0
    bump = torch.tensor([[0.0, 1.0, 0.0]])
    assert smoothness_penalty(bump, (1,)).item() == pytest.approx(1 / 3 + 4)


@pytest.fixture(scope="module")
def loaded_tiny_prior(tiny_prior_file):
    from xfit.prior.checkpoint import load_prior

    return load_prior(tiny_prior_file())


def test_fit_recovers_a_moved_volume(loaded_tiny_prior):
    """A prior sample scaled by 1.2, turned 10 deg and shifted 4 mm: started at its true W+, the
    fit with the transform finds the scale and explains the X-rays better than the fit without."""
    from xfit.fitting import fit, load_fit_config
    from xfit.geometry import View
    from xfit.io import hu_to_mu
    from xfit.prior.sample import generate_hu, prior_affine, sample_w_plus
    from xfit.projector import project

    prior = loaded_tiny_prior
    w = sample_w_plus(prior, 1, seed=4)
    with torch.no_grad():
        hu, _ = generate_hu(prior, w)
    true = params((0, 10, 0), (4, 0, -3), 1.2).float()
    affine = moved_affine(torch.as_tensor(prior_affine(prior), dtype=torch.float32), true, torch.zeros(3), SIG)
    views = [View(angle_deg=a, shape=(40, 40), pixel_spacing_mm=(3.0, 3.0)) for a in (0.0, 90.0)]
    with torch.no_grad():
        images = [project(hu_to_mu(hu)[:, None], affine, [v])[0, 0].numpy() for v in views]
    common = dict(steps=60, restarts=1, init_samples=0, optimize_noise=False, early_stop_tol=0.0, lr=1e-4)
    fixed = fit(prior, images, views, load_fit_config(None, transform=False, **common), w_init=w[0], progress=False)
    moved = fit(
        prior,
        images,
        views,
        load_fit_config(None, transform=True, lr_transform=0.1, **common),
        w_init=w[0],
        progress=False,
    )
    assert moved.history[-1]["data"] < 0.5 * fixed.history[-1]["data"]
    assert moved.transform["scale"] == pytest.approx(1.2, abs=0.06)
    assert moved.transform["translation_mm"][0] == pytest.approx(4.0, abs=1.5)
