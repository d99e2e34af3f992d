"""Tests of xfit.metrics with known values (CPU, well under a second each)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xfit.errors import InputError
from xfit.metrics import (
    dice,
    hausdorff,
    hd95,
    mae,
    ncc,
    psnr,
    ssim3d,
    surface,
    volume_metrics,
)


def _sphere(n: int, centre, radius: float) -> np.ndarray:
    i, j, k = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    return (i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2 <= radius**2


@pytest.fixture()
def vol():
    rng = np.random.default_rng(0)
    base = np.zeros((24, 24, 24))
    base[_sphere(24, (12, 12, 12), 7)] = 800.0
    return base + rng.normal(0, 30, base.shape) - 200.0


# ----------------------------------------------------------------------------- PSNR / MAE / NCC


def test_psnr_hand_computed():
    a = np.zeros((4, 4, 4))
    b = a.copy()
    b[0, 0, 0] = 8.0  # MSE = 64 / 64 = 1
    assert psnr(b, a, 10.0) == pytest.approx(20.0)  # 10 log10(100 / 1)
    b[:] = 2.0  # MSE = 4
    assert psnr(b, a, 100.0) == pytest.approx(10 * math.log10(100**2 / 4))


@pytest.mark.parametrize("as_torch", [False, True])
def test_identical_inputs(vol, as_torch):
    x = torch.from_numpy(vol) if as_torch else vol
    assert psnr(x, x, 2500) == math.inf
    assert ssim3d(x, x, 2500) == pytest.approx(1.0, abs=1e-12)
    assert mae(x, x) == 0.0
    assert ncc(x, x) == pytest.approx(1.0)
    m = x > 0
    assert dice(m, m) == 1.0
    assert hd95(m, m, 1.0) == 0.0


def test_mae_mask():
    a, b = np.zeros((3, 3, 3)), np.zeros((3, 3, 3))
    b[0] = 9.0
    mask = np.zeros((3, 3, 3), bool)
    mask[0, 0] = True
    assert mae(a, b) == pytest.approx(3.0)
    assert mae(a, b, mask) == pytest.approx(9.0)
    assert math.isnan(mae(a, b, np.zeros_like(mask)))


def test_ncc_known_values():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(16, 20))
    assert ncc(img, 3 * img + 5) == pytest.approx(1.0)
    assert ncc(img, -img) == pytest.approx(-1.0)
    assert math.isnan(ncc(img, np.ones_like(img)))


# ----------------------------------------------------------------------------- SSIM


def test_ssim_decreases_with_noise(vol):
    rng = np.random.default_rng(2)
    noise = rng.normal(size=vol.shape)
    values = [ssim3d(vol + s * noise, vol, 2500) for s in (0, 25, 100, 400)]
    assert values[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[-1] < 0.5


def test_ssim_is_3d_and_symmetric(vol):
    shifted = np.roll(vol, 2, axis=2)  # a change only visible along K
    s = ssim3d(vol, shifted, 2500)
    assert s < 0.99
    assert ssim3d(shifted, vol, 2500) == pytest.approx(s)


def test_ssim_constant_offset_hand_computed():
    # Constant volumes a and b: sigma = 0, so SSIM = (2ab + c1) / (a^2 + b^2 + c1).
    a, b = np.full((9, 9, 9), 1.0), np.full((9, 9, 9), 2.0)
    c1 = (0.01 * 10) ** 2
    assert ssim3d(a, b, 10.0) == pytest.approx((2 * 2 + c1) / (1 + 4 + c1))


def test_ssim_small_volume_shrinks_window():
    a = np.random.default_rng(3).normal(size=(5, 6, 8))
    assert ssim3d(a, a, 1.0) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- Dice / HD95


def test_dice_known_values():
    a = np.zeros((10, 10, 10), bool)
    b = a.copy()
    a[:4] = True  # 400 voxels
    b[2:6] = True  # 400 voxels, 200 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, ~a) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0


@pytest.mark.parametrize("shift", [1, 3, 5])
def test_hausdorff_of_shifted_sphere_equals_shift(shift):
    a = _sphere(40, (20, 20, 20), 9)
    b = np.roll(a, shift, axis=0)
    spacing = (1.5, 1.0, 2.0)
    assert hausdorff(a, b, spacing) == pytest.approx(shift * 1.5)
    # surface distances of a shifted sphere are ~ shift * |cos theta|, uniform in [0, shift]:
    # the 95th percentile is ~0.95 shift (within one voxel)
    h = hd95(a, b, spacing)
    assert shift * 1.5 - 1.5 <= h <= shift * 1.5 + 1e-9


def test_hd95_single_voxels_anisotropic():
    a = np.zeros((8, 8, 8), bool)
    b = a.copy()
    a[1, 1, 1] = True
    b[4, 5, 1] = True
    assert hd95(a, b, (2.0, 0.5, 1.0)) == pytest.approx(math.hypot(3 * 2.0, 4 * 0.5))


def test_hd95_empty_masks():
    a = np.zeros((6, 6, 6), bool)
    b = a.copy()
    assert hd95(a, b, 1.0) == 0.0
    b[2, 2, 2] = True
    assert hd95(a, b, 1.0) == math.inf
    assert hd95(b, a, 1.0) == math.inf


def test_surface_is_boundary():
    a = np.zeros((7, 7, 7), bool)
    a[1:6, 1:6, 1:6] = True
    s = surface(a)
    assert s.sum() == 5**3 - 3**3
    assert not s[3, 3, 3]


# ----------------------------------------------------------------------------- volume_metrics


def test_volume_metrics_clips_and_reports(vol):
    mask = vol > 300
    out = volume_metrics(vol, vol, mask, mask, spacing_mm=1.25)
    assert out == {"psnr_db": math.inf, "ssim": pytest.approx(1.0), "mae_hu": 0.0,
                   "mae_mask_hu": 0.0, "dice": 1.0, "hd95_mm": 0.0}
    # values beyond the window are clipped: +3000 vs +1500 does not count
    a, b = np.full((8, 8, 8), 1500.0), np.full((8, 8, 8), 3000.0)
    assert volume_metrics(a, b)["mae_hu"] == 0.0
    c = np.full((8, 8, 8), 1000.0)  # 500 HU everywhere: PSNR = 20 log10(2500 / 500)
    assert volume_metrics(c, a)["psnr_db"] == pytest.approx(20 * math.log10(5))
    assert set(volume_metrics(c, a)) == {"psnr_db", "ssim", "mae_hu"}


def test_metric_errors():
    a = np.zeros((4, 4, 4))
    with pytest.raises(InputError, match="shapes differ"):
        psnr(a, np.zeros((4, 4, 5)), 1.0)
    with pytest.raises(InputError, match="data_range"):
        psnr(a, a, 0.0)
    with pytest.raises(InputError, match="3D"):
        ssim3d(np.zeros((4, 4)), np.zeros((4, 4)), 1.0)
    with pytest.raises(InputError, match="odd"):
        ssim3d(a, a, 1.0, win=4)
    with pytest.raises(InputError, match="spacing"):
        hd95(a > -1, a > -1, (1.0, 2.0))
    with pytest.raises(InputError, match="both"):
        volume_metrics(a, a, pred_mask=a > 0)
    with pytest.raises(InputError, match="low < high"):
        volume_metrics(a, a, hu_range=(5, 5))
