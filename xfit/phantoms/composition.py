"""Body composition per level from published CT data: muscle, subcutaneous and visceral fat areas.

With ``make_phantom(..., body_composition="published")`` (``xfit phantoms --body-composition
published``) a phantom also draws who the body is, sex (half female) and BMI, then the areas of its
centred level's mid-vertebral axial slice from the published reference values below, and fits the
torso to them: the body outline is scaled to the area the compartments need, then the
subcutaneous fat thickness, the wall-muscle thickness and the visceral adiposity are adjusted on a
thin slab of that slice until the areas measured there (:func:`slice_areas`) match. The default
(``body_composition="default"``) draws nothing of this and leaves every phantom of a seed as it was.

Areas are measured as body-composition studies do on CT, on one axial slice through the middle of
the vertebra with the standard HU windows: skeletal muscle -29..150 HU (:data:`MUSCLE_HU`), adipose
tissue -190..-30 HU (:data:`FAT_HU`); muscle within the muscles (the tissue map's muscle class),
subcutaneous fat between the skin and the wall muscles' outer surface, visceral fat inside the
wall muscles' inner surface (intermuscular fat counts as neither).

Published reference values (cm², mean ± SD unless stated)
----------------------------------------------------------

Skeletal muscle area (SMA), :data:`SMA_PUBLISHED`:

* women, T5 / T8 / T10 / L3: 145.0 ± 19.8 / 79.3 ± 12.5 / 67.5 ± 11.2 / 119.5 ± 18.5, Framingham
  Heart Study, age 45-54 (n 360-588 per level; ``tonnesen2023`` Table 2). T5 holds the pectoral
  and shoulder-girdle muscles, hence more than T8;
* men, L3: 178 ± 27, DERIVED from the 5th percentile of healthy Caucasian men, 134.0 cm²
  (``vanderwerf2018``, n 420), as p5 = mean - 1.645 SD with the coefficient of variation (0.155)
  of the Framingham women's L3; consistent with ``derstine2018``'s L3 cutoff (mean - 2 SD) of
  144.3 cm² in younger (18-40) men. Men's thoracic levels: the women's times the men's / women's
  L3 ratio (1.49), DERIVED;
* the other levels are ESTIMATED: T6, T7, T9 interpolated between T5, T8 and T10; T11-L2 between
  T10 and L3; L4 0.97 and L5 0.85 of L3 (SMA peaks at L3, ``derstine2018``).

SMA grows with BMI: ``vanderwerf2018`` Table 3 (predicted p5 by BMI class, all ages) rises by
about 3.2 cm² per kg/m² in men (109.8, 123.7, 140.8, 157.3 cm² for BMI 17-20, 20-25, 25-30,
30-35) and 1.5 in women (83.6, 90.5, 98.5, 105.9), i.e. 2.2 % and 1.6 % of the mean per kg/m²
(:data:`SMA_BMI_SLOPE`); the rest of the published SD is drawn as a residual.

Subcutaneous and visceral adipose tissue areas (SAT, VAT) at L3, :data:`FAT_L3_PUBLISHED`: medians
of 1,787 healthy adults (BMI 23.5 ± 3.2) ``kong2022``: VAT men 120.9, women 67.2; SAT men 116.9,
women 146.7. Their growth with BMI (:data:`FAT_BMI_GROWTH`, exponential per kg/m²) and the
log-normal residual spread are ESTIMATED (SAT about 4x and VAT about 3.5x from BMI 23.5 to 40).
L1, L2, L4, L5 use the L3 values (ESTIMATED); thoracic subcutaneous fat is 0.6 of L3's
(ESTIMATED), and above the diaphragm there is no visceral fat target.

BMI: men N(27.0, 4.0), women N(26.5, 5.0), clipped to 17.5-40 (the range of ``vanderwerf2018``'s
cohort; the means ESTIMATED for adult CT cohorts).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .labels import TISSUE
from .params import CompositionParams, PhantomParams

#: Names accepted by ``make_phantom(body_composition=...)``.
BODY_COMPOSITIONS = ("default", "published")
#: Standard CT windows (HU) of body-composition analysis.
MUSCLE_HU = (-29.0, 150.0)
FAT_HU = (-190.0, -30.0)

SOURCES: dict[str, str] = {
    "tonnesen2023": "Tonnesen PE, Mercaldo ND, Tahir I, et al. Muscle reference values from thoracic "
    "and abdominal CT for sarcopenia assessment: the Framingham Heart Study. Invest "
    "Radiol 2024;59(3):259-270. doi:10.1097/RLI.0000000000001012 (PMC10920396)",
    "vanderwerf2018": "van der Werf A, Langius JAE, de van der Schueren MAE, et al. Percentiles for "
    "skeletal muscle index, area and radiation attenuation based on computed "
    "tomography imaging in a healthy Caucasian population. Eur J Clin Nutr "
    "2018;72(2):288-296. doi:10.1038/s41430-017-0034-5 (PMC5842880)",
    "derstine2018": "Derstine BA, Holcombe SA, Ross BE, et al. Skeletal muscle cutoff values for "
    "sarcopenia diagnosis using T10 to L5 measurements in a healthy US population. "
    "Sci Rep 2018;8:11369. doi:10.1038/s41598-018-29825-5 (PMC6063941)",
    "kong2022": "Kong M, Xu M, Zhou Y, et al. Assessing visceral obesity and abdominal adipose tissue "
    "distribution in healthy populations based on computed tomography: a large "
    "multicenter cross-sectional study. Front Nutr 2022;9:871697. "
    "doi:10.3389/fnut.2022.871697 (PMC9082940)",
}


@dataclass(frozen=True)
class AreaStat:
    """A published (or derived) area: mean and SD (cm²) and where it comes from."""

    mean: float
    sd: float
    source: str


_LEVELS = tuple([f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)])
_CV_L3 = 18.5 / 119.5  # Framingham women, L3
_MEN_L3 = 134.0 / (1.0 - 1.645 * _CV_L3)  # from vanderwerf2018's p5 of men
_MEN_RATIO = _MEN_L3 / 119.5


def _sma_table() -> dict[str, dict[str, AreaStat]]:
    women = {"T5": (145.0, 19.8), "T8": (79.3, 12.5), "T10": (67.5, 11.2), "L3": (119.5, 18.5)}

    def lerp(a: str, b: str, t: float) -> tuple[float, float]:
        return (women[a][0] + t * (women[b][0] - women[a][0]), women[a][1] + t * (women[b][1] - women[a][1]))

    est = {f"T{i}": women["T5"] for i in range(1, 5)}
    est.update(T6=lerp("T5", "T8", 1 / 3), T7=lerp("T5", "T8", 2 / 3), T9=lerp("T8", "T10", 0.5))
    for k, lvl in enumerate(("T11", "T12", "L1", "L2"), start=1):
        est[lvl] = lerp("T10", "L3", k / 5)
    est["L4"] = (0.97 * women["L3"][0], 0.97 * women["L3"][1])
    est["L5"] = (0.85 * women["L3"][0], 0.85 * women["L3"][1])
    out: dict[str, dict[str, AreaStat]] = {"female": {}, "male": {}}
    for lvl in _LEVELS:
        pub = lvl in women
        m, sd = women[lvl] if pub else est[lvl]
        out["female"][lvl] = AreaStat(m, sd, "tonnesen2023" if pub else "ESTIMATED (interpolated)")
        src = (
            "DERIVED from vanderwerf2018 p5"
            if lvl == "L3"
            else "DERIVED (women x men/women L3 ratio)"
            if pub
            else "ESTIMATED (interpolated)"
        )
        out["male"][lvl] = AreaStat(m * _MEN_RATIO, sd * _MEN_RATIO, src)
    return out


#: Skeletal muscle area per sex and level (see the module docstring for the sources).
SMA_PUBLISHED: dict[str, dict[str, AreaStat]] = _sma_table()
#: Fractional SMA change per kg/m² of BMI (``vanderwerf2018`` Table 3) and the BMI it is centred on.
SMA_BMI_SLOPE = {"male": 0.022, "female": 0.016}
SMA_BMI_REF = 26.5
#: Medians (cm²) of SAT and VAT at L3 at BMI :data:`FAT_BMI_REF` (``kong2022``).
FAT_L3_PUBLISHED = {"male": {"sat": 116.9, "vat": 120.9}, "female": {"sat": 146.7, "vat": 67.2}}
FAT_BMI_REF = 23.5
#: Exponential growth of SAT / VAT per kg/m² and the log-normal residual SD (ESTIMATED).
FAT_BMI_GROWTH = {"sat": 0.085, "vat": 0.075}
FAT_RESIDUAL_SD = 0.30
#: Thoracic subcutaneous fat relative to L3's (ESTIMATED).
THORACIC_SAT_RATIO = 0.6
#: BMI draws per sex: mean, SD, clipped to BMI_RANGE.
BMI_DRAW = {"male": (27.0, 4.0), "female": (26.5, 5.0)}
BMI_RANGE = (17.5, 40.0)
#: Area inside the skin that is neither muscle nor subcutaneous / visceral fat (organs, vessels,
#: spine, lungs, mediastinum): ESTIMATED from typical waist and chest circumferences (cm²).
OTHER_CM2 = {("L", "female"): 230.0, ("L", "male"): 300.0, ("T", "female"): 380.0, ("T", "male"): 460.0}


def check_body_composition(name: str) -> str:
    """``name`` if it is one of :data:`BODY_COMPOSITIONS` (raises :class:`InputError` otherwise)."""
    if name not in BODY_COMPOSITIONS:
        raise InputError(f"body_composition must be one of {BODY_COMPOSITIONS}, got {name!r}")
    return name


def fat_median(kind: str, sex: str, bmi: float, level: str) -> float:
    """Median SAT or VAT (``kind``) area (cm²) of a body of ``sex`` and ``bmi`` at ``level``
    (``kong2022`` at L3, grown with BMI by :data:`FAT_BMI_GROWTH`; levels as the module says)."""
    if kind == "vat" and level[0] == "T":
        return 0.0
    a = FAT_L3_PUBLISHED[sex][kind] * math.exp(FAT_BMI_GROWTH[kind] * (bmi - FAT_BMI_REF))
    return a * (THORACIC_SAT_RATIO if level[0] == "T" else 1.0)


def published_ranges(
    sex: str, level: str, bmi: float | None = None, n_sd: float = 3.0
) -> dict[str, tuple[float, float]]:
    """Published ranges (cm²) for ``sex`` at ``level``: SMA mean ± ``n_sd`` SD; SAT and VAT the
    median at ``bmi`` (``None``: at either end of :data:`BMI_RANGE`) times ``exp(± n_sd`` residual
    SDs)."""
    st = SMA_PUBLISHED[sex][level]
    out = {"sma": (st.mean - n_sd * st.sd, st.mean + n_sd * st.sd)}
    lo_bmi, hi_bmi = (bmi, bmi) if bmi is not None else BMI_RANGE
    for kind in ("sat", "vat"):
        lo = fat_median(kind, sex, lo_bmi, level) * math.exp(-n_sd * FAT_RESIDUAL_SD)
        hi = fat_median(kind, sex, hi_bmi, level) * math.exp(n_sd * FAT_RESIDUAL_SD)
        out[kind] = (lo, hi)
    return out


def draw_composition(rng: np.random.Generator, level: str) -> CompositionParams:
    """Sex, BMI and the target areas of the centred ``level`` (see the module docstring)."""
    sex = "female" if rng.random() < 0.5 else "male"
    mu, sd = BMI_DRAW[sex]
    bmi = float(np.clip(rng.normal(mu, sd), *BMI_RANGE))
    st = SMA_PUBLISHED[sex][level]
    slope = SMA_BMI_SLOPE[sex] * st.mean
    resid = math.sqrt(max(st.sd**2 - (slope * sd) ** 2, (0.3 * st.sd) ** 2))
    sma = st.mean + slope * (bmi - SMA_BMI_REF) + resid * float(np.clip(rng.standard_normal(), -2.5, 2.5))
    sat = fat_median("sat", sex, bmi, level) * math.exp(
        FAT_RESIDUAL_SD * float(np.clip(rng.standard_normal(), -2.5, 2.5))
    )
    vat = fat_median("vat", sex, bmi, level) * math.exp(
        FAT_RESIDUAL_SD * float(np.clip(rng.standard_normal(), -2.5, 2.5))
    )
    other = OTHER_CM2[(level[0], sex)] * float(rng.uniform(0.9, 1.1))
    return CompositionParams(
        model="published",
        sex=sex,
        bmi=bmi,
        level=level,
        sma_cm2=float(sma),
        sat_cm2=float(sat),
        vat_cm2=float(vat),
        body_cm2=float(sma + sat + vat + other),
    )


# ----------------------------------------------------------------------------- measuring


def slice_areas(
    hu: np.ndarray, tissue: np.ndarray, regions: dict[str, np.ndarray], spacing_mm: float
) -> dict[str, float]:
    """Areas (cm²) of one axial slice with the standard windows (module docstring).

    Args:
        hu, tissue: ``[I, J]`` HU and tissue classes (:data:`xfit.phantoms.labels.TISSUE`).
        regions: ``[I, J]`` bool ``"subcutaneous"`` and ``"cavity"`` maps
            (:func:`xfit.phantoms.anatomy.render_torso`).
        spacing_mm: in-plane voxel size.

    Returns:
        ``sma``, ``sat``, ``vat`` and ``body`` (inside the skin) in cm².
    """
    px = spacing_mm**2 / 100.0
    fat = (hu >= FAT_HU[0]) & (hu <= FAT_HU[1])
    muscle = (tissue == TISSUE["muscle"]) & (hu >= MUSCLE_HU[0]) & (hu <= MUSCLE_HU[1])
    return dict(
        sma=float(muscle.sum() * px),
        sat=float((fat & regions["subcutaneous"]).sum() * px),
        vat=float((fat & regions["cavity"]).sum() * px),
        body=float((tissue != TISSUE["air"]).sum() * px),
    )


def _slab_areas(p: PhantomParams, lay: dict, spacing_mm: float = 2.0) -> dict[str, float]:
    """:func:`slice_areas` of the centred level's mid-vertebral slice, rendered on a thin slab
    (torso, discs, ribs and vertebrae; no scanner effects)."""
    from .anatomy import render_discs_and_canal, render_ribs, render_torso, render_vertebrae, ribcage
    from .render import Canvas, Grid

    sp, to = p.spine, p.torso
    cage = ribcage(sp, lay, to)
    half = max(to.half_width, to.half_depth) + 20.0
    n = int(math.ceil(2 * half / spacing_mm)) | 1
    c = lay[sp.centre_level]["c"]
    grid = Grid((n, n, 1), spacing_mm, (0.0, cage["y_post_skin"] + to.half_depth, float(c[2])))
    cv = Canvas(grid)
    reg: dict[str, np.ndarray] = {}
    render_torso(cv, sp, lay, cage, to, p.seed, regions=reg)
    render_discs_and_canal(cv, sp, lay)
    render_ribs(cv, sp, lay, cage, to, p.seed)
    render_vertebrae(cv, sp, lay, p.seed)
    return slice_areas(cv.hu()[:, :, 0], cv.tissue[:, :, 0], {k: v[:, :, 0] for k, v in reg.items()}, spacing_mm)


def _superellipse_cm2(a: float, b: float, pe: float) -> float:
    return 4 * a * b * math.gamma(1 + 1 / pe) ** 2 / math.gamma(1 + 2 / pe) / 100.0


def fit_torso(p: PhantomParams, lay: dict, comp: CompositionParams, iterations: int = 8) -> None:
    """Fit ``p.torso`` (in place) to ``comp``'s areas at the centred level.

    The outline (half-width and half-depth) is scaled so that the area inside it is
    ``comp.body_cm2``; then, on the slab of :func:`_slab_areas`, the subcutaneous fat thickness
    (``fat``), the wall-muscle thickness (``wall``) and, below the diaphragm, the visceral
    adiposity (``adiposity``) are updated ``iterations`` times towards the targets. The areas of the
    last slab are kept in ``comp.fitted``.
    """
    to = p.torso
    s = math.sqrt(comp.body_cm2 / _superellipse_cm2(to.half_width, to.half_depth, to.superellipse))
    to.half_width *= s
    to.half_depth *= s
    abdominal = comp.vat_cm2 > 0
    to.adiposity = float(np.clip((comp.bmi - 18.0) / 20.0, 0.0, 1.0))
    for _ in range(iterations):
        last = _slab_areas(p, lay)
        a, b = to.half_width, to.half_depth
        perimeter_cm = math.pi * math.sqrt(2 * (a * a + b * b)) / 10.0
        inner_cm = perimeter_cm - 2 * math.pi * (to.skin + to.fat) / 10.0
        to.fat = float(
            np.clip(to.fat + (comp.sat_cm2 - last["sat"]) / max(perimeter_cm, 1.0) * 10.0 * 0.8, 1.0, 0.45 * min(a, b))
        )
        to.wall = float(
            np.clip(to.wall + (comp.sma_cm2 - last["sma"]) / max(inner_cm, 1.0) * 10.0 * 0.8, 2.0, 0.3 * min(a, b))
        )
        if abdominal:
            to.adiposity = float(
                np.clip(to.adiposity + 0.8 * (comp.vat_cm2 - last["vat"]) / max(comp.vat_cm2, 30.0) * 0.5, 0.0, 1.0)
            )
    comp.fitted = _slab_areas(p, lay)


def apply_published(p: PhantomParams, rng: np.random.Generator) -> PhantomParams:
    """A copy of ``p`` with a body composition drawn from ``rng`` and its torso fitted to it."""
    from .posture import layout

    q = copy.deepcopy(p)
    sp = q.spine
    q.composition = draw_composition(rng, sp.centre_level)
    fit_torso(q, layout(sp.vertebrae, sp.discs, sp.posture, sp.centre_level), q.composition)
    return q


def composition_json(c: CompositionParams | None) -> dict[str, Any] | None:
    """The composition as the phantom's metadata records it (``None`` for the default model)."""
    if c is None:
        return None
    return dict(
        model=c.model,
        sex=c.sex,
        bmi=c.bmi,
        level=c.level,
        targets_cm2=dict(sma=c.sma_cm2, sat=c.sat_cm2, vat=c.vat_cm2, body=c.body_cm2),
        fitted_cm2=dict(c.fitted),
    )
