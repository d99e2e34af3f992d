"""CT collections -> cases (a CT file and where its vertebra labels are).

A *layout* knows how one kind of collection names its files. :func:`find_cases` picks the layout
(``layout=None``: detected from the folder) and returns one :class:`Case` per CT, each with a
*label source* that yields VerSe-numbered vertebrae (C1..C7 = 1..7, T1..T12 = 8..19, L1..L5 =
20..24, L6 = 25, T13 = 28; see :mod:`xfit.levels`):

* :class:`LabelMap`: one label-map file; ``values`` maps file values to VerSe labels (identity
  when the file already uses the VerSe numbering).
* :class:`MaskFiles`: one binary mask file per vertebra.

Layouts (``LAYOUTS``):

``xfit``
    What ``xfit phantoms`` writes: ``caseNNNN_ct.nii.gz`` with ``caseNNNN_seg.nii.gz`` (VerSe
    labels) beside it. ``caseNNNN_tissue.nii.gz`` (tissue classes) and ``caseNNNN.json`` are
    ignored. Also any flat folder of ``X_ct`` / ``X`` CTs with ``X_seg`` / ``X_mask`` masks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..levels import VERTEBRA_LABELS

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def nifti_stem(path: str | Path) -> str | None:
    """File name without ``.nii`` / ``.nii.gz``, or ``None`` when it is not a NIfTI name."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _nifti_with_stem(folder: Path, stem: str) -> Path | None:
    for suffix in NIFTI_SUFFIXES:
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


# ----------------------------------------------------------------------------------------------
# Label sources (plain picklable records: preparation runs in worker processes)


@dataclass(frozen=True)
class LabelMap:
    """A label-map file.

    Attributes:
        path: the NIfTI label map.
        values: file value -> VerSe label for the vertebrae it holds; ``None`` means the file uses
            the VerSe numbering itself (values in :data:`xfit.levels.VERTEBRA_LABELS`).
    """

    path: Path
    values: tuple[tuple[int, int], ...] | None = None

    def value_map(self) -> dict[int, int]:
        """File value -> VerSe label."""
        if self.values is None:
            return {v: v for v in VERTEBRA_LABELS}
        return dict(self.values)

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.path,)


@dataclass(frozen=True)
class MaskFiles:
    """One binary mask file per vertebra: ``((verse_label, path), ...)``."""

    masks: tuple[tuple[int, Path], ...]

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(p for _, p in self.masks)


LabelSource = LabelMap | MaskFiles


@dataclass(frozen=True)
class Case:
    """One CT of a collection.

    Attributes:
        name: how reports name it (path relative to the collection folder).
        ct: the CT NIfTI file.
        labels: where its vertebrae are, or ``None`` when no mask was found (the case is skipped
            and reported).
    """

    name: str
    ct: Path
    labels: LabelSource | None

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the case reads (for the cache key)."""
        return (self.ct,) + (self.labels.files if self.labels is not None else ())


@dataclass
class Collection:
    """What :func:`find_cases` found.

    Attributes:
        root: the collection folder.
        layout: name of the layout used.
        cases: CTs in a stable order (sorted by name).
        skipped: ``(name, reason)`` of files that are not usable cases (reported, never dropped).
    """

    root: Path
    layout: str
    cases: list[Case]
    skipped: list[tuple[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Layouts


@dataclass(frozen=True)
class Layout:
    """A collection layout: ``detect(root) -> bool`` and ``find(root, masks_dir) -> Collection``."""

    name: str
    description: str
    detect: Callable[[Path], bool]
    find: Callable[[Path, Path | None], Collection]


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


MASK_SUFFIXES = ("_seg", "_mask", "_msk", "_labels", "_label")
IGNORED_SUFFIXES = ("_tissue",)


def _flat_find(root: Path, masks_dir: Path | None) -> Collection:
    """``X_ct`` / ``X`` CTs with ``X_seg`` / ``X_mask`` masks beside them (or in ``masks_dir``)."""
    names = sorted(p for p in root.iterdir() if p.is_file() and nifti_stem(p) is not None)
    cases, skipped = [], []
    mask_root = masks_dir if masks_dir is not None else root
    for p in names:
        stem = nifti_stem(p)
        assert stem is not None
        if stem.endswith(MASK_SUFFIXES) or stem.endswith(IGNORED_SUFFIXES):
            continue
        base = stem[:-3] if stem.endswith("_ct") else stem
        mask = None
        cands = [f"{base}{s}" for s in MASK_SUFFIXES] + [f"{stem}{s}" for s in MASK_SUFFIXES]
        if masks_dir is not None:
            cands += [stem, base]
        for cand in cands:
            m = _nifti_with_stem(mask_root, cand)
            if m is not None and m != p:
                mask = m
                break
        cases.append(Case(_rel(p, root), p, LabelMap(mask) if mask is not None else None))
    return Collection(root, "xfit", cases, skipped)


def _flat_detect(root: Path) -> bool:
    return any(nifti_stem(p) is not None for p in root.iterdir() if p.is_file())


LAYOUTS: dict[str, Layout] = {
    "xfit": Layout("xfit", "X_ct.nii.gz + X_seg.nii.gz (VerSe labels) in one folder, as "
                   "`xfit phantoms` writes", _flat_detect, _flat_find),
}
#: Order in which :func:`detect_layout` tries the layouts (most specific first).
DETECT_ORDER: list[str] = ["xfit"]


def detect_layout(root: str | Path) -> str:
    """Name of the first layout of :data:`DETECT_ORDER` that recognises the folder.

    Raises:
        InputError: the folder does not exist or no layout recognises it.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"CT folder {root} does not exist or is not a folder")
    for name in DETECT_ORDER:
        if LAYOUTS[name].detect(root):
            return name
    others = sorted(p.name for p in root.iterdir())[:5]
    raise InputError(
        f"no NIfTI CT files (*.nii, *.nii.gz) in {root} in any known layout "
        f"({', '.join(LAYOUTS)})"
        + (f"; found e.g. {', '.join(others)}" if others else " (the folder is empty)"))


def find_cases(root: str | Path, layout: str | None = None, masks_dir: str | Path | None = None
               ) -> Collection:
    """Find the CTs of a collection and their vertebra labels.

    Args:
        root: collection folder.
        layout: a name of :data:`LAYOUTS`, or ``None`` to detect it.
        masks_dir: folder holding the masks under the CTs' names (overrides the layout's own
            mask locations).

    Raises:
        InputError: missing folder, unknown layout, or no CT found.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"CT folder {root} does not exist or is not a folder")
    mdir = Path(masks_dir) if masks_dir is not None else None
    if mdir is not None and not mdir.is_dir():
        raise InputError(f"mask folder {mdir} does not exist")
    if layout is None:
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    coll = LAYOUTS[layout].find(root, mdir)
    if not coll.cases:
        detail = "; ".join(f"{n}: {why}" for n, why in coll.skipped[:5])
        others = sorted(p.name for p in root.iterdir())[:5]
        raise InputError(
            f"no CT files found in {root} as layout {layout!r}"
            + (f" ({detail})" if detail else "")
            + (f"; found e.g. {', '.join(others)}" if others else " (the folder is empty)"))
    return coll


def file_signature(paths: tuple[Path, ...]) -> str:
    """``path|size|mtime`` lines of files (what the cache key hashes)."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}")
    return "\n".join(out)
