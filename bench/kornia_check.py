"""Is kornia the better tool anywhere in xfit? Times (and checks the values of) kornia against
xfit's own code where they do the same job, on small tensors, one CPU thread.

    python bench/kornia_check.py [--reps 20]

1. SSIM, the evaluation metric: :func:`xfit.metrics.ssim2d_slices` / :func:`xfit.metrics.ssim3d`
   (Gaussian window 7, sigma 1.5, valid positions: equals skimage) against
   ``kornia.metrics.ssim`` / ``ssim3d`` with ``padding="valid"`` on a 64^3 HU volume pair.
   And SSIM as a loss: XCTRSNet's multi-view term
   (:func:`xfit.baselines.xctrsnet.multiview_ssim_loss`) against ``kornia.losses.ssim_loss`` on
   the slices along the three axes, forward + backward on ``[2, 1, 64, 64, 64]`` float32.
2. Spatial gradients, the ``ncc+gradient`` data term: :func:`xfit.fitting.objective.gradient_magnitude`
   (central differences, replicate edges) against ``kornia.filters.spatial_gradient(mode="diff")``,
   forward + backward on ``[4, 2, 128, 128]`` images.
3. 3D affine warps, the prior's training augmentation (:func:`xfit.prior.train.augment`:
   ``affine_grid`` + ``grid_sample``) against ``kornia.geometry.transform.warp_affine3d``, forward
   + backward on ``[4, 2, 32, 32, 32]``.

kornia is not a dependency of xfit (docs/architecture.md, "Dependencies"); this script needs it
installed (``pip install kornia``) and is not run by the tests.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from timing import median_seconds


def _time(fn, reps: int) -> float:
    """Median wall time of ``fn()`` in milliseconds (one warm-up call)."""
    return 1000.0 * median_seconds(fn, reps)


def _volumes(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:n, :n, :n] - (n - 1) / 2
    ball = np.where(xx**2 + yy**2 + zz**2 < (0.3 * n) ** 2, 800.0, -900.0)
    target = ball + gen.normal(0, 40, ball.shape)
    pred = np.roll(ball, 1, axis=0) + gen.normal(0, 60, ball.shape)
    return np.clip(pred, -1000, 1500), np.clip(target, -1000, 1500)


def ssim_rows(reps: int) -> list[tuple[str, float, float, float]]:
    import kornia

    from xfit.metrics import ssim2d_slices, ssim3d

    p, t = _volumes()
    rng = 2500.0
    pt, tt = torch.from_numpy(p), torch.from_numpy(t)

    def k2d() -> float:
        a, b = pt.permute(2, 0, 1)[:, None], tt.permute(2, 0, 1)[:, None]  # slices normal to K
        return float(kornia.metrics.ssim(a, b, 7, max_val=rng, padding="valid").mean())

    def k3d() -> float:
        return float(kornia.metrics.ssim3d(pt[None, None], tt[None, None], 7, max_val=rng, padding="valid").mean())

    ours2d, ours3d = ssim2d_slices(p, t, rng), ssim3d(p, t, rng)
    return [
        ("SSIM 2D slices, 64^3", _time(lambda: ssim2d_slices(p, t, rng), reps), _time(k2d, reps), abs(ours2d - k2d())),
        ("SSIM 3D, 64^3", _time(lambda: ssim3d(p, t, rng), reps), _time(k3d, reps), abs(ours3d - k3d())),
    ]


def ssim_loss_row(reps: int) -> tuple[str, float, float, float]:
    import kornia

    from xfit.baselines.xctrsnet import multiview_ssim_loss

    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 64, 64, 64, generator=gen) * 2 - 1
    pred = (target + 0.2 * torch.randn(target.shape, generator=gen)).requires_grad_()

    def k(pred: torch.Tensor) -> torch.Tensor:
        losses = []
        for axis in (2, 3, 4):
            p, t = pred.movedim(axis, 2), target.movedim(axis, 2)
            p, t = p.reshape(-1, 1, *p.shape[3:]), t.reshape(-1, 1, *t.shape[3:])
            # kornia's ssim_loss is (1 - SSIM) / 2
            losses.append(2 * kornia.losses.ssim_loss(p, t, 7, max_val=2.0, padding="valid"))
        return torch.stack(losses).mean()

    diff = float((multiview_ssim_loss(pred, target) - k(pred)).abs().detach())
    return (
        "SSIM loss fwd+bwd, 2x1x64^3 float32",
        _time(lambda: multiview_ssim_loss(pred, target).backward(), reps),
        _time(lambda: k(pred).backward(), reps),
        diff,
    )


def gradient_row(reps: int) -> tuple[str, float, float, float]:
    import kornia

    from xfit.fitting.objective import gradient_magnitude

    x = torch.rand(4, 2, 128, 128, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def k(x: torch.Tensor) -> torch.Tensor:
        g = kornia.filters.spatial_gradient(x, mode="diff", order=1)  # [B, C, 2, R, C]: d/dcol, d/drow
        return torch.sqrt(g[:, :, 0] ** 2 + g[:, :, 1] ** 2 + 1e-12)

    def run(fn):
        return lambda: fn(x).sum().backward()

    diff = float((gradient_magnitude(x) - k(x)).abs().max().detach())
    return ("gradient magnitude fwd+bwd, 4x2x128^2", _time(run(gradient_magnitude), reps), _time(run(k), reps), diff)


def warp_row(reps: int) -> tuple[str, float, float, float]:
    import kornia

    b, r = 4, 32
    x = torch.rand(b, 2, r, r, r, generator=torch.Generator().manual_seed(0), requires_grad=True)
    ang = torch.deg2rad(torch.tensor([5.0, -3.0, 2.0, 0.0]))
    c, s = torch.cos(ang), torch.sin(ang)

    def ours() -> torch.Tensor:  # xfit.prior.train.augment's warp (normalised coordinates)
        theta = torch.zeros(b, 3, 4)
        theta[:, 0, 0] = 1
        theta[:, 1, 1], theta[:, 1, 2] = c, -s
        theta[:, 2, 1], theta[:, 2, 2] = s, c
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def theirs() -> torch.Tensor:  # the same warp in voxel coordinates (kornia's M maps input to output)
        centre = torch.full((b, 3), (r - 1) / 2)
        m = torch.zeros(b, 3, 4)
        m[:, 0, 0] = 1
        m[:, 1, 1], m[:, 1, 2] = c, s
        m[:, 2, 1], m[:, 2, 2] = -s, c
        m[:, :, 3] = centre - (m[:, :, :3] @ centre[..., None])[..., 0]
        return kornia.geometry.transform.warp_affine3d(x, m, (r, r, r), flags="bilinear", align_corners=True)

    diff = float((ours() - theirs()).abs().max().detach())
    return (
        "3D affine warp fwd+bwd, 4x2x32^3",
        _time(lambda: ours().sum().backward(), reps),
        _time(lambda: theirs().sum().backward(), reps),
        diff,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(1)
    import kornia

    rows = [*ssim_rows(a.reps), ssim_loss_row(a.reps), gradient_row(a.reps), warp_row(a.reps)]
    print(f"kornia {kornia.__version__}, torch {torch.__version__}, 1 thread, median of {a.reps}")
    print("| job | xfit (ms) | kornia (ms) | kornia / xfit | max difference |")
    print("|---|---:|---:|---:|---:|")
    for name, ours, theirs, diff in rows:
        print(f"| {name} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f} | {diff:.2e} |")


if __name__ == "__main__":
    main()
