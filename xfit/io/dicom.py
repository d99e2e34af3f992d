"""DICOM projection radiographs (DX, CR, XA, RF) -> xfit's view geometry and orientation.

This module holds the one mapping from DICOM tags to xfit's conventions (``docs/architecture.md``):
gantry angle theta (0 = AP, source anterior; 90 = left lateral, source on the patient's right),
beam's-eye images (AP: the patient's right on the image left; 90 degree lateral: anterior on the
image right; superior at the top), detector-plane pixel spacing, source-detector (sdd) and
source-isocentre (sod) distances. :mod:`xfit.io.xray` reads the file and calls :func:`resolve`.

Tag table (PS3.3 section in brackets; the same table is in ``docs/dicom.md``):

============================================ =================================================
ViewPosition (0018,5101) [C.8.1.1]            AP -> theta 0; PA -> 180; LL -> 90; RL -> -90.
                                              Obliques/decubitus (LLO, RLO, LAO, RAO, RLD, LLD,
                                              ...) give no angle: use the positioner angle or
                                              ``--angles``.
PositionerPrimaryAngle (0018,1510) [C.8.7.5]  XA/RF, or PositionerType CARM: angle alpha of the
                                              detector about the patient, 0 = detector over the
                                              chest (a PA beam), +90 = LAO 90 (detector on the
                                              patient's left), -90 = RAO 90:
                                              theta = 180 - alpha (wrapped to (-180, 180]).
                                              PS3.3 defines it for CARM (and MAMMOGRAPHIC)
                                              positioners only: otherwise a non-zero value is
                                              ignored with a warning.
PositionerSecondaryAngle (0018,1511)          XA/RF/CARM: beta, +90 = cranial (detector toward
                                              the head): the view is tilted by beta about its
                                              detector column axis (a ``pose``).
Detector{Primary,Secondary}Angle              beam tilt relative to the detector normal: not
(0018,1530/1531) [C.8.7.5.1.4]                modelled; a non-zero value is warned about.
PatientOrientation (0020,0020) [C.7.6.1.1.1]  directions of the image rows (first value) and
                                              columns (second); the image is flipped (and
                                              transposed if needed) until they equal the
                                              beam's-eye directions of theta. Missing: AP/PA
                                              are assumed stored as displayed (patient's right
                                              on the image left, L\\F), laterals as the
                                              beam's-eye view, XA/RF as seen from the detector
                                              (mirror of the beam's-eye view), with a warning.
ImagerPixelSpacing (0018,1164) [C.8.11.4]     pixel spacing at the detector (row, col): used
                                              as is.
PixelSpacing (0028,0030) [10.7.1.3]           in projection radiography calibrated "in the
                                              patient": used only without ImagerPixelSpacing,
                                              times the magnification (ERMF, else sdd/sod).
EstimatedRadiographicMagnificationFactor      ERMF = SID / SOD: converts PixelSpacing to the
(0018,1114)                                   detector; with sdd and no sod it gives
                                              sod = sdd / ERMF; must agree with
                                              ImagerPixelSpacing / PixelSpacing when all exist.
DistanceSourceToDetector (0018,1110)          sdd_mm.
DistanceSourceToIsocenter (0018,9402)         sod_mm (preferred).
DistanceSourceToPatient (0018,1111)           sod_mm when there is no isocentre distance (XA
                                              defines it as source to isocentre; DX as source
                                              to the table or support nearest the patient);
                                              must be < sdd.
PhotometricInterpretation (0028,0004)         MONOCHROME1 is inverted (bright = attenuating).
PresentationLUTShape (2050,0020)              INVERSE inverts (once: DX pairs it with
                                              MONOCHROME1).
RescaleSlope/Intercept (0028,1053/1052),      applied (the modality LUT), then a
VOILUTSequence (0028,3010)                    VOILUTSequence if present; WindowCenter/Width
                                              are not applied (a linear window only clips).
============================================ =================================================

Tags that contradict each other, or a sidecar / option, raise :class:`~xfit.errors.InputError`
naming both; missing tags produce one warning per image saying what was assumed. A pixel spacing
tag that is not two positive numbers (the ``PixelSpacing 0\\0`` of some CRs) is unusable: the other
spacing tag, ``--pixel-spacing`` or a sidecar stands in for it, with that warning naming it;
without any, it is an error naming it. A RescaleSlope of 0 or a non-numeric one is an error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GeometryError, InputError

__all__ = ["TAG_TABLE", "DicomInfo", "orientation_vectors", "read_dataset", "resolve", "view_angle_from_tags"]

#: (tag, keyword, what xfit takes from it) -- the documented mapping, one row per tag.
TAG_TABLE: tuple[tuple[str, str, str], ...] = (
    ("(0018,5101)", "ViewPosition", "AP -> 0, PA -> 180, LL -> 90, RL -> -90 (theta, deg)"),
    ("(0018,1510)", "PositionerPrimaryAngle", "XA/RF/CARM: theta = 180 - alpha (LAO +, RAO -; 0 = PA)"),
    ("(0018,1511)", "PositionerSecondaryAngle", "XA/RF/CARM: cranial + tilt about the detector column axis (pose)"),
    ("(0020,0020)", "PatientOrientation", "row/column directions -> flips (and transpose) to the beam's-eye view"),
    ("(0018,1164)", "ImagerPixelSpacing", "pixel_spacing_mm (detector plane)"),
    ("(0028,0030)", "PixelSpacing", "patient plane: x ERMF (else sdd/sod) -> pixel_spacing_mm"),
    ("(0018,1114)", "EstimatedRadiographicMagnificationFactor", "PixelSpacing -> detector; sod = sdd / ERMF"),
    ("(0018,1110)", "DistanceSourceToDetector", "sdd_mm"),
    ("(0018,9402)", "DistanceSourceToIsocenter", "sod_mm"),
    ("(0018,1111)", "DistanceSourceToPatient", "sod_mm (without DistanceSourceToIsocenter)"),
    ("(0018,1530)", "DetectorPrimaryAngle", "beam tilt: not modelled, warned when non-zero"),
    ("(0028,0004)", "PhotometricInterpretation", "MONOCHROME1 -> inverted"),
    ("(2050,0020)", "PresentationLUTShape", "INVERSE -> inverted (once)"),
)

#: View positions with a defined gantry angle (theta in degrees).
VIEW_POSITION_ANGLE: dict[str, float] = {"AP": 0.0, "PA": 180.0, "LL": 90.0, "RL": -90.0}

_LETTER = {
    "R": (1.0, 0.0, 0.0),
    "L": (-1.0, 0.0, 0.0),
    "A": (0.0, 1.0, 0.0),
    "P": (0.0, -1.0, 0.0),
    "H": (0.0, 0.0, 1.0),
    "F": (0.0, 0.0, -1.0),
}
_CARM_MODALITIES = ("XA", "RF")
_ANGLE_TOL_DEG = 1.0
_REL_TOL = 0.01
_ALIGN = 0.5  # |cos| above which an image axis counts as along a detector axis (within 60 deg)


@dataclass
class DicomInfo:
    """What the tags of one DICOM radiograph say (before options and sidecars).

    Attributes:
        image: ``[R, C]`` float32 in [0, 1], bright = attenuating, in the stored orientation.
        values: sidecar keys the tags supply (angle_deg, sdd_mm, sod_mm, pixel_spacing_mm, and
            ``pose`` for a cranial/caudal tilt).
        sources: for each of those keys (and ``invert``), the tag(s) that supplied it.
        patient_orientation: the two PatientOrientation strings, or None.
        assumptions: what was assumed for missing tags (warned once by :func:`resolve`).
        default_display: how the image is assumed stored without PatientOrientation:
            ``"display"`` (AP/PA: patient's right on the image left), ``"beam"`` (beam's-eye
            view) or ``"detector"`` (seen from the detector, the mirror of the beam's-eye view).
        patient_spacing: PixelSpacing in the patient (row, col) still to be multiplied by
            sdd/sod (no ImagerPixelSpacing, no ERMF), else None.
        modality, view_position: the tags' values ("" when absent).
        invalid: pixel spacing tags present with unusable values (``PixelSpacing 0\\0``), by
            keyword, each described; :func:`resolve` lets an option stand in for them.
    """

    image: np.ndarray
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    patient_orientation: tuple[str, str] | None = None
    assumptions: list[str] = field(default_factory=list)
    default_display: str = "beam"
    patient_spacing: list[float] | None = None
    modality: str = ""
    view_position: str = ""
    invalid: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- small helpers


def _text(ds: Any, keyword: str) -> str:
    value = getattr(ds, keyword, None)
    return "" if value is None else str(value).strip().upper()


def _number(ds: Any, keyword: str, path: Path) -> float | None:
    value = getattr(ds, keyword, None)
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: DICOM {keyword} must be a number, got {value!r}") from exc
    if not math.isfinite(out):
        raise InputError(f"{path}: DICOM {keyword} must be finite, got {value!r}")
    return out


_SPACING_TAGS = {"ImagerPixelSpacing": "(0018,1164)", "PixelSpacing": "(0028,0030)"}


def _spacing_tag(ds: Any, keyword: str, info: DicomInfo) -> list[float] | None:
    """A pixel spacing tag (row, col) in mm; None when absent or unusable. An unusable value (not
    two positive numbers, such as the ``0\\0`` some CRs carry) is described in ``info.invalid``."""
    value = getattr(ds, keyword, None)
    if value is None or value == "":
        return None
    try:
        vals = [float(v) for v in value]
    except (TypeError, ValueError):
        vals = []
    if len(vals) == 2 and all(math.isfinite(v) and v > 0 for v in vals):
        return vals
    shown = str(value) if isinstance(value, str) or not isinstance(value, Sequence) else "\\".join(map(str, value))
    info.invalid[keyword] = f"DICOM {keyword} {_SPACING_TAGS[keyword]} is {shown}, not two positive numbers (row\\col)"
    return None


def _wrap(angle: float) -> float:
    """Angle in degrees wrapped to (-180, 180]."""
    a = (float(angle) + 180.0) % 360.0 - 180.0
    return 180.0 if a == -180.0 else a + 0.0


def _angle_diff(a: float, b: float) -> float:
    return abs(_wrap(a - b))


def orientation_vectors(text: str) -> np.ndarray:
    """RAS+ unit vector of one PatientOrientation value (``"L"``, ``"FL"``, ``"AR"`` ...).

    Raises:
        InputError: empty value or a letter other than R, L, A, P, H, F.
    """
    text = text.strip().upper()
    if not text or any(ch not in _LETTER for ch in text):
        raise InputError(f"PatientOrientation value {text!r} must be made of the letters R L A P H F")
    vec = np.sum([_LETTER[ch] for ch in text], axis=0).astype(np.float64)
    norm = float(np.linalg.norm(vec))
    if norm == 0.0:
        raise InputError(f"PatientOrientation value {text!r} has opposite letters")
    return vec / norm


def beam_axes(angle_deg: float, pose: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """RAS+ directions of the image columns' growth (u) and rows' growth (v) of xfit's view."""
    t = math.radians(angle_deg)
    u = np.array([-math.cos(t), math.sin(t), 0.0])
    v = np.array([0.0, 0.0, -1.0])
    if pose is not None:
        rot = np.asarray(pose, np.float64)[:3, :3]
        u, v = rot @ u, rot @ v
    return u, v


def tilt_pose(angle_deg: float, tilt_deg: float) -> list[list[float]]:
    """4x4 pose tilting a view of gantry angle ``angle_deg`` by ``tilt_deg`` about its detector
    column axis, so that the detector moves toward the head for a positive (cranial) tilt."""
    t, b = math.radians(angle_deg), math.radians(tilt_deg)
    axis = np.array([-math.cos(t), math.sin(t), 0.0])  # u = d x z, d the iso -> detector direction
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + math.sin(b) * k + (1 - math.cos(b)) * (k @ k)
    pose = np.eye(4)
    pose[:3, :3] = rot
    return [[float(x) for x in row] for row in pose]


# ----------------------------------------------------------------------------- reading


def _pixels(ds: Any, path: Path, info: DicomInfo) -> np.ndarray:
    if not _text(ds, "PhotometricInterpretation") and "PixelData" in ds:
        ds.PhotometricInterpretation = "MONOCHROME2"  # decoders need it; noted below as assumed
        info.assumptions.append("no PhotometricInterpretation: MONOCHROME2 assumed (bright = attenuating)")
    try:
        raw = ds.pixel_array
    except Exception as exc:
        raise InputError(f"{path}: cannot read the DICOM pixel data ({type(exc).__name__}: {exc})") from exc
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 or raw.ndim != 2:
        raise InputError(f"{path}: expected one 2D grayscale frame, got pixel data of shape {raw.shape}")
    if raw.size == 0:
        raise InputError(f"{path}: the image is empty")
    slope, intercept = _number(ds, "RescaleSlope", path), _number(ds, "RescaleIntercept", path)
    if slope == 0:
        raise InputError(f"{path}: DICOM RescaleSlope (0028,1053) is 0: every pixel would be the intercept")
    arr = raw.astype(np.float64) * (1.0 if slope is None else slope) + (intercept or 0.0)
    if "VOILUTSequence" in ds:
        try:
            from pydicom.pixels import apply_voi
        except ImportError:  # pydicom < 3
            from pydicom.pixel_data_handlers.util import apply_voi  # type: ignore[no-redef]
        as_int = np.rint(arr)
        if np.array_equal(as_int, arr):  # LUT entries are looked up by whole values
            arr = as_int.astype(np.int64)
        try:
            arr = np.asarray(apply_voi(arr, ds), np.float64)
        except Exception as exc:
            raise InputError(f"{path}: cannot apply the VOILUTSequence ({type(exc).__name__}: {exc})") from exc
        info.sources["voi_lut"] = "DICOM VOILUTSequence (0028,3010)"
    photometric = _text(ds, "PhotometricInterpretation")
    shape = _text(ds, "PresentationLUTShape")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(f"{path}: PhotometricInterpretation {photometric} is not a grayscale radiograph")
    if shape not in ("", "IDENTITY", "INVERSE"):
        raise InputError(f"{path}: PresentationLUTShape {shape!r} must be IDENTITY or INVERSE")
    if photometric == "MONOCHROME2" and shape == "INVERSE" and _text(ds, "Modality") in ("DX", "CR", "MG", "IO"):
        raise InputError(
            f"{path}: PhotometricInterpretation MONOCHROME2 contradicts PresentationLUTShape "
            "INVERSE (DX pairs INVERSE with MONOCHROME1)"
        )
    invert = photometric == "MONOCHROME1" or shape == "INVERSE"
    if invert:
        arr = -arr
        why = [
            f"PhotometricInterpretation {photometric}" if photometric == "MONOCHROME1" else "",
            "PresentationLUTShape INVERSE" if shape == "INVERSE" else "",
        ]
        info.sources["invert"] = "DICOM " + " + ".join(w for w in why if w)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{path}: the image holds NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    return np.zeros_like(arr, np.float32) if hi <= lo else ((arr - lo) / (hi - lo)).astype(np.float32)


def view_angle_from_tags(ds: Any, path: Path, info: DicomInfo) -> None:
    """Fill ``info.values['angle_deg']`` (and ``pose``) from ViewPosition and the positioner
    angles; raise InputError when they disagree."""
    modality = info.modality
    vp = info.view_position
    carm = modality in _CARM_MODALITIES or _text(ds, "PositionerType") == "CARM"
    candidates: list[tuple[float, str]] = []
    if vp in VIEW_POSITION_ANGLE:
        candidates.append((VIEW_POSITION_ANGLE[vp], f"DICOM ViewPosition {vp}"))
    elif vp:
        info.assumptions.append(f"ViewPosition {vp} has no fixed gantry angle")
    primary = _number(ds, "PositionerPrimaryAngle", path)
    secondary = _number(ds, "PositionerSecondaryAngle", path)
    if carm:
        if primary is not None:
            if not -180.0 <= primary <= 180.0:
                raise InputError(f"{path}: PositionerPrimaryAngle {primary:g} must be in [-180, 180]")
            side = "LAO" if primary > 0 else "RAO" if primary < 0 else ""
            what = f"{side} {abs(primary):g}" if side else "PA"
            candidates.append(
                (_wrap(180.0 - primary), f"DICOM PositionerPrimaryAngle {primary:g} ({what}; theta = 180 - angle)")
            )
        if secondary is not None and not -90.0 <= secondary <= 90.0:
            raise InputError(f"{path}: PositionerSecondaryAngle {secondary:g} must be in [-90, 90]")
    else:
        for name, value in (("PositionerPrimaryAngle", primary), ("PositionerSecondaryAngle", secondary)):
            if value not in (None, 0.0):
                info.assumptions.append(
                    f"{name} {value:g} ignored: it is defined for C-arm positioners only "
                    f"(PositionerType {_text(ds, 'PositionerType') or 'absent'}, "
                    f"Modality {modality or 'absent'})"
                )
        secondary = None
    for name in ("DetectorPrimaryAngle", "DetectorSecondaryAngle"):
        value = _number(ds, name, path)
        if value not in (None, 0.0):
            info.assumptions.append(
                f"{name} {value:g} (a beam tilt relative to the detector normal) is not modelled: ignored"
            )
    if len(candidates) == 2 and _angle_diff(candidates[0][0], candidates[1][0]) > _ANGLE_TOL_DEG:
        raise InputError(
            f"{path}: {candidates[0][1]} (theta {candidates[0][0]:g}) contradicts "
            f"{candidates[1][1]} (theta {candidates[1][0]:g})"
        )
    if candidates:
        angle = candidates[-1][0] if carm else candidates[0][0]
        info.values["angle_deg"] = angle
        info.sources["angle_deg"] = " and ".join(c[1] for c in candidates)
        if secondary:
            info.values["pose"] = tilt_pose(angle, secondary)
            direction = "cranial" if secondary > 0 else "caudal"
            info.sources["pose"] = f"DICOM PositionerSecondaryAngle {secondary:g} ({direction} tilt)"
    elif secondary:
        info.assumptions.append(
            f"PositionerSecondaryAngle {secondary:g} ignored: there is no gantry angle from the tags to tilt"
        )
    # how the image is stored when PatientOrientation is missing
    if carm:
        info.default_display = "detector"
    elif vp in ("AP", "PA"):
        info.default_display = "display"
    else:
        info.default_display = "beam"


def read_dataset(path: str | Path) -> DicomInfo:
    """Read a single-frame DICOM radiograph and everything its tags say about its geometry.

    Raises:
        InputError: unreadable file, no pixel data, multi-frame or colour data, bad tag values,
            contradictory tags (named).
    """
    import pydicom

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        ds = pydicom.dcmread(str(path), force=path.suffix.lower() in (".dcm", ".dicom"))
    except Exception as exc:
        raise InputError(f"{path}: cannot read as DICOM ({type(exc).__name__}: {exc})") from exc
    info = DicomInfo(image=np.zeros((1, 1), np.float32))
    info.image = _pixels(ds, path, info)
    info.modality = _text(ds, "Modality")
    info.view_position = _text(ds, "ViewPosition")
    view_angle_from_tags(ds, path, info)
    po = getattr(ds, "PatientOrientation", None)
    if po is not None and len(po) not in (0, 2):
        raise InputError(f"{path}: PatientOrientation must have two values (rows\\columns), got {po!r}")
    if po is not None and len(po) == 2 and all(str(v).strip() for v in po):
        info.patient_orientation = (str(po[0]).strip().upper(), str(po[1]).strip().upper())
        for value in info.patient_orientation:
            try:
                orientation_vectors(value)
            except InputError as exc:
                raise InputError(f"{path}: {exc}") from exc
    # distances
    sdd = _number(ds, "DistanceSourceToDetector", path)
    sod_iso = _number(ds, "DistanceSourceToIsocenter", path)
    sod_pat = _number(ds, "DistanceSourceToPatient", path)
    ermf = _number(ds, "EstimatedRadiographicMagnificationFactor", path)
    for name, value in (
        ("DistanceSourceToDetector", sdd),
        ("DistanceSourceToIsocenter", sod_iso),
        ("DistanceSourceToPatient", sod_pat),
        ("EstimatedRadiographicMagnificationFactor", ermf),
    ):
        if value is not None and value <= 0:
            raise InputError(f"{path}: DICOM {name} must be > 0, got {value:g}")
    if sdd is not None:
        info.values["sdd_mm"] = sdd
        info.sources["sdd_mm"] = "DICOM DistanceSourceToDetector (0018,1110)"
    if sod_iso is not None:
        info.values["sod_mm"], sod_tag = sod_iso, "DistanceSourceToIsocenter"
        info.sources["sod_mm"] = "DICOM DistanceSourceToIsocenter (0018,9402)"
    elif sod_pat is not None:
        info.values["sod_mm"], sod_tag = sod_pat, "DistanceSourceToPatient"
        info.sources["sod_mm"] = "DICOM DistanceSourceToPatient (0018,1111)"
    elif sdd is not None and ermf is not None:
        info.values["sod_mm"], sod_tag = sdd / ermf, "EstimatedRadiographicMagnificationFactor"
        info.sources["sod_mm"] = (
            f"DICOM DistanceSourceToDetector / EstimatedRadiographicMagnificationFactor ({sdd:g} / {ermf:g})"
        )
    if sdd is not None and "sod_mm" in info.values and info.values["sod_mm"] >= sdd:
        raise InputError(
            f"{path}: DICOM {sod_tag} ({info.values['sod_mm']:g} mm) must be smaller than "
            f"DistanceSourceToDetector ({sdd:g} mm): the patient lies between source and detector"
        )
    # pixel spacing
    imager = _spacing_tag(ds, "ImagerPixelSpacing", info)
    patient = _spacing_tag(ds, "PixelSpacing", info)
    if imager is not None:
        info.values["pixel_spacing_mm"] = imager
        info.sources["pixel_spacing_mm"] = "DICOM ImagerPixelSpacing (0018,1164)"
        if patient is not None and not np.allclose(patient, imager, rtol=1e-4):
            implied = [i / p for i, p in zip(imager, patient)]
            if ermf is not None and any(abs(m - ermf) > _REL_TOL * ermf for m in implied):
                raise InputError(
                    f"{path}: ImagerPixelSpacing {imager} / PixelSpacing {patient} (magnification "
                    f"{implied[0]:.4g}) contradicts EstimatedRadiographicMagnificationFactor {ermf:g}"
                )
    elif patient is not None:
        if ermf is not None:
            info.values["pixel_spacing_mm"] = [p * ermf for p in patient]
            info.sources["pixel_spacing_mm"] = (
                f"DICOM PixelSpacing (0028,0030) x EstimatedRadiographicMagnificationFactor {ermf:g}"
            )
        else:
            info.patient_spacing = patient
            info.assumptions.append(
                "no ImagerPixelSpacing nor EstimatedRadiographicMagnificationFactor: "
                "PixelSpacing taken at the isocentre and multiplied by sdd/sod"
            )
    return info


# ----------------------------------------------------------------------------- resolving


def _agree(key: str, a: Any, b: Any) -> bool:
    if key == "angle_deg":
        return _angle_diff(float(a), float(b)) <= _ANGLE_TOL_DEG
    if key == "pixel_spacing_mm":
        a = [a, a] if isinstance(a, (int, float)) else list(a)
        b = [b, b] if isinstance(b, (int, float)) else list(b)
        return all(abs(x - y) <= _REL_TOL * abs(y) for x, y in zip(a, b))
    if key == "pose":
        return np.allclose(np.asarray(a, float), np.asarray(b, float), atol=1e-3)
    return abs(float(a) - float(b)) <= _REL_TOL * abs(float(b))


def _orientation_ops(
    info: DicomInfo, angle: float, pose: Any, path: Path, angle_source: str
) -> tuple[bool, bool, bool, str]:
    """(transpose, flip_rows (up-down), flip_cols (left-right), why) taking the stored image to
    the beam's-eye view of ``angle``."""
    u, v = beam_axes(angle, pose)
    assert info.patient_orientation is not None
    row_dir = orientation_vectors(info.patient_orientation[0])  # where increasing column index points
    col_dir = orientation_vectors(info.patient_orientation[1])  # where increasing row index points
    text = "\\".join(info.patient_orientation)
    transpose = False
    if abs(row_dir @ u) < _ALIGN or abs(col_dir @ v) < _ALIGN:
        if abs(row_dir @ v) >= _ALIGN and abs(col_dir @ u) >= _ALIGN:
            transpose, row_dir, col_dir = True, col_dir, row_dir
        else:
            raise InputError(
                f"{path}: PatientOrientation {text} contradicts {angle_source} (theta {angle:g}): the image "
                f"axes do not lie in that view's detector plane (its columns should run toward "
                f"{_letters(u)} and its rows toward {_letters(v)})"
            )
    flip_lr = bool(row_dir @ u < 0)
    flip_ud = bool(col_dir @ v < 0)
    return transpose, flip_ud, flip_lr, f"DICOM PatientOrientation {text}"


def _letters(vec: np.ndarray) -> str:
    out = ""
    for i, (pos, neg) in enumerate((("R", "L"), ("A", "P"), ("H", "F"))):
        if abs(vec[i]) >= 0.3:
            out += pos if vec[i] > 0 else neg
    return out or "?"


def resolve(
    info: DicomInfo,
    path: str | Path,
    *,
    sidecar: Mapping[str, Any] | None = None,
    sidecar_name: str = "sidecar",
    options: Mapping[str, Any] | None = None,
    flip_lr: bool | None = None,
    defaults: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any], dict[str, str]]:
    """Combine the tags with a sidecar and options into the image and geometry xfit fits.

    A value the tags supply must agree with the sidecar and the options (angle within 1 degree,
    distances and spacing within 1 %); values the tags lack come from the options, then the
    sidecar, then ``defaults``. The image is transposed/flipped to the beam's-eye view.

    Args:
        info: from :func:`read_dataset`.
        sidecar: a validated sidecar dict, or None.
        options: keyword overrides (``angle_deg``, ``sdd_mm``, ``sod_mm``, ``pixel_spacing_mm``,
            ``projection``), None = not given.
        flip_lr: the user's ``flip_lr`` (None = not given); must agree with PatientOrientation.
        defaults: ``sdd_mm`` / ``sod_mm`` used when neither tags, sidecar nor options give them.
    Returns:
        ``(image [R, C] float32, geometry dict for View.from_sidecar, sources)``; ``sources``
        names, for every geometry value, the tag, option, sidecar key or default that supplied it.
    Raises:
        InputError: contradictions (the message names both sides).
    """
    path = Path(path)
    sidecar = dict(sidecar or {})
    options = {k: v for k, v in (options or {}).items() if v is not None}
    assumptions = list(info.assumptions)
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    option_names = {
        "angle_deg": "--angles",
        "sdd_mm": "--sdd",
        "sod_mm": "--sod",
        "pixel_spacing_mm": "--pixel-spacing",
        "projection": "--projection",
    }
    for key in ("angle_deg", "sdd_mm", "sod_mm", "pixel_spacing_mm", "pose", "projection", "offset_px"):
        tag_value = info.values.get(key)
        given = [(options[key], f"option {key} ({option_names.get(key, key)})")] if key in options else []
        if sidecar.get(key) is not None:
            given.append((sidecar[key], f"{sidecar_name} {key}"))
        if tag_value is not None:
            for value, where in given:
                if not _agree(key, value, tag_value):
                    raise InputError(f"{path}: {where} = {value} contradicts {info.sources[key]} = {_show(tag_value)}")
            data[key], sources[key] = tag_value, info.sources[key]
        elif given:
            data[key], sources[key] = given[0]
    if sidecar.get("line_integral_scale") is not None:
        data["line_integral_scale"] = sidecar["line_integral_scale"]
    if sidecar.get("shape") is not None:
        data["shape"] = sidecar["shape"]
    if defaults and ("sdd_mm" not in data or "sod_mm" not in data):
        sdd0, sod0 = float(defaults["sdd_mm"]), float(defaults["sod_mm"])
        if "sdd_mm" in data and "sod_mm" not in data:  # keep the default ratio when the default would not fit
            value = sod0 if sod0 < data["sdd_mm"] else data["sdd_mm"] * sod0 / sdd0
            data["sod_mm"], sources["sod_mm"] = value, f"default ({value:g} mm)"
            assumptions.append(f"no DistanceSourceToIsocenter/DistanceSourceToPatient: sod_mm = {value:g} mm assumed")
        elif "sod_mm" in data and "sdd_mm" not in data:
            value = sdd0 if sdd0 > data["sod_mm"] else data["sod_mm"] * sdd0 / sod0
            data["sdd_mm"], sources["sdd_mm"] = value, f"default ({value:g} mm)"
            assumptions.append(f"no DistanceSourceToDetector: sdd_mm = {value:g} mm assumed")
        elif "sdd_mm" not in data and "sod_mm" not in data:
            data["sdd_mm"], sources["sdd_mm"] = sdd0, f"default ({sdd0:g} mm)"
            data["sod_mm"], sources["sod_mm"] = sod0, f"default ({sod0:g} mm)"
            assumptions.append(
                f"no DistanceSourceToDetector/DistanceSourceToPatient: sdd_mm = {sdd0:g} mm and "
                f"sod_mm = {sod0:g} mm assumed"
            )
    if info.invalid:  # an unusable spacing tag: another tag, or an option or sidecar, stands in for it
        bad = "; ".join(info.invalid.values())
        if "pixel_spacing_mm" in info.values or info.patient_spacing is not None:
            assumptions.append(f"{bad}: ignored")
        elif "pixel_spacing_mm" in data:
            assumptions.append(f"{bad}: {sources['pixel_spacing_mm']} used instead")
        else:
            raise InputError(f"{path}: {bad}: give --pixel-spacing")
    if info.patient_spacing is not None and "pixel_spacing_mm" not in data:
        sdd, sod = data.get("sdd_mm"), data.get("sod_mm")
        if sdd is None or sod is None:
            raise GeometryError(
                f"{path}: PixelSpacing is in the patient and the magnification is unknown: "
                "give --sdd and --sod or --pixel-spacing"
            )
        data["pixel_spacing_mm"] = [p * sdd / sod for p in info.patient_spacing]
        sources["pixel_spacing_mm"] = (
            f"DICOM PixelSpacing (0028,0030) x sdd/sod ({sources['sdd_mm']} / {sources['sod_mm']})"
        )
    elif info.patient_spacing is not None:
        assumptions = [a for a in assumptions if not a.startswith("no ImagerPixelSpacing")]
    if (
        "sdd_mm" in data
        and "sod_mm" in data
        and data["sod_mm"] >= data["sdd_mm"]
        and data.get("projection", "cone") == "cone"
    ):
        raise InputError(
            f"{path}: sod_mm {data['sod_mm']:g} ({sources['sod_mm']}) must be smaller than sdd_mm "
            f"{data['sdd_mm']:g} ({sources['sdd_mm']})"
        )
    # orientation
    image = info.image
    side_flip = sidecar.get("flip_lr")
    user_flip = flip_lr if flip_lr is not None else side_flip
    user_flip_name = "option flip_lr (--flip-lr)" if flip_lr is not None else f"{sidecar_name} flip_lr"
    transpose = flip_ud = False
    if "angle_deg" in data:
        angle = float(data["angle_deg"])
        if info.patient_orientation is not None:
            transpose, flip_ud, do_flip, why = _orientation_ops(
                info, angle, data.get("pose"), path, sources["angle_deg"]
            )
            if user_flip is not None and bool(user_flip) != do_flip:
                raise InputError(
                    f"{path}: {user_flip_name} = {bool(user_flip)} contradicts {why}, which "
                    f"{'needs' if do_flip else 'needs no'} left-right flip for theta {angle:g}"
                )
            sources["orientation"] = f"{why}: " + ", ".join(
                [
                    s
                    for s, on in (("transposed", transpose), ("rows flipped", flip_ud), ("columns flipped", do_flip))
                    if on
                ]
                or ["as stored"]
            )
        elif user_flip is not None:
            do_flip = bool(user_flip)
            sources["orientation"] = f"{user_flip_name} = {do_flip}"
        else:
            do_flip, what = _default_flip(info, angle)
            sources["orientation"] = f"assumed ({what}): " + ("columns flipped" if do_flip else "as stored")
            assumptions.append(
                f"no PatientOrientation: assumed {what}"
                + (", so the image is flipped left-right" if do_flip else ", used as stored")
                + " (give PatientOrientation or flip_lr / --flip-lr to say otherwise)"
            )
    else:
        do_flip = bool(user_flip) if user_flip is not None else False
    data["_orientation"] = (bool(transpose), bool(flip_ud), bool(do_flip))
    if transpose:
        image = image.T
        if "pixel_spacing_mm" in data and isinstance(data["pixel_spacing_mm"], (list, tuple)):
            data["pixel_spacing_mm"] = list(data["pixel_spacing_mm"])[::-1]
    if flip_ud:
        image = image[::-1, :]
    if do_flip:
        image = image[:, ::-1]
    for key in ("invert", "voi_lut"):
        if key in info.sources:
            sources[key] = info.sources[key]
    if assumptions:
        warnings.warn(f"{path.name}: " + "; ".join(assumptions), stacklevel=3)
    return np.ascontiguousarray(image, dtype=np.float32), data, sources


def _default_flip(info: DicomInfo, angle: float) -> tuple[bool, str]:
    """Left-right flip for an image without PatientOrientation, by how such images are stored."""
    u, _ = beam_axes(angle)
    if info.default_display == "display":
        # radiology display of AP/PA: the patient's right on the image left (columns toward L)
        return (
            bool(u @ np.array([-1.0, 0.0, 0.0]) < 0),
            "stored as displayed, the patient's right on the image left (L\\F)",
        )
    if info.default_display == "detector":
        return True, (
            f"{info.modality or 'C-arm'} image stored as seen from the detector (mirror of the beam's-eye view)"
        )
    return False, f"{info.view_position or 'image'} stored as the beam's-eye view (seen from the X-ray tube)"


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
