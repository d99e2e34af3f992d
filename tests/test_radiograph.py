"""The radiograph-formation model (xfit.radiograph): each effect alone, the chain, the styles and
their checks, and the ideal simulator left bit for bit as it was."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from xfit.configs import config_path
from xfit.errors import InputError
from xfit.geometry import View
from xfit.io import MU_WATER, read_image_raw, read_xray, write_nifti
from xfit.radiograph import (
    MATERIALS,
    PRESETS,
    TABLE_KEV,
    TISSUES,
    ClinicalStyle,
    add_scatter,
    burn_marker,
    check_style,
    check_style_for_view,
    field_mask,
    grid_pattern,
    heel_ramp,
    ideal_style,
    load_styles,
    material_fractions,
    mu_per_mm,
    multi_frequency,
    parse_style_params,
    polychromatic_transmission,
    preset_for,
    quantise,
    quantum_noise,
    radiograph,
    scaled,
    sigmoid_lut,
    spectrum,
    style_from_params,
    text_bitmap,
    tissue_anchor_hu,
)
from xfit.simulate import simulate

VIEW = View(0.0, sdd_mm=1800, sod_mm=1500, shape=(60, 50), pixel_spacing_mm=1.0)


def _slab_p() -> np.ndarray:
    """Line integrals of a body (a smooth bump) with a brighter 'spine' column: [60, 50]."""
    r, c = np.mgrid[0:60, 0:50]
    body = 4.0 * np.exp(-(((c - 25) / 14.0) ** 4))
    spine = 1.5 * np.exp(-(((c - 25) / 3.0) ** 2)) * (np.sin(r / 3.0) > -0.5)
    return body + spine


# ----------------------------------------------------------------------------- physics


def test_tables_are_read_at_their_energies_and_interpolated_between():
    for name, (density, table) in MATERIALS.items():
        assert len(table) == len(TABLE_KEV)
        assert np.allclose(mu_per_mm(name, np.array(TABLE_KEV)), np.array(table) * density / 10)
        assert np.all(np.diff(table) < 0)  # no absorption edge between 10 and 150 keV in these
    mid = float(mu_per_mm("water", 70.0))
    assert float(mu_per_mm("water", 80.0)) < mid < float(mu_per_mm("water", 60.0))
    assert abs(float(mu_per_mm("water", 60.0)) - MU_WATER) < 0.001  # the ideal model's energy is ~60 keV


def test_tissue_anchors_and_fractions():
    a = tissue_anchor_hu()
    assert -120 < a["adipose"] < -40 and 20 < a["soft_tissue"] < 80 and 1300 < a["cortical_bone"] < 1900
    f = material_fractions(np.array([-1000.0, a["adipose"], a["soft_tissue"], a["cortical_bone"]]))
    assert np.allclose(f, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], atol=1e-5)
    mid = material_fractions(np.array([(a["soft_tissue"] + a["cortical_bone"]) / 2]))[:, 0]
    assert np.allclose(mid, [0, 0.5, 0.5], atol=1e-5)
    lung = material_fractions(np.array([-800.0]))[:, 0]
    assert 0 < lung[0] < 0.3 and lung[1] == lung[2] == 0
    dense = material_fractions(np.array([2 * a["cortical_bone"] + 1000]))[:, 0]  # twice the bone's 1 + HU/1000
    assert np.allclose(dense, [0, 0, 2.0], atol=1e-4)
    assert material_fractions(np.zeros((2, 3, 4))).shape == (3, 2, 3, 4)


def test_spectrum_is_normalised_below_kvp_and_hardened_by_filtration():
    kev, w = spectrum(80.0, 2.5, 0.0)
    assert abs(w.sum() - 1) < 1e-12 and kev.max() < 80 and kev.min() >= 10 and np.all(w >= 0)
    mean = lambda k, x: float((k * x).sum())
    assert mean(*spectrum(80.0, 2.5, 0.3)) > mean(kev, w) + 2  # copper hardens the beam
    assert mean(*spectrum(120.0, 2.5, 0.0)) > mean(kev, w) + 5
    with pytest.raises(InputError):
        spectrum(8.0, 2.5, 0.0)


def test_beam_hardening_makes_the_log_concave_in_thickness():
    kev, w = spectrum(80.0, 3.0, 0.1)
    t = np.array([[10.0, 100.0, 200.0, 300.0]])
    p = -np.log(polychromatic_transmission({"soft_tissue": t}, kev, w))[0]
    mu_eff = p / t[0]
    assert np.all(np.diff(mu_eff) < 0)  # the beam hardens: later millimetres attenuate less
    one = polychromatic_transmission({"water": t}, np.array([60.0]), np.array([1.0]))
    assert np.allclose(one, np.exp(-float(mu_per_mm("water", 60.0)) * t))  # one energy: Beer-Lambert
    bone = -np.log(polychromatic_transmission({"cortical_bone": np.array([[10.0]])}, kev, w))
    soft = -np.log(polychromatic_transmission({"soft_tissue": np.array([[10.0]])}, kev, w))
    assert bone[0, 0] > 2.5 * soft[0, 0]  # bone contrast is higher than the ideal model's 2x at 1000 HU


# ----------------------------------------------------------------------------- effects


def test_scatter_has_the_ratio_it_is_given_behind_the_patient():
    p = _slab_p()
    primary = np.exp(-p)
    body = p > 1.0
    for spr in (0.3, 1.0, 2.5):
        total = add_scatter(primary, p, spr, 40.0, VIEW, body)
        s = total - primary
        assert np.all(s >= 0) and abs(s[body].mean() / primary[body].mean() - spr) < 1e-9
        assert s.std() < 0.5 * s.mean()  # broad: scatter is smooth
    assert add_scatter(primary, p, 0.0, 40.0, VIEW, body) is primary


def test_heel_grid_and_collimation():
    ramp = heel_ramp((60, 50), 0.2, "vertical")
    assert np.allclose(ramp[0], 0.9) and np.allclose(ramp[-1], 1.1) and np.allclose(ramp[:, 0], ramp[:, -1])
    side = heel_ramp((60, 50), -0.2, "horizontal")
    assert np.allclose(side[:, 0], 1.1) and np.allclose(side[:, -1], 0.9)
    g = grid_pattern(VIEW, 4.0, 0.1, "vertical")
    assert np.allclose(g[0], g[-1]) and abs(g.min() - 0.9) < 1e-3 and abs(g.max() - 1.0) < 1e-9
    assert np.allclose(g[:, 0], g[:, 4])  # period 4 px
    m = field_mask(VIEW, (5.0, 10.0, 3.0, 0.0))
    assert m[5:50, 3:].all() and not m[:5].any() and not m[50:].any() and not m[:, :3].any()


def test_quantum_noise_is_poisson():
    rng = np.random.default_rng(0)
    i = np.full((200, 200), 0.25)
    noisy = quantum_noise(i, 400.0, rng)
    assert abs(noisy.mean() - 0.25) < 0.005 and abs(noisy.var() - 0.25 / 400) < 0.1 * 0.25 / 400
    assert quantum_noise(i, 0.0, rng) is i


def test_lut_enhancement_quantisation_and_markers():
    y = np.linspace(0, 1, 101)
    assert np.allclose(sigmoid_lut(y, 0.0), y)
    s = sigmoid_lut(y, 6.0)
    assert abs(s[0]) < 1e-12 and abs(s[-1] - 1) < 1e-12 and np.all(np.diff(s) > 0)
    assert (s[51] - s[49]) / 0.02 > 1.5 and s[10] < y[10]  # steeper in the middle, darker shadows
    img = np.zeros((60, 50))
    img[:, 25:] = 0.5
    assert np.allclose(multi_frequency(img, [2.0], [0.0], VIEW), img)
    sharp = multi_frequency(img, [2.0], [1.0], VIEW)
    assert sharp.max() > 0.55 and sharp.min() < -0.05  # unsharp masking overshoots at the edge
    assert np.allclose(multi_frequency(np.full((60, 50), 0.3), [1.0, 4.0], [0.5, 0.5], VIEW), 0.3)
    codes = quantise(np.linspace(-0.1, 1.1, 1000), 8)
    assert codes.min() == 0 and codes.max() == 255 and len(np.unique(codes)) == 256
    letter = text_bitmap("L", 14)
    assert letter.shape == (14, 10) and letter[:, :2].all() and letter[-2:].all() and not letter[0, 2:].any()
    st = ClinicalStyle(marker="RL", marker_position=(0.1, 0.2), marker_size_mm=7.0)
    burnt = burn_marker(np.zeros((60, 50)), st, VIEW)
    rows, cols = np.nonzero(burnt)
    assert burnt.max() == 1.0 and rows.min() == 6 and cols.min() == 10 and cols.max() == 10 + 10
    assert burnt.sum() == text_bitmap("RL", 7).sum()


# ----------------------------------------------------------------------------- the chain


def test_strength_zero_is_an_affine_map_of_the_line_integrals():
    p = _slab_p()
    rad = radiograph(p, VIEW, PRESETS["lateral"].replace(strength=0.0), seed=3)
    assert rad.bits == 16 and not rad.inverted and rad.in_field.all()
    expected = (p - p.min()) / (p.max() - p.min())
    assert np.abs(rad.image - expected).max() < 1.0 / 65535
    assert np.abs(radiograph(p, VIEW, ideal_style()).image - expected).max() < 1.0 / 65535


def test_the_clinical_chain_differs_from_the_ideal_image_and_is_seeded():
    p = _slab_p()
    ideal = (p - p.min()) / (p.max() - p.min())
    styles = {s: PRESETS["ap"].replace(strength=s) for s in (0.25, 0.5, 1.0)}
    errors = [np.abs(radiograph(p, VIEW, st, seed=1).image - ideal).mean() for st in styles.values()]
    assert errors[0] < errors[1] < errors[2] and errors[2] > 0.05  # monotone in strength
    a, b = (radiograph(p, VIEW, PRESETS["ap"], seed=s).codes for s in (1, 1))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, radiograph(p, VIEW, PRESETS["ap"], seed=2).codes)
    rad = radiograph(p, VIEW, PRESETS["ap"])
    assert rad.codes.max() <= 4095 and rad.bits == 12
    assert rad.image[:6].mean() > rad.image[10:50].mean() + 0.1  # collimated edges: little exposure, light
    off = radiograph(p, VIEW, PRESETS["ap"].replace(monochrome1=True))
    assert off.inverted and np.array_equal(off.codes, 4095 - rad.codes) and np.allclose(off.image, rad.image)


def test_each_effect_switches_off_alone():
    p = _slab_p()
    base = ideal_style().replace(window_percentiles=(0.0, 100.0))
    ref = radiograph(p, VIEW, base).codes
    for change in (
        dict(spr=1.0),
        dict(heel=0.3),
        dict(mtf_sigma_mm=1.0),
        dict(photons=1e4),
        dict(lut_slope=5.0),
        dict(enhance_sigmas_mm=(2.0,), enhance_gains=(0.5,)),
        dict(collimation_mm=(5.0, 5.0, 5.0, 5.0)),
        dict(marker="L"),
        dict(grid_contrast=0.2),
        dict(polychromatic=True),
        dict(bit_depth=8),
    ):
        assert not np.array_equal(radiograph(p, VIEW, base.replace(**change)).codes, ref), change


def test_material_paths_feed_the_polychromatic_model():
    """Bone behind soft tissue: with the tissues' paths the bone stands out more than in water."""
    soft = np.full((60, 50), 150.0)
    bone = np.zeros((60, 50))
    bone[:, 20:30] = 15.0
    p = MU_WATER * (soft * 1.06 + bone * 2.6)
    st = ideal_style().replace(polychromatic=True)
    with_paths = radiograph(p, VIEW, st, paths_mm={"soft_tissue": soft, "cortical_bone": bone}).image
    water = radiograph(p, VIEW, st).image
    contrast = lambda im: im[:, 20:30].mean() - im[:, :15].mean()
    assert contrast(with_paths) > 0 and contrast(water) > 0
    with pytest.raises(InputError, match="path lengths"):
        radiograph(p, VIEW, st, paths_mm={"unobtainium": soft})


# ----------------------------------------------------------------------------- styles and checks


@pytest.mark.parametrize(
    "change,words",
    [
        (dict(kvp=10.0), "kvp"),
        (dict(kvp=200.0), "kvp"),
        (dict(spr=-0.5), "spr"),
        (dict(heel=2.0), "heel"),
        (dict(strength=1.5), "strength"),
        (dict(bit_depth=4), "bit_depth"),
        (dict(bit_depth=12.5), "bit_depth"),
        (dict(heel_axis="diagonal"), "heel_axis"),
        (dict(marker="Q"), "marker"),
        (dict(marker_position=(0.5, 1.2)), "outside the image"),
        (dict(window_percentiles=(90.0, 10.0)), "window"),
        (dict(enhance_gains=(0.5,)), "enhance_gains"),
        (dict(enhance_sigmas_mm=(4.0, 2.0)), "enhance_sigmas_mm"),
        (dict(photons=float("nan")), "photons"),
        (dict(polychromatic="yes"), "polychromatic"),
        (dict(collimation_mm=(1.0, 2.0)), "collimation_mm"),
    ],
)
def test_bad_parameters_are_refused_by_name(change, words):
    with pytest.raises(InputError, match=words):
        check_style(dataclasses.replace(ClinicalStyle(), **change))


def test_detector_dependent_checks():
    with pytest.raises(InputError, match="partly outside"):
        check_style_for_view(ClinicalStyle(marker="RL", marker_position=(0.9, 0.9)), VIEW)
    with pytest.raises(InputError, match="no field"):
        check_style_for_view(ClinicalStyle(collimation_mm=(30.0, 30.0, 0.0, 0.0)), VIEW)
    check_style_for_view(PRESETS["ap"], VIEW)


def test_parameters_from_text_and_files(tmp_path):
    st = style_from_params(
        PRESETS["ap"],
        {
            "kvp": "90",
            "collimation_mm": "1,2,3,4",
            "monochrome1": "true",
            "bit_depth": "10",
            "marker": "",
            "enhance_gains": "0.1,0.2",
        },
    )
    assert st.kvp == 90.0 and st.collimation_mm == (1.0, 2.0, 3.0, 4.0) and st.monochrome1 and st.bit_depth == 10
    assert st.marker == "" and st.enhance_gains == (0.1, 0.2)
    with pytest.raises(InputError, match="unknown style parameter 'kv'.*known: strength"):
        style_from_params(PRESETS["ap"], {"kv": 90})
    with pytest.raises(InputError, match="kvp must be a number"):
        style_from_params(PRESETS["ap"], {"kvp": "ninety"})
    with pytest.raises(InputError, match="monochrome1 must be true or false"):
        style_from_params(PRESETS["ap"], {"monochrome1": "yes"})
    parsed = parse_style_params(["spr=0", "lateral.kvp=95"])
    assert parsed == {"ap": {"spr": "0"}, "lateral": {"spr": "0", "kvp": "95"}}
    for bad in ("spr", "=3", "oblique.kvp=80"):
        with pytest.raises(InputError):
            parse_style_params([bad])
    f = tmp_path / "s.yaml"
    f.write_text("spr: 0.0\nlateral:\n  kvp: 100\n")
    styles = load_styles(f, ["ap.heel=0"])
    assert styles["ap"].spr == styles["lateral"].spr == 0.0 and styles["lateral"].kvp == 100.0
    assert styles["ap"].heel == 0.0 and styles["lateral"].heel == PRESETS["lateral"].heel
    f.write_text("lateral:\n  kvpp: 100\n")
    with pytest.raises(InputError, match="kvpp"):
        load_styles(f)
    assert preset_for(90.0) == preset_for(-80.0) == "lateral" and preset_for(0.0) == preset_for(170.0) == "ap"


def test_the_shipped_yaml_repeats_the_presets():
    assert load_styles(str(config_path("style-clinical.yaml"))) == PRESETS
    assert PRESETS["lateral"].spr > PRESETS["ap"].spr  # a lateral spine has more scatter
    assert scaled(PRESETS["ap"]) == PRESETS["ap"]


# ----------------------------------------------------------------------------- the simulator


def _box_ct(path: Path) -> Path:
    """A deterministic CT: a water box with a bone cylinder and a fat layer (no phantom generator)."""
    i, j, _k = np.mgrid[0:40, 0:36, 0:44].astype(np.float32)
    hu = np.full(i.shape, -1000.0, dtype=np.float32)
    hu[4:36, 4:32, 2:42] = 40.0
    hu[4:36, 4:8, 2:42] = -90.0
    hu[((i - 20) ** 2 + (j - 22) ** 2) < 25] = 900.0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-39.0, -35.0, -43.0]
    write_nifti(path, hu, affine, force=True)
    return path


#: sha256 of the ideal simulator's pixels for :func:`_box_ct` (pins the default output bit for
#: bit; a deliberate change to the projector or the PNG scale updates it, nothing else should).
IDEAL_PIXELS_SHA256 = {
    "ap": "d43f4d3ae71157614bd6407d4a6d1c08e7dc81c9ff31d039a5b9b15b5edff645",
    "lat": "c76fd8e121d7a89ad17927725b931d235a7085c4d1b74c7542434c9d64757fc3",
}


def test_the_ideal_style_is_unchanged_bit_for_bit(tmp_path, monkeypatch):
    """Pinned with the reference projector (the oracle); the fused CPU projector, chosen by
    default when numba is installed, agrees to about 1e-6 relative: at most one 16-bit step."""
    ct = _box_ct(tmp_path / "ct.nii.gz")
    monkeypatch.setenv("XFIT_PROJECTOR", "reference")
    res = simulate(ct, [0.0, 90.0], tmp_path / "xr", detector_shape=(40, 48), pixel_spacing_mm=(2.0, 2.0))
    got = {}
    for r in res:
        pixels, bits = read_image_raw(r.png)
        assert bits == 16 and r.radiograph is None and r.line_integral_scale == 10.0
        got[r.png.stem] = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
    assert got == IDEAL_PIXELS_SHA256
    monkeypatch.delenv("XFIT_PROJECTOR")
    auto = simulate(ct, [0.0, 90.0], tmp_path / "xr_auto", detector_shape=(40, 48), pixel_spacing_mm=(2.0, 2.0))
    for a, b in zip(res, auto):
        pa, pb = read_image_raw(a.png)[0].astype(np.int64), read_image_raw(b.png)[0].astype(np.int64)
        assert np.abs(pa - pb).max() <= 1
    monkeypatch.setenv("XFIT_PROJECTOR", "reference")
    explicit = simulate(
        ct, [0.0, 90.0], tmp_path / "xr2", detector_shape=(40, 48), pixel_spacing_mm=(2.0, 2.0), style="ideal"
    )
    for a, b in zip(res, explicit):
        assert a.png.read_bytes() == b.png.read_bytes()
        assert a.png.with_suffix(".json").read_bytes() == b.png.with_suffix(".json").read_bytes()
    assert (tmp_path / "xr" / "simulate.json").read_text().replace("xr", "") == (
        tmp_path / "xr2" / "simulate.json"
    ).read_text().replace("xr2", "")


def test_the_clinical_style_through_the_simulator(tmp_path):
    ct = _box_ct(tmp_path / "ct.nii.gz")
    styles = {**PRESETS, "lateral": PRESETS["lateral"].replace(monochrome1=True, bit_depth=8)}
    res = simulate(
        ct,
        [0.0, 90.0],
        tmp_path / "xr",
        detector_shape=(40, 48),
        pixel_spacing_mm=(2.0, 2.0),
        style="clinical",
        styles=styles,
        seed=4,
    )
    assert [r.preset for r in res] == ["ap", "lateral"]
    ap, lat = (read_xray(r.png) for r in res)
    assert ap.line_integral_scale is None and "invert" not in ap.sources
    assert read_image_raw(res[0].png)[1] == 16 and read_image_raw(res[1].png)[1] == 8
    assert lat.sources["invert"].startswith("lat.json") and np.allclose(lat.image, res[1].radiograph.image, atol=1e-6)
    assert np.allclose(ap.image, res[0].radiograph.image, atol=1e-4)
    again = simulate(
        ct,
        [0.0, 90.0],
        tmp_path / "xr2",
        detector_shape=(40, 48),
        pixel_spacing_mm=(2.0, 2.0),
        style="clinical",
        styles=styles,
        seed=4,
    )
    assert all(np.array_equal(a.radiograph.codes, b.radiograph.codes) for a, b in zip(res, again))
    with pytest.raises(InputError, match="--dose"):
        simulate(ct, [0.0], tmp_path / "x3", style="clinical", photons=100.0)
    with pytest.raises(InputError, match="style 'clinical'"):
        simulate(ct, [0.0], tmp_path / "x3", styles=PRESETS)
    with pytest.raises(InputError, match="marker"):
        simulate(
            ct,
            [0.0],
            tmp_path / "x3",
            style="clinical",
            detector_shape=(8, 8),
            styles={**PRESETS, "ap": PRESETS["ap"].replace(collimation_mm=(0.0,) * 4, marker_size_mm=20.0)},
        )
    assert not (tmp_path / "x3").exists()
    assert set(TISSUES) <= set(MATERIALS)


def test_material_paths_are_the_projected_tissue_fractions():
    """On a volume of the tissues' anchor HU, the ideal line integral is the sum over tissues of
    mu_water (1 + HU_m / 1000) times the path length through tissue m."""
    from xfit.io import hu_to_mu
    from xfit.projector import project
    from xfit.radiograph import material_paths

    a = tissue_anchor_hu()
    hu = np.full((24, 20, 28), -1000.0, dtype=np.float32)
    hu[2:22, 2:18, 2:26] = a["soft_tissue"]
    hu[2:22, 2:6, 2:26] = a["adipose"]
    hu[9:15, 8:12, 2:26] = a["cortical_bone"]
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-23.0, -19.0, -27.0]
    views = [View(angle, sdd_mm=1800, sod_mm=1500, shape=(30, 34), pixel_spacing_mm=2.0) for angle in (0.0, 90.0)]
    for view, paths in zip(views, material_paths(hu, affine, views)):
        assert paths.shape == (3, 30, 34) and paths.min() >= 0
        p = project(hu_to_mu(hu), affine, [view])[0, 0].numpy()
        mix = sum(MU_WATER * (1 + a[t] / 1000) * paths[i] for i, t in enumerate(TISSUES))
        assert np.abs(mix - p).max() < 1e-3 * p.max() and paths[2].max() > 5.0
