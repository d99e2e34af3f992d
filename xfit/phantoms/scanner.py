"""CT scanner effects, each documented and switchable: slice thickness, in-plane blur, noise, metal.

* **Slice thickness** 0.6-3 mm: a Gaussian blur along z of that FWHM (the reconstructed slice
  profile), and **in-plane blur** of 0.5-1.1 mm FWHM (reconstruction kernel and focal spot).
* **Noise** 5-30 HU with CT-like spatial correlation: white noise, hashed from world voxel
  positions, smoothed by a Gaussian of ``noise_corr_mm`` and rescaled to the drawn standard
  deviation. (Real CT noise has a band-pass power spectrum from the ramp filter; a Gaussian
  correlation is the documented simplification.)
* **Metal** in :data:`METAL_FRACTION` of the cases: titanium pedicle screws through both pedicles of
  two to four consecutive levels and the rods joining their heads, at :data:`METAL_HU` (the top of
  the usual 12-bit CT range). Streak artefacts are not simulated.

The blur and the noise filter are applied on a grid padded by :func:`margin_vox` voxels, so a crop
of a large phantom stays equal to the small phantom of the same seed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .fields import voxel_noise
from .params import ScannerParams, SpineParams
from .posture import SPINE_LEVELS
from .render import Canvas
from .sdf import ellcapsule, occupancy

FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))
METAL_FRACTION = 0.04
METAL_HU = 3071.0
NOISE_HU = (5.0, 30.0)
SLICE_THICKNESS_MM = (0.6, 3.0)
INPLANE_FWHM_MM = (0.5, 1.1)


def draw_scanner(rng: np.random.Generator, centre_level: str) -> ScannerParams:
    """Draw the scanner of one case."""
    metal = bool(rng.random() < METAL_FRACTION)
    i = SPINE_LEVELS.index(centre_level)
    n = int(rng.integers(2, 5))
    start = int(np.clip(i - int(rng.integers(0, n)), 0, len(SPINE_LEVELS) - 1 - n))
    return ScannerParams(
        slice_thickness_mm=float(rng.uniform(*SLICE_THICKNESS_MM)),
        inplane_fwhm_mm=float(rng.uniform(*INPLANE_FWHM_MM)),
        noise_hu=float(rng.uniform(*NOISE_HU)),
        noise_corr_mm=float(rng.uniform(0.5, 0.9)),
        metal=metal,
        metal_levels=tuple(SPINE_LEVELS[start : start + n]) if metal else (),
    )


def margin_vox(sc: ScannerParams, spacing: float) -> int:
    """Padding (voxels) the blur and the noise filter need for exact crops."""
    s = max(sc.slice_thickness_mm, sc.inplane_fwhm_mm) / FWHM
    return int(math.ceil(4.0 * max(s, sc.noise_corr_mm) / spacing)) + 1


def render_metal(cv: Canvas, sp: SpineParams, lay: dict, sc: ScannerParams) -> None:
    """Pedicle screws and rods (replace whatever is there; vertebra labels are kept)."""
    heads = {-1.0: [], 1.0: []}
    for lvl in sc.metal_levels:
        v, L = sp.vertebrae[lvl], lay[lvl]
        conv = math.tan(math.radians(max(v.ped_angle, 0.0)))
        for s in (-1.0, 1.0):
            x_entry = s * (v.cw / 2 + v.pw / 2 + v.pl * conv * 0.5)
            entry = np.array([x_entry, -v.b - v.pl - 4.0, v.hb_post - v.ph / 2 - 1.0])
            length = 0.75 * (2 * v.b + v.pl)
            dirn = np.array([-s * conv, 1.0, 0.0]) / math.hypot(conv, 1.0)
            tip = entry + length * dirn
            p0, p1 = L["c"] + L["R"] @ (entry - 6.0 * dirn), L["c"] + L["R"] @ tip
            heads[s].append(p0)
            _metal_capsule(cv, p0, p1, 3.0)
    for pts in heads.values():
        for a, b in zip(pts[:-1], pts[1:]):
            _metal_capsule(cv, a, b, 2.75)


def _metal_capsule(cv: Canvas, p0: np.ndarray, p1: np.ndarray, r: float) -> None:
    g = cv.grid
    sl = g.box(np.minimum(p0, p1) - r - 2, np.maximum(p0, p1) + r + 2)
    if sl is None:
        return
    d = ellcapsule(g.points(sl), p0, p1, np.cross(p1 - p0, [1.0, 0, 0]) + 1e-6, r, r)
    cv.overlay(sl, occupancy(d, g.spacing), METAL_HU, "metal")


def apply_blur(hu: np.ndarray, sc: ScannerParams, spacing: float) -> np.ndarray:
    """Slice-thickness (z) and in-plane (x, y) Gaussian blur of a HU volume."""
    sz = sc.slice_thickness_mm / FWHM / spacing
    sxy = sc.inplane_fwhm_mm / FWHM / spacing
    out = ndimage.gaussian_filter1d(hu, sz, axis=2, mode="nearest", truncate=4.0)
    for ax in (0, 1):
        out = ndimage.gaussian_filter1d(out, sxy, axis=ax, mode="nearest", truncate=4.0)
    return out


def correlated_noise(axes, spacing: float, sc: ScannerParams, key: int) -> np.ndarray:
    """Noise ``[I, J, K]`` of standard deviation ``sc.noise_hu`` with Gaussian correlation."""
    white = voxel_noise(axes, spacing, key)
    s = sc.noise_corr_mm / spacing
    out = ndimage.gaussian_filter(white, s, mode="nearest", truncate=4.0)
    delta = np.zeros(int(2 * math.ceil(4 * s) + 1), np.float64)
    delta[len(delta) // 2] = 1.0
    k = ndimage.gaussian_filter1d(delta, s, truncate=4.0)
    return out * np.float32(sc.noise_hu / float(np.sqrt((k**2).sum()) ** 3))
