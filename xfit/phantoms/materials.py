"""Bone and spinal soft-tissue materials: HU draws across ages and the bone HU of a voxel.

Trabecular bone density falls with age: the case's ``age_density`` in [0, 1] runs from a young
adult (about 220-300 HU) to osteoporotic bone (about 50-110 HU), see
:data:`xfit.phantoms.morphometry.TISSUE_HU`. The cortical shell of a vertebral body is thin
(:data:`xfit.phantoms.morphometry.CORTICAL_THICKNESS_MM`), so at 1.25 mm voxels it only shows as a
partial-volume rim; the posterior elements are mostly cortical and therefore denser than the
body's core. The trabecular texture is anisotropic (elongated along the body axis, like the
vertical trabeculae), and a basivertebral venous channel crosses the back of each body.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .fields import smooth_field
from .params import VertebraParams

#: Texture lattice cells (mm) across and along the body axis: vertical trabeculae.
TRABECULAR_CELL_MM = (1.5, 1.5, 2.8)


def draw_bone(rng: np.random.Generator, age_density: float) -> dict[str, float]:
    """Bone HU of one case: trabecular, posterior-element excess, cortical, shell thickness.

    Trabecular HU runs from ``TISSUE_HU["trabecular_young"]`` (``age_density`` 0) to
    ``TISSUE_HU["trabecular_osteoporotic"]`` (1); the cortex from ``TISSUE_HU["cortical_bone"]``
    and :data:`CORTICAL_THICKNESS_MM`, thinner and less dense with age.
    """
    from .morphometry import CORTICAL_THICKNESS_MM as ct
    from .morphometry import TISSUE_HU as t

    young = rng.uniform(t["trabecular_young"].lo, t["trabecular_young"].hi)
    old = rng.uniform(t["trabecular_osteoporotic"].lo, t["trabecular_osteoporotic"].hi)
    cort = t["cortical_bone"]
    return dict(
        trabecular=float(young + (old - young) * age_density),
        posterior=float(rng.uniform(80.0, 180.0)),
        cortical=float(rng.uniform(cort.lo + 100, cort.hi - 200) - 200.0 * age_density),
        cortical_mm=float(rng.uniform(ct.lo, ct.hi) * (1.0 - 0.3 * age_density) + 0.1),
        sclerosis=float(rng.uniform(300.0, 700.0)),
    )


def vertebra_hu(
    sdf: np.ndarray,
    posterior: np.ndarray,
    endplate: np.ndarray,
    local: Sequence[np.ndarray],
    world: Sequence[np.ndarray],
    v: VertebraParams,
    key: int,
    spacing: float,
) -> np.ndarray:
    """HU of a vertebra's voxels: textured trabecular core, denser posterior elements, endplate
    sclerosis, basivertebral channel and a cortical shell with partial volume.

    Args:
        sdf, posterior, endplate: from :func:`xfit.phantoms.vertebra.vertebra_sdf`.
        local: the voxels' local coordinates (mm); world: their world coordinates (mm).
    """
    u, vv, w = local
    core = v.trab_hu + v.post_hu * posterior
    if v.sclerosis_hu > 0:
        core = core + v.sclerosis_hu * np.exp(-endplate / 2.0) * (1.0 - posterior)
    chan = np.exp(-((u / 4.0) ** 2 + ((vv + 0.55 * v.b) / 3.0) ** 2 + (w / 2.0) ** 2))
    core = core - (v.trab_hu + 40.0) * 0.8 * chan * (1.0 - posterior)
    return bone_hu(sdf, world, core, v.cort_hu, v.cort_t, v.tex_hu, key, spacing)


def bone_hu(
    sdf: np.ndarray,
    world: Sequence[np.ndarray],
    core: float | np.ndarray,
    cort: float,
    cort_t: float,
    tex: float,
    key: int,
    spacing: float,
) -> np.ndarray:
    """HU of the bone part of each voxel: a cortical shell of ``cort_t`` mm over a textured core.

    Along the surface normal, a voxel of side ``spacing`` at signed distance ``sdf`` holds bone
    ``occ(sdf)`` and cortex ``occ(sdf) - occ(sdf + cort_t)`` (:func:`~.sdf.occupancy`), so a
    shell thinner than a voxel shows as the partial-volume rim it is on real CT.
    """
    occ = np.clip(0.5 - sdf / spacing, 0.0, 1.0)
    shell = (occ - np.clip(0.5 - (sdf + cort_t) / spacing, 0.0, 1.0)) / np.maximum(occ, 1e-3)
    shape = np.broadcast_shapes(*[np.shape(x) for x in world])
    f = smooth_field(np.ravel(world[0]), np.ravel(world[1]), np.ravel(world[2]), key, TRABECULAR_CELL_MM)
    f = np.broadcast_to(f, shape)
    c = core + tex * f
    return (c + (cort - c) * shell).astype(np.float32)
