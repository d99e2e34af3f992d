"""Radiographs as the X-ray room delivers them: a radiograph-formation model on top of the DRR.

xfit's ideal X-ray is a line integral of mu (``docs/architecture.md``, 'Intensities'). A real DX/CR
image is not: this module turns the same geometry into the processed image a vendor's workstation
exports. Each effect is one small function of plain numpy arrays (a simulator: nothing here is
differentiated); :func:`radiograph` chains them, :class:`ClinicalStyle` holds every parameter, and
``docs/radiographs.md`` describes them with their physics sources. The chain, per view:

1. polychromatic transmission (:func:`polychromatic_transmission`): a Kramers' law spectrum
   (:func:`spectrum`) at ``kvp`` through Al/Cu filtration, attenuated by the projected path lengths
   of adipose, soft tissue and cortical bone (:func:`material_fractions`, :func:`material_paths`;
   NIST/ICRU-44 mass attenuation tables below), seen by an energy-integrating detector. Beam
   hardening follows: ``-log T`` is no longer linear in the path lengths;
2. heel effect (:func:`heel_ramp`), anti-scatter grid lines (:func:`grid_pattern`) and collimation
   (:func:`field_mask`) multiply the primary;
3. scatter (:func:`add_scatter`): a broad Gaussian kernel of the thickness-weighted primary, scaled
   to a scatter-to-primary ratio behind the patient;
4. quantum noise (Poisson on ``photons`` per pixel), detector MTF (Gaussian blur), electronic noise;
5. vendor processing (:func:`process`): log, auto-ranging window inside the field, S-shaped LUT,
   multi-frequency enhancement, burned-in markers (:func:`burn_marker`), bit depth, and optionally
   MONOCHROME1 storage (inverted: bone dark).

``strength`` in [0, 1] scales every effect from ideal (0: an affine map of the line integrals,
16-bit) to the style's values (1). The presets :data:`PRESETS` are lumbar AP and lateral; the
same values are written out in ``xfit/configs/style-clinical.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .geometry import View
from .units import MU_WATER, mu_to_hu

# ----------------------------------------------------------------------------- physics tables

#: Photon energies (keV) of the attenuation tables: the grid of NIST's X-ray mass attenuation tables.
TABLE_KEV = (10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0)

#: Mass attenuation coefficients mu/rho (cm^2/g, coherent scattering included) at
#: :data:`TABLE_KEV` and densities (g/cm^3). Source: J. H. Hubbell and S. M. Seltzer, "Tables of
#: X-Ray Mass Attenuation Coefficients and Mass Energy-Absorption Coefficients", NIST Standard
#: Reference Database 126 (NISTIR 5632, 1996/2004), Table 4 (tissues with ICRU Report 44
#: compositions and densities) and Table 3 (Al, Cu).
MATERIALS: dict[str, tuple[float, tuple[float, ...]]] = {
    "water": (1.0, (5.329, 1.673, 0.8096, 0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505)),
    "adipose": (0.95, (3.268, 1.083, 0.5677, 0.3063, 0.2396, 0.2123, 0.1974, 0.1800, 0.1688, 0.1500)),
    "soft_tissue": (1.06, (5.379, 1.699, 0.8230, 0.3790, 0.2688, 0.2264, 0.2048, 0.1823, 0.1693, 0.1492)),
    "cortical_bone": (1.92, (28.51, 9.032, 4.001, 1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855, 0.1480)),
    "aluminium": (2.699, (26.23, 7.955, 3.441, 1.128, 0.5685, 0.3681, 0.2778, 0.2018, 0.1704, 0.1378)),
    "copper": (8.96, (215.9, 74.05, 33.79, 10.92, 4.862, 2.613, 1.593, 0.7630, 0.4584, 0.2217)),
}
#: The tissue classes a CT volume is decomposed into (air is vacuum, as in the ideal model).
TISSUES = ("adipose", "soft_tissue", "cortical_bone")
#: Effective energy (keV) of the CT scan whose HU are decomposed (about that of 120 kVp CT):
#: each tissue's anchor HU is its attenuation relative to water at this energy.
CT_EFFECTIVE_KEV = 70.0
#: Lowest and highest tube potentials (kV) the model accepts (the tables end at 150 keV).
KVP_RANGE = (20.0, 150.0)
#: Bit depths of a stored radiograph.
BIT_DEPTH_RANGE = (8, 16)


def mu_per_mm(material: str, kev: np.ndarray | float) -> np.ndarray:
    """Linear attenuation (1/mm) of a material of :data:`MATERIALS` at its density, log-log
    interpolated in the NIST table (``kev`` in [10, 150])."""
    density, table = MATERIALS[material]
    e = np.clip(np.asarray(kev, dtype=np.float64), TABLE_KEV[0], TABLE_KEV[-1])
    mu_rho = np.exp(np.interp(np.log(e), np.log(TABLE_KEV), np.log(table)))
    return mu_rho * density / 10.0


def tissue_anchor_hu() -> dict[str, float]:
    """HU of each tissue of :data:`TISSUES` on a CT at :data:`CT_EFFECTIVE_KEV` (about -80 for
    adipose, +55 for soft tissue, +1600 for cortical bone)."""
    water = float(mu_per_mm("water", CT_EFFECTIVE_KEV))
    return {t: mu_to_hu(float(mu_per_mm(t, CT_EFFECTIVE_KEV)), mu_water=water) for t in TISSUES}


def material_fractions(hu: np.ndarray) -> np.ndarray:
    """Volume fractions ``[3, *hu.shape]`` of adipose, soft tissue and cortical bone of HU voxels.

    Mixtures by HU, piecewise linear between the anchors -1000 (air, i.e. nothing), adipose, soft
    tissue and bone (:func:`tissue_anchor_hu`); lung is an air-adipose mixture. Above the bone
    anchor the voxel is bone whose density scales with ``1 + HU/1000`` (so metal is dense bone).
    """
    hu = np.asarray(hu, dtype=np.float32)
    anchors = tissue_anchor_hu()
    knots = [-1000.0] + [anchors[t] for t in TISSUES]
    out = np.zeros((len(TISSUES),) + hu.shape, dtype=np.float32)
    for i in range(len(TISSUES)):  # hat function of anchor i+1 on the knots
        lo, mid = knots[i], knots[i + 1]
        up = np.clip((hu - lo) / (mid - lo), 0.0, 1.0)
        if i + 1 < len(TISSUES):
            hi = knots[i + 2]
            out[i] = np.where(hu <= mid, up, np.clip((hi - hu) / (hi - mid), 0.0, 1.0))
        else:
            out[i] = np.where(hu <= mid, up, (1.0 + hu / 1000.0) / (1.0 + mid / 1000.0))
    return out


def material_paths(
    hu: np.ndarray, affine: np.ndarray, views: Sequence[View], *, device: str = "cpu"
) -> list[np.ndarray]:
    """Path lengths (mm) through each tissue of :data:`TISSUES`, ``[3, R, C]`` per view, by
    projecting the :func:`material_fractions` volumes with :func:`xfit.projector.project`."""
    from .projector import project

    frac = torch.from_numpy(material_fractions(hu)).to(device)[:, None]  # [3, 1, I, J, K]
    aff = torch.as_tensor(affine, dtype=torch.float32)
    out = []
    for view in views:
        with torch.no_grad():
            out.append(project(frac, aff, [view])[:, 0].cpu().numpy().astype(np.float64))
    return out


def spectrum(
    kvp: float, filtration_mm_al: float, filtration_mm_cu: float, *, step_kev: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Energy bins (keV) and detector weights of a filtered tungsten-anode spectrum.

    Kramers' law for the bremsstrahlung photon fluence, ``N(E) ~ (kVp - E) / E`` (H. A. Kramers,
    Phil. Mag. 46, 836, 1923; characteristic lines are left out), attenuated by the Al and Cu
    filtration, weighted by ``E`` (an energy-integrating detector that absorbs every photon), and
    normalised to sum 1. Bins start at 10 keV (below that the filtration removes everything).

    Returns:
        ``(kev [N], weight [N])``.
    """
    kev = np.arange(10.0 + step_kev / 2, kvp, step_kev)
    if kev.size == 0:
        raise InputError(f"kvp must be above 10 kV, got {kvp!r}")
    fluence = (kvp - kev) / kev
    fluence *= np.exp(-mu_per_mm("aluminium", kev) * filtration_mm_al - mu_per_mm("copper", kev) * filtration_mm_cu)
    weight = fluence * kev
    total = weight.sum()
    if not total > 0:
        raise InputError("the filtration absorbs the whole spectrum")
    return kev, weight / total


def polychromatic_transmission(paths_mm: Mapping[str, np.ndarray], kev: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Detected fraction ``T = sum_E w(E) exp(-sum_m mu_m(E) L_m)`` of the unattenuated signal.

    Args:
        paths_mm: path length (mm) ``[R, C]`` through each material of :data:`MATERIALS`.
        kev, weight: the spectrum (:func:`spectrum`).
    Returns:
        ``[R, C]`` in (0, 1].
    """
    names = list(paths_mm)
    shape = np.shape(paths_mm[names[0]])
    out = np.zeros(shape, dtype=np.float64)
    for e, w in zip(kev, weight):
        att = sum(float(mu_per_mm(m, e)) * np.asarray(paths_mm[m], dtype=np.float64) for m in names)
        out += w * np.exp(-att)
    return out


# ----------------------------------------------------------------------------- the style

_AXES = ("vertical", "horizontal")


@dataclass(frozen=True)
class ClinicalStyle:
    """Every parameter of the radiograph-formation model (``docs/radiographs.md``).

    An effect is off at its documented 'off' value; ``strength`` scales all of them at once.
    Lengths are millimetres at the detector plane.
    """

    #: 0 = ideal, 1 = these values; in between every effect is scaled (docs/radiographs.md)
    strength: float = 1.0
    #: polychromatic spectrum and beam hardening (False: the ideal model's mu at one energy)
    polychromatic: bool = True
    #: tube potential (kV), in [20, 150]
    kvp: float = 80.0
    #: total filtration: aluminium and copper thickness (mm)
    filtration_mm_al: float = 3.0
    filtration_mm_cu: float = 0.1
    #: scatter-to-primary ratio behind the patient, after the grid (0 = no scatter)
    spr: float = 0.5
    #: Gaussian scatter kernel (standard deviation, mm)
    scatter_sigma_mm: float = 50.0
    #: heel effect: relative intensity drop from one side of the image to the other (0 = off;
    #: positive: the first row or column, the anode side, is darker)
    heel: float = 0.15
    #: direction of the anode-cathode axis in the image: vertical (along the columns) or horizontal
    heel_axis: str = "vertical"
    #: detector MTF as a Gaussian blur (standard deviation, mm; 0 = off)
    mtf_sigma_mm: float = 0.3
    #: quanta per mm^2 of the unattenuated beam at the detector (quantum noise; 0 = off)
    photons: float = 1.0e6
    #: electronic noise (standard deviation, in quanta per pixel; 0 = off; needs photons > 0)
    electronic_noise: float = 5.0
    #: auto-ranging window: percentiles of the log image behind the patient (inside the field)
    #: mapped to black and white; direct exposure outside the patient saturates black. (0, 100):
    #: the whole field's range, nothing clipped
    window_percentiles: tuple[float, float] = (2.0, 99.8)
    #: steepness of the S-shaped LUT over the window (0 = linear)
    lut_slope: float = 5.0
    #: multi-frequency enhancement: band edges (Gaussian sigmas, mm, increasing) and gain per band
    #: (all gains 0 = off; one band = unsharp masking)
    enhance_sigmas_mm: tuple[float, ...] = (1.5, 6.0)
    enhance_gains: tuple[float, ...] = (0.6, 0.3)
    #: bits per stored pixel, 8 to 16
    bit_depth: int = 12
    #: store MONOCHROME1 (inverted: bone dark); the sidecar says ``invert: true``
    monochrome1: bool = False
    #: collimation: margins blanked at the top, bottom, left and right (mm; 0 = off)
    collimation_mm: tuple[float, float, float, float] = (8.0, 8.0, 12.0, 12.0)
    #: fraction of the beam the collimator blades let through
    collimator_transmission: float = 0.03
    #: burned-in marker letters ("" = none), from :data:`FONT`
    marker: str = "R"
    #: top-left corner of the marker as fractions (row, col) of the image
    marker_position: tuple[float, float] = (0.12, 0.12)
    #: height of the marker's letters (mm)
    marker_size_mm: float = 10.0
    #: anti-scatter grid: period (mm) and depth (fraction of the primary) of its visible line
    #: pattern (0 depth = off) and the direction of the lines
    grid_period_mm: float = 2.5
    grid_contrast: float = 0.03
    grid_lines: str = "vertical"

    def replace(self, **changes: Any) -> ClinicalStyle:
        """A copy with some parameters changed (checked by :func:`check_style`)."""
        return check_style(dataclasses.replace(self, **changes))

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready parameters (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


#: The clinical presets: a lumbar spine AP (80 kV, right marker) and lateral (90 kV, more
#: scatter and dose, a window that lets the thin tissue at the back burn out, left marker on the
#: anterior side). ``xfit/configs/style-clinical.yaml`` repeats them.
PRESETS: dict[str, ClinicalStyle] = {
    "ap": ClinicalStyle(),
    "lateral": ClinicalStyle(
        kvp=90.0,
        spr=1.0,
        scatter_sigma_mm=60.0,
        photons=3.0e6,
        window_percentiles=(10.0, 99.8),
        marker="L",
        marker_position=(0.12, 0.78),
        collimation_mm=(8.0, 8.0, 8.0, 8.0),
    ),
}
#: The off value of every parameter that has one: ``ideal_style()`` sets all of them.
_OFF: dict[str, Any] = dict(
    polychromatic=False,
    spr=0.0,
    heel=0.0,
    mtf_sigma_mm=0.0,
    photons=0.0,
    electronic_noise=0.0,
    window_percentiles=(0.0, 100.0),
    lut_slope=0.0,
    enhance_gains=(),
    enhance_sigmas_mm=(),
    bit_depth=16,
    monochrome1=False,
    collimation_mm=(0.0, 0.0, 0.0, 0.0),
    marker="",
    grid_contrast=0.0,
)


def ideal_style() -> ClinicalStyle:
    """Every effect off: the radiograph is an affine map of the line integrals (16 bits)."""
    return ClinicalStyle(**_OFF)


def preset_for(view_or_angle: View | float) -> str:
    """``"lateral"`` for views within 45 degrees of a lateral, else ``"ap"``."""
    angle = view_or_angle.angle_deg if isinstance(view_or_angle, View) else float(view_or_angle)
    return "lateral" if abs(math.sin(math.radians(angle))) > math.sqrt(0.5) else "ap"


# ----------------------------------------------------------------------------- checks and parsing


def _fail(name: str, why: str, value: Any) -> InputError:
    return InputError(f"style parameter {name} {why}, got {value!r}")


def _number(style: ClinicalStyle, name: str, lo: float, hi: float, *, lo_open: bool = False) -> None:
    v = getattr(style, name)
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or not math.isfinite(v)
        or v > hi
        or v < lo
        or (lo_open and v == lo)
    ):
        raise _fail(name, f"must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}]", v)


def check_style(style: ClinicalStyle) -> ClinicalStyle:
    """Check every parameter's type and range; return the style.

    Raises:
        InputError: naming the parameter (an impossible kVp, a negative SPR, ...).
    """
    if not isinstance(style, ClinicalStyle):
        raise InputError(f"expected a ClinicalStyle, got {type(style).__name__}")
    _number(style, "strength", 0.0, 1.0)
    _number(style, "kvp", *KVP_RANGE)
    _number(style, "filtration_mm_al", 0.0, 20.0)
    _number(style, "filtration_mm_cu", 0.0, 2.0)
    _number(style, "spr", 0.0, 20.0)
    _number(style, "scatter_sigma_mm", 0.0, 1000.0, lo_open=True)
    _number(style, "heel", -0.9, 0.9)
    _number(style, "mtf_sigma_mm", 0.0, 50.0)
    _number(style, "photons", 0.0, 1e12)
    _number(style, "electronic_noise", 0.0, 1e6)
    _number(style, "lut_slope", 0.0, 50.0)
    _number(style, "collimator_transmission", 0.0, 1.0)
    _number(style, "marker_size_mm", 0.0, 500.0, lo_open=True)
    _number(style, "grid_period_mm", 0.0, 100.0, lo_open=True)
    _number(style, "grid_contrast", 0.0, 0.9)
    for name in ("polychromatic", "monochrome1"):
        if not isinstance(getattr(style, name), (bool, np.bool_)):
            raise _fail(name, "must be true or false", getattr(style, name))
    for name in ("heel_axis", "grid_lines"):
        if getattr(style, name) not in _AXES:
            raise _fail(name, f"must be one of {', '.join(_AXES)}", getattr(style, name))
    b = style.bit_depth
    if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not BIT_DEPTH_RANGE[0] <= b <= BIT_DEPTH_RANGE[1]:
        raise _fail("bit_depth", f"must be a whole number in [{BIT_DEPTH_RANGE[0]}, {BIT_DEPTH_RANGE[1]}]", b)
    lo, hi = _floats(style.window_percentiles, "window_percentiles", 2)
    if not 0.0 <= lo < hi <= 100.0:
        raise _fail("window_percentiles", "must be two percentiles 0 <= low < high <= 100", style.window_percentiles)
    sig = _floats(style.enhance_sigmas_mm, "enhance_sigmas_mm", None)
    gains = _floats(style.enhance_gains, "enhance_gains", None)
    if len(sig) != len(gains) or len(sig) > 4:
        raise _fail(
            "enhance_gains",
            f"must give one gain per band of enhance_sigmas_mm ({len(sig)}), at most 4",
            style.enhance_gains,
        )
    if any(s <= 0 or s > 500 for s in sig) or any(b <= a for a, b in zip(sig, sig[1:])):
        raise _fail("enhance_sigmas_mm", "must be increasing sigmas in (0, 500] mm", style.enhance_sigmas_mm)
    if any(not -1.0 <= g <= 10.0 for g in gains):
        raise _fail("enhance_gains", "must be gains in [-1, 10]", style.enhance_gains)
    if any(not 0.0 <= m <= 1e4 for m in _floats(style.collimation_mm, "collimation_mm", 4)):
        raise _fail(
            "collimation_mm", "must be four margins (top, bottom, left, right) in [0, 10000] mm", style.collimation_mm
        )
    pos = _floats(style.marker_position, "marker_position", 2)
    if not isinstance(style.marker, str) or any(c not in FONT for c in style.marker.upper()) or len(style.marker) > 8:
        raise _fail(
            "marker", f"must be up to 8 of the letters {''.join(sorted(FONT)).strip()} (or empty)", style.marker
        )
    if any(not 0.0 <= p <= 1.0 for p in pos):
        raise _fail(
            "marker_position",
            "must be (row, col) fractions of the image in [0, 1]: the marker is outside the image",
            style.marker_position,
        )
    return style


def _floats(value: Any, name: str, n: int | None) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value if not isinstance(v, bool))
        ok = len(out) == len(value) and all(math.isfinite(v) for v in out)
    except TypeError:
        ok = False
    if not ok or (n is not None and len(out) != n):
        raise _fail(name, f"must be {n if n else 'a list of'} finite numbers", value)
    return out


def check_style_for_view(style: ClinicalStyle, view: View) -> None:
    """What depends on the detector: the collimated field is not empty and the marker fits.

    Raises:
        InputError: the collimation covers the whole image, or the marker lies (partly) outside it.
    """
    rows, cols = view.shape
    field_px = _field_box(style.collimation_mm, view)
    if field_px[1] - field_px[0] < 2 or field_px[3] - field_px[2] < 2:
        raise _fail(
            "collimation_mm",
            f"leaves no field on a {rows}x{cols} detector of "
            f"{view.pixel_spacing_mm[0]:g} x {view.pixel_spacing_mm[1]:g} mm pixels",
            style.collimation_mm,
        )
    if style.marker:
        r0, c0, h, w = _marker_box(style, view)
        if r0 + h > rows or c0 + w > cols:
            raise _fail(
                "marker_position",
                f"puts the {h}x{w} px marker {style.marker!r} partly outside the {rows}x{cols} image",
                style.marker_position,
            )


def _coerce(name: str, default: Any, value: Any) -> Any:
    """A value from YAML or the command line (``"90"``, ``"10,10,12,12"``, ``"off"``) in the
    type of the parameter's default."""
    if isinstance(default, bool):  # only true / false, as everywhere in xfit's configs
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return value
    if isinstance(default, tuple):
        if isinstance(value, str):
            parts = [p.strip() for p in value.strip().strip("[]()").split(",") if p.strip()]
            value = parts
        if isinstance(value, (list, tuple)):
            try:
                return tuple(float(v) if not isinstance(v, bool) else v for v in value)
            except (TypeError, ValueError):
                raise _fail(name, "must be numbers separated by commas", value) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (float(value),) * len(default) if default else (float(value),)
        return value
    if isinstance(default, str):
        return "" if value is None else str(value).strip() if isinstance(value, (str, int, float)) else value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise _fail(name, "must be a number", value) from None
        value = number
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def style_from_params(base: ClinicalStyle, params: Mapping[str, Any]) -> ClinicalStyle:
    """``base`` with the named parameters changed (values from YAML or the command line).

    Raises:
        InputError: an unknown parameter (named, with the known ones) or a bad value.
    """
    known = [f.name for f in dataclasses.fields(ClinicalStyle)]
    changes = {}
    for name, value in params.items():
        if name not in known:
            raise InputError(f"unknown style parameter {name!r} (known: {', '.join(known)})")
        changes[name] = _coerce(name, getattr(base, name), value)
    return check_style(dataclasses.replace(base, **changes))


def parse_style_params(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["kvp=90", "lateral.spr=1.2"]`` -> ``{"ap": {"kvp": "90"}, "lateral": {"kvp": "90", "spr": "1.2"}}``.

    A ``ap.`` or ``lateral.`` prefix sets one preset only. Raises InputError for an item that is
    not ``NAME=VALUE`` or an unknown preset prefix.
    """
    out: dict[str, dict[str, str]] = {p: {} for p in PRESETS}
    for item in items:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise InputError(f"a style parameter must be NAME=VALUE (e.g. kvp=90), got {item!r}")
        preset, dot, key = name.rpartition(".")
        if dot and preset not in PRESETS:
            raise InputError(f"unknown style preset {preset!r} in {item!r} (known: {', '.join(PRESETS)})")
        for p in [preset] if dot else PRESETS:
            out[p][key] = value
    return out


def styles_from_mapping(
    data: Mapping[str, Any], base: Mapping[str, ClinicalStyle] | None = None
) -> dict[str, ClinicalStyle]:
    """Styles per preset from a YAML mapping: keys ``ap`` and/or ``lateral`` holding parameters,
    and/or parameters at the top level (for both). Unknown keys are errors."""
    styles = dict(base or PRESETS)
    if not isinstance(data, Mapping):
        raise InputError(f"a style file must be a mapping of parameters, got {type(data).__name__}")
    common = {k: v for k, v in data.items() if k not in PRESETS}
    for preset in PRESETS:
        section = data.get(preset, {}) or {}
        if not isinstance(section, Mapping):
            raise InputError(f"style section {preset!r} must be a mapping of parameters")
        styles[preset] = style_from_params(styles[preset], {**common, **section})
    return styles


# ----------------------------------------------------------------------------- effects


def _sigma_px(sigma_mm: float, view: View) -> tuple[float, float]:
    return sigma_mm / view.pixel_spacing_mm[0], sigma_mm / view.pixel_spacing_mm[1]


def gaussian_blur_mm(image: np.ndarray, sigma_mm: float, view: View) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma_mm`` (mm at the detector); edges repeat.

    Broad kernels (over 8 pixels) run on a block-averaged copy and are interpolated back."""
    from scipy import ndimage

    if sigma_mm <= 0:
        return image
    sr, sc = _sigma_px(sigma_mm, view)
    factor = max(1, int(min(sr, sc) // 4)) if min(sr, sc) > 8 else 1
    if factor == 1:
        return ndimage.gaussian_filter(image, (sr, sc), mode="nearest")
    rows, cols = image.shape
    pr, pc = -rows % factor, -cols % factor
    padded = np.pad(image, ((0, pr), (0, pc)), mode="edge")
    small = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor).mean((1, 3))
    small = ndimage.gaussian_filter(small, (sr / factor, sc / factor), mode="nearest")
    r = (np.arange(rows) + 0.5) / factor - 0.5
    c = (np.arange(cols) + 0.5) / factor - 0.5
    rr, cc = np.meshgrid(r, c, indexing="ij")
    return ndimage.map_coordinates(small, [rr, cc], order=1, mode="nearest")


def _axis_coordinate(shape: tuple[int, int], axis: str) -> np.ndarray:
    """0 at the first row (``vertical``) or column (``horizontal``), 1 at the last: ``[R, C]``."""
    rows, cols = shape
    if axis == "vertical":
        return np.broadcast_to(np.linspace(0.0, 1.0, rows)[:, None], shape)
    return np.broadcast_to(np.linspace(0.0, 1.0, cols)[None, :], shape)


def heel_ramp(shape: tuple[int, int], heel: float, axis: str) -> np.ndarray:
    """Intensity factor ``[R, C]`` of the heel effect: ``1 + heel * (x - 1/2)`` with x from 0 at
    the first row (``axis`` vertical) or column (horizontal) to 1 at the last; ``heel > 0`` puts
    the anode, the darker side, first."""
    return 1.0 + heel * (_axis_coordinate(shape, axis) - 0.5)


def grid_pattern(view: View, period_mm: float, contrast: float, lines: str) -> np.ndarray:
    """Transmission ``[R, C]`` of the anti-scatter grid's visible line pattern:
    ``1 - contrast * (1 + cos(2 pi x / period)) / 2`` across the lines (x in mm at the detector)."""
    rows, cols = view.shape
    if lines == "vertical":  # lines along the columns: the pattern varies from column to column
        x = (np.arange(cols) * view.pixel_spacing_mm[1])[None, :]
    else:
        x = (np.arange(rows) * view.pixel_spacing_mm[0])[:, None]
    g = 1.0 - contrast * 0.5 * (1.0 + np.cos(2.0 * np.pi * x / period_mm))
    return np.broadcast_to(g, (rows, cols))


def _field_box(collimation_mm: Sequence[float], view: View) -> tuple[int, int, int, int]:
    """Rows ``[r0, r1)`` and columns ``[c0, c1)`` of the collimated field."""
    rows, cols = view.shape
    dr, dc = view.pixel_spacing_mm
    top, bottom, left, right = (float(m) for m in collimation_mm)
    return (int(round(top / dr)), rows - int(round(bottom / dr)), int(round(left / dc)), cols - int(round(right / dc)))


def field_mask(view: View, collimation_mm: Sequence[float]) -> np.ndarray:
    """Boolean ``[R, C]``: inside the collimated field (margins top, bottom, left, right in mm)."""
    r0, r1, c0, c1 = _field_box(collimation_mm, view)
    mask = np.zeros(view.shape, dtype=bool)
    mask[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = True
    return mask


def add_scatter(
    primary: np.ndarray, thickness: np.ndarray, spr: float, sigma_mm: float, view: View, body: np.ndarray
) -> np.ndarray:
    """Primary plus scatter: ``S = c * G_sigma(primary * thickness)``, a convolution model of the
    scatter (J. A. Love and R. A. Kruger, Med. Phys. 14, 178, 1987; the thickness weighting as in
    B. Ohnesorge et al., Eur. Radiol. 9, 563, 1999), with ``c`` such that the mean scatter over
    ``body`` (the pixels behind the patient) is ``spr`` times the mean primary there.

    Args:
        primary: ``[R, C]`` primary intensity (unattenuated = 1); thickness: ``[R, C]`` its
            ``-log`` (water-equivalent attenuation); body: boolean ``[R, C]``.
    """
    if spr <= 0:
        return primary
    kernel = gaussian_blur_mm(primary * thickness, sigma_mm, view)
    where = body if body.any() else np.ones_like(body)
    denom = float(kernel[where].mean())
    if denom <= 0:
        return primary
    return primary + spr * float(primary[where].mean()) / denom * kernel


def quantum_noise(intensity: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise of ``photons`` quanta per pixel of the unattenuated beam: ``Poisson(photons *
    I) / photons`` (``photons <= 0``: unchanged). :func:`radiograph` passes the style's quanta
    per mm^2 times the pixel area."""
    if photons <= 0:
        return intensity
    return rng.poisson(np.clip(intensity, 0.0, None) * photons).astype(np.float64) / photons


#: A 5x7 bitmap font for burned-in markers ('#' = on).
FONT: dict[str, tuple[str, ...]] = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    " ": (".....",) * 7,
}


def text_bitmap(text: str, height_px: int) -> np.ndarray:
    """Boolean ``[h, w]`` bitmap of ``text`` in :data:`FONT`, letters ``height_px`` tall (whole
    multiples of the 7-row font, at least 1), one font column between letters."""
    scale = max(1, int(round(height_px / 7)))
    glyphs = []
    for i, ch in enumerate(text.upper()):
        g = np.array([[c == "#" for c in row] for row in FONT[ch]], dtype=bool)
        if i:
            glyphs.append(np.zeros((7, 1), dtype=bool))
        glyphs.append(g)
    bitmap = np.concatenate(glyphs, axis=1) if glyphs else np.zeros((7, 0), dtype=bool)
    return np.kron(bitmap, np.ones((scale, scale), dtype=bool))


def _marker_box(style: ClinicalStyle, view: View) -> tuple[int, int, int, int]:
    rows, cols = view.shape
    bitmap = text_bitmap(style.marker, int(round(style.marker_size_mm / view.pixel_spacing_mm[0])))
    r0 = int(round(style.marker_position[0] * (rows - 1)))
    c0 = int(round(style.marker_position[1] * (cols - 1)))
    return r0, c0, bitmap.shape[0], bitmap.shape[1]


def burn_marker(
    image: np.ndarray, style: ClinicalStyle, view: View, value: float = 1.0, amount: float = 1.0
) -> np.ndarray:
    """Burn ``style.marker`` into a display image ``[R, C]`` in [0, 1] (``value`` 1 = saturated
    white; ``amount`` blends it in). The marker must fit (:func:`check_style_for_view`)."""
    if not style.marker or amount <= 0:
        return image
    r0, c0, h, w = _marker_box(style, view)
    bitmap = text_bitmap(style.marker, int(round(style.marker_size_mm / view.pixel_spacing_mm[0])))
    out = image.copy()
    patch = out[r0 : r0 + h, c0 : c0 + w]
    patch[bitmap] = (1.0 - amount) * patch[bitmap] + amount * value
    return out


def sigmoid_lut(y: np.ndarray, slope: float) -> np.ndarray:
    """S-shaped LUT on [0, 1] -> [0, 1]: a logistic of steepness ``slope`` centred at 1/2,
    rescaled to keep 0 and 1 fixed (``slope`` 0: the identity)."""
    y = np.clip(y, 0.0, 1.0)
    if slope <= 1e-6:
        return y
    lo, hi = 1.0 / (1.0 + math.exp(slope / 2)), 1.0 / (1.0 + math.exp(-slope / 2))
    return (1.0 / (1.0 + np.exp(-slope * (y - 0.5))) - lo) / (hi - lo)


def multi_frequency(y: np.ndarray, sigmas_mm: Sequence[float], gains: Sequence[float], view: View) -> np.ndarray:
    """Multi-frequency enhancement: ``y + sum_i g_i (G_{s_(i-1)} y - G_{s_i} y)`` with ``s_0 = 0``
    (band i holds the detail between two Gaussian scales); one band is unsharp masking."""
    out, previous = y.copy(), y
    for sigma, gain in zip(sigmas_mm, gains):
        smooth = gaussian_blur_mm(y, float(sigma), view)
        if gain:
            out += gain * (previous - smooth)
        previous = smooth
    return out


def quantise(y: np.ndarray, bits: int) -> np.ndarray:
    """Codes ``round(y * (2^bits - 1))`` of ``y`` clipped to [0, 1], as uint16."""
    top = (1 << int(bits)) - 1
    return np.rint(np.clip(y, 0.0, 1.0) * top).astype(np.uint16)


# ----------------------------------------------------------------------------- the chain


@dataclass
class Radiograph:
    """A processed radiograph as stored.

    Attributes:
        codes: ``[R, C]`` uint16 pixel values in ``[0, 2^bits - 1]`` (inverted when ``inverted``).
        bits: bit depth.
        inverted: MONOCHROME1 (bone dark).
        in_field: boolean ``[R, C]``, the collimated field.
        style: the style it was made with (its strength already applied: :func:`scaled`).
    """

    codes: np.ndarray
    bits: int
    inverted: bool
    in_field: np.ndarray
    style: ClinicalStyle = field(default_factory=ClinicalStyle)

    @property
    def image(self) -> np.ndarray:
        """``[R, C]`` float32 in [0, 1], bright = attenuating (undoing MONOCHROME1)."""
        y = self.codes.astype(np.float32) / np.float32((1 << self.bits) - 1)
        return 1.0 - y if self.inverted else y


def scaled(style: ClinicalStyle) -> ClinicalStyle:
    """The style at its ``strength``: every effect scaled toward off (strength 1: unchanged).

    Magnitudes (SPR, heel, blur, electronic noise, LUT slope, enhancement gains, collimation
    margins, grid depth) scale linearly; the quantum noise variance too (photons / strength); the
    window percentiles move toward (0, 100) and the bit depth toward 16. The polychromatic log
    image is blended with the ideal one and the marker is blended in (see :func:`radiograph`).
    """
    s = float(style.strength)
    if s >= 1.0:
        return style
    lo, hi = style.window_percentiles
    return dataclasses.replace(
        style,
        spr=style.spr * s,
        heel=style.heel * s,
        mtf_sigma_mm=style.mtf_sigma_mm * s,
        photons=style.photons / s if s > 0 and style.photons > 0 else 0.0,
        electronic_noise=style.electronic_noise * s,
        lut_slope=style.lut_slope * s,
        window_percentiles=(lo * s, 100.0 - (100.0 - hi) * s),
        enhance_gains=tuple(g * s for g in style.enhance_gains),
        bit_depth=int(round(16 - (16 - style.bit_depth) * s)),
        collimation_mm=tuple(m * s for m in style.collimation_mm),
        grid_contrast=style.grid_contrast * s,
    )


def _ideal_paths(line_integrals: np.ndarray) -> dict[str, np.ndarray]:
    """Water path lengths (mm) equivalent to ideal line integrals (``p / MU_WATER``)."""
    return {"water": np.asarray(line_integrals, dtype=np.float64) / MU_WATER}


def radiograph(
    line_integrals: np.ndarray,
    view: View,
    style: ClinicalStyle,
    *,
    paths_mm: Mapping[str, np.ndarray] | np.ndarray | None = None,
    seed: int | Sequence[int] = 0,
) -> Radiograph:
    """The processed radiograph of a view from what the simulator computes.

    Args:
        line_integrals: ``[R, C]`` ideal line integrals ``p`` (:func:`xfit.simulate.simulate_views`).
        view: its view (detector shape and pixel spacing).
        style: the parameters (:class:`ClinicalStyle`; its ``strength`` applies).
        paths_mm: path lengths (mm) per material, ``[3, R, C]`` for :data:`TISSUES`
            (:func:`material_paths`) or a mapping name -> ``[R, C]``; ``None``: the line integrals
            taken as water (beam hardening of water only).
        seed: seed of the noise (a number or a sequence, as :func:`numpy.random.default_rng` takes).
    Returns:
        :class:`Radiograph`.
    Raises:
        InputError: a bad style, shapes that do not match, or a marker or collimation that does
            not fit the detector.
    """
    check_style(style)
    check_style_for_view(style, view)
    p = np.asarray(line_integrals, dtype=np.float64)
    if p.shape != tuple(view.shape) or not np.all(np.isfinite(p)):
        raise InputError(f"line integrals must be finite and of the view's shape {view.shape}, got {p.shape}")
    if paths_mm is None:
        paths = _ideal_paths(p)
    elif isinstance(paths_mm, Mapping):
        paths = dict(paths_mm)
    else:
        paths = dict(zip(TISSUES, np.asarray(paths_mm, dtype=np.float64)))
    if any(np.shape(v) != p.shape for v in paths.values()) or any(k not in MATERIALS for k in paths):
        raise InputError(f"path lengths must be [R, C] = {p.shape} per material of {', '.join(MATERIALS)}")
    s = float(style.strength)
    eff = scaled(style)
    rng = np.random.default_rng(seed)

    # 1. primary transmission
    log_t = p
    if style.polychromatic and s > 0:
        kev, weight = spectrum(style.kvp, style.filtration_mm_al, style.filtration_mm_cu)
        poly = -np.log(np.clip(polychromatic_transmission(paths, kev, weight), 1e-300, None))
        log_t = (1.0 - s) * p + s * poly
    primary = np.exp(-log_t)
    # 2. heel, grid and collimation
    inside = field_mask(view, eff.collimation_mm)
    primary = primary * heel_ramp(view.shape, eff.heel, eff.heel_axis)
    if eff.grid_contrast > 0:
        primary = primary * grid_pattern(view, eff.grid_period_mm, eff.grid_contrast, eff.grid_lines)
    primary_field = np.where(inside, primary, 0.0)
    primary = np.where(inside, primary, primary * eff.collimator_transmission)
    # 3. scatter from the irradiated field
    body = inside & (p > 0.05 * max(float(p.max()), 1e-12))
    total = primary + (add_scatter(primary_field, log_t, eff.spr, eff.scatter_sigma_mm, view, body) - primary_field)
    # 4. detector: quantum noise, MTF, electronic noise
    quanta = eff.photons * view.pixel_spacing_mm[0] * view.pixel_spacing_mm[1]  # per pixel
    total = quantum_noise(total, quanta, rng)
    total = gaussian_blur_mm(total, eff.mtf_sigma_mm, view)
    if eff.electronic_noise > 0 and quanta > 0:
        total = total + rng.normal(0.0, eff.electronic_noise / quanta, total.shape)
    floor = 0.5 / quanta if quanta > 0 else 1e-12
    q = -np.log(np.clip(total, floor, None))
    # 5. vendor processing
    full_range = tuple(eff.window_percentiles) == (0.0, 100.0)
    y = process(q, view, eff, inside if full_range or not body.any() else body)
    y = burn_marker(y, eff, view, 1.0, amount=s)
    codes = quantise(y, eff.bit_depth)
    if eff.monochrome1:
        codes = ((1 << eff.bit_depth) - 1 - codes).astype(np.uint16)
    return Radiograph(codes=codes, bits=eff.bit_depth, inverted=bool(eff.monochrome1), in_field=inside, style=eff)


def process(q: np.ndarray, view: View, style: ClinicalStyle, region: np.ndarray) -> np.ndarray:
    """Vendor processing of a log image ``q = -log(I / I0)`` ``[R, C]`` to display values in [0, 1]
    (bright = attenuating): auto-ranging window (the ``window_percentiles`` of ``q`` over
    ``region``, the anatomy behind the patient inside the field, to 0 and 1: exposure
    recognition), S-shaped LUT, multi-frequency enhancement, clipped to [0, 1]."""
    values = q[region] if region.any() else q.ravel()
    lo, hi = np.percentile(values, style.window_percentiles)
    if not hi > lo:
        hi = lo + 1.0
    y = sigmoid_lut((q - lo) / (hi - lo), style.lut_slope)
    y = multi_frequency(y, style.enhance_sigmas_mm, style.enhance_gains, view)
    return np.clip(y, 0.0, 1.0)


def load_styles(path: str | None = None, params: Sequence[str] = ()) -> dict[str, ClinicalStyle]:
    """The styles per preset of ``xfit simulate --style clinical``: :data:`PRESETS`, then a YAML
    file (:func:`styles_from_mapping`), then ``NAME=VALUE`` items (:func:`parse_style_params`).

    Raises:
        InputError: an unreadable file, an unknown parameter or preset, or a bad value.
    """
    from .io.text import read_yaml_mapping

    styles = dict(PRESETS)
    if path is not None:
        try:
            styles = styles_from_mapping(read_yaml_mapping(path, "style file"))
        except InputError as exc:
            raise InputError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from exc
    for preset, changes in parse_style_params(params).items():
        if changes:
            styles[preset] = style_from_params(styles[preset], changes)
    return styles
