"""CT collections -> cases (a CT file and where its vertebra labels are).

A *layout* knows how one kind of collection names its files. :func:`find_cases` picks the layout
(``layout=None``: detected from the folder) and returns one :class:`Case` per CT, each with a
*label source* that yields VerSe-numbered vertebrae (C1..C7 = 1..7, T1..T12 = 8..19, L1..L5 =
20..24, L6 = 25, T13 = 28; see :mod:`xfit.levels`):

* :class:`LabelMap`: one label-map file; ``values`` maps file values to VerSe labels (identity
  when the file already uses the VerSe numbering).
* :class:`MaskFiles`: one binary mask file per vertebra.

Layouts (``LAYOUTS``; :func:`detect_layout` tries them in :data:`DETECT_ORDER`):

``xfit``
    What ``xfit phantoms`` writes: ``caseNNNN_ct.nii.gz`` with ``caseNNNN_seg.nii.gz`` (VerSe
    labels) beside it; ``caseNNNN_tissue.nii.gz`` (tissue classes, not a mask) and the JSON files
    are ignored. Any flat folder of ``X_ct`` / ``X`` CTs with ``X_seg`` / ``X_mask`` / ``X_msk`` /
    ``X_labels`` masks reads the same way (VerSe 2019's original flat release included).
``verse``
    VerSe 2019/2020 as restructured by its authors (https://github.com/anjany/verse, README
    "Data"): ``<split>/rawdata/sub-X/sub-X[_dir-orient]_ct.nii.gz`` with
    ``<split>/derivatives/sub-X/sub-X[_dir-orient]_seg-vert_msk.nii.gz``; labels 1-7 C1-C7, 8-19
    T1-T12, 20-25 L1-L6, 28 T13. The ``_seg-subreg_ctd.json`` centroids (vertebral bodies, in
    voxels) are not used: crops are centred on the whole vertebra's mask centroid, as everywhere.
``ctspine1k``
    CTSpine1K (https://github.com/MIRACLE-Center/CTSpine1K, arXiv:2105.14711; folder names as in
    its Hugging Face copy ``alexanderdann/CTSpine1K``): ``volumes/<source>/X.nii.gz`` with
    ``labels/<source>/X_seg.nii.gz`` (``data/`` + ``label/`` also accepted), VerSe numbering.
``totalsegmentator``
    TotalSegmentator (https://github.com/wasserth/TotalSegmentator): ``<subject>/ct.nii.gz``
    with ``<subject>/segmentations/vertebrae_L1.nii.gz`` ... (one binary file per structure, as in
    its data set and its default output), or a multilabel file (``--ml``:
    ``<subject>/segmentations.nii.gz``, or ``X_seg`` beside ``X``) read through its class map.
    The numbering differs by version (``map_to_binary.py``: v1 ``total_v1`` has L5..C1 =
    18..41, v2 ``total`` S1..C1 = 26..50), so the class map comes from the file's NIfTI header
    extension (v2's ``add_label_map_to_nifti`` label table) or from ``class_map``
    (``totalseg-v1``, ``totalseg-v2`` or a JSON file); without one the file is skipped and says so.
``mixed``
    A folder whose subfolders are collections of the layouts above, each read in its own.

``masks_dir`` (``--masks DIR``) replaces a layout's mask location: the mask of CT ``X`` is
``DIR/X_seg.nii.gz`` (or ``DIR/X.nii.gz``, ``DIR/X_seg-vert_msk.nii.gz`` for VerSe,
``DIR/<subject>/`` or ``DIR/<subject>.nii.gz`` for TotalSegmentator). Files that are not usable
(a CT without a mask, a mask without its CT, a subfolder a layout does not read) are listed in
``Collection.skipped``, never dropped silently; non-NIfTI files (JSON, PNG) are ignored.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..levels import LEVEL_TO_LABEL, VERTEBRA_LABELS

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
# TotalSegmentator class maps


#: Vertebra entries of TotalSegmentator's ``total`` class maps (``totalsegmentator/map_to_binary.py``):
#: v1 (``total_v1``) numbers L5..C1 as 18..41, v2 (``total``) S1..C1 as 26..50.
TOTALSEG_CLASS_MAPS: dict[str, dict[int, str]] = {
    "totalseg-v1": {
        18 + n: f"vertebrae_{lev}"
        for n, lev in enumerate(
            ["L5", "L4", "L3", "L2", "L1"] + [f"T{i}" for i in range(12, 0, -1)] + [f"C{i}" for i in range(7, 0, -1)]
        )
    },
    "totalseg-v2": {
        26 + n: f"vertebrae_{lev}"
        for n, lev in enumerate(
            ["S1", "L5", "L4", "L3", "L2", "L1"]
            + [f"T{i}" for i in range(12, 0, -1)]
            + [f"C{i}" for i in range(7, 0, -1)]
        )
    },
}
_STRUCTURE = re.compile(r"^vertebrae_([A-Za-z]+\d*)$")


def structure_level(name: str) -> int | None:
    """VerSe label of a TotalSegmentator structure name (``vertebrae_L1`` -> 20); ``None`` for
    other structures and for the sacrum (``vertebrae_S1``)."""
    m = _STRUCTURE.match(name.strip())
    if not m:
        return None
    key = m.group(1).upper()
    if key not in LEVEL_TO_LABEL or LEVEL_TO_LABEL[key] not in VERTEBRA_LABELS:
        return None
    return LEVEL_TO_LABEL[key]


def read_class_map(spec: str | Path) -> dict[int, str]:
    """A class map: a name of :data:`TOTALSEG_CLASS_MAPS` or a JSON file ``{"27": "vertebrae_L5",
    ...}`` (value -> structure name; a list of names means values 1, 2, ...).

    Raises:
        InputError: unknown name, unreadable or malformed file.
    """
    if str(spec) in TOTALSEG_CLASS_MAPS:
        return dict(TOTALSEG_CLASS_MAPS[str(spec)])
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"class map {spec!r} is neither a file nor one of {', '.join(TOTALSEG_CLASS_MAPS)}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"class map {path}: cannot read it as JSON ({exc})") from exc
    if isinstance(data, list):
        data = {i + 1: v for i, v in enumerate(data)}
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InputError(f"class map {path}: expected {{value: structure name}}")
    try:
        return {int(k): v for k, v in data.items()}
    except ValueError as exc:
        raise InputError(f"class map {path}: keys must be label values ({exc})") from exc


def nifti_class_map(path: Path) -> dict[int, str] | None:
    """The label table TotalSegmentator v2 writes into a multilabel file's NIfTI header extension
    (``nifti_ext_header.add_label_map_to_nifti``: CaretExtension XML, ``<Label Key="27">
    <![CDATA[vertebrae_L5]]></Label>``), or ``None`` when there is none."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        exts = list(img.header.extensions)
    except Exception:  # noqa: BLE001 (an unreadable header has no label table; reading the file reports why)
        return None
    for ext in exts:
        try:
            text = ext.get_content()
            text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        except Exception:  # noqa: BLE001 (an extension that is not text is not the label table)
            continue
        if "LabelTable" not in text:
            continue
        found = re.findall(r'<Label\s+Key="(\d+)"[^>]*>\s*(?:<!\[CDATA\[(.*?)\]\]>|([^<]*))\s*</Label>', text, re.S)
        table = {int(k): (a or b).strip() for k, a, b in found}
        if table:
            return table
    return None


def class_map_values(table: dict[int, str]) -> tuple[tuple[int, int], ...]:
    """``((file value, VerSe label), ...)`` of the vertebrae in a class map."""
    out = []
    for value, name in sorted(table.items()):
        lab = structure_level(name)
        if lab is not None:
            out.append((int(value), lab))
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# Layouts


@dataclass(frozen=True)
class Layout:
    """A collection layout: ``detect(root) -> bool`` and ``find(root, masks_dir, class_map) ->
    Collection``."""

    name: str
    description: str
    detect: Callable[[Path], bool]
    find: Callable[[Path, Path | None, str | Path | None], Collection]


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _niftis(folder: Path, recursive: bool = False) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and nifti_stem(p) is not None)


MASK_SUFFIXES = ("_seg", "_mask", "_msk", "_labels", "_label")
IGNORED_SUFFIXES = ("_tissue",)


def _flat_find(root: Path, masks_dir: Path | None, class_map: str | Path | None = None) -> Collection:
    """``X_ct`` / ``X`` CTs with ``X_seg`` / ``X_mask`` masks beside them (or in ``masks_dir``)."""
    names = _niftis(root)
    cases, skipped = [], []
    mask_root = masks_dir if masks_dir is not None else root
    used: set[Path] = set()
    values = _values_for(class_map)
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
        if mask is not None:
            used.add(mask)
        cases.append(Case(_rel(p, root), p, LabelMap(mask, values) if mask is not None else None))
    if masks_dir is None:
        for p in names:
            stem = nifti_stem(p) or ""
            if stem.endswith(MASK_SUFFIXES) and p not in used:
                skipped.append((_rel(p, root), "a mask without its CT"))
    for sub in sorted(q for q in root.iterdir() if q.is_dir()):
        if any(nifti_stem(f) for f in sub.rglob("*.nii*")):
            skipped.append(
                (
                    _rel(sub, root) + "/",
                    (
                        "subfolder not read by the xfit layout (it reads one "
                        "folder; point at the subfolder or choose --layout)"
                    ),
                )
            )
    return Collection(root, "xfit", cases, skipped)


def _values_for(class_map: str | Path | None) -> tuple[tuple[int, int], ...] | None:
    return None if class_map is None else class_map_values(read_class_map(class_map))


def _flat_detect(root: Path) -> bool:
    return any(nifti_stem(p) is not None for p in root.iterdir() if p.is_file())


# VerSe 2019/2020 (github.com/anjany/verse, README "Data"): BIDS-like
#   <split>/rawdata/sub-verse000/sub-verse000[_dir-orient]_ct.nii.gz
#   <split>/derivatives/sub-verse000/sub-verse000[_dir-orient]_seg-vert_msk.nii.gz
#   (and ..._seg-subreg_ctd.json: vertebral-body centroids in voxels; not used: crops are centred on
#   the centroid of the whole vertebra mask, as everywhere in xfit)
# with labels 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 28 T13 (26 sacrum, 27 coccyx unlabelled).


def _rawdata_dirs(root: Path) -> list[Path]:
    out = []
    for pattern in ("rawdata", "*/rawdata"):  # the split folder itself, or a folder of splits
        out += [p for p in root.glob(pattern) if p.is_dir()]
    return sorted(set(out))


def _verse_detect(root: Path) -> bool:
    return any((r.parent / "derivatives").is_dir() or any(r.glob("sub-*")) for r in _rawdata_dirs(root))


def _verse_find(root: Path, masks_dir: Path | None, class_map: str | Path | None = None) -> Collection:
    cases, skipped = [], []
    values = _values_for(class_map)
    for raw in _rawdata_dirs(root):
        deriv = raw.parent / "derivatives"
        for ct in _niftis(raw, recursive=True):
            stem = nifti_stem(ct) or ""
            if not stem.endswith("_ct"):
                skipped.append((_rel(ct, root), "not a VerSe CT name (*_ct.nii.gz)"))
                continue
            want = f"{stem[:-3]}_seg-vert_msk"
            folder = masks_dir if masks_dir is not None else deriv / ct.parent.relative_to(raw)
            mask = _nifti_with_stem(folder, want) or (_nifti_with_stem(folder, stem) if masks_dir is not None else None)
            cases.append(Case(_rel(ct, root), ct, LabelMap(mask, values) if mask is not None else None))
    split_dirs = {r.parent for r in _rawdata_dirs(root)}
    for sub in sorted(q for q in root.iterdir() if q.is_dir()):
        if sub not in split_dirs and sub.name not in ("rawdata", "derivatives") and any(sub.rglob("*.nii*")):
            skipped.append((_rel(sub, root) + "/", "subfolder not read by the verse layout (no rawdata/ in it)"))
    return Collection(root, "verse", cases, skipped)


# CTSpine1K (github.com/MIRACLE-Center/CTSpine1K; the Hugging Face copy alexanderdann/CTSpine1K):
#   volumes/<source>/X.nii.gz with labels/<source>/X_seg.nii.gz (also data/ + label/ as shipped on
#   the Google drive), label maps in the VerSe numbering (1-25 = C1-L6, arXiv:2105.14711).
_CTSPINE_DIRS = (("volumes", "labels"), ("data", "label"), ("volumes", "label"), ("data", "labels"))


def _ctspine_dirs(root: Path) -> tuple[Path, Path] | None:
    for v, lab in _CTSPINE_DIRS:
        if (root / v).is_dir() and (root / lab).is_dir():
            return root / v, root / lab
    return None


def _ctspine_detect(root: Path) -> bool:
    return _ctspine_dirs(root) is not None


def _ctspine_find(root: Path, masks_dir: Path | None, class_map: str | Path | None = None) -> Collection:
    dirs = _ctspine_dirs(root)
    if dirs is None:
        raise InputError(f"{root} is not a CTSpine1K folder (expected volumes/ and labels/ subfolders)")
    vol_dir, lab_dir = dirs
    cases, skipped = [], []
    values = _values_for(class_map)
    for ct in _niftis(vol_dir, recursive=True):
        stem = nifti_stem(ct) or ""
        folder = masks_dir if masks_dir is not None else lab_dir / ct.parent.relative_to(vol_dir)
        mask = _nifti_with_stem(folder, f"{stem}_seg") or (_nifti_with_stem(folder, stem) if masks_dir else None)
        cases.append(Case(_rel(ct, root), ct, LabelMap(mask, values) if mask is not None else None))
    return Collection(root, "ctspine1k", cases, skipped)


# TotalSegmentator (github.com/wasserth/TotalSegmentator):
#   * its data set and its default output: <subject>/ct.nii.gz with <subject>/segmentations/ holding
#     one binary file per structure (vertebrae_C1.nii.gz ... vertebrae_L5.nii.gz, vertebrae_S1, ...);
#   * ``--ml`` output: one multilabel file whose values follow the class map of the version
#     (map_to_binary.py: v1 ``total_v1`` L5..C1 = 18..41, v2 ``total`` S1..C1 = 26..50); v2 writes
#     the table into the NIfTI header extension. xfit reads the table from the header or from
#     ``class_map`` and never guesses the version.
_TS_MULTI = ("segmentations", "segmentation", "seg", "labels")


def _ts_subjects(root: Path) -> list[Path]:
    subs = [root] if _nifti_with_stem(root, "ct") else []
    subs += sorted(p for p in root.iterdir() if p.is_dir() and _nifti_with_stem(p, "ct"))
    return subs


def _ts_detect(root: Path) -> bool:
    return (root / "segmentations").is_dir() or any(
        (s / "segmentations").is_dir() or any(_nifti_with_stem(s, m) for m in _TS_MULTI) for s in _ts_subjects(root)
    )


def _ts_labels(
    folder: Path | None, multi: Path | None, class_map: str | Path | None, where: str
) -> tuple[MaskFiles | LabelMap | None, str | None]:
    if folder is not None and folder.is_dir():
        masks = []
        for p in _niftis(folder):
            lab = structure_level(nifti_stem(p) or "")
            if lab is not None:
                masks.append((lab, p))
        if masks:
            return MaskFiles(tuple(sorted(masks))), None
        return None, f"{where}: no vertebrae_* files in {folder.name}/"
    if multi is not None:
        table = read_class_map(class_map) if class_map is not None else nifti_class_map(multi)
        if table is None:
            return None, (
                f"{multi.name} is a multilabel file without a class map in its header; give "
                f"the class map ({' or '.join(TOTALSEG_CLASS_MAPS)}, or a JSON file): the "
                "numbering differs between TotalSegmentator versions"
            )
        values = class_map_values(table)
        if not values:
            return None, f"{multi.name}: its class map names no vertebrae_* structure"
        return LabelMap(multi, values), None
    return None, None


def _ts_find(root: Path, masks_dir: Path | None, class_map: str | Path | None = None) -> Collection:
    cases, skipped = [], []
    subjects = _ts_subjects(root)
    if subjects:
        for s in subjects:
            ct = _nifti_with_stem(s, "ct")
            assert ct is not None
            name = _rel(ct, root)
            if masks_dir is not None:
                sub = masks_dir / (s.name if s != root else "")
                folder = sub / "segmentations" if (sub / "segmentations").is_dir() else sub
                multi = next((m for m in (_nifti_with_stem(masks_dir, s.name),) if m), None)
                labels, why = _ts_labels(folder if folder.is_dir() and multi is None else None, multi, class_map, name)
            else:
                multi = next((m for m in (_nifti_with_stem(s, n) for n in _TS_MULTI) if m), None)
                labels, why = _ts_labels(
                    s / "segmentations" if (s / "segmentations").is_dir() else None, multi, class_map, name
                )
            if why is not None:
                skipped.append((name, why))
                continue
            cases.append(Case(name, ct, labels))
        return Collection(root, "totalsegmentator", cases, skipped)
    # a flat folder of CTs with multilabel X_seg files, or with X/ folders of structure files
    flat = _flat_find(root, masks_dir)
    for c in flat.cases:
        stem = nifti_stem(c.ct) or ""
        mroot = masks_dir if masks_dir is not None else root
        folder = next((f for f in (mroot / stem / "segmentations", mroot / stem) if f.is_dir()), None)
        multi = c.labels.path if isinstance(c.labels, LabelMap) else None
        labels, why = _ts_labels(folder if multi is None else None, multi, class_map, c.name)
        if why is not None:
            skipped.append((c.name, why))
            continue
        cases.append(Case(c.name, c.ct, labels))
    skipped += [s for s in flat.skipped if not s[0].endswith("/")]
    return Collection(root, "totalsegmentator", cases, skipped)


LAYOUTS: dict[str, Layout] = {
    "xfit": Layout(
        "xfit",
        "X_ct.nii.gz + X_seg.nii.gz (VerSe labels) in one folder, as `xfit phantoms` writes",
        _flat_detect,
        _flat_find,
    ),
    "verse": Layout(
        "verse",
        "VerSe 2019/2020: rawdata/sub-*/*_ct.nii.gz + derivatives/sub-*/*_seg-vert_msk.nii.gz",
        _verse_detect,
        _verse_find,
    ),
    "ctspine1k": Layout(
        "ctspine1k",
        "CTSpine1K: volumes/<source>/X.nii.gz + labels/<source>/X_seg.nii.gz",
        _ctspine_detect,
        _ctspine_find,
    ),
    "totalsegmentator": Layout(
        "totalsegmentator",
        "TotalSegmentator: <subject>/ct.nii.gz + "
        "<subject>/segmentations/vertebrae_*.nii.gz, or a multilabel file "
        "with its class map",
        _ts_detect,
        _ts_find,
    ),
}
#: Order in which :func:`detect_layout` tries the layouts (most specific first).
DETECT_ORDER: list[str] = ["verse", "ctspine1k", "totalsegmentator", "xfit"]


def detect_layout(root: str | Path) -> str:
    """Name of the first layout of :data:`DETECT_ORDER` that recognises the folder, or ``"mixed"``
    when only its subfolders are recognised (each is then read with its own layout).

    Raises:
        InputError: the folder does not exist or no layout recognises it.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"CT folder {root} does not exist or is not a folder")
    for name in DETECT_ORDER:
        if LAYOUTS[name].detect(root):
            return name
    if any(_detect_or_none(sub) for sub in root.iterdir() if sub.is_dir()):
        return "mixed"
    others = sorted(p.name for p in root.iterdir())[:5]
    raise InputError(
        f"no NIfTI CT files (*.nii, *.nii.gz) in {root} in any known layout "
        f"({', '.join(LAYOUTS)})" + (f"; found e.g. {', '.join(others)}" if others else " (the folder is empty)")
    )


def _detect_or_none(root: Path) -> str | None:
    for name in DETECT_ORDER:
        if LAYOUTS[name].detect(root):
            return name
    return None


def _mixed_find(root: Path, masks_dir: Path | None, class_map: str | Path | None) -> Collection:
    cases, skipped, kinds = [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        name = _detect_or_none(sub)
        if name is None:
            if any(sub.rglob("*.nii*")):
                skipped.append((sub.name + "/", "no known layout"))
            continue
        part = LAYOUTS[name].find(sub, masks_dir, class_map)
        kinds.append(f"{sub.name}={name}")
        cases += [Case(f"{sub.name}/{c.name}", c.ct, c.labels) for c in part.cases]
        skipped += [(f"{sub.name}/{n}", why) for n, why in part.skipped]
    for p in root.iterdir():
        if p.is_file() and nifti_stem(p):
            skipped.append((p.name, "a NIfTI file beside subfolders of known layouts (not read)"))
    return Collection(root, "mixed(" + ",".join(kinds) + ")", cases, skipped)


def find_cases(
    root: str | Path,
    layout: str | None = None,
    masks_dir: str | Path | None = None,
    class_map: str | Path | None = None,
) -> Collection:
    """Find the CTs of a collection and their vertebra labels.

    Args:
        root: collection folder.
        layout: a name of :data:`LAYOUTS`, or ``None`` to detect it (``"mixed"``: each subfolder
            in its own detected layout).
        masks_dir: folder holding the masks under the CTs' names (overrides the layout's own
            mask locations).
        class_map: for label maps in another numbering than VerSe's (TotalSegmentator multilabel
            files): a name of :data:`TOTALSEG_CLASS_MAPS` or a JSON file value -> structure name.

    Raises:
        InputError: missing folder, unknown layout, bad class map, or no CT found.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"CT folder {root} does not exist or is not a folder")
    mdir = Path(masks_dir) if masks_dir is not None else None
    if mdir is not None and not mdir.is_dir():
        raise InputError(f"mask folder {mdir} does not exist")
    if class_map is not None:
        read_class_map(class_map)  # fail early on a bad one
    if layout is None:
        layout = detect_layout(root)
    if layout == "mixed":
        coll = _mixed_find(root, mdir, class_map)
    elif layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    else:
        coll = LAYOUTS[layout].find(root, mdir, class_map)
    if not coll.cases:
        detail = "; ".join(f"{n}: {why}" for n, why in coll.skipped[:5])
        others = sorted(p.name for p in root.iterdir())[:5]
        raise InputError(
            f"no CT files found in {root} as layout {layout!r}"
            + (f" ({detail})" if detail else "")
            + (f"; found e.g. {', '.join(others)}" if others else " (the folder is empty)")
        )
    return coll


def file_signature(paths: tuple[Path, ...]) -> str:
    """``path|size|mtime`` lines of files (what the cache key hashes)."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}")
    return "\n".join(out)
