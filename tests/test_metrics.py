"""Tests of xfit.metrics with known values and independent references (skimage, scipy, lpips;
CPU, well under a second each)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from xfit import metrics
from xfit.errors import InputError
from xfit.metrics import (
    LPIPS_WEIGHTS_ENV,
    LPIPSFallbackWarning,
    asd,
    dice,
    frequency_distance,
    hausdorff,
    hd95,
    lpips_slices,
    lpips_tensor_shapes,
    mae,
    ncc,
    psnr,
    ssim2d_slices,
    ssim3d,
    surface,
    surface_distances,
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
    assert out == {
        "psnr_db": math.inf,
        "ssim": pytest.approx(1.0),
        "mae_hu": 0.0,
        "mae_mask_hu": 0.0,
        "dice": 1.0,
        "hd95_mm": 0.0,
    }
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


# ----------------------------------------------------------------------------- independent references
# Each reference below is written from the definition with scipy / skimage / lpips, sharing no
# code with xfit.metrics.


def _blobs(shape, seed: int, frac: float = 0.3) -> np.ndarray:
    """A smooth random mask covering about ``frac`` of the grid."""
    f = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 2.0)
    return f > np.quantile(f, 1 - frac)


def _ref_surface(m: np.ndarray) -> np.ndarray:
    """Mask voxels with at least one of the 6 neighbours outside the mask or off the grid."""
    pad = np.pad(m, 1, constant_values=False)
    inner = np.ones_like(m)
    for axis in range(m.ndim):
        for step in (-1, 1):
            inner &= np.roll(pad, step, axis)[1:-1, 1:-1, 1:-1]
    return m & ~inner


def _ref_directed_edt(a, b, spacing) -> np.ndarray:
    """Distances (mm) from each surface voxel of a to b's surface, by an EDT of b's surface."""
    return ndimage.distance_transform_edt(~_ref_surface(b), sampling=spacing)[_ref_surface(a)]


def _ref_directed_brute(a, b, spacing) -> np.ndarray:
    """The same by brute force over all pairs of surface voxels."""
    pa = np.argwhere(_ref_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(_ref_surface(b)) * np.asarray(spacing)
    return cdist(pa, pb).min(1)


def _ref_ssim(x: np.ndarray, y: np.ndarray, data_range: float, truncate: float) -> float:
    """Wang et al. SSIM with scipy's Gaussian (sigma 1.5, reflect), mean over the interior."""
    filt = lambda v: ndimage.gaussian_filter(v, 1.5, truncate=truncate, mode="reflect")
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    r = int(truncate * 1.5 + 0.5)
    return float(s[(slice(r, -r),) * s.ndim].mean())


@pytest.fixture()
def noisy(vol):
    rng = np.random.default_rng(5)
    return vol + ndimage.gaussian_filter(rng.normal(0, 150, vol.shape), 1.0) + rng.normal(0, 40, vol.shape)


def test_psnr_matches_skimage(vol, noisy):
    from skimage.metrics import peak_signal_noise_ratio

    for dr in (2500.0, 1234.5):
        ref = peak_signal_noise_ratio(vol, noisy, data_range=dr)
        assert psnr(noisy, vol, dr) == pytest.approx(ref, rel=1e-12, abs=0)


def test_ssim3d_matches_skimage_gaussian(vol, noisy):
    from skimage.metrics import structural_similarity

    ref = structural_similarity(
        vol, noisy, data_range=2500.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert 0.1 < ref < 0.99  # a case where a wrong term would show
    assert ssim3d(noisy, vol, 2500.0, win=11) == pytest.approx(ref, abs=1e-10)
    # the default 7-tap window is the same Gaussian truncated at 2 sigma (scipy reference)
    assert ssim3d(noisy, vol, 2500.0) == pytest.approx(_ref_ssim(noisy, vol, 2500.0, 2.0), abs=1e-10)
    assert _ref_ssim(noisy, vol, 2500.0, 3.5) == pytest.approx(ref, abs=1e-10)  # the reference itself


def test_ssim2d_slices_matches_skimage(vol, noisy):
    from skimage.metrics import structural_similarity

    for axis in (0, 2):
        ref = np.mean(
            [
                structural_similarity(
                    a, b, data_range=2500.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
                )
                for a, b in zip(np.moveaxis(noisy, axis, 0), np.moveaxis(vol, axis, 0))
            ]
        )
        assert ssim2d_slices(noisy, vol, 2500.0, axis=axis, win=11) == pytest.approx(ref, abs=1e-10)


def test_mae_in_hu_by_hand():
    gt = np.zeros((4, 5, 6))  # 120 voxels at 0 HU
    pred = gt.copy()
    pred.flat[:10] = 100.0  # 10 voxels 100 HU off
    pred.flat[10:15] = -2000.0  # 5 voxels, clipped to -1000 HU by volume_metrics: 1000 HU off
    assert volume_metrics(pred, gt)["mae_hu"] == pytest.approx((10 * 100 + 5 * 1000) / 120)
    assert mae(pred, gt) == pytest.approx((10 * 100 + 5 * 2000) / 120)
    mask = np.zeros(gt.shape, bool)
    mask.flat[:20] = True  # the 15 wrong voxels and 5 right ones
    out = volume_metrics(pred, gt, mask, mask)
    assert out["mae_mask_hu"] == pytest.approx((10 * 100 + 5 * 1000) / 20)


def test_dice_by_hand_small():
    a, b = np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool)
    a[0, 0, :], a[1, 1, 1] = True, True  # 3 voxels
    b[0, 0, 1], b[1, 0, 0] = True, True  # 2 voxels, 1 shared
    assert dice(a, b) == pytest.approx(2 * 1 / (3 + 2))
    assert dice(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(0.4)


# ----------------------------------------------------------------------------- surface distances


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 2.1), (2.5, 0.6, 1.0)])
@pytest.mark.parametrize("seeds", [(0, 1), (2, 3)])
def test_surface_metrics_match_scipy_reference(spacing, seeds):
    a, b = _blobs((22, 18, 16), seeds[0]), _blobs((22, 18, 16), seeds[1])
    assert (surface(a) == _ref_surface(a)).all()
    d_ab, d_ba = _ref_directed_edt(a, b, spacing), _ref_directed_edt(b, a, spacing)
    np.testing.assert_allclose(d_ab, _ref_directed_brute(a, b, spacing), rtol=1e-12, atol=1e-12)
    pooled = np.concatenate([d_ab, d_ba])
    got_ab, got_ba = surface_distances(a, b, spacing)
    np.testing.assert_allclose(got_ab, d_ab, rtol=1e-12)
    np.testing.assert_allclose(got_ba, d_ba, rtol=1e-12)
    assert hd95(a, b, spacing) == pytest.approx(np.percentile(pooled, 95), rel=1e-12)
    assert hausdorff(a, b, spacing) == pytest.approx(pooled.max(), rel=1e-12)
    assert asd(a, b, spacing) == pytest.approx(pooled.mean(), rel=1e-12)
    assert asd(b, a, spacing) == pytest.approx(asd(a, b, spacing), rel=1e-12)
    assert asd(a, b, spacing) > 0.5 * min(spacing)  # the blobs do differ


@pytest.mark.parametrize("k", [1, 2, 3])
def test_offset_cubes_by_hand(k):
    # Cubes of side n = 7 voxels, B = A moved k voxels along axis 0; spacing (s0, s1, s2) with
    # k s0 <= min(s1, s2) and 2k <= n - 1, so every surface distance runs along axis 0:
    #   A's bottom face (n^2 voxels) and the inside of its top face ((n-2)^2, inside B): k s0;
    #   A's side ring in layers i = 2..k (4(n-1) voxels each): (1 + k - i) s0;  all others: 0.
    # B -> A is the mirror image, so the pooled distances hold each value twice as often.
    n, s = 7, (0.5, 2.0, 1.5)
    a = np.zeros((n + k + 2, n + 2, n + 2), bool)
    a[1 : 1 + n, 1 : 1 + n, 1 : 1 + n] = True
    b = np.roll(a, k, axis=0)
    n_surf = n**3 - (n - 2) ** 3  # 218 surface voxels per cube
    total = (n**2 + (n - 2) ** 2) * k * s[0] + 4 * (n - 1) * s[0] * sum(range(1, k))
    assert asd(a, b, s) == pytest.approx(total / n_surf)
    assert hausdorff(a, b, s) == pytest.approx(k * s[0])
    # (n^2 + (n-2)^2) / n_surf = 74 / 218 > 5% of the distances equal k s0, so HD95 = k s0
    assert hd95(a, b, s) == pytest.approx(k * s[0])
    if k == 1:  # the same cubes moved along axis 2 with spacing 1.5 there (1.5 <= 2.0, 2.0)
        a2, b2 = np.moveaxis(a, 0, 2), np.moveaxis(b, 0, 2)
        assert asd(a2, b2, (2.0, 2.0, 1.5)) == pytest.approx(total / n_surf * 1.5 / s[0])
        assert hd95(a2, b2, (2.0, 2.0, 1.5)) == pytest.approx(1.5)


def test_hd95_interpolates_by_hand():
    # A: one voxel; B: two voxels 1 and 4 voxels from it along K (0.8 mm there).
    # pooled distances (voxels) [1 (A->B), 1, 4 (B->A)]: the 95th percentile with linear
    # interpolation (numpy's default, as medpy) sits at index 0.95 * 2 = 1.9 -> 1 + 0.9 * 3 = 3.7
    a, b = np.zeros((3, 3, 8), bool), np.zeros((3, 3, 8), bool)
    a[1, 1, 1] = True
    b[1, 1, 2] = b[1, 1, 5] = True
    s = (1.0, 1.0, 0.8)
    assert hd95(a, b, s) == pytest.approx(3.7 * 0.8)
    assert hausdorff(a, b, s) == pytest.approx(4 * 0.8)
    assert asd(a, b, s) == pytest.approx((1 + 1 + 4) / 3 * 0.8)


def test_asd_empty_and_identical():
    a = np.zeros((6, 6, 6), bool)
    assert asd(a, a, 1.0) == 0.0
    b = a.copy()
    b[2:4, 2:4, 2:4] = True
    assert asd(a, b, 1.0) == math.inf and asd(b, a, 1.0) == math.inf
    assert asd(b, b, (1.0, 2.0, 3.0)) == 0.0
    with pytest.raises(InputError, match="spacing"):
        asd(b, b, (1.0, 0.0, 1.0))


# ----------------------------------------------------------------------------- frequency distance


@pytest.mark.parametrize("shape", [(16, 16, 16), (12, 10, 8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frequency_distance_equals_ear_loss(shape, seed):
    from xfit.baselines.ear import frequency_distance as ear_frequency_distance

    g = torch.Generator().manual_seed(seed)
    pred, target = torch.randn(shape, generator=g), torch.rand(shape, generator=g) * (seed + 1)
    ref = float(ear_frequency_distance(pred[None, None], target[None, None]))
    assert frequency_distance(pred.numpy(), target.numpy()) == pytest.approx(ref, abs=1e-6)
    assert frequency_distance(pred, target) == pytest.approx(ref, abs=1e-6)  # torch input


def test_frequency_distance_by_hand():
    # a constant difference c: the orthonormal FFT is c sqrt(N) at DC only, so D_real = |c|
    a = np.zeros((6, 7, 8))
    assert frequency_distance(a, a + 0.5) == pytest.approx(math.log10(0.5 + 1e-8), abs=1e-12)
    assert frequency_distance(a, a) == pytest.approx(-8.0)
    with pytest.raises(InputError, match="3D"):
        frequency_distance(np.zeros((4, 4)), np.zeros((4, 4)))


def test_volume_metrics_optional_keys(vol, noisy):
    mask_p, mask_g = noisy > 300, vol > 300
    base = volume_metrics(noisy, vol, mask_p, mask_g, spacing_mm=(1.0, 1.5, 2.0))
    assert set(base) == {"psnr_db", "ssim", "mae_hu", "mae_mask_hu", "dice", "hd95_mm"}
    out = volume_metrics(noisy, vol, mask_p, mask_g, spacing_mm=(1.0, 1.5, 2.0), with_asd=True, with_freq=True)
    assert {k: out[k] for k in base} == base
    assert out["asd_mm"] == pytest.approx(asd(mask_p, mask_g, (1.0, 1.5, 2.0)))
    unit = lambda hu: (np.clip(hu, -1000, 1500) + 1000) / 2500 * 2 - 1
    assert out["freq_dist"] == pytest.approx(frequency_distance(unit(noisy), unit(vol)), abs=1e-12)
    assert set(volume_metrics(noisy, vol, with_freq=True)) == {"psnr_db", "ssim", "mae_hu", "freq_dist"}
    with pytest.raises(InputError, match="with_asd"):
        volume_metrics(noisy, vol, with_asd=True)


# ----------------------------------------------------------------------------- LPIPS on slices


def _unit_slices(hu, axis, window=(-1000.0, 1500.0)):
    lo, hi = window
    return np.moveaxis((np.clip(hu, lo, hi) - lo) / (hi - lo) * 2 - 1, axis, 0)


@pytest.fixture()
def ct_pair():
    rng = np.random.default_rng(7)
    shape = (34, 40, 36)
    a = ndimage.gaussian_filter(rng.normal(0, 900, shape), 2.0) * 3 - 200
    b = a + ndimage.gaussian_filter(rng.normal(0, 300, shape), 1.0) * 3
    return a, b


@pytest.fixture()
def fresh_fallback(monkeypatch):
    monkeypatch.delenv(LPIPS_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(metrics, "_warned_lpips_fallback", False)


def _random_weights_file(path, seed=0):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    w = {}
    for name, shape in lpips_tensor_shapes().items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        t = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
        w[name] = t.abs() if name.startswith("lin") else (t * 0.1 if name.endswith("bias") else t)
    save_file(w, str(path))
    return path


def test_lpips_fallback_warns_once_and_matches_ssim_reference(ct_pair, fresh_fallback):
    a, b = ct_pair
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r1 = lpips_slices(a, b, axis=1)
        r2 = lpips_slices(b, b)
        r3 = lpips_slices(a, b, axis=1)
    assert sum(issubclass(w.category, LPIPSFallbackWarning) for w in rec) == 1
    assert "1 - mean 2D SSIM" in str(next(w.message for w in rec if w.category is LPIPSFallbackWarning))
    assert r1.method == r2.method == "1-ssim2d" and r1 == r3
    pa, pb = _unit_slices(a, 1), _unit_slices(b, 1)
    ref = 1 - np.mean([_ref_ssim(x, y, 2.0, 2.0) for x, y in zip(pa, pb)])
    assert r1.value == pytest.approx(ref, abs=1e-10)
    assert r1.value > 0.01 and r2.value == pytest.approx(0.0, abs=1e-12)


def test_lpips_matches_lpips_package(ct_pair, tmp_path, monkeypatch):
    lpips = pytest.importorskip("lpips")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(pretrained=False, pnet_rand=True, net="alex", verbose=False).eval()
    for lin in model.lins:
        lin.model[1].weight.data.abs_()
    sd = {k: v.contiguous().clone() for k, v in model.state_dict().items() if not k.startswith("lins.")}
    path = tmp_path / "alex.safetensors"
    save_file(sd, str(path))
    a, b = ct_pair
    with torch.no_grad():
        x = torch.from_numpy(_unit_slices(a, 2)).float()[:, None].repeat(1, 3, 1, 1)
        y = torch.from_numpy(_unit_slices(b, 2)).float()[:, None].repeat(1, 3, 1, 1)
        ref = float(model(x, y).mean())
    got = lpips_slices(a, b, weights=path, batch=7)
    assert got.method == "lpips-alex"
    assert got.value == pytest.approx(ref, rel=1e-5)
    monkeypatch.setenv(LPIPS_WEIGHTS_ENV, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning on the weights path
        assert lpips_slices(a, b).value == pytest.approx(got.value, rel=1e-6)


def test_lpips_random_weights_properties(ct_pair, tmp_path):
    path = _random_weights_file(tmp_path / "w.safetensors")
    a, b = ct_pair
    ab = lpips_slices(a, b, weights=path, axis=0)
    assert ab.method == "lpips-alex" and math.isfinite(ab.value) and ab.value > 0
    assert lpips_slices(b, a, weights=path, axis=0).value == pytest.approx(ab.value, rel=1e-5)
    assert lpips_slices(a, a, weights=path, axis=0).value == 0.0
    far = lpips_slices(a, -a, weights=path, axis=0).value
    assert far > ab.value  # a bigger change scores worse


def test_lpips_errors(ct_pair, tmp_path):
    from safetensors.torch import save_file

    a, b = ct_pair
    with pytest.raises(InputError, match="not found"):
        lpips_slices(a, b, weights=tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="readable"):
        lpips_slices(a, b, weights=tmp_path / "junk.safetensors")
    save_file({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, str(tmp_path / "part.safetensors"))
    with pytest.raises(InputError, match="missing"):
        lpips_slices(a, b, weights=tmp_path / "part.safetensors")
    w = {n: torch.zeros(s) for n, s in lpips_tensor_shapes().items()}
    w["lin2.model.1.weight"] = torch.zeros(1, 385, 1, 1)
    save_file(w, str(tmp_path / "shape.safetensors"))
    with pytest.raises(InputError, match="shape"):
        lpips_slices(a, b, weights=tmp_path / "shape.safetensors")
    good = _random_weights_file(tmp_path / "w.safetensors")
    with pytest.raises(InputError, match="smaller"):
        lpips_slices(a[:, :20], b[:, :20], weights=good, axis=0)
    with pytest.raises(InputError, match="axis"):
        lpips_slices(a, b, axis=3, weights=good)
    with pytest.raises(InputError, match="low < high"):
        lpips_slices(a, b, window=(100, 100), weights=good)
    with pytest.raises(InputError, match="shapes differ"):
        lpips_slices(a, b[:-1], weights=good)
