"""Procedural spine phantoms: CT volumes in HU with a label map, deterministic per seed.

The phantom is a continuous model in world coordinates (RAS+ mm, ``ARCHITECTURE.md``): a curved
column of vertebrae (body with cortical shell and textured trabecular core, pedicles, laminae,
spinous, transverse and articular processes), intervertebral discs, the spinal canal, ribs for
thoracic levels and a torso (skin, subcutaneous fat, muscles, paraspinal muscles, lungs or
abdominal organs with bowel gas). The centred vertebra sits at the world origin: the midpoint of
its antero-posterior extent (body front to spinous tip) and the centre of its body height.

A grid only *samples* that model, so ``make_phantom(seed)`` (64^3 at 1.25 mm) is exactly the
central block of ``make_phantom(seed, fov_mm=320)``: all random draws (spine first, then torso,
then noise level) are made before and independent of the grid, textures are B-spline fields on a
world-aligned lattice and voxel noise is a hash of the voxel's index relative to the centre.

Labels (:data:`LABELS`): 0 background / soft tissue, 1 centred vertebra (whole), 2 other
vertebrae, 3 intervertebral discs, 4 spinal canal, 5 ribs, 6 air / gas (outside the body, lungs,
bowel gas).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError, OutputExistsError
from . import preview
from .io import atomic_write, write_nifti

#: Label values of the phantom label maps.
LABELS: dict[int, str] = {
    0: "background",
    1: "vertebra",
    2: "other_vertebrae",
    3: "disc",
    4: "spinal_canal",
    5: "ribs",
    6: "air",
}

LEVELS = ("lumbar", "thoracic")
#: Vertebral level names, cranial to caudal; index 0 is T1 (negative indices are cervical).
LEVEL_NAMES = tuple([f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
                    + [f"S{i}" for i in range(1, 6)])
_CENTRE_LEVELS = {"lumbar": ("L2", "L3", "L4"), "thoracic": ("T8", "T9", "T10", "T11")}
_N_SIDE = 7  # vertebrae drawn above and below the centred one (always, whatever the grid)
BONE_WINDOW = (-450.0, 1250.0)


@dataclass
class Phantom:
    """A procedural CT phantom.

    Attributes:
        hu: ``[I, J, K]`` float32 CT numbers (HU).
        labels: ``[I, J, K]`` int16 label map (:data:`LABELS`).
        affine: ``[4, 4]`` float64 voxel index -> world RAS+ mm; the grid centre is the origin.
        params: JSON-serializable drawn parameters (``params["vertebra"]`` summarises label 1).
    """

    hu: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def spacing_mm(self) -> float:
        """Isotropic voxel size (mm)."""
        return float(self.affine[0, 0])


# ----------------------------------------------------------------------------- small helpers


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent generator ``stream`` of ``seed`` (0 spine, 1 torso, 2 noise)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream]))


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _rot(axis: int, deg: float) -> np.ndarray:
    """3x3 rotation by ``deg`` about the world axis ``axis`` (0 x, 1 y, 2 z)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _align_z(t: np.ndarray) -> np.ndarray:
    """Smallest rotation taking +z to the unit vector ``t``."""
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(z, t)
    c = float(z @ t)
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def _hash_u32(x: np.ndarray) -> np.ndarray:
    """lowbias32 integer hash of a uint32 array."""
    x = np.array(x, dtype=np.uint32, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    return x


def _u32(a: np.ndarray | int) -> np.ndarray:
    return (np.asarray(a, dtype=np.int64) % (1 << 32)).astype(np.uint32)


def _lattice_values(mx: np.ndarray, my: np.ndarray, mz: np.ndarray, key: int) -> np.ndarray:
    """Unit-variance pseudo-random values ``[Mx, My, Mz]`` at integer lattice nodes."""
    h = (_u32(mx)[:, None, None] * np.uint32(0x9E3779B1)
         + _u32(my)[None, :, None] * np.uint32(0x85EBCA77)
         + _u32(mz)[None, None, :] * np.uint32(0xC2B2AE3D)
         + _hash_u32(_u32(key)))
    h = _hash_u32(_hash_u32(h))
    return ((h.astype(np.float64) / 4294967296.0) * 2.0 - 1.0).astype(np.float32) * np.float32(
        math.sqrt(3.0))


def _bspline_weights(coords: np.ndarray, cell_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Cubic B-spline weights ``[n, M]`` of world coordinates on lattice nodes ``m * cell_mm``."""
    u = coords / cell_mm
    ms = np.arange(math.floor(u.min()) - 2, math.floor(u.max()) + 3)
    t = np.abs(u[:, None] - ms[None, :])
    w = np.where(t < 1, 2 / 3 - t**2 + t**3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))
    return ms, w.astype(np.float32)


def _smooth_field(xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, key: int,
                  cell_mm: float) -> np.ndarray:
    """Smooth zero-mean, ~unit-std random field ``[I, J, K]`` sampled at world axes (mm).

    The field lives on a world-aligned lattice, so any grid sees the same values.
    """
    mx, wx = _bspline_weights(xs, cell_mm)
    my, wy = _bspline_weights(ys, cell_mm)
    mz, wz = _bspline_weights(zs, cell_mm)
    v = _lattice_values(mx, my, mz, key)
    f = v @ wz.T  # [Mx, My, K]
    f = np.einsum("jb,abk->ajk", wy, f, optimize=True)  # [Mx, J, K]
    f = np.tensordot(wx, f, axes=(1, 0))  # [I, J, K]
    return f * np.float32(1.0 / 0.479**1.5)


def _voxel_noise(n: int, key: int) -> np.ndarray:
    """Approximately standard normal white noise ``[n, n, n]`` keyed by the centred voxel index."""
    g = 2 * np.arange(n, dtype=np.int64) - (n - 1)  # same value for the same world position
    h = (_u32(g)[:, None, None] * np.uint32(0x9E3779B1)
         + _u32(g)[None, :, None] * np.uint32(0x85EBCA77)
         + _u32(g)[None, None, :] * np.uint32(0xC2B2AE3D)
         + _hash_u32(_u32(key)))
    h = _hash_u32(h)
    s = (h & np.uint32(255)).astype(np.float32)
    for sh in (8, 16, 24):
        s += ((h >> np.uint32(sh)) & np.uint32(255)).astype(np.float32)
    return (s - np.float32(510.0)) * np.float32(1.0 / 147.8)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum (fillet radius ~``k`` mm) of two signed distances."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _ellcapsule(q: Sequence[np.ndarray], p0: np.ndarray, p1: np.ndarray, n1: np.ndarray,
                r1: float, r2: float) -> np.ndarray:
    """Approximate signed distance (mm) to a capsule with elliptic cross-section.

    Args:
        q: three arrays (same shape) of point coordinates (mm).
        p0, p1: ``[3]`` segment ends. n1: ``[3]`` direction of the ``r1`` half-axis (made
            perpendicular to the segment); ``r2`` lies along ``(p1 - p0) x n1``.
    Returns:
        Signed distance, negative inside.
    """
    d = np.asarray(p1, float) - np.asarray(p0, float)
    length = float(np.linalg.norm(d))
    e = d / max(length, 1e-9)
    n1 = np.asarray(n1, float) - float(np.dot(n1, e)) * e
    n1 /= max(float(np.linalg.norm(n1)), 1e-9)
    n2 = np.cross(e, n1)
    rel = [q[i] - np.float32(p0[i]) for i in range(3)]
    t = sum(rel[i] * np.float32(e[i]) for i in range(3))
    ex = t - np.clip(t, 0.0, length)
    a = sum(rel[i] * np.float32(n1[i]) for i in range(3))
    b = sum(rel[i] * np.float32(n2[i]) for i in range(3))
    rc = min(r1, r2)
    k0 = np.sqrt((ex / rc) ** 2 + (a / r1) ** 2 + (b / r2) ** 2)
    k1 = np.sqrt((ex / rc**2) ** 2 + (a / r1**2) ** 2 + (b / r2**2) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _ellipse2d(u: np.ndarray, v: np.ndarray, a: np.ndarray | float,
               b: np.ndarray | float) -> np.ndarray:
    """Approximate signed distance (mm) to the ellipse ``(u/a)^2 + (v/b)^2 = 1``."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    k1 = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _occupancy(sdf: np.ndarray, spacing: float) -> np.ndarray:
    """Partial-volume fraction in [0, 1] of a signed distance (one-voxel linear ramp)."""
    return np.clip(0.5 - sdf / spacing, 0.0, 1.0)


# ----------------------------------------------------------------------------- anatomy draws


def _region(idx: int) -> str:
    if idx < 0:
        return "C"
    return LEVEL_NAMES[min(idx, len(LEVEL_NAMES) - 1)][0]


def _level_name(idx: int) -> str:
    if idx < 0:
        return f"C{7 + idx + 1}"
    return LEVEL_NAMES[min(idx, len(LEVEL_NAMES) - 1)]


def _draw_vertebra(rng: np.random.Generator, idx: int, size: float, deg: float,
                   density: float) -> dict[str, Any]:
    """Draw one vertebra's shape (mm, degrees, HU); ``idx`` indexes :data:`LEVEL_NAMES`."""
    reg = _region(idx)
    j = lambda: _u(rng, 0.97, 1.03)  # noqa: E731  per-vertebra jitter
    v: dict[str, Any] = {"level": _level_name(idx), "region": reg}
    if reg == "L":
        p = idx - 12
        width = [60.0, 64.0, 68.0, 65.0, 66.0][p]
        depth = [66.0, 68.0, 70.0, 70.0, 68.0][p]
        v.update(a=(21.0 + 1.0 * p), b=(15.0 + 0.5 * p), hb=[12.3, 12.7, 13.0, 13.2, 13.0][p],
                 cw=21.0 + 0.6 * p, cd=15.0, pw=8.5 + 1.3 * p, ph=14.0, lt=7.5, lh=20.0,
                 drop_l=4.0, tp_back=3.0 + 0.5 * p, tp_up=0.0, tp_r=(4.0, 5.5),
                 sp_ang=_u(rng, 5, 15), sp_t=7.0, sp_h=15.0 - 0.5 * p, sap_h=8.0, iap_h=7.0)
    elif reg in ("T", "C"):
        p = max(idx, 0)
        f = 0.9 if reg == "C" else 1.0
        width = (68.0 - 1.2 * p) * f
        depth = (62.0 + 0.5 * p) * f
        ang = 30.0 + 28.0 * math.sin(math.pi * min(p, 11) / 11.0)
        v.update(a=(12.0 + 0.75 * p) * f, b=(9.0 + 0.65 * p) * f, hb=(8.8 + 0.35 * p) * f,
                 cw=16.5, cd=14.5, pw=6.0 + 0.35 * p, ph=11.0 + 0.4 * p, lt=7.0, lh=15.0,
                 drop_l=4.0, tp_back=12.0 - 0.5 * p, tp_up=3.0, tp_r=(5.0, 5.5),
                 sp_ang=ang + _u(rng, -5, 5), sp_t=6.0, sp_h=8.5, sap_h=6.0, iap_h=6.0)
    else:  # sacrum: fused bodies, wide alae, no real spinous process
        p = idx - 17
        width = max(100.0 - 18.0 * p, 40.0)
        depth = max(62.0 - 6.0 * p, 40.0)
        v.update(a=max(25.0 - 4.0 * p, 10.0), b=max(17.0 - 2.5 * p, 8.0),
                 hb=max(10.5 - 1.5 * p, 5.0), cw=max(18.0 - 2.0 * p, 8.0), cd=10.0,
                 pw=10.0, ph=12.0, lt=5.0, lh=14.0, drop_l=2.0, tp_back=-4.0, tp_up=0.0,
                 tp_r=(8.0, 10.0), sp_ang=30.0, sp_t=5.0, sp_h=8.0, sap_h=6.0 if p == 0 else 0.0,
                 iap_h=0.0)
    for key in ("a", "b", "hb", "cw", "pw", "ph"):
        v[key] = float(v[key] * size * j())
    v["width"] = float(width * size * j())
    v["depth"] = float(depth * size * j())
    v["waist"] = _u(rng, 0.03, 0.09)
    v["cup"] = _u(rng, 0.6, 1.5)
    v["osteo"] = float(deg * _u(rng, 0.0, 4.0))
    v["axial_rot"] = _u(rng, -1.5, 1.5)
    v["cort_hu"] = _u(rng, 850.0, 1300.0)
    v["cort_t"] = _u(rng, 1.4, 2.2)
    v["trab_hu"] = float(density + _u(rng, -8.0, 8.0))
    v["tex_hu"] = _u(rng, 25.0, 50.0)
    # pedicle length and spinous length follow from the drawn total depth
    v["pl"] = float(0.55 * v["cd"] + 2.0)
    ca = math.cos(math.radians(v["sp_ang"]))
    rest = v["depth"] - 2 * v["b"] - v["cd"] - v["lt"] / 2 - v["osteo"] * 0.5
    v["sp_len"] = float(max(rest / ca - v["sp_t"] / 2, 4.0))
    return v


def _disc_height(rng: np.random.Generator, idx_lower: int, deg: float) -> float:
    """Height (mm) of the disc above vertebra ``idx_lower`` (0 for fused sacral levels)."""
    reg = _region(idx_lower)
    if reg == "S":
        return 9.0 * (1 - 0.5 * deg) if idx_lower == 17 else 0.6
    if reg == "L":
        base = [9.0, 10.0, 11.0, 11.5, 11.0][idx_lower - 12]
    else:
        base = 4.0 + 0.18 * max(idx_lower, 0)
    return float(base * _u(rng, 0.9, 1.1) * (1.0 - 0.55 * deg * _u(rng, 0.4, 1.0)))


def _draw_spine(rng: np.random.Generator, level: str | None) -> dict[str, Any]:
    """All spine draws (made first, whatever the grid)."""
    u_level = rng.random()
    if level is None:
        level = "lumbar" if u_level < 0.5 else "thoracic"
    names = _CENTRE_LEVELS[level]
    centre_name = names[int(rng.integers(len(names)))]
    c_idx = LEVEL_NAMES.index(centre_name)
    size = _u(rng, 0.95, 1.06)
    deg = float(rng.beta(1.2, 3.0))
    density = max(_u(rng, 195.0, 280.0) - 60.0 * deg, 165.0)
    if level == "lumbar":
        kappa = -1.0 / _u(rng, 250.0, 450.0)  # lordosis: the centre is most anterior
    else:
        kappa = 1.0 / _u(rng, 300.0, 600.0)  # kyphosis: the centre is most posterior
    scol_amp = float(min(abs(rng.normal(0.0, 4.0)), 10.0))
    scol_len = _u(rng, 250.0, 450.0)
    scol_phase = _u(rng, 0.0, 2 * math.pi)
    rot = [_u(rng, -4.0, 4.0), _u(rng, -4.0, 4.0), _u(rng, -5.0, 5.0)]
    verts = {}
    for n in range(-_N_SIDE, _N_SIDE + 1):  # n > 0 is superior
        verts[n] = _draw_vertebra(rng, c_idx - n, size, deg, density)
    discs = {n: _disc_height(rng, c_idx - n, deg) for n in range(-_N_SIDE, _N_SIDE)}
    disc_hu = _u(rng, 80.0, 100.0)
    canal_hu = _u(rng, 5.0, 20.0)
    return dict(level=level, centre_level=centre_name, centre_index=c_idx, size=size,
                degeneration=deg, trabecular_hu=density, kappa=kappa, scoliosis_amp=scol_amp,
                scoliosis_len=scol_len, scoliosis_phase=scol_phase, rotation_deg=rot,
                vertebrae=verts, discs=discs, disc_hu=disc_hu, canal_hu=canal_hu)


def _draw_torso(rng: np.random.Generator) -> dict[str, Any]:
    """Torso draws (made after the spine draws)."""
    adip = float(rng.beta(2.0, 2.5))
    t = dict(adiposity=adip, half_width=_u(rng, 125.0, 152.0), half_depth=_u(rng, 88.0, 108.0),
             superellipse=_u(rng, 2.1, 2.6), skin=_u(rng, 1.5, 2.5),
             fat=5.0 + 25.0 * adip, wall=_u(rng, 8.0, 14.0), post_muscle=_u(rng, 6.0, 14.0),
             muscle_hu=_u(rng, 45.0, 58.0), fat_hu=_u(rng, -110.0, -80.0),
             organ_hu=_u(rng, 35.0, 50.0), liver_hu=_u(rng, 55.0, 65.0),
             lung_hu=_u(rng, -870.0, -800.0), rib_drop=_u(rng, 30.0, 50.0),
             aorta_r=_u(rng, 10.0, 13.0), dome=_u(rng, 25.0, 40.0))
    t["gas"] = [[_u(rng, -1, 1), _u(rng, 0, 1), _u(rng, 0, 1), _u(rng, 5.0, 16.0)]
                for _ in range(int(rng.integers(12, 30)))]
    return t


# ----------------------------------------------------------------------------- spine layout


def _layout(sp: dict[str, Any]) -> dict[int, dict[str, np.ndarray]]:
    """World pose of every vertebra: ``R`` (local -> world), body centre ``c``, AP-centre ``p``."""
    verts, discs = sp["vertebrae"], sp["discs"]
    s = {0: 0.0}
    for n in range(1, _N_SIDE + 1):
        s[n] = s[n - 1] + verts[n - 1]["hb"] + discs[n - 1] + verts[n]["hb"]
        s[-n] = s[-n + 1] - verts[-n + 1]["hb"] - discs[-n] - verts[-n]["hb"]
    k, amp, lam, ph = sp["kappa"], sp["scoliosis_amp"], sp["scoliosis_len"], sp["scoliosis_phase"]
    w = 2 * math.pi / lam
    r_g = _rot(2, sp["rotation_deg"][2]) @ _rot(1, sp["rotation_deg"][1]) @ _rot(
        0, sp["rotation_deg"][0])
    out = {}
    for n, z in s.items():
        x = amp * (math.sin(w * z + ph) - math.sin(ph))
        y = k * z * z / 2.0
        t = np.array([amp * w * math.cos(w * z + ph), k * z, 1.0])
        t /= np.linalg.norm(t)
        v = verts[n]
        r = r_g @ _align_z(t) @ _rot(2, v["axial_rot"] + 0.6 * amp * w * math.cos(w * z + ph)
                                     * 57.3 / 4)
        p = r_g @ np.array([x, y, z])
        post = v["depth"] - 2 * v["b"] - v["osteo"] * 0.5 + v["b"]  # body centre -> spinous tip
        y_off = (post - v["b"] - v["osteo"] * 0.5) / 2.0
        out[n] = dict(R=r, p=p, c=p + r @ np.array([0.0, y_off, 0.0]), y_off=y_off)
    return out


def _vertebra_sdf(q: Sequence[np.ndarray], v: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (mm) of a whole vertebra at local points ``q`` (body centre origin).

    Local axes: u (+x right), v (+y anterior), w (+z superior).

    Returns:
        ``(sdf, posterior)``: the distance and a 0/1 mask of the posterior elements' side.
    """
    u, vv, w = q
    a, b, hb = v["a"], v["b"], v["hb"]
    wn = np.clip(w / hb, -1.0, 1.0)
    scale = 1.0 - v["waist"] * (1.0 - wn**2)
    scale = scale + (v["osteo"] / a) * np.exp(-(((np.abs(w) - hb) / 1.8) ** 2))
    ae, be = a * scale, b * scale
    d2 = _ellipse2d(u, vv, ae, be)
    rk = 0.42 * a if v["region"] == "L" else 0.3 * a
    notch = rk - np.sqrt(u**2 + (vv + be + rk * 0.55) ** 2)
    d2 = np.maximum(d2, notch)
    k0 = np.clip((u / ae) ** 2 + (vv / be) ** 2, 0.0, 1.0)
    dz = np.abs(w) - (hb - v["cup"] * (1.0 - k0))
    rr = 1.5
    q1, q2 = d2 + rr, dz + rr
    body = np.sqrt(np.maximum(q1, 0) ** 2 + np.maximum(q2, 0) ** 2) + np.minimum(
        np.maximum(q1, q2), 0) - rr
    # posterior elements
    cw, cd, pw, ph, pl = v["cw"], v["cd"], v["pw"], v["ph"], v["pl"]
    lt, lh = v["lt"], v["lh"]
    ex = np.array([1.0, 0, 0])
    ey = np.array([0, 1.0, 0])
    ez = np.array([0, 0, 1.0])
    wp = hb - ph / 2 - 1.0
    wl = wp - 2.0
    vj = -b - cd - lt / 2
    post = None
    for s in (-1.0, 1.0):
        up = s * (cw / 2 + pw / 2)
        parts = [
            _ellcapsule(q, np.array([up, -b + 5, wp]), np.array([up, -b - pl, wp]), ex,
                        pw / 2, ph / 2),
            _ellcapsule(q, np.array([up, -b - pl, wl]), np.array([0, vj, wl - v["drop_l"]]), ez,
                        lh / 2, lt / 2),
        ]
        if v["width"] > 2 * (cw / 2 + pw):
            r1, r2 = v["tp_r"]
            tip = np.array([s * (v["width"] / 2 - min(r1, r2)), -b - pl - v["tp_back"],
                            wp + v["tp_up"]])
            parts.append(_ellcapsule(q, np.array([s * (cw / 2 + pw * 0.7), -b - pl * 0.9, wp]),
                                     tip, ey, r1, r2))
        if v["sap_h"] > 0:
            parts.append(_ellcapsule(q, np.array([s * (cw / 2 + pw * 0.6), -b - pl - 1, wp]),
                                     np.array([s * (cw / 2 + pw * 0.6 + 1), -b - pl - 4,
                                               hb + v["sap_h"]]), ex, 3.2, 4.5))
        if v["iap_h"] > 0:
            parts.append(_ellcapsule(q, np.array([s * (cw / 2 - 1.0), vj + 2, wl - 3]),
                                     np.array([s * (cw / 2 - 2.0), vj + 1, -hb - v["iap_h"]]),
                                     ex, 3.2, 4.5))
        for part in parts:
            post = part if post is None else np.minimum(post, part)
    ang = math.radians(v["sp_ang"])
    j0 = np.array([0.0, vj + 1.0, wl - v["drop_l"]])
    j1 = j0 + v["sp_len"] * np.array([0.0, -math.cos(ang), -math.sin(ang)])
    spin = _ellcapsule(q, j0, j1, ex, v["sp_t"] / 2, v["sp_h"] / 2)
    post = np.minimum(post, spin)
    return _smin(body, post, 2.0), (post < body).astype(np.float32)


def _local_box(v: dict[str, Any]) -> np.ndarray:
    """``[8, 3]`` corners of a local box holding the vertebra (body centre origin)."""
    hw = v["width"] / 2 + 4
    ang = math.radians(v["sp_ang"])
    back = v["b"] + v["cd"] + v["lt"] + (v["sp_len"] + v["sp_t"]) * math.cos(ang) + 4
    low = min(-v["hb"] - v["iap_h"], -v["hb"] - v["sp_len"] * math.sin(ang)) - v["sp_h"] - 4
    high = v["hb"] + max(v["sap_h"], 0) + 6
    return np.array([[x, y, z] for x in (-hw, hw) for y in (-back, v["b"] + 8)
                     for z in (low, high)])


# ----------------------------------------------------------------------------- rendering


class _Grid:
    """A cubic grid of ``n`` voxels of ``spacing`` mm centred on the world origin."""

    def __init__(self, n: int, spacing: float):
        self.n, self.spacing = n, spacing
        self.axis = ((np.arange(n) - (n - 1) / 2.0) * spacing).astype(np.float32)

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices covering the world box ``[lo, hi]`` (mm), or None when outside."""
        out = []
        for d in range(3):
            i0 = max(int(math.floor(lo[d] / self.spacing + (self.n - 1) / 2.0)), 0)
            i1 = min(int(math.ceil(hi[d] / self.spacing + (self.n - 1) / 2.0)) + 1, self.n)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)

    def points(self, sl: tuple[slice, slice, slice]) -> list[np.ndarray]:
        """World coordinates (broadcastable [i,1,1], [1,j,1], [1,1,k]) of a box of the grid."""
        x = self.axis[sl[0]][:, None, None]
        y = self.axis[sl[1]][None, :, None]
        z = self.axis[sl[2]][None, None, :]
        return [x, y, z]


def _to_local(pts: list[np.ndarray], c: np.ndarray, r: np.ndarray) -> list[np.ndarray]:
    """Full-size local coordinates ``R^T (p - c)`` of broadcastable world points."""
    d = [pts[i] - np.float32(c[i]) for i in range(3)]
    return [(d[0] * np.float32(r[0, m]) + d[1] * np.float32(r[1, m]) + d[2] * np.float32(r[2, m]))
            for m in range(3)]


class _Canvas:
    """Accumulates tissue HU, bone (occupancy, HU) and labels on a grid."""

    def __init__(self, grid: _Grid):
        n = grid.n
        self.grid = grid
        self.tissue = np.zeros((n, n, n), np.float32)
        self.labels = np.zeros((n, n, n), np.int16)
        self.bone_occ = np.zeros((n, n, n), np.float32)
        self.bone_hu = np.zeros((n, n, n), np.float32)

    def soft(self, sl, occ: np.ndarray, hu: np.ndarray | float, label: int | None) -> None:
        """Blend a soft-tissue structure of occupancy ``occ`` into the tissue map."""
        t = self.tissue[sl]
        t += occ * (np.asarray(hu, np.float32) - t)
        if label is not None:
            lab = self.labels[sl]
            lab[occ >= 0.5] = label

    def bone(self, sl, occ: np.ndarray, hu: np.ndarray, label: int) -> None:
        """Composite a bone of occupancy ``occ`` and HU ``hu`` (larger occupancy wins)."""
        bo, bh = self.bone_occ[sl], self.bone_hu[sl]
        m = occ > bo
        bh[m] = hu[m]
        bo[m] = occ[m]
        self.labels[sl][occ >= 0.5] = label

    def hu(self) -> np.ndarray:
        return self.bone_occ * self.bone_hu + (1.0 - self.bone_occ) * self.tissue


def _bone_hu(sdf: np.ndarray, pts: list[np.ndarray], trab: float | np.ndarray, cort: float, cort_t: float,
             tex: float, key: int, spacing: float) -> np.ndarray:
    """HU of bone: cortical shell of ``cort_t`` mm over a textured trabecular core."""
    shell = np.clip((cort_t + sdf) / spacing + 0.5, 0.0, 1.0)
    field_ = _smooth_field(pts[0].ravel(), pts[1].ravel(), pts[2].ravel(), key, 1.6)
    core = trab + tex * field_
    return (core + (cort - core) * shell).astype(np.float32)


def _render_spine(cv: _Canvas, sp: dict[str, Any], lay: dict, seed: int) -> None:
    """Soft parts of the spine: intervertebral discs (label 3) and the spinal canal (label 4)."""
    g, verts = cv.grid, sp["vertebrae"]
    # discs
    for n in range(-_N_SIDE, _N_SIDE):
        lo_v, hi_v = verts[n], verts[n + 1]
        h = sp["discs"][n]
        if h < 1.0:
            continue
        e0 = lay[n]["c"] + lay[n]["R"] @ np.array([0, 0, lo_v["hb"]])
        e1 = lay[n + 1]["c"] - lay[n + 1]["R"] @ np.array([0, 0, hi_v["hb"]])
        c = (e0 + e1) / 2
        a = (lo_v["a"] + hi_v["a"]) / 2 + 0.8
        b = (lo_v["b"] + hi_v["b"]) / 2 + 0.8
        rad = math.hypot(a, b) + 4
        sl = g.box(c - rad, c + rad)
        if sl is None:
            continue
        u, vv, w = _to_local(g.points(sl), c, lay[n]["R"])
        d2 = _ellipse2d(u, vv, a, b)
        rk = 0.42 * a if lo_v["region"] == "L" else 0.3 * a
        d2 = np.maximum(d2, rk - np.sqrt(u**2 + (vv + b + rk * 0.55) ** 2))
        d = np.maximum(d2, np.abs(w) - (h / 2 + 3.5))
        nucleus = np.clip(1.0 - ((u / (0.5 * a)) ** 2 + (vv / (0.5 * b)) ** 2), 0, 1)
        cv.soft(sl, _occupancy(d, g.spacing), sp["disc_hu"] - 8.0 * nucleus, 3)
    # canal: elliptic cylinder behind each body, reaching into the neighbouring discs
    for n in range(-_N_SIDE, _N_SIDE + 1):
        v, L = verts[n], lay[n]
        reach = v["hb"] + 0.5 * max(sp["discs"].get(n, 0), sp["discs"].get(n - 1, 0)) + 3.0
        cc = L["c"] + L["R"] @ np.array([0.0, -v["b"] - v["cd"] / 2, 0.0])
        rad = math.hypot(reach, v["cw"])
        sl = g.box(cc - rad, cc + rad)
        if sl is None:
            continue
        u, vv, w = _to_local(g.points(sl), cc, L["R"])
        d = np.maximum(_ellipse2d(u, vv, v["cw"] / 2 + 1.0, v["cd"] / 2 + 1.0), np.abs(w) - reach)
        hu = np.float32(sp["canal_hu"])
        if v["region"] in ("T", "C"):  # spinal cord
            cord = _occupancy(_ellipse2d(u, vv - 1.0, 4.5, 3.5), g.spacing)
            hu = hu + (35.0 - hu) * cord
        cv.soft(sl, _occupancy(d, g.spacing), hu, 4)


def _render_vertebrae(cv: _Canvas, sp: dict[str, Any], lay: dict, seed: int) -> None:
    """Vertebrae as bone: label 2, then the centred vertebra last so that label 1 is whole."""
    g, verts = cv.grid, sp["vertebrae"]
    for n in sorted(verts, key=lambda m: (m == 0, abs(m))):
        v, L = verts[n], lay[n]
        corners = (L["R"] @ _local_box(v).T).T + L["c"]
        sl = g.box(corners.min(0), corners.max(0))
        if sl is None:
            continue
        pts = g.points(sl)
        sdf, posterior = _vertebra_sdf(_to_local(pts, L["c"], L["R"]), v)
        occ = _occupancy(sdf, g.spacing)
        if not np.any(occ > 0):
            continue
        trab = v["trab_hu"] + np.float32(330.0) * posterior  # thin, dense posterior elements
        hu = _bone_hu(sdf, pts, trab, v["cort_hu"], v["cort_t"], v["tex_hu"],
                      seed * 31 + n + 1000, g.spacing)
        cv.bone(sl, occ, hu, 1 if n == 0 else 2)


def _spine_line(lay: dict, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x(z), y(z) (mm) of the spine's AP-centre line, interpolated between vertebrae."""
    ns = sorted(lay)
    pz = np.array([lay[n]["p"][2] for n in ns])
    px = np.array([lay[n]["p"][0] for n in ns])
    py = np.array([lay[n]["p"][1] for n in ns])
    return (np.interp(z, pz, px).astype(np.float32), np.interp(z, pz, py).astype(np.float32))


def _ribcage(sp: dict[str, Any], to: dict[str, Any]) -> dict[str, float]:
    """Hemithorax ellipse (relative to the spine line) shared by ribs and lungs."""
    v = sp["vertebrae"][0]
    y_off = _layout(sp)[0]["y_off"]
    y_tp = y_off - v["b"] - v["pl"] - 10.0
    cx = v["width"] / 2 + 28.0
    inner = to["skin"] + to["fat"] + to["wall"]
    y_post_skin = -v["depth"] / 2 - (to["skin"] + to["fat"] + to["post_muscle"])
    y_front = y_post_skin + 2 * to["half_depth"] - inner
    back = y_tp - 8.0
    b_ = (y_front - back) / 2
    return dict(cx=cx, cy=back + b_, A=to["half_width"] - inner - cx, B=b_,
                y_body=y_off, y_tp=y_tp)


def _rib_points(sp, lay, n: int, side: float, cage: dict, to: dict) -> np.ndarray:
    """``[P, 3]`` world polyline of one rib (head, neck, arc around the hemithorax)."""
    v, L = sp["vertebrae"][n], lay[n]
    head = L["c"] + L["R"] @ np.array([side * v["a"] * 0.85, -v["b"] * 0.45, v["hb"] * 0.85])
    neck = L["c"] + L["R"] @ np.array([side * (v["width"] / 2 - 4), -v["b"] - v["pl"]
                                       - v["tp_back"] + 5, v["hb"] - v["ph"] / 2 + 1])
    p_idx = sp["centre_index"] - n
    end = 70.0 if p_idx < 9 else (60.0 if p_idx < 10 else (10.0 if p_idx < 11 else -20.0))
    f = float(np.clip(1.0 - 0.25 * ((neck[2] + 60.0) / 160.0) ** 2, 0.65, 1.0)) if p_idx < 9 \
        else 1.0
    xs, ys = _spine_line(lay, np.array([neck[2]]))
    phis = np.linspace(-90.0, end, 14)
    t = (phis + 90.0) / 160.0
    arc = np.stack([xs[0] + side * (cage["cx"] + cage["A"] * f * np.cos(np.radians(phis))),
                    ys[0] + cage["cy"] + cage["B"] * f * np.sin(np.radians(phis)),
                    neck[2] + 4.0 * np.sin(np.pi * np.clip(t * 3, 0, 1)) - to["rib_drop"] * t**1.3],
                   axis=1)
    return np.vstack([head, neck, arc])


def _render_ribs(cv: _Canvas, sp, lay, cage, to, seed: int) -> None:
    """Ribs (label 5) of the thoracic vertebrae: chains of elliptic capsules."""
    g = cv.grid
    for n in sorted(sp["vertebrae"]):
        v = sp["vertebrae"][n]
        if v["region"] != "T":
            continue
        for side in (-1.0, 1.0):
            pts = _rib_points(sp, lay, n, side, cage, to)
            lo, hi = pts.min(0) - 8, pts.max(0) + 8
            sl = g.box(lo, hi)
            if sl is None:
                continue
            shape = tuple(s.stop - s.start for s in sl)
            sdf = np.full(shape, 1e3, np.float32)
            wp = g.points(sl)
            for i in range(len(pts) - 1):
                p0, p1 = pts[i], pts[i + 1]
                r1, r2 = (4.0, 4.0) if i == 0 else (3.0, 5.5)
                seg_sl = g.box(np.minimum(p0, p1) - 7, np.maximum(p0, p1) + 7)
                if seg_sl is None:
                    continue
                rel = tuple(slice(a.start - b.start, a.stop - b.start) for a, b in zip(seg_sl, sl))
                q = g.points(seg_sl)
                q = [np.broadcast_to(q[0], _shape_of(seg_sl)), q[1], q[2]]
                d = np.broadcast_to(
                    _ellcapsule(q, p0, p1, np.cross(p1 - p0, [0, 0, 1.0]) + 1e-6, r1, r2),
                    _shape_of(seg_sl))
                np.minimum(sdf[rel], d, out=sdf[rel])
            occ = _occupancy(sdf, g.spacing)
            if not np.any(occ > 0):
                continue
            hu = _bone_hu(sdf, wp, 220.0, 0.8 * v["cort_hu"], 1.3, 30.0,
                          seed * 37 + n * 2 + int(side > 0) + 5000, g.spacing)
            cv.bone(sl, occ, hu, 5)


def _shape_of(sl: tuple[slice, slice, slice]) -> tuple[int, int, int]:
    return tuple(s.stop - s.start for s in sl)  # type: ignore[return-value]


def _stack(m2: np.ndarray, sx: np.ndarray, sy: np.ndarray, pad: int, n: int) -> np.ndarray:
    """Stack a padded 2D map ``[n+2p, n+2p]`` into ``[n, n, n]``, slice ``k`` shifted by (sx, sy)."""
    out = np.empty((n, n, n), np.float32)
    m2 = np.broadcast_to(m2, (n + 2 * pad, n + 2 * pad))
    for k in range(n):
        out[:, :, k] = m2[pad - sx[k]: pad - sx[k] + n, pad - sy[k]: pad - sy[k] + n]
    return out


def _render_torso(cv: _Canvas, sp, lay, cage, to, seed: int) -> None:
    """Air, skin, fat, muscles, lungs or abdominal organs and gas, in the tissue map.

    Cross-sections are 2D maps relative to the spine line, shifted slice by slice (whole voxels);
    the diaphragm, kidneys, liver, psoas, visceral fat and bowel gas are 3D.
    """
    g = cv.grid
    n, h = g.n, g.spacing
    ax = g.axis
    z = ax[None, None, :]
    xs_line, ys_line = _spine_line(lay, ax)
    sx = np.round(xs_line / h).astype(int)
    sy = np.round(ys_line / h).astype(int)
    pad = int(max(np.abs(sx).max(), np.abs(sy).max())) + 1
    e = ((np.arange(n + 2 * pad) - pad - (n - 1) / 2.0) * h).astype(np.float32)
    x2, y2 = e[:, None], e[None, :]  # spine-relative coordinates of the padded 2D maps
    v0 = sp["vertebrae"][0]
    fat_hu, mus_hu = np.float32(to["fat_hu"]), np.float32(to["muscle_hu"])
    occ = lambda d: _occupancy(d, h)  # noqa: E731
    # body outline: superellipse; depth (mm) inside the skin
    y_post = -v0["depth"] / 2 - (to["skin"] + to["fat"] + to["post_muscle"])
    yc = np.float32(y_post + to["half_depth"])
    pe = to["superellipse"]
    ex, ey = np.abs(x2 / to["half_width"]), np.abs((y2 - yc) / to["half_depth"])
    r = (ex**pe + ey**pe) ** (1 / pe)
    grad = np.sqrt((ex ** (pe - 1) / to["half_width"]) ** 2
                   + (ey ** (pe - 1) / to["half_depth"]) ** 2) * np.maximum(r, 1e-3) ** (1 - pe)
    depth2 = ((1.0 - r) / np.maximum(grad, 1e-6)).astype(np.float32)
    sc2 = np.float32(to["fat"]) * (1.0 + 0.35 * np.clip((y2 - yc) / to["half_depth"], -1, 1))
    zero = np.zeros(n, int)
    depth = _stack(depth2, zero, sy, pad, n)
    fat_field = _smooth_field(ax, ax, ax, seed * 41 + 1, 12.0)
    t = cv.tissue
    t[...] = -1000.0
    cv.labels[...] = 6
    body = occ(-depth)
    t += body * np.float32(1030.0)
    cv.labels[body >= 0.5] = 0
    del body
    skin = np.float32(to["skin"])
    t += occ(skin - depth) * (fat_hu - 30.0)
    inner = depth - skin - _stack(sc2.astype(np.float32), zero, sy, pad, n) - 2.0 * fat_field
    del depth
    t += occ(-inner) * (mus_hu - fat_hu)
    cavity = occ(np.float32(to["wall"]) - inner)
    del inner
    # 2D cross-sections relative to the spine line
    a0, b0, yb = v0["a"], v0["b"], cage["y_body"]
    hx = (np.abs(x2) - cage["cx"]) / cage["A"]
    hy = (y2 - cage["cy"]) / cage["B"]
    rho2 = hx**2 + hy**2
    lvl = {sp["vertebrae"][m]["level"]: lay[m]["p"][2] for m in lay}
    far = -400.0 if sp["level"] == "thoracic" else 400.0
    z_t11, z_t12 = lvl.get("T11", far), lvl.get("T12", far)
    zdia2 = (np.float32(z_t11) + np.float32(to["dome"]) * np.clip(1.0 - rho2, 0, 1)
             + np.float32(8.0) * (x2 > 0)).astype(np.float32)
    hemi = (np.sqrt(rho2) - 1.0) * np.float32(min(cage["A"], cage["B"])) + 9.0
    med = _ellipse2d(x2 + 12.0, y2 - yb - b0 - 55.0, 48.0, 75.0)
    para = _ellipse2d(x2, y2 - yb, a0 + 7.0, b0 + 12.0)
    post_box = np.maximum(np.abs(x2) - v0["width"] / 2 - 6.0, y2 - cage["y_tp"] - 6.0)
    lung2 = occ(np.maximum(np.maximum(hemi, -med), np.maximum(-para, -post_box)))
    th2 = np.float32(40.0) + lung2 * np.float32(to["lung_hu"] - 40.0)
    ad = np.sqrt((x2 + a0 + 8.0) ** 2 + (y2 - yb - 4.0) ** 2) - to["aorta_r"]
    th2 += occ(ad) * (42.0 - th2)
    abd2 = np.full_like(th2, np.float32(to["organ_hu"]))
    abd2 += occ(_ellipse2d(x2, y2 - yb, a0 + 16.0, b0 + 16.0)) * (fat_hu - abd2)
    for cx_, cy_, rad, hu_ in ((-10.0, b0 + 14.0, to["aorta_r"], 42.0),
                               (22.0, b0 + 16.0, 11.0, 38.0)):
        abd2 += occ(np.sqrt((x2 - cx_) ** 2 + (y2 - yb - cy_) ** 2) - rad) * (hu_ - abd2)
    ps2 = occ(np.maximum(np.abs(x2) - v0["width"] / 2 - 22.0, y2 - cage["y_tp"] - 3.0))
    para_hu2 = mus_hu + (fat_hu - mus_hu) * occ(np.abs(np.abs(x2) - v0["width"] * 0.3) - 0.8) * 0.5
    # 3D: diaphragm, thorax and abdomen contents
    thorax = occ(_stack(zdia2, sx, sy, pad, n) - z)
    lung = _stack(lung2, sx, sy, pad, n) * thorax * cavity
    cv.labels[lung >= 0.5] = 6
    inside = _stack(th2, sx, sy, pad, n) + lung * 25.0 * fat_field
    del lung
    abd = _stack(abd2, sx, sy, pad, n)
    abd += np.clip((fat_field - (1.2 - 1.8 * to["adiposity"])) * 1.5, 0, 1) * 0.8 * (fat_hu - abd)
    abd += 6.0 * fat_field
    _abdomen_organs(abd, g, xs_line, ys_line, sp, lay, cage, to, z_t11, z_t12)
    inside += (1.0 - thorax) * (abd - inside)
    del abd
    inside += _stack(ps2, sx, sy, pad, n) * (_stack(para_hu2, sx, sy, pad, n) - inside)
    t += cavity * (inside - mus_hu)
    del inside
    # bowel gas in the anterior abdomen
    for gx_, gy_, gz_, rad in to["gas"]:
        c = np.array([gx_ * (to["half_width"] - 50.0), yb + b0 + 35.0 + gy_ * 70.0,
                      z_t12 - 60.0 - gz_ * 220.0])
        sl = g.box(c - rad - 2, c + rad + 2)
        if sl is None:
            continue
        p = g.points(sl)
        d = np.sqrt((p[0] - c[0]) ** 2 + (p[1] - c[1]) ** 2 + ((p[2] - c[2]) / 1.4) ** 2) - rad
        cv.soft(sl, occ(d) * cavity[sl] * (1.0 - thorax[sl]), -1000.0, 6)


def _abdomen_organs(abd: np.ndarray, g: _Grid, xs_line, ys_line, sp, lay, cage, to,
                    z_t11: float, z_t12: float) -> None:
    """Liver, kidneys in perirenal fat and psoas muscles, painted into ``abd`` in place."""
    h = g.spacing
    v0 = sp["vertebrae"][0]
    a0, yb = v0["a"], cage["y_body"]
    fat_hu, mus_hu = np.float32(to["fat_hu"]), np.float32(to["muscle_hu"])

    def local(lo, hi):
        sl = g.box(np.asarray(lo, float), np.asarray(hi, float))
        if sl is None:
            return None, None, None, None
        x, y, z = g.points(sl)
        xl = x - xs_line[sl[2]][None, None, :]
        yl = y - ys_line[sl[2]][None, None, :]
        return sl, xl, yl, z

    # liver: right upper quadrant under the diaphragm
    sl, xl, yl, z = local([-10.0, -200, z_t11 - 150.0], [200, 200, z_t11 + 45.0])
    if sl is not None:
        z_dome = np.float32(z_t11) + np.float32(to["dome"]) * 0.7
        d = np.maximum(np.maximum(-xl - 10.0, z - z_dome), z_t11 - 150.0 - z)
        m = _occupancy(d, h) * (yl > yb - 20.0)
        abd[sl] += m * (np.float32(to["liver_hu"]) - abd[sl])
    kid_z = z_t12 - 45.0
    for s in (-1.0, 1.0):
        c = np.array([s * (a0 + 42), yb - 8, kid_z - 10 * s])
        sl, xl, yl, z = local(c - [45, 40, 70], c + [45, 40, 70])
        if sl is None:
            continue
        kd = (np.sqrt(((xl - c[0]) / 26) ** 2 + ((yl - c[1]) / 22) ** 2
                      + ((z - c[2]) / 50) ** 2) - 1.0) * 22.0
        abd[sl] += _occupancy(kd - 9.0, h) * (fat_hu - abd[sl])
        abd[sl] += _occupancy(kd, h) * (32.0 - abd[sl])
    sl, xl, yl, z = local([-a0 - 70, -200, -1e4], [a0 + 70, 200, z_t12])
    if sl is not None:
        psoas_r = np.clip((z_t12 - z) / 6.0, 0, 24.0)
        for s in (-1.0, 1.0):
            pd = np.sqrt((xl - s * (a0 + 0.75 * psoas_r)) ** 2 + (yl - yb + 4) ** 2) - psoas_r
            abd[sl] += _occupancy(pd, h) * (mus_hu - abd[sl])


#: Grid centring choices of :func:`make_phantom`.
CENTRES = ("grid", "vertebra")

#: Extra voxels per side drawn before a vertebra-centred crop (the centred vertebra's centroid
#: lies within ~10 voxels of the spine's drawing centre at 1.25 mm).
CENTRE_MARGIN_VOX = 16


def make_phantom(seed: int, *, size: int = 64, spacing_mm: float = 1.25,
                 fov_mm: float | None = None, noise_hu: float | None = None,
                 level: str | None = None, centre: str = "grid") -> Phantom:
    """Draw a procedural spine CT phantom.

    Args:
        seed: random seed; everything is a function of it.
        size: voxels per axis of the default crop (``size * spacing_mm`` mm cube).
        spacing_mm: isotropic voxel size (mm).
        fov_mm: physical field of view (mm) for a large phantom with the whole torso; the grid
            then has ``round(fov_mm / spacing_mm)`` voxels per axis, nudged by one to the parity
            of ``size`` so that its central ``size^3`` block is exactly the crop of the same seed.
        noise_hu: standard deviation of white CT noise (HU); ``None`` draws one in [5, 20].
        level: ``"lumbar"``, ``"thoracic"`` or ``None`` (drawn).
        centre: ``"grid"`` (the spine's drawing centre) or ``"vertebra"``: the grid is moved so
            that its centre is the centroid of the centred vertebra (label 1), rounded to whole
            voxels exactly as the prior's training crops are cut
            (:func:`xfit.io.crop_centred`). This is where X-rays aimed at that vertebra have
            their isocentre, and what the shipped prior was trained on.

    Returns:
        :class:`Phantom` with ``hu`` / ``labels`` of shape ``[N, N, N]``; the grid centre is the
        world origin. With ``centre="vertebra"``, ``params["centre_shift_mm"]`` holds the shift
        from the drawing centre.

    Raises:
        InputError: bad size, spacing, field of view, level or centre.
    """
    if centre not in CENTRES:
        raise InputError(f"centre must be one of {CENTRES}, got {centre!r}")
    if centre == "vertebra":
        return _vertebra_centred(seed, size=size, spacing_mm=spacing_mm, fov_mm=fov_mm,
                                 noise_hu=noise_hu, level=level)
    if level is not None and level not in LEVELS:
        raise InputError(f"level must be one of {LEVELS} or None, got {level!r}")
    if int(size) < 8 or spacing_mm <= 0 or not math.isfinite(spacing_mm):
        raise InputError(f"need size >= 8 and spacing_mm > 0, got {size}, {spacing_mm}")
    if fov_mm is not None and not (fov_mm > 0 and math.isfinite(fov_mm)):
        raise InputError(f"fov_mm must be positive, got {fov_mm}")
    n = _grid_side(size, spacing_mm, fov_mm)
    if n > 640:
        raise InputError(f"grid of {n}^3 voxels is too large")
    sp = _draw_spine(_rng(seed, 0), level)
    to = _draw_torso(_rng(seed, 1))
    noise = _u(_rng(seed, 2), 5.0, 20.0) if noise_hu is None else float(noise_hu)
    if noise < 0:
        raise InputError(f"noise_hu must be >= 0, got {noise}")
    lay = _layout(sp)
    cage = _ribcage(sp, to)
    grid = _Grid(n, float(spacing_mm))
    cv = _Canvas(grid)
    _render_torso(cv, sp, lay, cage, to, seed)
    _render_spine(cv, sp, lay, seed)
    _render_ribs(cv, sp, lay, cage, to, seed)
    _render_vertebrae(cv, sp, lay, seed)
    hu = cv.hu()
    if noise > 0:
        hu += np.float32(noise) * _voxel_noise(n, seed * 7919 + 17)
    labels = cv.labels
    affine = _centred_affine(n, spacing_mm)
    params = _params_json(sp, to, lay, noise, n, spacing_mm, seed)
    return Phantom(hu=hu.astype(np.float32), labels=labels.astype(np.int16), affine=affine,
                   params=params)


def _grid_side(size: int, spacing_mm: float, fov_mm: float | None) -> int:
    """Voxels per axis: ``size``, or ``fov_mm / spacing_mm`` nudged to the parity of ``size``."""
    n = int(size)
    if fov_mm is None:
        return n
    k = int(round(fov_mm / spacing_mm))
    return max(k + ((k - n) % 2), 8)


def _centred_affine(n: int, spacing_mm: float) -> np.ndarray:
    """``[4, 4]`` voxel index -> world mm of an ``n^3`` grid whose centre is the origin."""
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0]).astype(np.float64)
    affine[:3, 3] = -(n - 1) / 2.0 * spacing_mm
    return affine


def _vertebra_centred(seed: int, *, size: int, spacing_mm: float, fov_mm: float | None,
                      noise_hu: float | None, level: str | None) -> Phantom:
    """:func:`make_phantom` on a grid centred on the centroid of label 1 (see ``centre``)."""
    from scipy import ndimage  # noqa: PLC0415

    from .io import crop_centred, crop_start  # noqa: PLC0415

    n = _grid_side(size, spacing_mm, fov_mm)  # the grid make_phantom would use
    m = CENTRE_MARGIN_VOX
    big = make_phantom(seed, size=size, spacing_mm=spacing_mm, fov_mm=(n + 2 * m) * spacing_mm,
                       noise_hu=noise_hu, level=level)
    if big.hu.shape[0] != n + 2 * m:
        raise InputError(f"internal: expected a {n + 2 * m}^3 grid, got {big.hu.shape}")
    sel = big.labels == 1
    centre_vox = ndimage.center_of_mass(sel) if sel.any() else [(n + 2 * m - 1) / 2] * 3
    hu = crop_centred(big.hu, centre_vox, n, -1000.0)
    labels = crop_centred(big.labels, centre_vox, n, 0)
    shift_vox = np.array(crop_start(centre_vox, n)) - m  # crop start in the unshifted n^3 grid
    affine = _centred_affine(n, spacing_mm)
    params = dict(big.params)
    params["shape"] = [n, n, n]
    params["centre"] = "vertebra"
    params["centre_shift_mm"] = [float(x) * spacing_mm for x in shift_vox]
    return Phantom(hu=hu, labels=labels, affine=affine, params=params)


def _params_json(sp, to, lay, noise, n, spacing, seed) -> dict:
    v0 = sp["vertebrae"][0]
    verts = {str(k): {kk: vv for kk, vv in v.items()} for k, v in sp["vertebrae"].items()}
    out = dict(seed=int(seed), shape=[n, n, n], spacing_mm=float(spacing), noise_hu=noise,
               spine={k: v for k, v in sp.items() if k not in ("vertebrae", "discs")},
               discs={str(k): v for k, v in sp["discs"].items()}, vertebrae=verts, torso=to,
               vertebra=dict(level=v0["level"], width_mm=v0["width"], depth_mm=v0["depth"],
                             body_height_mm=2 * v0["hb"], body_width_mm=2 * v0["a"],
                             body_depth_mm=2 * v0["b"],
                             body_centre_mm=[float(c) for c in lay[0]["c"]]))
    return json.loads(json.dumps(out, default=float))


# ----------------------------------------------------------------------------- previews and files


def _views(ph: Phantom) -> list[tuple[str, np.ndarray, tuple[float, float] | None]]:
    """Display images: axial/coronal/sagittal slices through the origin, AP and lateral DRRs.

    Axial: anterior up, patient's right on the left. Coronal and AP: superior up, right on the
    left. Sagittal and lateral: superior up, anterior on the right.
    """
    hu, c = ph.hu, ph.hu.shape[0] // 2
    yb = ph.params["vertebra"]["body_centre_mm"][1] - ph.params.get("centre_shift_mm", [0.0] * 3)[1]
    cj = int(np.clip(round(yb / ph.spacing_mm + (hu.shape[1] - 1) / 2), 0, hu.shape[1] - 1))
    return [("axial", preview.axial(hu, c), BONE_WINDOW),
            ("coronal", preview.coronal(hu, cj), BONE_WINDOW),
            ("sagittal", preview.sagittal(hu, c), BONE_WINDOW),
            ("AP DRR", preview.drr_ap(hu, ph.spacing_mm), None),
            ("lateral DRR", preview.drr_lat(hu, ph.spacing_mm), None)]


def montage(phantoms: Sequence[Phantom], path: str | Path, *, force: bool = True,
            titles: Sequence[str] | None = None) -> Path:
    """Write a PNG montage: one row per phantom (three slices in a bone window, AP/lateral DRR).

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false.
        InputError: no phantoms.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(phantoms) == 0:
        raise InputError("montage needs at least one phantom")
    rows = len(phantoms)
    fig, axes = plt.subplots(rows, 5, figsize=(12.5, 2.6 * rows), squeeze=False)
    for r, ph in enumerate(phantoms):
        for col, (name, img, win) in enumerate(_views(ph)):
            ax = axes[r, col]
            if win is None:
                lo, hi = np.percentile(img, [1, 99.8])
                win = (float(lo), float(hi))
            ax.imshow(img, cmap="gray", vmin=win[0], vmax=win[1], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
        lab = titles[r] if titles else f"seed {ph.params.get('seed')} {ph.params['vertebra']['level']}"
        axes[r, 0].set_ylabel(lab, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, force=force) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def write_phantoms(out_dir: str | Path, n: int, *, size: int = 64, spacing_mm: float = 1.25,
                   seed: int = 0, fov_mm: float | None = None, force: bool = False,
                   progress: bool = True, level: str | None = None,
                   noise_hu: float | None = None, n_montage: int = 4,
                   centre: str = "vertebra") -> list[Path]:
    """Write ``n`` phantoms as ``caseNNNN_ct.nii.gz`` / ``caseNNNN_seg.nii.gz`` / ``caseNNNN.json``.

    Case ``i`` uses seed ``seed + i``. A ``montage.png`` of the first ``n_montage`` cases is
    written too. ``centre`` as in :func:`make_phantom`; the default (``"vertebra"``) gives grids
    centred like the prior's training crops, so that training never pads with air.

    Returns:
        The written paths (CT, labels and JSON of each case, then the montage).

    Raises:
        OutputExistsError: an output exists and ``force`` is false (checked before writing).
        InputError: ``n < 1`` or bad phantom arguments.
    """
    from tqdm import tqdm

    if int(n) < 1:
        raise InputError(f"n must be >= 1, got {n}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is a file, not a folder")
    names = [(f"case{i:04d}_ct.nii.gz", f"case{i:04d}_seg.nii.gz", f"case{i:04d}.json")
             for i in range(n)]
    if not force:
        for f in [out / x for triple in names for x in triple] + [out / "montage.png"]:
            if f.exists():
                raise OutputExistsError(f"{f} exists; use --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    shown: list[Phantom] = []
    for i in tqdm(range(n), desc="phantoms", disable=not progress):
        ph = make_phantom(seed + i, size=size, spacing_mm=spacing_mm, fov_mm=fov_mm,
                          level=level, noise_hu=noise_hu, centre=centre)
        ct, seg, js = (out / x for x in names[i])
        written.append(write_nifti(ct, ph.hu, ph.affine, force=force))
        written.append(write_nifti(seg, ph.labels, ph.affine, force=force))
        meta = dict(ph.params, labels={str(k): v for k, v in LABELS.items()})
        with atomic_write(js, force=force) as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
        written.append(js)
        if len(shown) < n_montage:
            shown.append(ph)
    written.append(montage(shown, out / "montage.png", force=force))
    return written
