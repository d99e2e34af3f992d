"""CT collection -> vertebra-centred training crops for the prior, cached on disk.

A training example is a cube of ``resolution^3`` voxels at ``spacing_mm`` whose voxel axes are the
world RAS+ axes (any scanner orientation, anisotropic spacing or oblique affine is resampled onto
it), centred on the centroid of one vertebra, with two channels:

* channel 0: HU (through the NIfTI scaling) mapped linearly from ``hu_window`` to [-1, 1], clamped;
* channel 1: the mask of the vertebra the crop is centred on, as -1 / +1.

Each crop stores its level (VerSe label, :mod:`xfit.levels`). Which files hold the CT and the
labels is the job of :mod:`xfit.prior.datasets` (layouts); this module cuts the crops.

**Which vertebrae.** Every vertebra of ``levels`` (default: all, C1..L6 and T13) present in the
label map gives one crop, unless more than ``max_outside`` (default 5 %) of the crop's voxel
centres fall outside the CT's field of view: padding the rest with -1000 HU would teach the prior
slabs of air. A vertebra-centred xfit phantom therefore gives one crop (its neighbours' crops
hang ~40 % out of the scan) and a larger field of view gives several. Every skip is reported
with its reason.

**Sampling.** The crop grid is snapped to the CT's voxel lattice when the CT is axis-aligned with
the crop spacing (then the crop copies voxels exactly, as :func:`xfit.io.crop_centred` would);
otherwise the CT is sampled trilinearly and the labels by nearest neighbour, each through its own
affine, so a mask on another grid than its CT works (a mask whose box does not meet the CT's is
an error for that file). Only the voxels a crop needs are read from the CT (a sub-block of the
NIfTI array proxy); label maps are scanned slab by slab for the centroids.

**Cache.** Prepared crops are written to ``cache_dir/data-<key>/crops.f16`` (raw float16
``[N, 2, R, R, R]``, C order) with ``index.json`` (sources, levels, reports); ``<key>`` hashes the
settings, the layout and every input file's path, size and mtime. Training reads the rows it
needs with ``pread`` (:class:`CropStore`), so memory stays O(batch) whatever the collection size.
Preparation runs in parallel worker processes with a progress bar.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, OutputError, XfitError
from ..io import Volume
from ..levels import VERTEBRA_LABELS, format_levels, level_name
from ..units import hu_to_unit
from .datasets import (
    Case,
    Collection,
    LabelMap,
    MaskFiles,
    class_map_values,
    file_signature,
    find_cases,
    nifti_class_map,
)

#: Default largest fraction of a crop that may lie outside the scan.
MAX_OUTSIDE = 0.05
BONE_HU = 250.0
CACHE_FORMAT = "xfit-crops"
CACHE_VERSION = 1
_SLAB_VOXELS = 8_000_000  # label maps are scanned in slabs of about this many voxels


@dataclass
class DataSettings:
    """What a training example is.

    Attributes:
        resolution: crop side R in voxels.
        spacing_mm: isotropic crop spacing.
        hu_window: (low, high) HU mapped to [-1, 1].
        levels: VerSe labels of the vertebrae to crop around (``None``: all, see
            :func:`xfit.levels.parse_levels`).
        max_outside: largest fraction of a crop allowed outside the scan.
    """

    resolution: int
    spacing_mm: float
    hu_window: tuple[float, float]
    levels: tuple[int, ...] | None = None
    max_outside: float = MAX_OUTSIDE

    def chosen(self) -> tuple[int, ...]:
        """The VerSe labels that become crops."""
        return tuple(VERTEBRA_LABELS if self.levels is None else self.levels)

    def key(self) -> str:
        return json.dumps(
            [
                self.resolution,
                float(self.spacing_mm),
                [float(x) for x in self.hu_window],
                list(self.chosen()),
                float(self.max_outside),
                "pad-nearest",
            ]
        )


# ----------------------------------------------------------------------------------------------
# NIfTI access without loading more than needed


class _Nifti:
    """A lazily read NIfTI image: header, affine, sub-blocks (scaled floats or raw integers)."""

    def __init__(self, path: Path) -> None:
        import nibabel as nib

        self.path = Path(path)
        try:
            # the file handle stays open so that slab reads of a .nii.gz stream forwards instead of
            # decompressing from the start for each read
            img = nib.load(str(path), keep_file_open=True)
        except Exception as exc:  # nibabel raises many types for corrupt or foreign files
            raise InputError(
                f"{path.name}: cannot read as NIfTI ({type(exc).__name__}: {' '.join(str(exc).split())})"
            ) from exc
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{path.name}: not a NIfTI file ({type(img).__name__})")
        shape = tuple(int(s) for s in img.shape)
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) != 3:
            raise InputError(f"{path.name}: expected a 3D volume, got shape {tuple(img.shape)}")
        if 0 in shape:
            raise InputError(f"{path.name}: the volume is empty (shape {shape})")
        affine = np.asarray(img.affine, dtype=np.float64)
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise InputError(f"{path.name}: the affine is not finite or is singular")
        self.img, self.shape, self.affine = img, shape, affine
        self.extra = len(img.shape) - 3
        self.compressed = self.path.name.endswith(".gz")
        self._win: np.ndarray | None = None  # slices [_w0, _w0 + len) along the last axis
        self._w0 = 0

    def _read(self, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)) + (0,) * self.extra
        try:
            return np.asarray(self.img.dataobj[sl])
        except Exception as exc:
            raise InputError(
                f"{self.path.name}: cannot read voxels ({type(exc).__name__}: {' '.join(str(exc).split())})"
            ) from exc

    def _slices(self, k0: int, k1: int) -> np.ndarray:
        """Whole slices ``[k0, k1)`` of a compressed file through a forward-moving window: a gzip
        stream can only be read forwards cheaply, and whole slices are contiguous on disk."""
        n0, n1 = self.shape[0], self.shape[1]
        w = self._win
        w1 = self._w0 + (w.shape[2] if w is not None else 0)
        if w is not None and self._w0 <= k0 and k1 <= w1:
            return w[:, :, k0 - self._w0 : k1 - self._w0]
        if w is not None and self._w0 <= k0 < w1:  # overlap: keep the tail, read on from w1
            new = self._read((0, 0, w1), (n0, n1, k1))
            w = np.concatenate([w[:, :, k0 - self._w0 :], new.astype(w.dtype, copy=False)], axis=2)
        else:
            w = self._read((0, 0, k0), (n0, n1, k1))
        self._win, self._w0 = w, k0
        return w

    def block(self, lo: Sequence[int], hi: Sequence[int], *, integer: bool = False) -> np.ndarray:
        """Voxels ``[lo, hi)`` per axis: float32 with the NIfTI scaling, or int64 labels."""
        if self.compressed:
            raw = self._slices(int(lo[2]), int(hi[2]))[int(lo[0]) : int(hi[0]), int(lo[1]) : int(hi[1])]
        else:
            raw = self._read(lo, hi)
        if integer:
            if raw.dtype.kind == "f":
                if not np.all(np.isfinite(raw)):
                    raise InputError(f"{self.path.name}: the label map holds NaN or infinite values")
                raw = np.rint(raw)
            return raw.astype(np.int64, copy=False)
        out = raw.astype(np.float32, copy=False)
        if not np.all(np.isfinite(out)):
            raise InputError(f"{self.path.name}: the volume holds NaN or infinite values")
        return out

    def slabs(self) -> Iterator[tuple[int, np.ndarray]]:
        """Integer slabs along the last (slowest on disk) axis: ``(k0, block)``."""
        per = max(1, _SLAB_VOXELS // max(1, self.shape[0] * self.shape[1]))
        for k0 in range(0, self.shape[2], per):
            k1 = min(self.shape[2], k0 + per)
            yield k0, self.block((0, 0, k0), (self.shape[0], self.shape[1], k1), integer=True)

    def world_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world bounding box (mm) of the voxel grid (voxel edges included)."""
        corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in self.shape], indexing="ij")).reshape(3, -1)
        w = self.affine[:3, :3] @ corners + self.affine[:3, 3:4]
        return w.min(1), w.max(1)


# ----------------------------------------------------------------------------------------------
# Vertebra centroids


@dataclass
class LevelStats:
    """One vertebra in a label source: voxel count and world centroid (mm)."""

    label: int
    voxels: int
    centroid_mm: np.ndarray
    _acc: Any = field(default=None, repr=False)


def open_labels(labels: LabelMap | MaskFiles) -> tuple[list[_Nifti], dict[int, int] | list[int]]:
    """Open a label source: ``(images, spec)`` where ``spec`` is the value map of a label map
    (file value -> VerSe label) or the VerSe label of each mask file."""
    if isinstance(labels, LabelMap):
        img = _Nifti(labels.path)
        if labels.values is None:  # a label table in the header says what the values mean
            table = nifti_class_map(labels.path)
            if table is not None and class_map_values(table):
                return [img], dict(class_map_values(table))
        return [img], labels.value_map()
    return [_Nifti(p) for _, p in labels.masks], [lab for lab, _ in labels.masks]


def scan_levels(images: Sequence[_Nifti], spec: dict[int, int] | list[int]) -> tuple[dict[int, LevelStats], list[int]]:
    """Find the vertebrae of opened label images (see :func:`open_labels`).

    Returns:
        ``(stats by VerSe label, file values that are not vertebrae)``.
    Raises:
        InputError: unreadable voxels, or two mask files naming the same level.
    """
    found: dict[int, LevelStats] = {}
    ignored: set[int] = set()
    if isinstance(spec, dict):
        img = images[0]
        acc: dict[int, np.ndarray] = {}
        for k0, slab in img.slabs():
            nz = np.nonzero(slab)
            if not nz[0].size:
                continue
            vals = slab[nz]
            uniq, inv = np.unique(vals, return_inverse=True)
            counts = np.bincount(inv, minlength=len(uniq))
            sums = [np.bincount(inv, weights=nz[a] + (k0 if a == 2 else 0), minlength=len(uniq)) for a in range(3)]
            for n, v in enumerate(uniq.tolist()):
                a = acc.setdefault(v, np.zeros(4))
                a += (counts[n], sums[0][n], sums[1][n], sums[2][n])
        for v, a in sorted(acc.items()):
            if v not in spec:
                ignored.add(int(v))
                continue
            lab = spec[v]
            prev = found.get(lab)
            total = a if prev is None else a + prev._acc  # several values may map to one level
            st = LevelStats(lab, int(total[0]), img.affine[:3, :3] @ (total[1:] / total[0]) + img.affine[:3, 3])
            st._acc = total
            found[lab] = st
    else:
        for lab, img in zip(spec, images):
            a = np.zeros(4)
            for k0, slab in img.slabs():
                nz = np.nonzero(slab)
                if nz[0].size:
                    a += (nz[0].size, nz[0].sum(), nz[1].sum(), nz[2].sum() + k0 * nz[0].size)
            if a[0] > 0:
                if lab in found:
                    raise InputError(f"{img.path.name}: level {level_name(lab)} is given twice")
                found[lab] = LevelStats(lab, int(a[0]), img.affine[:3, :3] @ (a[1:] / a[0]) + img.affine[:3, 3])
    return found, sorted(ignored)


# ----------------------------------------------------------------------------------------------
# Crop geometry and sampling


def crop_affine(ct: _Nifti, centre_mm: np.ndarray, size: int, spacing_mm: float) -> np.ndarray:
    """Affine of a ``size^3`` RAS-aligned crop centred on ``centre_mm``.

    When the CT's axes are the world axes (up to order and sign) at ``spacing_mm``, the centre
    moves by under half a voxel so that crop voxels coincide with CT voxels (the rounding of
    :func:`xfit.io.crop_start`).
    """
    half = (size - 1) / 2.0
    rot = ct.affine[:3, :3]
    a = np.abs(rot)
    lattice = (
        np.all(np.isclose(a.max(0), spacing_mm, rtol=1e-4))
        and np.all((a > 1e-6 * spacing_mm).sum(0) == 1)
        and np.all((a > 1e-6 * spacing_mm).sum(1) == 1)
    )
    centre = np.asarray(centre_mm, dtype=np.float64)
    if lattice:
        idx = np.linalg.solve(rot, centre - ct.affine[:3, 3])
        idx = np.round(idx - half) + half
        centre = rot @ idx + ct.affine[:3, 3]
    out = np.eye(4)
    out[:3, :3] = np.eye(3) * spacing_mm
    out[:3, 3] = centre - spacing_mm * half
    return out


def _grid(size: int) -> np.ndarray:
    g = np.indices((size,) * 3, dtype=np.float64).reshape(3, -1)
    return g


def _index_coords(img: _Nifti, affine: np.ndarray, size: int) -> np.ndarray:
    """Voxel-index coordinates ``[3, size^3]`` in ``img`` of the crop's voxel centres."""
    m = np.linalg.solve(img.affine, affine)
    return m[:3, :3] @ _grid(size) + m[:3, 3:4]


def _inside(coords: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    n = np.asarray(shape, dtype=np.float64)[:, None]
    return np.all((coords >= -0.5) & (coords <= n - 0.5), axis=0)


def outside_fraction(ct: _Nifti, affine: np.ndarray, size: int) -> float:
    """Fraction of a crop's voxel centres outside the CT's field of view."""
    return float(1.0 - _inside(_index_coords(ct, affine, size), ct.shape).mean())


def _bounds(coords: np.ndarray, shape: Sequence[int], margin: int) -> tuple[np.ndarray, np.ndarray] | None:
    lo = np.maximum(np.floor(coords.min(1)).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(coords.max(1)).astype(int) + margin + 1, np.asarray(shape))
    return None if np.any(hi <= lo) else (lo, hi)


def sample_ct(ct: _Nifti, affine: np.ndarray, size: int) -> np.ndarray:
    """HU ``[size]*3`` float32 of the crop (trilinear, or an exact copy when lattice-aligned).

    Crop voxels outside the scan (at most ``max_outside`` of them, see :data:`MAX_OUTSIDE`) take
    the value of the nearest scan voxel: padding with air would teach the prior air slabs at the
    crop's edges.
    """
    from scipy import ndimage

    coords = _index_coords(ct, affine, size)
    hi = np.asarray(ct.shape, dtype=np.float64)[:, None] - 1.0
    coords = np.clip(coords, 0.0, hi)  # outside -> the nearest voxel of the scan
    box = _bounds(coords, ct.shape, 1)
    if box is None:
        return np.full((size,) * 3, -1000.0, np.float32)
    lo, hi_ = box
    block = ct.block(lo, hi_)
    local = coords - lo[:, None]
    rounded = np.rint(local)
    if np.allclose(local, rounded, atol=1e-4):  # lattice-aligned crop: copy voxels exactly
        r = rounded.astype(int)
        for a in range(3):
            np.clip(r[a], 0, block.shape[a] - 1, out=r[a])
        out = block[r[0], r[1], r[2]].astype(np.float32)
    else:
        out = ndimage.map_coordinates(block, local, order=1, mode="nearest").astype(np.float32)
    return out.reshape((size,) * 3)


def sample_mask(img: _Nifti, affine: np.ndarray, size: int, values: Iterable[int] | None) -> np.ndarray:
    """Nearest-neighbour mask ``[size]*3`` (bool) of the voxels whose value is in ``values``
    (``None``: any non-zero value)."""
    coords = _index_coords(img, affine, size)
    r = np.rint(coords).astype(np.int64)
    n = np.asarray(img.shape)[:, None]
    inside = np.all((r >= 0) & (r < n), axis=0)
    out = np.zeros(coords.shape[1], bool)
    if inside.any():
        ri = r[:, inside]
        lo, hi = ri.min(1), ri.max(1) + 1
        block = img.block(lo, hi, integer=True)
        v = block[ri[0] - lo[0], ri[1] - lo[1], ri[2] - lo[2]]
        out[inside] = (v != 0) if values is None else np.isin(v, list(values))
    return out.reshape((size,) * 3)


# ----------------------------------------------------------------------------------------------
# One case


@dataclass
class CaseReport:
    """What preparation did with one CT.

    Attributes:
        name: the case (its CT's path relative to the collection).
        found: VerSe labels of the vertebrae in its labels.
        crops: VerSe labels of the crops it gave, in order.
        skipped: ``(level name, reason)`` of vertebrae that gave no crop.
        error: why the whole file was skipped, or ``None``.
        ignored_values: label values that are not vertebrae (sacrum, other structures...).
    """

    name: str
    found: list[int] = field(default_factory=list)
    crops: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    ignored_values: list[int] = field(default_factory=list)

    def line(self) -> str:
        """One human-readable line for ``--dry-run``."""
        if self.error is not None:
            return f"{self.name}: SKIPPED ({self.error})"
        parts = [
            f"{self.name}: levels {format_levels(self.found) or 'none'}",
            f"{len(self.crops)} crop(s)" + (f" ({format_levels(self.crops)})" if self.crops else ""),
        ]
        parts += [f"skip {lev}: {why}" for lev, why in self.skipped]
        if self.ignored_values:
            more = f" and {len(self.ignored_values) - 8} more" if len(self.ignored_values) > 8 else ""
            parts.append(f"label values that are not vertebrae, ignored: {self.ignored_values[:8]}{more}")
        return "; ".join(parts)


def _cut(
    ct: _Nifti,
    images: Sequence[_Nifti],
    spec: dict[int, int] | list[int],
    settings: DataSettings,
    rep: CaseReport,
    with_data: bool,
) -> list[np.ndarray]:
    """Crops of one CT given its opened label images; fills ``rep`` (raises InputError)."""
    stats, rep.ignored_values = scan_levels(images, spec)
    rep.found = [lab for lab in VERTEBRA_LABELS if lab in stats]  # anatomical order
    if not rep.found:
        raise InputError(
            "its labels hold no vertebra"
            + (
                f" (values {rep.ignored_values[:8]} are not VerSe vertebra labels; choose the layout "
                "or give the class map)"
                if rep.ignored_values
                else " (the mask is empty)"
            )
        )
    lo_ct, hi_ct = ct.world_box()
    for img in images:
        lo_m, hi_m = img.world_box()
        if np.any(np.minimum(hi_ct, hi_m) <= np.maximum(lo_ct, lo_m)):
            raise InputError(
                f"mask {img.path.name} does not overlap its CT (CT box "
                f"{np.round(lo_ct).tolist()}..{np.round(hi_ct).tolist()} mm, mask box "
                f"{np.round(lo_m).tolist()}..{np.round(hi_m).tolist()} mm)"
            )
    chosen = set(settings.chosen())
    size = settings.resolution
    todo: list[tuple[int, np.ndarray]] = []
    for lab in rep.found:
        if lab not in chosen:
            continue
        aff = crop_affine(ct, stats[lab].centroid_mm, size, settings.spacing_mm)
        out = outside_fraction(ct, aff, size)
        if out > settings.max_outside:
            rep.skipped.append(
                (
                    level_name(lab),
                    (
                        f"{100 * out:.0f} % of the crop lies outside the "
                        f"scan (at most {100 * settings.max_outside:.0f} % allowed)"
                    ),
                )
            )
            continue
        rep.crops.append(lab)
        todo.append((lab, aff))
    if not with_data:
        return []
    # cut in the order of the CT's last (slowest on disk) axis, return in anatomical order
    first_k = {lab: float(_index_coords(ct, aff, size)[2].min()) for lab, aff in todo}
    done: dict[int, np.ndarray] = {}
    for lab, aff in sorted(todo, key=lambda t: first_k[t[0]]):
        hu = sample_ct(ct, aff, size)
        if isinstance(spec, dict):
            mask = sample_mask(images[0], aff, size, [v for v, l in spec.items() if l == lab])
        else:
            mask = sample_mask(images[spec.index(lab)], aff, size, None)
        done[lab] = np.stack([hu_to_unit(hu, settings.hu_window), np.where(mask, 1.0, -1.0).astype(np.float32)]).astype(
            np.float16
        )
    return [done[lab] for lab, _ in todo]


def prepare_case(case: Case, settings: DataSettings, *, with_data: bool = True) -> tuple[list[np.ndarray], CaseReport]:
    """Cut the crops of one CT.

    Args:
        case: the CT and its label source.
        settings: crop size, spacing, window, levels, outside threshold.
        with_data: read the CT and cut the crops (``False``: headers and labels only, for
            ``--dry-run``; the report is the same).
    Returns:
        ``(crops, report)``: float16 ``[2, R, R, R]`` arrays (none without ``with_data``), and the
        report (an unusable file has ``report.error`` set; it never raises :class:`InputError`).
    """
    rep = CaseReport(case.name)
    try:
        if case.labels is None:
            raise InputError("no vertebra mask found for it")
        ct = _Nifti(case.ct)
        images, spec = open_labels(case.labels)
        return _cut(ct, images, spec, settings, rep, with_data), rep
    except InputError as exc:
        msg = str(exc)
        head = f"{case.ct.name}: "
        rep.error = msg[len(head) :] if msg.startswith(head) else msg
    except (Exception, MemoryError) as exc:  # noqa: BLE001 (one bad file must not stop a whole collection)
        rep.error = f"cannot prepare it ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
    rep.crops = []
    return [], rep


class _ArrayImage(_Nifti):
    """An in-memory volume with the :class:`_Nifti` interface."""

    def __init__(self, data: np.ndarray, affine: np.ndarray, name: str) -> None:
        self.path = Path(name)
        self.data = np.asarray(data)
        self.shape = tuple(int(s) for s in self.data.shape)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.extra = 0

    def block(self, lo: Sequence[int], hi: Sequence[int], *, integer: bool = False) -> np.ndarray:
        raw = self.data[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]
        if integer:
            return (np.rint(raw) if raw.dtype.kind == "f" else raw).astype(np.int64)
        return raw.astype(np.float32, copy=False)


def crops_from_volumes(ct: Volume, labels: Volume, settings: DataSettings) -> tuple[list[np.ndarray], CaseReport]:
    """The crops :func:`prepare_case` would cut from an in-memory CT and VerSe label map.

    Returns:
        ``(float16 [2, R, R, R] crops, report)`` (``report.crops`` holds their VerSe labels).
    Raises:
        InputError: no vertebra, or a mask that does not overlap the CT.
    """
    rep = CaseReport("volume")
    ct_img = _ArrayImage(ct.data, ct.affine, "ct")
    lab_img = _ArrayImage(labels.data, labels.affine, "labels")
    crops = _cut(ct_img, [lab_img], LabelMap(Path("labels")).value_map(), settings, rep, True)
    return crops, rep


def examples_from_volume(ct: Volume, mask: Volume, settings: DataSettings) -> list[tuple[np.ndarray, str]]:
    """``[(float32 [2, R, R, R] crop, level name)]`` of an in-memory CT and VerSe label map."""
    crops, rep = crops_from_volumes(ct, mask, settings)
    return [(c.astype(np.float32), level_name(lab)) for c, lab in zip(crops, rep.crops)]


def _prepare_worker(args: tuple[Case, DataSettings, bool]) -> tuple[list[np.ndarray], CaseReport]:
    case, settings, with_data = args
    return prepare_case(case, settings, with_data=with_data)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


def iter_prepared(
    cases: Sequence[Case], settings: DataSettings, *, with_data: bool = True, workers: int | None = None
) -> Iterator[tuple[list[np.ndarray], CaseReport]]:
    """:func:`prepare_case` over the cases, in order, in ``workers`` processes (default: one per
    CPU core, at most one per case; 1 runs in this process). At most ``2 * workers`` cases are in
    flight, so memory does not grow with the collection."""
    n = len(cases)
    workers = min(_cpu_count() if workers is None else max(1, int(workers)), n)
    if workers <= 1 or n <= 1:
        for c in cases:
            yield prepare_case(c, settings, with_data=with_data)
        return
    import multiprocessing as mp

    # fork where there is one: spawn would re-run an unguarded __main__ script (torchrun scripts)
    # in every worker. The workers use NumPy, SciPy and nibabel only, never torch's thread pools.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        pending: list[Future] = []
        it = iter(cases)
        for c in it:
            pending.append(pool.submit(_prepare_worker, (c, settings, with_data)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_prepare_worker, (nxt, settings, with_data)))
            yield fut.result()


# ----------------------------------------------------------------------------------------------
# Crop store (out of core)


class CropStore:
    """Read-only ``[N, 2, R, R, R]`` float16 crops in a raw file, read row by row with ``pread``.

    Indexing with an int, a slice, a list/array/tensor of ints returns a ``torch.float16`` tensor
    (``[2, R, R, R]`` for an int, ``[B, 2, R, R, R]`` otherwise). Only the requested rows are read,
    so memory is O(batch); the operating system's page cache does the rest.
    """

    def __init__(self, path: str | Path | None, n: int, resolution: int, *, fd: int | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.n, self.resolution = int(n), int(resolution)
        self.row_elems = 2 * self.resolution**3
        self.row_bytes = self.row_elems * 2
        self._fd = fd if fd is not None else os.open(str(path), os.O_RDONLY)
        size = os.fstat(self._fd).st_size
        if size < self.n * self.row_bytes:
            raise InputError(f"crop cache {path} is truncated ({size} bytes for {n} crops)")

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        r = self.resolution
        return (self.n, 2, r, r, r)

    def _rows(self, start: int, count: int) -> np.ndarray:
        buf = os.pread(self._fd, count * self.row_bytes, start * self.row_bytes)
        if len(buf) != count * self.row_bytes:
            raise InputError(f"crop cache {self.path}: short read")
        r = self.resolution
        return np.frombuffer(buf, dtype=np.float16).reshape(count, 2, r, r, r)

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.n if key < 0 else 0)
            if not 0 <= i < self.n:
                raise IndexError(f"crop {key} out of range for {self.n}")
            return torch.from_numpy(self._rows(i, 1)[0].copy())
        if isinstance(key, slice):
            start, stop, step = key.indices(self.n)
            if step == 1:
                return torch.from_numpy(self._rows(start, max(0, stop - start)).copy())
            key = list(range(start, stop, step))
        idx = np.asarray(key.cpu().numpy() if isinstance(key, torch.Tensor) else key, dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + self.n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"crop index out of range for {self.n}")
        r = self.resolution
        out = np.empty((idx.size, 2, r, r, r), np.float16)
        for n, i in enumerate(idx.tolist()):
            out[n] = self._rows(i, 1)[0]
        return torch.from_numpy(out)

    def float(self) -> torch.Tensor:
        """All crops as one float32 tensor (small collections only)."""
        return self[:].float()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None  # type: ignore[assignment]

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 (a finaliser must not raise, e.g. at interpreter shutdown)
            pass


@dataclass
class TrainingSet:
    """Prepared examples and what was skipped.

    Attributes:
        volumes: the crops (:class:`CropStore`, ``[N, 2, R, R, R]`` float16 in [-1, 1]).
        sources: N strings ``"<case>:<level>"``.
        skipped: ``(case or case:level, reason)`` pairs.
        levels: N VerSe labels (the vertebra each crop is centred on).
        reports: one :class:`CaseReport` per CT.
        layout: the collection layout used.
    """

    volumes: CropStore
    sources: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    reports: list[CaseReport] = field(default_factory=list)
    layout: str = "xfit"

    def level_counts(self) -> dict[str, int]:
        """Crops per level name, in anatomical order."""
        c = Counter(self.levels)
        return {level_name(lab): c[lab] for lab in VERTEBRA_LABELS if c[lab]}


def skipped_of(reports: Sequence[CaseReport]) -> list[tuple[str, str]]:
    """Flat ``(what, reason)`` list of every skip in the reports."""
    out: list[tuple[str, str]] = []
    for r in reports:
        if r.error is not None:
            out.append((r.name, r.error))
        out += [(f"{r.name}:{lev}", why) for lev, why in r.skipped]
    return out


def summarize_skips(skipped: Sequence[tuple[str, str]], limit: int = 10) -> list[str]:
    """Short lines for a console: the first ``limit`` skips and a count of the rest by reason."""
    lines = [f"skipped {what}: {why}" for what, why in skipped[:limit]]
    rest = skipped[limit:]
    if rest:
        kinds = Counter("outside the scan" if "outside the scan" in why else why for _, why in rest)
        lines.append(f"... and {len(rest)} more skip(s): " + "; ".join(f"{n} x {k}" for k, n in kinds.most_common(5)))
    return lines


def _cache_key(coll: Collection, settings: DataSettings) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT}/{CACHE_VERSION}|{coll.layout}|{settings.key()}".encode())
    for c in coll.cases:
        h.update(f"\n{c.name}|{type(c.labels).__name__}|".encode())
        if isinstance(c.labels, LabelMap) and c.labels.values is not None:
            h.update(json.dumps(c.labels.values).encode())
        if isinstance(c.labels, MaskFiles):
            h.update(json.dumps([lab for lab, _ in c.labels.masks]).encode())
        h.update(file_signature(c.files).encode())
    return h.hexdigest()[:16]


def _report_to_json(r: CaseReport) -> dict:
    return asdict(r)


def _report_from_json(d: dict) -> CaseReport:
    return CaseReport(
        d["name"],
        list(d["found"]),
        list(d["crops"]),
        [tuple(s) for s in d["skipped"]],
        d.get("error"),
        list(d.get("ignored_values", [])),
    )


def _open_cached(folder: Path) -> TrainingSet | None:
    """The cache entry in ``folder``, or ``None`` when there is none; a damaged entry (missing or
    truncated crops, unreadable index) is removed so that it is prepared again."""
    index = folder / "index.json"
    if not index.is_file():
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        return None
    try:
        meta = json.loads(index.read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
            raise ValueError("another cache format")
        store = CropStore(folder / "crops.f16", meta["n"], meta["resolution"])
        reports = [_report_from_json(d) for d in meta["reports"]]
        return TrainingSet(store, meta["sources"], skipped_of(reports), meta["levels"], reports, meta["layout"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, InputError):
        shutil.rmtree(folder, ignore_errors=True)  # e.g. an index.json holding [] or nested too deep
        return None


@contextlib.contextmanager
def _writing_cache(where: str) -> Iterator[None]:
    """Turn an OSError of a crop-cache write (a full or read-only disk raises one that names no
    file) into an OutputError naming ``where``."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, XfitError):
            raise
        raise OutputError(f"cannot write the crop cache {where}: {exc.strerror or exc}") from exc


def load_training_set(
    ct_dir: str | Path,
    settings: DataSettings,
    *,
    layout: str | None = None,
    masks_dir: str | Path | None = None,
    class_map: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> TrainingSet:
    """Read a CT collection into vertebra-centred crops, using (and filling) an on-disk cache.

    Args:
        ct_dir: collection folder.
        settings: what a crop is (see :class:`DataSettings`).
        layout: collection layout (:data:`xfit.prior.datasets.LAYOUTS`; ``None``: detected).
        masks_dir: folder of masks named like the CTs (overrides the layout's mask locations).
        class_map: value -> structure table for label maps not in the VerSe numbering
            (:func:`xfit.prior.datasets.read_class_map`).
        cache_dir: where prepared crops are kept (``None``: an unnamed temporary file, deleted
            when the returned set is).
        progress: show a progress bar.
        workers: preparation processes (default: one per CPU core).
    Raises:
        InputError: bad folder, or no usable crop (the message names the skipped files).
    """
    coll = find_cases(ct_dir, layout, masks_dir, class_map)
    folder = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        folder = cache_dir / f"data-{_cache_key(coll, settings)}"
        cached = _open_cached(folder)
        if cached is not None:
            return cached
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob(".data-*.tmp-*"):  # left by an interrupted preparation
            shutil.rmtree(stale, ignore_errors=True)
        tmp_dir = cache_dir / f".{folder.name}.tmp-{secrets.token_hex(4)}"
        where = str(folder)
        with _writing_cache(where):
            tmp_dir.mkdir()
            fh = open(tmp_dir / "crops.f16", "wb")
    else:
        where = f"(a temporary file in {tempfile.gettempdir()})"
        with _writing_cache(where):
            fh = tempfile.TemporaryFile(prefix="xfit-crops-")
    from tqdm.auto import tqdm

    sources: list[str] = []
    levels: list[int] = []
    reports: list[CaseReport] = []
    try:
        bar = tqdm(total=len(coll.cases), desc="preparing crops", unit="CT", disable=not progress, leave=False)
        for crops, rep in iter_prepared(coll.cases, settings, workers=workers):
            for arr, lab in zip(crops, rep.crops):
                with _writing_cache(where):
                    fh.write(np.ascontiguousarray(arr, dtype=np.float16).tobytes())
                sources.append(f"{rep.name}:{level_name(lab)}")
                levels.append(lab)
            reports.append(rep)
            bar.update(1)
            bar.set_postfix(crops=len(levels), refresh=False)
        bar.close()
        with _writing_cache(where):
            fh.flush()
        extra = [CaseReport(name, error=why) for name, why in coll.skipped]
        reports = extra + reports
        skipped = skipped_of(reports)
        if not levels:
            detail = "; ".join(f"{name}: {why}" for name, why in skipped[:5])
            found = sorted({lab for r in reports for lab in r.found})
            if found and not set(found) & set(settings.chosen()):
                detail = (
                    f"the labels hold {format_levels(found)}, none of the chosen levels "
                    f"{format_levels(settings.chosen())}" + (f"; {detail}" if detail else "")
                )
            raise InputError(
                f"no usable vertebra crop in {ct_dir} (layout {coll.layout}; {len(coll.cases)} CT file(s); {detail})"
            )
        if folder is not None:
            with _writing_cache(where):
                fh.close()
            meta = {
                "format": CACHE_FORMAT,
                "version": CACHE_VERSION,
                "n": len(levels),
                "resolution": settings.resolution,
                "dtype": "float16",
                "shape": [len(levels), 2] + [settings.resolution] * 3,
                "settings": json.loads(settings.key()),
                "layout": coll.layout,
                "sources": sources,
                "levels": levels,
                "reports": [_report_to_json(r) for r in reports],
            }
            with _writing_cache(where):
                (tmp_dir / "index.json").write_text(json.dumps(meta))
            try:
                os.replace(tmp_dir, folder)
            except OSError:  # another process finished the same entry first
                shutil.rmtree(tmp_dir, ignore_errors=True)
            data = _open_cached(folder)
            assert data is not None
        else:
            fd = os.dup(fh.fileno())
            fh.close()
            data = TrainingSet(
                CropStore(None, len(levels), settings.resolution, fd=fd), sources, skipped, levels, reports, coll.layout
            )
    except BaseException:
        if not fh.closed:
            with contextlib.suppress(OSError):  # a full disk fails the flush of what is buffered again
                fh.close()
        if folder is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    n_bad = sum(r.error is not None for r in data.reports)
    if n_bad:
        warnings.warn(
            f"skipped {n_bad} of {len(data.reports)} CT file(s): "
            + "; ".join(r.name for r in data.reports if r.error is not None)[:500]
        )
    return data


# ----------------------------------------------------------------------------------------------
# Dry run


@dataclass
class DryRun:
    """What :func:`load_training_set` would do, without cutting or caching crops.

    Attributes:
        layout: the collection layout.
        reports: one :class:`CaseReport` per CT (and per unusable file of the collection).
        settings: the crop settings.
        montage: the montage PNG written, or ``None``.
    """

    layout: str
    reports: list[CaseReport]
    settings: DataSettings
    montage: Path | None = None

    def level_counts(self) -> dict[str, int]:
        """Crops per level name, in anatomical order."""
        c = Counter(lab for r in self.reports for lab in r.crops)
        return {level_name(lab): c[lab] for lab in VERTEBRA_LABELS if c[lab]}

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return skipped_of(self.reports)

    def lines(self) -> list[str]:
        """The report a person reads: one line per file, then the totals."""
        s = self.settings
        out = [
            (
                f"layout {self.layout}; crops of {s.resolution}^3 at {s.spacing_mm} mm around "
                f"{format_levels(s.chosen())}, at most {100 * s.max_outside:.0f} % outside the scan"
            )
        ]
        out += [r.line() for r in self.reports]
        counts = self.level_counts()
        n_files = sum(r.error is None for r in self.reports)
        n_bad = len(self.reports) - n_files
        out.append(
            f"total: {sum(counts.values())} crop(s) from {n_files} file(s)"
            + (f", {n_bad} file(s) skipped" if n_bad else "")
            + f", {sum(len(r.skipped) for r in self.reports)} vertebra(e) skipped"
        )
        out.append("crops per level: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
        if self.montage is not None:
            out.append(f"montage of a few crops: {self.montage}")
        return out


def dry_run(
    ct_dir: str | Path,
    settings: DataSettings,
    *,
    layout: str | None = None,
    masks_dir: str | Path | None = None,
    class_map: str | Path | None = None,
    montage: str | Path | None = None,
    n_montage: int = 6,
    workers: int | None = None,
    progress: bool = True,
) -> DryRun:
    """Report per file the levels found, the crops it would give and what is skipped and why,
    reading only headers and label maps; optionally write a montage PNG of a few crops (one per
    level first, as many levels as fit in ``n_montage`` rows).

    Raises:
        InputError: a bad folder (files that cannot be used are reported, not raised).
    """
    from tqdm.auto import tqdm

    coll = find_cases(ct_dir, layout, masks_dir, class_map)
    reports = [CaseReport(name, error=why) for name, why in coll.skipped]
    by_case: list[tuple[Case, CaseReport]] = []
    bar = tqdm(total=len(coll.cases), desc="checking", unit="CT", disable=not progress, leave=False)
    for case, (_, rep) in zip(coll.cases, iter_prepared(coll.cases, settings, with_data=False, workers=workers)):
        reports.append(rep)
        by_case.append((case, rep))
        bar.update(1)
    bar.close()
    out = DryRun(coll.layout, reports, settings)
    if montage is not None and n_montage > 0:
        picks: list[tuple[Case, int]] = []
        seen: set[int] = set()
        for rounds in range(2):  # first one crop per level, then fill up
            for case, rep in by_case:
                for lab in rep.crops:
                    if len(picks) < n_montage and (rounds or lab not in seen) and (case, lab) not in picks:
                        picks.append((case, lab))
                        seen.add(lab)
        if picks:
            import dataclasses

            lo, hi = settings.hu_window
            hu_list, labels, titles = [], [], []
            for case, lab in picks:
                crops, rep = prepare_case(case, dataclasses.replace(settings, levels=(lab,)))
                if not crops:
                    continue
                c = crops[0].astype(np.float32)
                hu_list.append((c[0] + 1.0) * (0.5 * (hi - lo)) + lo)
                labels.append(c[1] > 0)
                titles.append(f"{case.name} {level_name(lab)}")
            if hu_list:
                from ..preview import volumes_montage

                out.montage = volumes_montage(
                    hu_list, montage, spacing_mm=settings.spacing_mm, labels=labels, titles=titles
                )
    return out
