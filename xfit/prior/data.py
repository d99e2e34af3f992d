"""CT folder -> training tensors for the prior.

A training example is a cube of ``resolution^3`` voxels at ``spacing_mm`` in canonical RAS
orientation, centred on one labelled vertebra (or on the volume centre when there is no mask),
with two channels:

* channel 0: HU mapped linearly from ``hu_window`` to [-1, 1] and clamped;
* channel 1: the vertebra mask of the centred vertebra as -1 / +1 (without a mask: bone, HU > 250).

Masks are found beside the CT (``X_ct.nii.gz`` -> ``X_seg.nii.gz``, ``X.nii.gz`` ->
``X_seg.nii.gz``) or in ``masks_dir`` under the same name. Which mask values are vertebrae is
configurable (``vertebra_labels``; xfit's phantoms label the centred vertebra 1). The prepared
tensors are cached as safetensors keyed by the file list, their sizes and mtimes and the settings.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from safetensors.torch import load_file, save_file

from ..errors import InputError
from ..io import Volume, atomic_write, crop_centred, read_nifti, resample
from .config import hu_to_unit

NIFTI_SUFFIXES = (".nii", ".nii.gz")
BONE_HU = 250.0


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_mask_name(path: Path) -> bool:
    stem = _stem(path)
    return stem.endswith(("_seg", "_mask", "_labels"))


def find_ct_files(ct_dir: str | Path, masks_dir: str | Path | None = None) -> list[tuple[Path, Path | None]]:
    """List the CT volumes of a folder with their masks (or ``None``).

    Returns:
        sorted list of ``(ct_path, mask_path_or_None)``.
    Raises:
        InputError: the folder does not exist or holds no NIfTI CT file.
    """
    ct_dir = Path(ct_dir)
    if not ct_dir.is_dir():
        raise InputError(f"CT folder {ct_dir} does not exist or is not a folder")
    files = sorted(p for p in ct_dir.iterdir() if p.name.endswith(NIFTI_SUFFIXES) and not _is_mask_name(p))
    if not files:
        others = sorted(p.name for p in ct_dir.iterdir())[:5]
        raise InputError(
            f"no NIfTI CT files (*.nii, *.nii.gz) in {ct_dir}"
            + (f"; found e.g. {', '.join(others)}" if others else " (the folder is empty)")
        )
    mask_root = Path(masks_dir) if masks_dir is not None else ct_dir
    if masks_dir is not None and not mask_root.is_dir():
        raise InputError(f"mask folder {mask_root} does not exist")
    out = []
    for ct in files:
        stem = _stem(ct)
        base = stem[:-3] if stem.endswith("_ct") else stem
        candidates = [f"{base}_seg", f"{stem}_seg", f"{base}_mask", stem if masks_dir is not None else None]
        mask = None
        for cand in filter(None, candidates):
            for suffix in NIFTI_SUFFIXES:
                p = mask_root / f"{cand}{suffix}"
                if p.exists() and p != ct:
                    mask = p
                    break
            if mask is not None:
                break
        out.append((ct, mask))
    return out


@dataclass
class DataSettings:
    """What a training example is (all from the prior config)."""

    resolution: int
    spacing_mm: float
    hu_window: tuple[float, float]
    vertebra_labels: tuple[int, ...] = (1,)

    def key(self) -> str:
        return json.dumps([self.resolution, self.spacing_mm, list(self.hu_window), list(self.vertebra_labels)])


@dataclass
class TrainingSet:
    """Prepared examples and a report of what was skipped.

    Attributes:
        volumes: ``[N, 2, R, R, R]`` float16 tensor (channel 0 intensity, 1 vertebra mask, in [-1, 1]).
        sources: N strings naming the file (and vertebra) each example came from.
        skipped: ``(file, reason)`` pairs.
    """

    volumes: torch.Tensor
    sources: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def examples_from_volume(
    ct: Volume, mask: Volume | None, settings: DataSettings
) -> list[tuple[np.ndarray, str]]:
    """Resample one CT (+ mask) and cut one example per labelled vertebra.

    Returns:
        list of ``([2, R, R, R] float32 array in [-1, 1], description)``.
    """
    ct_r = resample(ct, settings.spacing_mm, order=1)
    size = settings.resolution
    if mask is None:
        centre = [(s - 1) / 2 for s in ct_r.data.shape]
        hu = crop_centred(ct_r.data, centre, size, -1000.0)
        return [(np.stack([hu_to_unit(torch.from_numpy(hu), settings.hu_window).numpy(), np.where(hu > BONE_HU, 1.0, -1.0)]), "centre")]
    if mask.data.shape != ct.data.shape or not np.allclose(mask.affine, ct.affine, atol=1e-3):
        raise InputError("mask grid differs from its CT (shape or affine)")
    labels_r = resample(Volume(mask.data.astype(np.float32), mask.affine), settings.spacing_mm, order=0)
    lab = np.rint(labels_r.data).astype(np.int32)
    out = []
    for value in settings.vertebra_labels:
        sel = lab == value
        if not sel.any():
            continue
        centre = ndimage.center_of_mass(sel)
        hu = crop_centred(ct_r.data, centre, size, -1000.0)
        vert = crop_centred(sel.astype(np.float32), centre, size, 0.0)
        out.append((np.stack([hu_to_unit(torch.from_numpy(hu), settings.hu_window).numpy(), vert * 2 - 1]), f"label {value}"))
    return out


def _cache_key(files: list[tuple[Path, Path | None]], settings: DataSettings) -> str:
    h = hashlib.sha256(settings.key().encode())
    for ct, mask in files:
        for p in (ct, mask):
            if p is None:
                h.update(b"-")
                continue
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_training_set(
    ct_dir: str | Path,
    settings: DataSettings,
    *,
    masks_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> TrainingSet:
    """Read a CT folder into training examples, using (and filling) a cache.

    Unreadable files are skipped and reported; if nothing is usable an InputError names the files.
    """
    files = find_ct_files(ct_dir, masks_dir)
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"data-{_cache_key(files, settings)}.safetensors"
        if cache_path.exists():
            tensors = load_file(str(cache_path))
            meta = json.loads((cache_path.with_suffix(".json")).read_text())
            return TrainingSet(tensors["volumes"], meta["sources"], [tuple(s) for s in meta["skipped"]])
    from tqdm.auto import tqdm

    examples: list[np.ndarray] = []
    sources: list[str] = []
    skipped: list[tuple[str, str]] = []
    for ct_path, mask_path in tqdm(files, desc="reading CT", disable=not progress, leave=False):
        try:
            ct = read_nifti(ct_path)
            mask = read_nifti(mask_path) if mask_path is not None else None
            items = examples_from_volume(ct, mask, settings)
            if not items:
                raise InputError(f"no vertebra label {list(settings.vertebra_labels)} in the mask")
        except InputError as exc:
            skipped.append((ct_path.name, str(exc)))
            continue
        for arr, desc in items:
            examples.append(arr)
            sources.append(f"{ct_path.name}:{desc}")
    if not examples:
        detail = "; ".join(f"{name}: {why}" for name, why in skipped[:5])
        raise InputError(f"no usable CT in {ct_dir} ({len(files)} file(s) skipped: {detail})")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} of {len(files)} CT file(s): " + "; ".join(n for n, _ in skipped))
    volumes = torch.from_numpy(np.stack(examples)).to(torch.float16)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        # the JSON first: the safetensors file is what marks the cache entry complete
        with atomic_write(cache_path.with_suffix(".json"), force=True) as tmp:
            Path(tmp).write_text(json.dumps({"sources": sources, "skipped": skipped}))
        with atomic_write(cache_path, force=True) as tmp:
            save_file({"volumes": volumes.contiguous()}, str(tmp))
    return TrainingSet(volumes, sources, skipped)
