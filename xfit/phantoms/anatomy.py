"""The anatomy around and inside the spine, rendered onto a :class:`~.render.Canvas`.

Spine: vertebrae (bone, VerSe labels), intervertebral discs (annulus and nucleus), the canal (CSF)
with the spinal cord above L1-L2.

Surroundings by level, relative to the spine's centre line (x, y as functions of z) where they
follow the spine, and to the body outline where they do not: skin, subcutaneous fat (thicker with
adiposity), abdominal/thoracic wall muscles, paraspinal muscles with fatty infiltration and a fat
plane around them, and
* thoracic levels (above the diaphragm dome): lungs with vessel texture, ribs with their
  costovertebral (head on the body) and costotransverse (neck on the transverse process) joints,
  descending aorta, oesophagus with a little gas, heart in the anterior mediastinum;
* thoracolumbar and lumbar levels: diaphragm crura, liver, spleen, kidneys in perirenal fat,
  psoas muscles growing from T12 down, aorta and vena cava in retroperitoneal fat, bowel with
  visceral fat and gas.
The body outline follows the spine's sagittal curve only partly (:data:`BODY_FOLLOWS_SPINE`):
the patient lies on a flat table.
"""

from __future__ import annotations

import math

import numpy as np

from .fields import smooth_field
from .materials import bone_hu, vertebra_hu
from .params import SpineParams, TorsoParams
from .posture import SPINE_LEVELS
from .render import Canvas, to_local
from .sdf import ellcapsule, ellipse2d, ellipsoid, occupancy
from .vertebra import NOTCH_DEPTH, local_box, notch_radius, vertebra_sdf

#: Fraction of the spine's antero-posterior curve that the body outline follows.
BODY_FOLLOWS_SPINE = 0.4


def draw_torso(rng: np.random.Generator) -> TorsoParams:
    """Body habitus and soft-tissue HU (ranges in :data:`.morphometry.TISSUE_HU`)."""
    adip = float(rng.beta(2.0, 2.0))
    t = TorsoParams(
        adiposity=adip,
        half_width=float(rng.uniform(120.0, 150.0) + 25.0 * adip),
        half_depth=float(rng.uniform(85.0, 100.0) + 30.0 * adip),
        superellipse=float(rng.uniform(2.1, 2.6)),
        skin=float(rng.uniform(1.5, 2.5)),
        fat=float(6.0 + 34.0 * adip * rng.uniform(0.7, 1.3)),
        wall=float(rng.uniform(8.0, 14.0)),
        post_muscle=float(rng.uniform(6.0, 14.0)),
        muscle_hu=float(rng.uniform(40.0, 58.0)),
        fat_hu=float(rng.uniform(-115.0, -85.0)),
        organ_hu=float(rng.uniform(25.0, 45.0)),
        liver_hu=float(rng.uniform(50.0, 68.0)),
        spleen_hu=float(rng.uniform(40.0, 52.0)),
        kidney_hu=float(rng.uniform(28.0, 38.0)),
        blood_hu=float(rng.uniform(35.0, 50.0)),
        lung_hu=float(rng.uniform(-900.0, -840.0)),
        muscle_fat_infiltration=float(np.clip(rng.beta(1.5, 6.0) + 0.15 * adip, 0.0, 0.6)),
        rib_drop=float(rng.uniform(30.0, 50.0)),
        aorta_r=float(rng.uniform(10.0, 13.0)),
        dome=float(rng.uniform(25.0, 40.0)),
    )
    t.gas = [
        [float(rng.uniform(-1, 1)), float(rng.uniform(0, 1)), float(rng.uniform(0, 1)), float(rng.uniform(5.0, 16.0))]
        for _ in range(int(rng.integers(12, 30)))
    ]
    return t


def spine_line(lay: dict, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x(z), y(z)`` (mm) of the spine's AP-centre line, interpolated between vertebrae."""
    pz = np.array([lay[n]["p"][2] for n in SPINE_LEVELS])[::-1]
    px = np.array([lay[n]["p"][0] for n in SPINE_LEVELS])[::-1]
    py = np.array([lay[n]["p"][1] for n in SPINE_LEVELS])[::-1]
    order = np.argsort(pz)
    return (
        np.interp(z, pz[order], px[order]).astype(np.float32),
        np.interp(z, pz[order], py[order]).astype(np.float32),
    )


# ----------------------------------------------------------------------------- spine


def render_vertebrae(cv: Canvas, sp: SpineParams, lay: dict, seed: int) -> None:
    """Every vertebra as bone with its VerSe label; the centred vertebra last, so it is whole."""
    g = cv.grid
    order = sorted(SPINE_LEVELS, key=lambda n: (n == sp.centre_level, 0))
    for lvl in order:
        v, L = sp.vertebrae[lvl], lay[lvl]
        corners = (L["R"] @ local_box(v).T).T + L["c"]
        sl = g.box(corners.min(0), corners.max(0))
        if sl is None:
            continue
        pts = g.points(sl)
        loc = to_local(pts, L["c"], L["R"])
        sdf, posterior, endplate = vertebra_sdf(loc, v)
        occ = occupancy(sdf, g.spacing)
        if not np.any(occ > 0):
            continue
        hu = vertebra_hu(sdf, posterior, endplate, loc, pts, v, seed * 31 + SPINE_LEVELS.index(lvl) + 1000, g.spacing)
        cv.bone(sl, occ, hu, "vertebra", v.label)


def render_discs_and_canal(cv: Canvas, sp: SpineParams, lay: dict) -> None:
    """Intervertebral discs (annulus, nucleus) and the canal with CSF and cord."""
    g = cv.grid
    for i in range(len(SPINE_LEVELS) - 1):
        up, lo = SPINE_LEVELS[i], SPINE_LEVELS[i + 1]
        hv, lv = sp.vertebrae[up], sp.vertebrae[lo]
        h = sp.discs[up]
        if h < 1.0:
            continue
        e0 = lay[lo]["c"] + lay[lo]["R"] @ np.array([0, 0, lv.hb])
        e1 = lay[up]["c"] - lay[up]["R"] @ np.array([0, 0, hv.hb])
        c = (e0 + e1) / 2
        a = (lv.a + hv.a) / 2 + 0.8
        b = (lv.b + hv.b) / 2 + 0.8
        rad = math.hypot(a, b) + 6
        sl = g.box(c - rad, c + rad)
        if sl is None:
            continue
        r_mid = lay[lo]["R"] + lay[up]["R"]
        u_, _, vt = np.linalg.svd(r_mid)
        u, vv, w = to_local(g.points(sl), c, u_ @ vt)
        d2 = ellipse2d(u, vv, a, b)
        rk = notch_radius(a, lv.region)
        d2 = np.maximum(d2, rk - np.sqrt(u**2 + (vv + b + rk * (1.0 - NOTCH_DEPTH)) ** 2))
        d = np.maximum(d2, np.abs(w) - (h / 2 + 3.5))
        nucleus = np.clip(1.0 - ((u / (0.5 * a)) ** 2 + ((vv + 0.1 * b) / (0.45 * b)) ** 2), 0, 1)
        hu = sp.disc_hu + (sp.nucleus_hu - sp.disc_hu) * nucleus
        cv.soft(sl, occupancy(d, g.spacing), hu, "disc")
    for lvl in SPINE_LEVELS[:-1]:
        v, L = sp.vertebrae[lvl], lay[lvl]
        reach = v.hb + 0.5 * sp.discs[lvl] + 0.5 * sp.discs.get(_above(lvl), 0.0) + 3.0
        cc = L["c"] + L["R"] @ np.array([0.0, -v.b - v.cd / 2, 0.0])
        rad = math.hypot(reach, v.cw)
        sl = g.box(cc - rad, cc + rad)
        if sl is None:
            continue
        u, vv, w = to_local(g.points(sl), cc, L["R"])
        d = np.maximum(ellipse2d(u, vv, v.cw / 2 + 1.0, v.cd / 2 + 1.0), np.abs(w) - reach)
        occ = occupancy(d, g.spacing)
        cv.soft(sl, occ, sp.csf_hu, "csf")
        if lvl[0] == "T" or lvl in ("L1",):
            cord = occupancy(ellipse2d(u, vv - 1.0, 4.5, 3.5), g.spacing) * occ
            cv.soft(sl, cord, sp.cord_hu, "cord")


def _above(lvl: str) -> str:
    i = SPINE_LEVELS.index(lvl)
    return SPINE_LEVELS[i - 1] if i > 0 else lvl


# ----------------------------------------------------------------------------- ribs


def _rib_points(sp: SpineParams, lay: dict, lvl: str, side: float, cage: dict, to: TorsoParams) -> np.ndarray:
    """``[P, 3]`` world polyline of one rib: head on the body (costovertebral joint), neck on the
    transverse process (costotransverse joint), then the arc around the hemithorax."""
    v, L = sp.vertebrae[lvl], lay[lvl]
    head = L["c"] + L["R"] @ np.array([side * v.a * 0.9, -v.b * 0.55, v.hb * 0.8])
    neck = L["c"] + L["R"] @ np.array([side * (v.width / 2 - 3), -v.b - v.pl - v.tp_back + 4, v.hb - v.ph / 2 + 2])
    k = int(lvl[1:])
    end = 70.0 if k < 10 else (60.0 if k < 11 else (10.0 if k < 12 else -20.0))
    f = float(np.clip(0.55 + 0.09 * k, 0.6, 1.0)) if k < 8 else 1.0
    xs, ys = spine_line(lay, np.array([neck[2]]))
    phis = np.linspace(-90.0, end, 16)
    t = (phis + 90.0) / 160.0
    arc = np.stack(
        [
            xs[0] + side * (cage["cx"] + cage["A"] * f * np.cos(np.radians(phis))),
            ys[0] + cage["cy"] + cage["B"] * f * np.sin(np.radians(phis)),
            neck[2] + 4.0 * np.sin(np.pi * np.clip(t * 3, 0, 1)) - to.rib_drop * t**1.3,
        ],
        axis=1,
    )
    return np.vstack([head, neck, arc[1:]])


def render_ribs(cv: Canvas, sp: SpineParams, lay: dict, cage: dict, to: TorsoParams, seed: int) -> None:
    """Ribs of T1-T12: chains of elliptic capsules with a thin cortex and marrow."""
    g = cv.grid
    for lvl in SPINE_LEVELS:
        if lvl[0] != "T":
            continue
        v = sp.vertebrae[lvl]
        for side in (-1.0, 1.0):
            pts = _rib_points(sp, lay, lvl, side, cage, to)
            sl = g.box(pts.min(0) - 8, pts.max(0) + 8)
            if sl is None:
                continue
            sdf = np.full(tuple(s.stop - s.start for s in sl), 1e3, np.float32)
            wp = g.points(sl)
            for i in range(len(pts) - 1):
                p0, p1 = pts[i], pts[i + 1]
                r1, r2 = (4.0, 4.0) if i == 0 else (3.0, 5.0 + 1.5 * min(i / 6, 1))
                seg_sl = g.box(np.minimum(p0, p1) - 7, np.maximum(p0, p1) + 7)
                if seg_sl is None:
                    continue
                rel = tuple(slice(a.start - b.start, a.stop - b.start) for a, b in zip(seg_sl, sl))
                shape = tuple(s.stop - s.start for s in seg_sl)
                q = g.points(seg_sl)
                d = np.broadcast_to(ellcapsule(q, p0, p1, np.cross(p1 - p0, [0, 0, 1.0]) + 1e-6, r1, r2), shape)
                np.minimum(sdf[rel], d, out=sdf[rel])
            occ = occupancy(sdf, g.spacing)
            if not np.any(occ > 0):
                continue
            hu = bone_hu(
                sdf,
                wp,
                v.trab_hu + 40.0,
                0.85 * v.cort_hu,
                1.0,
                30.0,
                seed * 37 + SPINE_LEVELS.index(lvl) * 2 + int(side > 0) + 5000,
                g.spacing,
            )
            cv.bone(sl, occ, hu, "rib")


# ----------------------------------------------------------------------------- torso


def ribcage(sp: SpineParams, lay: dict, to: TorsoParams) -> dict[str, float]:
    """Hemithorax ellipse (relative to the spine line) shared by ribs and lungs."""
    v = sp.vertebrae[sp.centre_level]
    y_body = v.depth / 2.0 - v.b  # body centre relative to the AP-centre
    y_tp = y_body - v.b - v.pl - 10.0
    cx = v.width / 2 + 26.0
    inner = to.skin + to.fat + to.wall
    y_post_skin = -v.depth / 2 - (to.skin + to.fat + to.post_muscle)
    y_front = y_post_skin + 2 * to.half_depth - inner
    back = y_tp - 8.0
    b_ = (y_front - back) / 2
    return dict(
        cx=cx,
        cy=back + b_,
        A=max(to.half_width - inner - cx, 20.0),
        B=b_,
        y_body=y_body,
        y_tp=y_tp,
        y_post_skin=y_post_skin,
    )


def render_torso(
    cv: Canvas, sp: SpineParams, lay: dict, cage: dict, to: TorsoParams, seed: int, regions: dict | None = None
) -> None:
    """Body outline, skin, fat, muscles and the thoracic or abdominal contents (soft tissue).

    Args:
        regions: when given, receives the body compartments as ``[I, J, K]`` bool maps (nothing
            else changes): ``"subcutaneous"`` (between the skin's outer surface and the outer
            surface of the wall muscles) and ``"cavity"`` (inside the wall muscles' inner surface:
            abdominal or thoracic cavity), as :mod:`.composition` measures them.
    """
    g = cv.grid
    h = g.spacing
    x, y, z = g.points(g.full())
    xs_line, ys_line = spine_line(lay, g.axes[2])
    xl = x - xs_line[None, None, :]  # spine-relative coordinates [I, 1, K], [1, J, K]
    yl = y - ys_line[None, None, :]
    yb_ = y - np.float32(BODY_FOLLOWS_SPINE) * ys_line[None, None, :]  # body-outline frame
    occ = lambda d: occupancy(d, h)  # noqa: E731
    v0 = sp.vertebrae[sp.centre_level]
    fat_hu, mus_hu = np.float32(to.fat_hu), np.float32(to.muscle_hu)
    full = g.full()
    fat_field = smooth_field(g.axes[0], g.axes[1], g.axes[2], seed * 41 + 1, 12.0)
    # outline: superellipse; depth (mm) inside the skin
    yc = np.float32(cage["y_post_skin"] + to.half_depth)
    pe = to.superellipse
    ex, ey = np.abs(x / to.half_width), np.abs((yb_ - yc) / to.half_depth)
    r = (ex**pe + ey**pe) ** (1 / pe)
    grad = np.sqrt((ex ** (pe - 1) / to.half_width) ** 2 + (ey ** (pe - 1) / to.half_depth) ** 2) * np.maximum(
        r, 1e-3
    ) ** (1 - pe)
    depth = ((1.0 - r) / np.maximum(grad, 1e-6)).astype(np.float32)
    body = occ(-depth)
    cv.soft(full, body, np.float32(30.0), "skin")
    sub = np.float32(to.fat) * (1.0 + 0.35 * np.clip((yb_ - yc) / to.half_depth, -1, 1)) + 3.0 * fat_field
    cv.soft(full, occ(to.skin - depth) * body, fat_hu, "fat")
    inner = depth - to.skin - sub
    cv.soft(full, occ(-inner), mus_hu, "muscle")
    cavity = occ(np.float32(to.wall) - inner)
    if regions is not None:
        regions["subcutaneous"] = (body >= 0.5) & (inner < 0)
        regions["cavity"] = cavity >= 0.5
    del inner, depth, body
    # levels: diaphragm and where organs sit
    zl = {n: float(lay[n]["p"][2]) for n in SPINE_LEVELS}
    a0, b0, yb = v0.a, v0.b, cage["y_body"]
    hx = (np.abs(xl) - cage["cx"]) / cage["A"]
    hy = (yl - cage["cy"]) / cage["B"]
    rho2 = hx**2 + hy**2
    z_dia = (
        np.float32(zl["T11"])
        + np.float32(to.dome) * np.clip(1.0 - rho2, 0, 1)
        + np.float32(10.0) / (1.0 + np.exp(-xl / np.float32(25.0)))
    )  # right dome higher
    thorax = occ(z_dia - z)  # 1 above the diaphragm
    # thoracic contents: lungs around the mediastinum and the spine
    hemi = (np.sqrt(rho2) - 1.0) * np.float32(min(cage["A"], cage["B"])) + 9.0
    med = ellipse2d(xl + 10.0, yl - yb - b0 - 50.0, 40.0, 70.0)
    para = ellipse2d(xl, yl - yb, a0 + 8.0, b0 + 12.0)
    post_box = np.maximum(np.abs(xl) - v0.width / 2 - 4.0, yl - cage["y_tp"] - 8.0)
    lung = occ(np.maximum(np.maximum(hemi, -med), np.maximum(-para, -post_box))) * thorax * cavity
    del hemi, med, para, post_box, rho2
    cv.soft(full, cavity * thorax, np.float32(to.blood_hu - 5.0), "viscera")  # mediastinum
    vessels = np.clip(smooth_field(g.axes[0], g.axes[1], g.axes[2], seed * 43 + 3, 4.0) - 1.3, 0, 1)
    cv.soft(full, lung, np.float32(to.lung_hu) + 500.0 * vessels, "lung")
    del vessels
    # heart: anterior mediastinum, left of the midline, above the diaphragm
    zh = zl["T8"]
    heart = ellipsoid((xl, yl, z), (25.0, yb + b0 + 70.0, zh), (55.0, 45.0, 50.0))
    cv.soft(full, occ(heart) * thorax * cavity, np.float32(to.blood_hu), "blood")
    # oesophagus (a little gas) and descending aorta: beside the thoracic spine
    oes = np.sqrt((xl + 5.0) ** 2 + (yl - yb - b0 - 8.0) ** 2)
    cv.soft(full, occ(oes - 7.0) * thorax * cavity, mus_hu, "muscle")
    cv.soft(full, occ(oes - 2.0) * thorax * cavity, np.float32(-900.0), "gas")
    aorta = np.sqrt((xl + a0 + 6.0) ** 2 + (yl - yb - 2.0) ** 2) - to.aorta_r
    cv.soft(full, occ(aorta) * thorax * cavity, np.float32(to.blood_hu), "blood")
    # abdomen: bowel / viscera with visceral fat, then retroperitoneum
    abd = (1.0 - thorax) * cavity
    cv.soft(full, abd, np.float32(to.organ_hu), "viscera")
    vfat = np.clip((fat_field - (1.0 - 1.8 * to.adiposity)) * 1.5, 0, 1) * abd
    cv.soft(full, vfat, fat_hu, "fat")
    retro = occ(ellipse2d(xl, yl - yb, a0 + 30.0 + 20 * to.adiposity, b0 + 24.0 + 10 * to.adiposity)) * abd
    cv.soft(full, retro, fat_hu + 10.0, "fat")
    for cx_, rad, name in ((-a0 * 0.35 - 4.0, to.aorta_r, "aorta"), (a0 * 0.6 + 10.0, 11.0, "ivc")):
        d = np.sqrt(((xl - cx_) / (1.0 if name == "aorta" else 1.4)) ** 2 + (yl - yb - b0 - rad - 2.0) ** 2) - rad
        cv.soft(full, occ(d) * abd, np.float32(to.blood_hu), "blood")
    _abdominal_organs(cv, x, xl, yl, z, zl, abd, cage, v0, to, thorax)
    # paraspinal muscles (erector spinae, multifidus): one belly per side between the transverse
    # processes and the back's subcutaneous fat, fat-infiltrated, with a fat plane around them
    y_front_m = cage["y_tp"] + 4.0
    y_back_m = cage["y_post_skin"] + to.skin + to.fat * 0.65
    half_d = max((y_front_m - y_back_m) / 2.0, 8.0)
    half_w = v0.width / 2.0 * 0.62 + 6.0
    inf = np.float32(to.muscle_fat_infiltration) * np.clip(
        0.6 + 0.8 * smooth_field(g.axes[0], g.axes[1], g.axes[2], seed * 47 + 5, 5.0), 0, 1.5
    )
    for s in (-1.0, 1.0):
        ps = ellipse2d(xl - s * (half_w + 3.0), yl - (y_back_m + half_d), half_w, half_d)
        cv.soft(full, occ(ps - 2.0), fat_hu, "fat")
        cv.soft(full, occ(ps), mus_hu + inf * (fat_hu - mus_hu), "muscle")
    # bowel gas in the anterior abdomen
    for gx_, gy_, gz_, rad in to.gas:
        c = np.array([gx_ * (to.half_width - 50.0), yb + b0 + 35.0 + gy_ * 70.0, zl["T12"] - 60.0 - gz_ * 220.0])
        sl = g.box(c - rad - 2, c + rad + 2)
        if sl is None:
            continue
        p = g.points(sl)
        d = np.sqrt((p[0] - c[0]) ** 2 + (p[1] - c[1]) ** 2 + ((p[2] - c[2]) / 1.4) ** 2) - rad
        cv.soft(sl, occ(d) * abd[sl], np.float32(-1000.0), "gas")


def _abdominal_organs(cv: Canvas, x, xl, yl, z, zl: dict, abd, cage: dict, v0, to: TorsoParams, thorax) -> None:
    """Liver, spleen, kidneys in perirenal fat, psoas and diaphragm crura (in place)."""
    g = cv.grid
    h = g.spacing
    full = g.full()
    yb, a0, b0 = cage["y_body"], v0.a, v0.b
    occ = lambda d: occupancy(d, h)  # noqa: E731
    z11, z12, zl3 = zl["T11"], zl["T12"], zl["L3"]
    # liver: right upper quadrant under the diaphragm, right of the vena cava and the crura
    liver = ellipsoid((x, yl, z), (to.half_width * 0.5, yb + 55.0, z11 - 40.0), (to.half_width * 0.65, 85.0, 90.0))
    liver = np.maximum(liver, (a0 + 12.0) - xl)
    cv.soft(full, occ(liver) * abd, np.float32(to.liver_hu), "liver")
    # spleen: left, posterior
    spleen = ellipsoid((xl, yl, z), (-(a0 + 70.0), yb + 5.0, z11 - 10.0), (28.0, 45.0, 55.0))
    cv.soft(full, occ(spleen) * abd, np.float32(to.spleen_hu), "spleen")
    # kidneys (the right one lower) in perirenal fat, beside the psoas
    for s in (-1.0, 1.0):
        c = (s * (a0 + 45.0), yb - 8.0, z12 - 45.0 - 12.0 * (s > 0))
        kd = ellipsoid((xl, yl, z), c, (28.0, 22.0, 55.0))
        cv.soft(full, occ(kd - 10.0 - 6.0 * to.adiposity) * abd, np.float32(to.fat_hu), "fat")
        cv.soft(full, occ(kd) * abd, np.float32(to.kidney_hu), "kidney")
    # psoas: grows from T12 caudally beside the bodies
    psoas_r = np.clip((z12 - z) / 5.0, 0, 26.0)
    for s in (-1.0, 1.0):
        pd = np.sqrt((xl - s * (a0 + 0.8 * psoas_r + 2.0)) ** 2 + (yl - yb + 2.0) ** 2) - psoas_r
        cv.soft(full, occ(pd) * (z < z12), np.float32(to.muscle_hu), "muscle")
    # crura: muscular bands in front of the upper lumbar bodies
    band = (z < z11 + 10.0) & (z > zl3)
    for s in (-1.0, 1.0):
        cd = np.sqrt((xl - s * (a0 * 0.6)) ** 2 + ((yl - yb - b0 - 3.0) / 1.8) ** 2) - 4.0
        cv.soft(full, occ(cd) * band, np.float32(to.muscle_hu), "muscle")
