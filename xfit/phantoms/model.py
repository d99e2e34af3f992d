"""The phantom model: draw every parameter from the seed, then sample it on a grid.

All random draws are made before, and independent of, the grid (spine first, then torso, then
scanner, each from its own stream), textures and noise are functions of world positions, and the
scanner's filters run on a padded grid. So ``make_phantom(seed)`` is exactly the central block of
``make_phantom(seed, fov_mm=320)``, and a phantom centred on its vertebra is the crop the prior's
data loader cuts from a larger one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..levels import LABEL_TO_LEVEL, level_label, parse_levels
from .anatomy import draw_torso, render_discs_and_canal, render_ribs, render_torso, render_vertebrae, ribcage
from .composition import composition_json
from .materials import draw_bone
from .morphometry import MORPHOMETRY
from .params import PhantomParams, SpineParams
from .posture import SPINE_LEVELS, draw_posture, layout
from .render import Canvas, Grid, to_local
from .scanner import apply_blur, correlated_noise, draw_scanner, margin_vox, render_metal
from .sdf import occupancy
from .vertebra import draw_vertebra, local_box, vertebra_sdf

#: Region names accepted by ``level`` and the levels they draw the centred vertebra from.
REGIONS: dict[str, tuple[str, ...]] = {
    "lumbar": ("L1", "L2", "L3", "L4", "L5"),
    "thoracic": ("T6", "T7", "T8", "T9", "T10", "T11", "T12"),
}
LEVELS = tuple(REGIONS)
#: Grid centring choices of :func:`make_phantom`.
CENTRES = ("vertebra", "grid")
#: Largest grid side (voxels).
MAX_SIDE = 640


@dataclass
class Phantom:
    """A procedural CT phantom.

    Attributes:
        hu: ``[I, J, K]`` float32 CT numbers (HU).
        seg: ``[I, J, K]`` int16 vertebra labels in VerSe numbering (:mod:`xfit.levels`).
        tissue: ``[I, J, K]`` int16 tissue classes (:data:`xfit.phantoms.labels.TISSUE`).
        affine: ``[4, 4]`` float64 voxel index -> world RAS+ mm.
        params: the drawn parameters.
        info: grid facts and measured summary (JSON-serializable).
        regions: with ``make_phantom(..., regions=True)``, ``[I, J, K]`` bool body compartments
            (``"subcutaneous"``, ``"cavity"``; :func:`xfit.phantoms.anatomy.render_torso`).
    """

    hu: np.ndarray
    seg: np.ndarray
    tissue: np.ndarray
    affine: np.ndarray
    params: PhantomParams
    info: dict
    regions: dict | None = None

    @property
    def spacing_mm(self) -> float:
        return float(self.affine[0, 0])

    @property
    def centre_label(self) -> int:
        return int(self.params.spine.centre_label)

    @property
    def vertebra_mask(self) -> np.ndarray:
        """``[I, J, K]`` bool mask of the vertebra the grid is centred on."""
        return self.seg == self.centre_label

    def to_json(self) -> dict[str, Any]:
        from .labels import TISSUE

        return dict(self.info, params=self.params.to_json(), tissue_classes={str(v): k for k, v in TISSUE.items()})


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent generator ``stream`` of ``seed`` (0 spine, 1 torso, 2 scanner)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream]))


def _centre_choices(level: str) -> tuple[str, ...]:
    """The levels a ``level`` argument lets the centred vertebra be drawn from."""
    if level in REGIONS:
        return REGIONS[level]
    names = tuple(LABEL_TO_LEVEL[x] for x in parse_levels(level))
    drawable = tuple(n for n in names if n in MORPHOMETRY)  # ranges skip T13 / L6
    if not drawable:
        raise InputError(f"phantoms are drawn for T1-L5 only, not {level!r}")
    return drawable


def draw_spine(rng: np.random.Generator, level: str | None) -> SpineParams:
    """All spine draws: centred level, size, bone age, degeneration, posture, each vertebra."""
    if level is None:  # half lumbar, half thoracic
        pool = REGIONS["lumbar"] if rng.random() < 0.5 else REGIONS["thoracic"]
    else:
        pool = _centre_choices(level)
        rng.random()  # the same draws follow whatever the level
    centre = pool[int(rng.integers(len(pool)))]
    z_size = float(np.clip(rng.standard_normal(), -2.5, 2.5))
    age = float(rng.beta(1.6, 2.2))
    deg = float(rng.beta(1.2, 3.0))
    bone = draw_bone(rng, age)
    posture = draw_posture(rng)
    verts = {lvl: draw_vertebra(rng, lvl, z_size, bone, deg) for lvl in SPINE_LEVELS}
    discs: dict[str, float] = {}
    for lvl in SPINE_LEVELS[:-1]:
        m = MORPHOMETRY[lvl].disc_height_below
        hgt = m.mean + m.sd * float(np.clip(rng.standard_normal(), -2, 2))
        loss = deg * rng.uniform(0.3, 0.8) if rng.random() < deg else 0.0
        discs[lvl] = float(max(hgt * (1.0 - loss), 1.5))
    discs["S1"] = 0.0
    return SpineParams(
        centre_level=centre,
        centre_label=level_label(centre),
        size=z_size,
        age_density=age,
        degeneration=deg,
        vertebrae=verts,
        discs=discs,
        disc_hu=float(rng.uniform(75.0, 100.0) - 20.0 * deg),
        nucleus_hu=float(rng.uniform(60.0, 80.0) + 30.0 * deg),
        csf_hu=float(rng.uniform(0.0, 15.0)),
        cord_hu=float(rng.uniform(30.0, 40.0)),
        posture=posture,
    )


def draw_params(seed: int, level: str | None = None, body_composition: str = "default") -> PhantomParams:
    """Every parameter of the phantom of ``seed`` (nothing depends on a grid).

    ``body_composition="published"`` then draws sex, BMI and the centred level's muscle and fat
    areas from their own stream (3) and fits the torso to them (:mod:`.composition`); the spine and
    the scanner are the default phantom's.
    """
    from .composition import apply_published, check_body_composition

    check_body_composition(body_composition)
    sp = draw_spine(_rng(seed, 0), level)
    p = PhantomParams(
        seed=int(seed), spine=sp, torso=draw_torso(_rng(seed, 1)), scanner=draw_scanner(_rng(seed, 2), sp.centre_level)
    )
    if body_composition == "published":
        p = apply_published(p, _rng(seed, 3))
    return p


def _shape(size: int | Sequence[int], spacing_mm: float, fov_mm: float | None) -> tuple[int, ...]:
    """Voxels per axis: ``size``, or ``fov_mm / spacing_mm`` nudged to the parity of ``size``."""
    sizes = (int(size),) * 3 if np.isscalar(size) else tuple(int(s) for s in size)  # type: ignore[arg-type]
    if len(sizes) != 3 or min(sizes) < 8:
        raise InputError(f"size must be one number or three, each >= 8, got {size}")
    if fov_mm is None:
        return sizes
    k = int(round(fov_mm / spacing_mm))
    return tuple(max(k + ((k - n) % 2), 8) for n in sizes)


def vertebra_centroid(
    p: PhantomParams, lay: dict, spacing_mm: float, halves: Sequence[float] = (0.0, 0.5)
) -> dict[float, np.ndarray]:
    """World centroid (mm) of the centred vertebra's label on lattices of ``spacing_mm``.

    Args:
        halves: lattice offsets in voxels: 0 (points at whole multiples of the spacing, grids of
            odd size) and/or 0.5 (even size).
    """
    sp = p.spine
    v, L = sp.vertebrae[sp.centre_level], lay[sp.centre_level]
    corners = (L["R"] @ local_box(v).T).T + L["c"]
    lo = np.floor(corners.min(0) / spacing_mm) - 2
    hi = np.ceil(corners.max(0) / spacing_mm) + 2
    out = {}
    for half in sorted(set(halves)):  # even and odd grids sit on different lattices
        g = Grid((hi - lo + 1).astype(int), spacing_mm, (lo + hi) / 2 * spacing_mm + half * spacing_mm)
        sdf = vertebra_sdf(to_local(g.points(g.full()), L["c"], L["R"]), v)[0]
        m = occupancy(sdf, spacing_mm) >= 0.5
        idx = np.argwhere(m)
        out[half] = np.array([g.axes[d][idx[:, d]].mean() for d in range(3)])
    return out


def make_phantom(
    seed: int,
    *,
    size: int | Sequence[int] = 64,
    spacing_mm: float = 1.25,
    fov_mm: float | None = None,
    level: str | None = None,
    centre: str = "vertebra",
    noise_hu: float | None = None,
    blur: bool = True,
    metal: bool | None = None,
    body_composition: str = "default",
    regions: bool = False,
) -> Phantom:
    """Draw a procedural spine CT phantom.

    Args:
        seed: random seed; everything is a function of it.
        size: voxels per axis (one number or three) of the default crop.
        spacing_mm: isotropic voxel size (mm).
        fov_mm: field of view (mm) for a large phantom with the whole torso: ``round(fov_mm /
            spacing_mm)`` voxels per axis, nudged by one to the parity of ``size`` so that its
            central block is exactly the crop of the same seed.
        level: the centred vertebra: a level (``"L1"``), a range (``"T10-L5"``, one drawn), a
            region (``"lumbar"``, ``"thoracic"``) or ``None`` (half lumbar L1-L5, half T6-T12).
        centre: ``"vertebra"``: the grid centre is the centroid of the centred vertebra's label,
            rounded to whole voxels exactly as the prior's training crops are cut
            (:func:`xfit.io.crop_centred`); ``"grid"``: the midpoint of that vertebra's
            antero-posterior extent.
        noise_hu: CT noise standard deviation (HU); ``None`` draws one in 5-30, 0 switches it off.
        blur: apply the drawn slice thickness and in-plane blur.
        metal: pedicle screws: ``None`` as drawn (a small fraction of cases), True or False.
        body_composition: ``"default"`` (the phantom of the seed as it always was) or
            ``"published"``: sex, BMI and the centred level's muscle / fat areas drawn from
            published CT body-composition data and the torso fitted to them
            (:mod:`xfit.phantoms.composition`); recorded in ``info["body_composition"]``.
        regions: also return the body compartments (``Phantom.regions``) for area measurements.

    Returns:
        :class:`Phantom` whose grid centre is the world origin (where X-rays aimed at the
        vertebra have their isocentre); ``info["centre_mm"]`` is that centre in the drawing frame
        (whose origin is the midpoint of the centred vertebra's antero-posterior extent).

    Raises:
        InputError: bad size, spacing, field of view, level, centre, noise or body composition.
    """
    if centre not in CENTRES:
        raise InputError(f"centre must be one of {CENTRES}, got {centre!r}")
    if not (math.isfinite(spacing_mm) and spacing_mm > 0):
        raise InputError(f"spacing_mm must be positive, got {spacing_mm}")
    if fov_mm is not None and not (math.isfinite(fov_mm) and fov_mm > 0):
        raise InputError(f"fov_mm must be positive, got {fov_mm}")
    if noise_hu is not None and not (math.isfinite(noise_hu) and noise_hu >= 0):
        raise InputError(f"noise_hu must be >= 0, got {noise_hu}")
    shape = _shape(size, spacing_mm, fov_mm)
    if max(shape) > MAX_SIDE:
        raise InputError(f"a grid of {shape} voxels is too large (at most {MAX_SIDE} per side)")
    p = draw_params(seed, level, body_composition)
    sc = p.scanner
    if noise_hu is not None:
        sc.noise_hu = float(noise_hu)
    if metal is not None:
        sc.metal = bool(metal)
        if sc.metal and not sc.metal_levels:
            i = min(SPINE_LEVELS.index(p.spine.centre_level), len(SPINE_LEVELS) - 3)
            sc.metal_levels = tuple(SPINE_LEVELS[max(i - 1, 0) : i + 2])
    sp = p.spine
    lay = layout(sp.vertebrae, sp.discs, sp.posture, sp.centre_level)
    h = float(spacing_mm)
    origin = np.zeros(3)
    if centre == "vertebra":
        halves = [0.5 if n % 2 == 0 else 0.0 for n in shape]
        cents = vertebra_centroid(p, lay, h, halves)
        # the crop rule of xfit.io.crop_centred, on the lattice of each axis' parity
        origin = np.array([round(float(cents[hv][d]) / h) * h for d, hv in enumerate(halves)])
    m = margin_vox(sc, h) if (blur or sc.noise_hu > 0) else 0
    grid = Grid([n + 2 * m for n in shape], h, origin)
    cv = Canvas(grid)
    cage = ribcage(sp, lay, p.torso)
    reg: dict | None = {} if regions else None
    render_torso(cv, sp, lay, cage, p.torso, seed, regions=reg)
    render_discs_and_canal(cv, sp, lay)
    render_ribs(cv, sp, lay, cage, p.torso, seed)
    render_vertebrae(cv, sp, lay, seed)
    if sc.metal:
        render_metal(cv, sp, lay, sc)
    hu = cv.hu()
    if blur:
        hu = apply_blur(hu, sc, h)
    if sc.noise_hu > 0:
        hu = hu + correlated_noise(grid.axes, h, sc, seed * 7919 + 17)
    crop = tuple(slice(m, m + n) for n in shape)
    out_grid = Grid(shape, h)  # the grid centre is the world origin of the written volume
    v = sp.vertebrae[sp.centre_level]
    info = dict(
        seed=int(seed),
        shape=list(shape),
        spacing_mm=h,
        centre=centre,
        centre_mm=[float(x) for x in origin],
        centre_level=sp.centre_level,
        centre_label=sp.centre_label,
        body_composition=composition_json(p.composition) or "default",
        levels={lvl: sp.vertebrae[lvl].label for lvl in SPINE_LEVELS},
        vertebra=dict(
            level=sp.centre_level,
            body_width_mm=2 * v.a,
            body_depth_mm=2 * v.b,
            body_height_mm=2 * v.hb,
            width_mm=v.width,
            depth_mm=v.depth,
            body_centre_mm=[float(x) for x in lay[sp.centre_level]["c"] - origin],
            sagittal_tilt_deg=float(lay[sp.centre_level]["phi"]),
            coronal_tilt_deg=float(lay[sp.centre_level]["psi"]),
            axial_rotation_deg=float(lay[sp.centre_level]["rot"] + v.axial_rot),
        ),
    )
    return Phantom(
        hu=np.ascontiguousarray(hu[crop], np.float32),
        seg=np.ascontiguousarray(cv.seg[crop]),
        tissue=np.ascontiguousarray(cv.tissue[crop]),
        affine=out_grid.affine,
        params=p,
        info=info,
        regions=None if reg is None else {k: np.ascontiguousarray(v[crop]) for k, v in reg.items()},
    )
