"""Tests of xfit.units: HU <-> mu, the HU window <-> [-1, 1] maps, and that they have one home."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from xfit import units
from xfit.units import HU_AIR, HU_WINDOW, MU_WATER, hu_to_mu, hu_to_unit, mu_to_hu, unit_to_hu

PACKAGE = Path(units.__file__).resolve().parent

# ----------------------------------------------------------------------------- HU <-> mu


def test_hu_to_mu_anchor_points():
    """Air is vacuum, water is MU_WATER, +1000 HU is twice water; below air clamps to zero."""
    hu = np.array([HU_AIR, -2000.0, 0.0, 1000.0])
    np.testing.assert_allclose(hu_to_mu(hu), [0.0, 0.0, MU_WATER, 2 * MU_WATER])
    assert hu_to_mu(0.0) == pytest.approx(MU_WATER)
    assert hu_to_mu(-1500) == 0.0
    assert mu_to_hu(0.0) == pytest.approx(-1000.0)
    assert mu_to_hu(-1.0) == pytest.approx(-1000.0)  # no negative attenuation: air
    assert mu_to_hu(2 * MU_WATER) == pytest.approx(1000.0)


def test_mu_water_is_water_at_the_ct_energy():
    """MU_WATER (1/mm) agrees with NIST's water at the CT effective energy (the radiograph
    model's table) within 5 %: a unit slip (1/cm, or mass attenuation) would be off by 10x."""
    from xfit.radiograph import CT_EFFECTIVE_KEV, mu_per_mm

    assert MU_WATER == pytest.approx(float(mu_per_mm("water", CT_EFFECTIVE_KEV)), rel=0.05)


def test_mu_to_hu_with_another_water():
    """HU relative to another water attenuation: that water is 0 HU, twice it +1000 HU."""
    assert mu_to_hu(0.03, mu_water=0.03) == pytest.approx(0.0)
    assert mu_to_hu(np.array([0.06]), mu_water=0.03)[0] == pytest.approx(1000.0)
    assert float(mu_to_hu(torch.tensor(0.015), mu_water=0.03)) == pytest.approx(-500.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hu_mu_round_trip_torch(dtype):
    hu = torch.linspace(-999.0, 3000.0, 50, dtype=dtype)
    mu = hu_to_mu(hu)
    assert mu.dtype == dtype and mu.shape == hu.shape
    torch.testing.assert_close(mu_to_hu(mu), hu, rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(mu_to_hu(hu_to_mu(hu.numpy())), hu.numpy(), rtol=1e-5, atol=1e-2)


def test_hu_to_mu_gradcheck():
    hu = torch.tensor([-500.0, 0.0, 250.0, 1200.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(hu_to_mu, (hu,))
    assert torch.autograd.gradcheck(mu_to_hu, (hu_to_mu(hu).detach().requires_grad_(),))


# ----------------------------------------------------------------------------- HU window <-> [-1, 1]


def test_hu_to_unit_window_ends_and_clamp():
    lo, hi = HU_WINDOW
    hu = torch.tensor([lo - 500.0, lo, (lo + hi) / 2, hi, hi + 500.0], dtype=torch.float64)
    torch.testing.assert_close(
        hu_to_unit(hu, HU_WINDOW), torch.tensor([-1.0, -1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    )
    assert hu_to_unit(hu.float(), HU_WINDOW).dtype == torch.float32


def test_hu_to_unit_numpy_equals_torch_and_is_float32():
    hu = np.linspace(-1200.0, 1800.0, 31)
    got = hu_to_unit(hu, (-1000, 1500))
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(got, hu_to_unit(torch.from_numpy(hu), (-1000, 1500)).numpy(), atol=1e-6)


def test_unit_to_hu_inverts_inside_the_window_and_passes_gradients_outside():
    window = (-800.0, 2000.0)
    hu = torch.linspace(-800.0, 2000.0, 17, dtype=torch.float64)
    torch.testing.assert_close(unit_to_hu(hu_to_unit(hu, window), window), hu)
    x = torch.tensor([-1.5, 0.0, 1.5], requires_grad=True)  # outside [-1, 1]: not clamped
    unit_to_hu(x, window).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), 0.5 * (window[1] - window[0])))


# ----------------------------------------------------------------------------- one home


def test_window_default_is_shared():
    """The prior's default window, the evaluation window and the metrics' default are HU_WINDOW."""
    import inspect

    from xfit.metrics import lpips_slices, volume_metrics
    from xfit.prior.config import PriorConfig
    from xfit.studies.evaluate import HU_RANGE

    assert tuple(PriorConfig().hu_window) == HU_WINDOW == HU_RANGE
    assert inspect.signature(volume_metrics).parameters["hu_range"].default == HU_WINDOW
    assert inspect.signature(lpips_slices).parameters["window"].default == HU_WINDOW


def test_old_import_paths_are_the_same_functions():
    """``xfit.io`` and ``xfit.prior.config`` re-export the units, not copies of them."""
    import xfit.io
    import xfit.prior.config

    assert xfit.io.hu_to_mu is hu_to_mu and xfit.io.mu_to_hu is mu_to_hu and xfit.io.MU_WATER == MU_WATER
    assert xfit.prior.config.hu_to_unit is hu_to_unit and xfit.prior.config.unit_to_hu is unit_to_hu


_DEFINITIONS = re.compile(r"^\s*(def (hu_to_mu|mu_to_hu|hu_to_unit\w*|unit_to_hu)\b|(MU_WATER|HU_WINDOW)\s*[:=])", re.M)
_INLINE = re.compile(r"MU_WATER\s*\*\s*\w*\.?(clip|maximum|clamp)\(\s*1")


def test_conversions_are_defined_only_in_units():
    """No module of the package defines its own HU <-> mu or window map (or inlines hu_to_mu)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        found += [
            f"{path.relative_to(PACKAGE)}: {m.group(0).strip()}"
            for m in _DEFINITIONS.finditer(text)
            if path.name != "units.py"
        ]
        found += [
            f"{path.relative_to(PACKAGE)}: inline hu_to_mu" for _ in _INLINE.finditer(text) if path.name != "units.py"
        ]
    assert found == []
