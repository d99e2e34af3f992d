"""Spine posture: sagittal profile (lordosis, kyphosis), scoliosis and the pose of each vertebra.

Sagittal tilt ``phi`` of a vertebra is the angle of its axis from world +z towards anterior
(+y). The S1 endplate tilts by the sacral slope; going up, each lumbar disc takes a share of the
lumbar lordosis (:data:`LORDOSIS_SHARE`, most of it at L4-S1), so that ``phi(L1) = sacral slope -
lordosis``; the thoracolumbar junction is nearly straight, and the thoracic kyphosis is spread
evenly over T4-T12 (``phi(T4) = phi(T12) + kyphosis``) and continues more gently above T4. Every
vertebra therefore tilts as the curve does: L5 forwards by 15-30 degrees, L1 and T12 backwards,
upper thoracic vertebrae forwards again.

Scoliosis (a fraction of the cases) is a single coronal curve: coronal tilt ``psi = side * Cobb/2
* sin(pi/2 * d / h)`` at ``d`` levels from the apex (``h`` levels to the end vertebrae, tapering to
zero beyond them), with axial rotation of the vertebrae towards the convexity, largest at the apex.
"""

from __future__ import annotations

import math

import numpy as np

from .params import PostureParams, VertebraParams

#: Drawn levels, cranial to caudal.
SPINE_LEVELS: tuple[str, ...] = tuple([f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)] + ["S1"])
#: Share of the L1-S1 lordosis taken by the disc below each lumbar level.
LORDOSIS_SHARE = {"L1": 0.07, "L2": 0.11, "L3": 0.17, "L4": 0.27, "L5": 0.38}
#: Fraction of cases with scoliosis.
SCOLIOSIS_FRACTION = 0.15


def _clipped_normal(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def draw_posture(rng: np.random.Generator) -> PostureParams:
    """Draw a supine spine posture (angles in degrees; ranges in :mod:`.morphometry`)."""
    from .morphometry import POSTURE

    ll, tk, ss = (
        POSTURE["lumbar_lordosis_L1_S1_deg"],
        POSTURE["thoracic_kyphosis_T4_T12_deg"],
        POSTURE["sacral_slope_deg"],
    )
    lordosis = _clipped_normal(rng, (ll.lo + ll.hi) / 2, (ll.hi - ll.lo) / 4, ll.lo - 10, ll.hi + 5)
    kyphosis = _clipped_normal(rng, (tk.lo + tk.hi) / 2, (tk.hi - tk.lo) / 4, tk.lo - 5, tk.hi + 10)
    slope = _clipped_normal(rng, (ss.lo + ss.hi) / 2, (ss.hi - ss.lo) / 4, ss.lo - 5, ss.hi + 5)
    scol = rng.random() < SCOLIOSIS_FRACTION
    cobb = float(rng.uniform(10.0, 40.0)) if scol else 0.0
    apex = float(rng.uniform(SPINE_LEVELS.index("T7"), SPINE_LEVELS.index("L2")))
    side = 1.0 if rng.random() < (0.8 if apex < SPINE_LEVELS.index("T12") else 0.4) else -1.0
    return PostureParams(
        sacral_slope=slope,
        lordosis=lordosis,
        kyphosis=kyphosis,
        scoliosis_cobb=cobb,
        scoliosis_apex=apex,
        scoliosis_half_span=float(rng.uniform(3.0, 5.0)),
        scoliosis_side=side,
        apical_rotation=float(cobb * rng.uniform(0.2, 0.4)),
        table_rotation=(float(rng.uniform(-3, 3)), float(rng.uniform(-3, 3)), float(rng.uniform(-4, 4))),
    )


def sagittal_tilts(p: PostureParams) -> dict[str, float]:
    """Sagittal tilt ``phi`` (degrees, + = axis towards anterior) of every drawn level."""
    phi = {"S1": p.sacral_slope}
    for lvl in ("L5", "L4", "L3", "L2", "L1"):
        below = SPINE_LEVELS[SPINE_LEVELS.index(lvl) + 1]
        phi[lvl] = phi[below] - p.lordosis * LORDOSIS_SHARE[lvl]
    phi["T12"] = phi["L1"] + 0.0
    per = p.kyphosis / 8.0
    for i in range(11, 0, -1):  # T11 .. T1
        lvl = f"T{i}"
        phi[lvl] = phi[f"T{i + 1}"] + (per if i >= 4 else 0.5 * per)
    return phi


def coronal_profile(p: PostureParams) -> tuple[dict[str, float], dict[str, float]]:
    """Coronal tilt ``psi`` and axial rotation (degrees) of every drawn level (scoliosis)."""
    psi, rot = {}, {}
    for i, lvl in enumerate(SPINE_LEVELS):
        if p.scoliosis_cobb <= 0:
            psi[lvl], rot[lvl] = 0.0, 0.0
            continue
        d, h = i - p.scoliosis_apex, p.scoliosis_half_span
        if abs(d) <= h:
            s = math.sin(0.5 * math.pi * d / h)
        else:
            s = math.copysign(max(0.0, 1.0 - (abs(d) - h) / h), d)
        psi[lvl] = p.scoliosis_side * 0.5 * p.scoliosis_cobb * s
        rot[lvl] = (
            p.scoliosis_side * p.apical_rotation * max(0.0, math.cos(0.5 * math.pi * d / h)) if abs(d) < h else 0.0
        )
    return psi, rot


def _align_z(t: np.ndarray) -> np.ndarray:
    """Smallest rotation taking +z to the unit vector ``t``."""
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(z, t)
    c = float(z @ t)
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def layout(
    verts: dict[str, VertebraParams], discs: dict[str, float], p: PostureParams, centre_level: str
) -> dict[str, dict[str, np.ndarray]]:
    """World pose of every vertebra, with the centred vertebra's AP-centre at the origin.

    Returns:
        per level: ``R`` ``[3, 3]`` local -> world, ``c`` body centre (mm), ``p`` the midpoint of
        the vertebra's antero-posterior extent (body front to spinous tip), and the tilts.
    """
    from .sdf import rot as _rot

    phi = sagittal_tilts(p)
    psi, arot = coronal_profile(p)
    tangent, R = {}, {}
    rg = _rot(2, p.table_rotation[2]) @ _rot(1, p.table_rotation[1]) @ _rot(0, p.table_rotation[0])
    for lvl in SPINE_LEVELS:
        t = np.array([math.tan(math.radians(psi[lvl])), math.tan(math.radians(phi[lvl])), 1.0])
        t /= np.linalg.norm(t)
        tangent[lvl] = t
        R[lvl] = rg @ _align_z(t) @ _rot(2, arot[lvl] + verts[lvl].axial_rot)
    # chain body centres from S1 upwards (unrotated frame), then rotate and shift
    c = {"S1": np.zeros(3)}
    for i in range(len(SPINE_LEVELS) - 2, -1, -1):
        lvl, below = SPINE_LEVELS[i], SPINE_LEVELS[i + 1]
        tm = tangent[lvl] + tangent[below]
        tm /= np.linalg.norm(tm)
        c[lvl] = c[below] + tangent[below] * verts[below].hb + tm * discs[lvl] + tangent[lvl] * verts[lvl].hb
    out = {}
    for lvl in SPINE_LEVELS:
        v = verts[lvl]
        y_off = v.b - v.depth / 2.0
        cw = rg @ c[lvl]
        out[lvl] = dict(
            R=R[lvl], c=cw, p=cw + R[lvl] @ np.array([0.0, y_off, 0.0]), phi=phi[lvl], psi=psi[lvl], rot=arot[lvl]
        )
    origin = out[centre_level]["p"].copy()
    for frame in out.values():
        frame["c"] = frame["c"] - origin
        frame["p"] = frame["p"] - origin
    return out
