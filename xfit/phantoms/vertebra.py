"""Per-level vertebra shape: draws from published morphometry and the vertebra's signed distance.

Each dimension of a case is ``mean + sd * (rho * z_size + sqrt(1 - rho^2) * z_own)`` with the
per-level mean and standard deviation of :data:`xfit.phantoms.morphometry.MORPHOMETRY`, one
shared size draw ``z_size`` per spine (a large vertebra is large everywhere, and so are its
neighbours) and ``rho`` = :data:`SIZE_CORRELATION`; each draw is clipped at
:data:`MAX_SD` standard deviations. Angles are drawn without the shared size term.

The sacrum (S1) is not in the tables: it is a fixed wedge-shaped block of fused bodies with wide
alae, scaled by the size draw (it only matters as the neighbour of L5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..levels import level_label
from .morphometry import MORPHOMETRY, Stat
from .params import VertebraParams
from .sdf import ellcapsule, ellipse2d, smin

#: Correlation of each linear dimension with the spine's shared size draw.
SIZE_CORRELATION = 0.7
#: Draws are clipped at this many standard deviations.
MAX_SD = 2.5
#: Scale of the tabulated spinous length (measured from the canal in the cadaver series) to
#: the process drawn from the lamina junction, calibrated so that a lumbar vertebra spans the
#: 65-80 mm antero-posterior depth of real ones (see the morphometry caveats).
SPINOUS_SCALE = 0.7
#: Depth of the posterior wall's concavity at the midline, in units of the notch radius.
NOTCH_DEPTH = 0.3


def _draw(rng: np.random.Generator, s: Stat, z_size: float | None) -> float:
    z_own = float(np.clip(rng.standard_normal(), -MAX_SD, MAX_SD))
    if z_size is None:
        z = z_own
    else:
        z = SIZE_CORRELATION * z_size + math.sqrt(1 - SIZE_CORRELATION**2) * z_own
    return float(s.mean + s.sd * float(np.clip(z, -MAX_SD, MAX_SD)))


def draw_vertebra(
    rng: np.random.Generator, level: str, z_size: float, materials: dict[str, float], degeneration: float
) -> VertebraParams:
    """Draw one vertebra of ``level`` (``"T1"``..``"L5"`` or ``"S1"``).

    Args:
        z_size: the spine's shared size draw (standard deviations).
        materials: bone HU of this case (see :func:`xfit.phantoms.materials.draw_bone`).
        degeneration: 0 none .. 1 severe (osteophytes, endplate sclerosis).
    """
    if level == "S1":
        return _sacrum(rng, z_size, materials, degeneration)
    m = MORPHOMETRY[level]
    d = lambda s: _draw(rng, s, z_size)  # noqa: E731
    ang = lambda s: _draw(rng, s, None)  # noqa: E731
    region = level[0]
    h_ant, h_post = d(m.body_height_ant), d(m.body_height_post)
    a = d(m.body_width) / 2
    # the published depth is mid-sagittal, where the posterior notch takes NOTCH_DEPTH * rk
    b = d(m.body_depth) / 2 + 0.5 * NOTCH_DEPTH * notch_radius(a, region)
    cw, cd = d(m.canal_width), d(m.canal_depth)
    pw, ph = max(d(m.pedicle_width), 3.0), max(d(m.pedicle_height), 6.0)
    ped_angle = ang(m.pedicle_transverse_angle)
    lt = max(d(m.lamina_thickness), 4.0)
    lh = max(d(m.lamina_height), 8.0)
    sp_len = max(d(m.spinous_length) * SPINOUS_SCALE, 10.0)
    sp_ang = ang(m.spinous_inclination)
    width = d(m.transverse_width)
    osteo = float(degeneration * rng.uniform(0.0, 4.0)) if rng.random() < degeneration else 0.0
    cup = max(d(m.endplate_concavity), 0.3)
    return VertebraParams(
        level=level,
        label=level_label(level),
        region=region,
        a=a,
        b=b,
        hb_ant=h_ant / 2,
        hb_post=h_post / 2,
        cup=cup,
        waist=float(rng.uniform(0.03, 0.09)),
        cw=cw,
        cd=cd,
        pw=pw,
        ph=ph,
        pl=float(0.55 * cd + 2.0),
        ped_angle=ped_angle,
        lt=lt,
        lh=lh,
        width=max(width, 2 * (cw / 2 + pw) + 8.0),
        tp_back=(3.0 + 0.5 * (int(level[1:]) - 1)) if region == "L" else 12.0 - 0.5 * (int(level[1:]) - 1),
        tp_up=0.0 if region == "L" else 3.0,
        tp_r=(4.0, 5.5) if region == "L" else (5.0, 5.5),
        sp_len=sp_len,
        sp_ang=sp_ang,
        sp_t=7.0 if region == "L" else 6.0,
        sp_h=(16.0 - 0.6 * int(level[1:])) if region == "L" else 8.5,
        sap_h=8.0 if region == "L" else 6.0,
        iap_h=7.0 if region == "L" else 6.0,
        facet_angle=ang(m.facet_transverse_angle),
        axial_rot=float(rng.uniform(-1.5, 1.5)),
        osteophyte=osteo,
        trab_hu=float(materials["trabecular"] + rng.uniform(-10, 10)),
        tex_hu=float(rng.uniform(25.0, 45.0)),
        post_hu=float(materials["posterior"]),
        cort_hu=float(materials["cortical"] + rng.uniform(-60, 60)),
        cort_t=float(materials["cortical_mm"] * rng.uniform(0.9, 1.1)),
        sclerosis_hu=float(materials["sclerosis"] * degeneration * rng.uniform(0.5, 1.0)),
    )


def _sacrum(
    rng: np.random.Generator, z_size: float, materials: dict[str, float], degeneration: float
) -> VertebraParams:
    f = 1.0 + 0.05 * z_size
    return VertebraParams(
        level="S1",
        label=level_label("S1"),
        region="S",
        a=25.0 * f,
        b=17.0 * f,
        hb_ant=11.0 * f,
        hb_post=9.0 * f,
        cup=0.8,
        waist=0.04,
        cw=18.0 * f,
        cd=10.0,
        pw=12.0,
        ph=12.0,
        pl=7.5,
        ped_angle=20.0,
        lt=5.0,
        lh=14.0,
        width=100.0 * f,
        tp_back=-4.0,
        tp_up=0.0,
        tp_r=(9.0, 11.0),
        sp_len=12.0,
        sp_ang=30.0,
        sp_t=5.0,
        sp_h=8.0,
        sap_h=6.0,
        iap_h=0.0,
        facet_angle=40.0,
        axial_rot=0.0,
        osteophyte=0.0,
        trab_hu=float(materials["trabecular"] + 20.0),
        tex_hu=30.0,
        post_hu=float(materials["posterior"]),
        cort_hu=float(materials["cortical"]),
        cort_t=float(materials["cortical_mm"]),
        sclerosis_hu=0.0,
    )


def notch_radius(a: float, region: str) -> float:
    """Radius (mm) of the circle that makes the body's posterior wall concave (kidney shape)."""
    return (0.42 if region == "L" else 0.3) * a


def vertebra_sdf(q: Sequence[np.ndarray], v: VertebraParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed distance (mm) of a whole vertebra at local points ``q`` (body centre origin).

    The body is kidney-shaped in axial section (posterior notch), waisted, wedged (anterior and
    posterior heights) and has concave endplates; the posterior elements are pedicles (converging
    by ``ped_angle``), laminae, transverse, spinous and articular processes (facets turned by
    ``facet_angle``).

    Returns:
        ``(sdf, posterior, endplate)``: the distance, a 0/1 mask of the posterior elements' side
        and the distance (mm, >= 0) to the nearer endplate inside the body.
    """
    u, vv, w = q
    a, b = v.a, v.b
    hb_v = v.hb + 0.5 * (v.hb_ant - v.hb_post) * np.clip(vv / b, -1.0, 1.0)
    wn = np.clip(w / hb_v, -1.0, 1.0)
    scale = 1.0 - v.waist * (1.0 - wn**2)
    if v.osteophyte > 0:
        scale = scale + (v.osteophyte / a) * np.exp(-(((np.abs(w) - hb_v) / 1.8) ** 2))
    ae, be = a * scale, b * scale
    d2 = ellipse2d(u, vv, ae, be)
    rk = notch_radius(a, v.region)
    d2 = np.maximum(d2, rk - np.sqrt(u**2 + (vv + be + rk * (1.0 - NOTCH_DEPTH)) ** 2))
    k0 = np.clip((u / ae) ** 2 + (vv / be) ** 2, 0.0, 1.0)
    surf = hb_v - v.cup * (1.0 - k0)
    dz = np.abs(w) - surf
    rr = 1.5
    q1, q2 = d2 + rr, dz + rr
    body = np.sqrt(np.maximum(q1, 0) ** 2 + np.maximum(q2, 0) ** 2) + np.minimum(np.maximum(q1, q2), 0) - rr
    post = _posterior_sdf(q, v)
    return smin(body, post, 2.0), (post < body).astype(np.float32), np.maximum(-dz, 0.0)


def _posterior_sdf(q: Sequence[np.ndarray], v: VertebraParams) -> np.ndarray:
    b, hb = v.b, v.hb_post
    cw, cd, pw, ph, pl, lt, lh = v.cw, v.cd, v.pw, v.ph, v.pl, v.lt, v.lh
    ex, ey, ez = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0])
    wp = hb - ph / 2 - 1.0
    wl = wp - 2.0
    vj = -b - cd - lt / 2
    conv = math.tan(math.radians(max(v.ped_angle, 0.0)))
    fa = math.radians(v.facet_angle)
    post = None
    for s in (-1.0, 1.0):
        up0 = s * (cw / 2 + pw / 2)
        up1 = up0 + s * pl * conv * 0.5
        parts = [
            ellcapsule(q, np.array([up0, -b + 5, wp]), np.array([up1, -b - pl, wp]), ex, pw / 2, ph / 2),
            ellcapsule(q, np.array([up1, -b - pl, wl]), np.array([0, vj, wl - 4.0]), ez, lh / 2, lt / 2),
        ]
        r1, r2 = v.tp_r
        tip = np.array([s * (v.width / 2 - min(r1, r2)), -b - pl - v.tp_back, wp + v.tp_up])
        parts.append(ellcapsule(q, np.array([s * (cw / 2 + pw * 0.7), -b - pl * 0.9, wp]), tip, ey, r1, r2))
        n_facet = np.array([math.cos(fa), s * math.sin(fa), 0.0])
        if v.sap_h > 0:
            parts.append(
                ellcapsule(
                    q,
                    np.array([s * (cw / 2 + pw * 0.6), -b - pl - 1, wp]),
                    np.array([s * (cw / 2 + pw * 0.6 + 1), -b - pl - 4, hb + v.sap_h]),
                    n_facet,
                    3.0,
                    5.0,
                )
            )
        if v.iap_h > 0:
            parts.append(
                ellcapsule(
                    q,
                    np.array([s * (cw / 2 + 2.0), vj + 2, wl - 3]),
                    np.array([s * (cw / 2 + 1.0), vj + 1, -hb - v.iap_h]),
                    n_facet,
                    3.0,
                    4.5,
                )
            )
        for part in parts:
            post = part if post is None else np.minimum(post, part)
    ang = math.radians(v.sp_ang)
    j0 = np.array([0.0, vj + 1.0, wl - 4.0])
    j1 = j0 + v.sp_len * np.array([0.0, -math.cos(ang), -math.sin(ang)])
    return np.minimum(post, ellcapsule(q, j0, j1, ex, v.sp_t / 2, v.sp_h / 2))


def local_box(v: VertebraParams) -> np.ndarray:
    """``[8, 3]`` corners of a local box holding the vertebra (body centre origin)."""
    hw = v.width / 2 + 4
    ang = math.radians(v.sp_ang)
    back = v.b + v.cd + v.lt + (v.sp_len + v.sp_t) * math.cos(ang) + 4
    low = min(-v.hb - v.iap_h, -v.hb - v.sp_len * math.sin(ang)) - v.sp_h - 4
    high = max(v.hb_ant, v.hb_post) + max(v.sap_h, 0) + 6
    return np.array([[x, y, z] for x in (-hw, hw) for y in (-back, v.b + 8 + v.osteophyte) for z in (low, high)])
