"""Typed parameters of a phantom: everything drawn from the seed before any grid exists."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class VertebraParams:
    """One vertebra in its local frame (mm, degrees, HU).

    Local axes: u (+x, patient's right), v (+y, anterior), w (+z, superior); the origin is the
    body centre. ``a, b`` are the body's half-width and half-depth at mid-height, ``hb_ant,
    hb_post`` its anterior and posterior half-heights (wedging).
    """

    level: str
    label: int
    region: str  # "T", "L" or "S"
    a: float
    b: float
    hb_ant: float
    hb_post: float
    cup: float  # endplate concavity at the centre
    waist: float  # relative narrowing of the body at mid-height
    cw: float  # canal width (interpedicular)
    cd: float  # canal depth
    pw: float  # pedicle width
    ph: float  # pedicle height
    pl: float  # pedicle length (body back to lamina junction)
    ped_angle: float  # pedicle convergence in the axial plane
    lt: float  # lamina thickness
    lh: float  # lamina height
    width: float  # tip-to-tip width across the transverse processes
    tp_back: float  # transverse process tips behind the pedicles
    tp_up: float  # transverse process tips above the pedicle line
    tp_r: tuple[float, float]  # transverse process half-thicknesses
    sp_len: float  # spinous process length
    sp_ang: float  # downward inclination of the spinous process
    sp_t: float  # spinous process half-thickness x2 (left-right)
    sp_h: float  # spinous process height
    sap_h: float  # superior articular process height
    iap_h: float  # inferior articular process height
    facet_angle: float  # facet plane to the sagittal plane (0 sagittal, 90 coronal)
    axial_rot: float  # own axial rotation (degrees), added to the posture's
    osteophyte: float  # rim osteophyte size (degeneration)
    trab_hu: float  # trabecular bone
    tex_hu: float  # trabecular texture amplitude
    post_hu: float  # extra density of the posterior elements (mostly cortical)
    cort_hu: float  # cortical bone
    cort_t: float  # cortical shell thickness
    sclerosis_hu: float  # endplate sclerosis (degeneration)

    @property
    def hb(self) -> float:
        """Mean half-height of the body."""
        return 0.5 * (self.hb_ant + self.hb_post)

    @property
    def depth(self) -> float:
        """Antero-posterior extent from the body front to the spinous tip (approximate)."""
        import math

        return 2 * self.b + self.cd + self.lt + self.sp_len * math.cos(math.radians(self.sp_ang)) + self.sp_t / 2


@dataclass
class PostureParams:
    """Spine curve: sagittal profile, scoliosis and whole-body positioning."""

    sacral_slope: float  # tilt of the S1 endplate (degrees)
    lordosis: float  # L1-S1 Cobb angle (degrees)
    kyphosis: float  # T4-T12 Cobb angle (degrees)
    scoliosis_cobb: float  # coronal Cobb angle (0 when there is none)
    scoliosis_apex: float  # apex position (index in LEVEL order, may be fractional)
    scoliosis_half_span: float  # levels from the apex to an end vertebra
    scoliosis_side: float  # +1 convex to the right, -1 to the left
    apical_rotation: float  # axial rotation at the apex (degrees)
    table_rotation: tuple[float, float, float]  # small positioning rotation about x, y, z


@dataclass
class SpineParams:
    """The whole column: the vertebrae, discs and what they are made of."""

    centre_level: str
    centre_label: int
    size: float  # shared size factor (standard deviations)
    age_density: float  # 0 young adult .. 1 osteoporotic
    degeneration: float  # 0 none .. 1 severe
    vertebrae: dict[str, VertebraParams]  # by level name, cranial to caudal
    discs: dict[str, float]  # height (mm) of the disc below each level
    disc_hu: float
    nucleus_hu: float
    csf_hu: float
    cord_hu: float
    posture: PostureParams


@dataclass
class TorsoParams:
    """Body habitus and the soft tissues around the spine (mm, HU)."""

    adiposity: float  # 0 lean .. 1 obese
    half_width: float
    half_depth: float
    superellipse: float
    skin: float
    fat: float  # subcutaneous fat thickness
    wall: float  # abdominal/thoracic wall muscle thickness
    post_muscle: float  # muscle behind the spinous tips
    muscle_hu: float
    fat_hu: float
    organ_hu: float
    liver_hu: float
    spleen_hu: float
    kidney_hu: float
    blood_hu: float
    lung_hu: float
    muscle_fat_infiltration: float  # fraction of fat in the paraspinal muscles
    rib_drop: float
    aorta_r: float
    dome: float
    gas: list[list[float]] = field(default_factory=list)


@dataclass
class ScannerParams:
    """Reconstruction and acquisition effects (each can be switched off)."""

    slice_thickness_mm: float  # FWHM along z
    inplane_fwhm_mm: float
    noise_hu: float
    noise_corr_mm: float  # correlation length of the noise (Gaussian sigma)
    metal: bool
    metal_levels: tuple[str, ...] = ()


@dataclass
class CompositionParams:
    """Body composition drawn from published data (:mod:`.composition`): who the body is and the
    cross-sectional areas (cm², at the centred level's mid-vertebral axial slice) the torso was
    fitted to. ``vat_cm2`` is 0 above the diaphragm (the cavity holds lungs and mediastinum)."""

    model: str  # "published" (the version of the body-composition model)
    sex: str  # "female" or "male"
    bmi: float  # kg/m^2
    level: str  # the level the targets are for (the centred vertebra)
    sma_cm2: float  # skeletal muscle area target
    sat_cm2: float  # subcutaneous adipose tissue area target
    vat_cm2: float  # visceral adipose tissue area target
    body_cm2: float  # area inside the skin the outline was scaled to
    fitted: dict[str, float] = field(default_factory=dict)  # areas measured when fitting


@dataclass
class PhantomParams:
    """All draws of one phantom (``composition`` only with ``body_composition="published"``)."""

    seed: int
    spine: SpineParams
    torso: TorsoParams
    scanner: ScannerParams
    composition: CompositionParams | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-serializable dict (tuples become lists; no ``composition`` key when there is none,
        so the default phantoms' JSON is what it was before the key existed)."""
        d = json.loads(json.dumps(dataclasses.asdict(self), default=float))
        if d.get("composition") is None:
            d.pop("composition", None)
        return d
