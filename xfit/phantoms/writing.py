"""Writing phantoms: a folder of cases (CT, vertebra labels, tissue classes, parameters) and
the montage.

Per case ``i``: ``caseNNNN_ct.nii.gz`` (HU), ``caseNNNN_seg.nii.gz`` (vertebrae by level, VerSe
labels), ``caseNNNN_tissue.nii.gz`` (:data:`xfit.phantoms.labels.TISSUE`) and ``caseNNNN.json``
(parameters); see :mod:`xfit.phantoms.labels`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .model import Phantom, make_phantom


def montage(
    phantoms: Sequence[Phantom], path: str | Path, *, force: bool = True, titles: Sequence[str] | None = None
) -> Path:
    """PNG montage through :func:`xfit.preview.volumes_montage`: one row per phantom (axial,
    coronal, sagittal slices with the centred vertebra outlined, AP and lateral DRRs).

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false.
        InputError: no phantoms.
    """
    from .. import preview
    from ..errors import InputError

    if len(phantoms) == 0:
        raise InputError("montage needs at least one phantom")
    if titles is None:
        titles = [f"seed {ph.info['seed']} {ph.info['centre_level']}" for ph in phantoms]
    return preview.volumes_montage(
        [ph.hu for ph in phantoms],
        path,
        spacing_mm=phantoms[0].spacing_mm,
        labels=[ph.vertebra_mask for ph in phantoms],
        titles=titles,
        force=force,
    )


def case_names(i: int) -> tuple[str, str, str, str]:
    """File names of case ``i``: CT, vertebra labels, tissue classes, parameters."""
    return (f"case{i:04d}_ct.nii.gz", f"case{i:04d}_seg.nii.gz", f"case{i:04d}_tissue.nii.gz", f"case{i:04d}.json")


def write_case(folder: Path, i: int, ph: Phantom) -> list[Path]:
    """Write one phantom's four files into ``folder`` (a fresh folder: files are replaced)."""
    from ..io import atomic_write, write_nifti

    ct, seg, tis, js = (folder / x for x in case_names(i))
    out = [
        write_nifti(ct, ph.hu, ph.affine, force=True),
        write_nifti(seg, ph.seg, ph.affine, force=True),
        write_nifti(tis, ph.tissue, ph.affine, force=True),
    ]
    with atomic_write(js, force=True) as tmp:
        Path(tmp).write_text(json.dumps(ph.to_json(), indent=1))
    return out + [js]


def write_phantoms(
    out_dir: str | Path,
    n: int,
    *,
    size: int | Sequence[int] = 64,
    spacing_mm: float = 1.25,
    seed: int = 0,
    fov_mm: float | None = None,
    force: bool = False,
    progress: bool = True,
    level: str | None = None,
    centre: str = "vertebra",
    noise_hu: float | None = None,
    blur: bool = True,
    metal: bool | None = None,
    n_montage: int = 4,
    body_composition: str = "default",
) -> list[Path]:
    """Write ``n`` phantoms (case ``i`` uses seed ``seed + i``) as one folder, atomically.

    Per case: ``caseNNNN_ct.nii.gz`` (HU), ``caseNNNN_seg.nii.gz`` (vertebrae, VerSe labels),
    ``caseNNNN_tissue.nii.gz`` (:data:`TISSUE`) and ``caseNNNN.json`` (parameters); plus
    ``montage.png`` of the first ``n_montage`` cases. ``body_composition="published"`` draws the
    bodies' muscle and fat areas from published CT data (:mod:`xfit.phantoms.composition`; the
    default keeps every seed's phantom as it always was). The folder is built beside ``out_dir`` and
    renamed into place when complete (:func:`xfit.io.atomic_folder`).

    Returns:
        The final paths of the written files.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``force`` is false (checked before any work).
        InputError: ``n < 1`` or bad phantom arguments (checked on case 0 before writing).
    """
    from tqdm import tqdm

    from ..errors import InputError
    from ..io import atomic_folder, check_output_folder

    if int(n) < 1:
        raise InputError(f"n must be >= 1, got {n}")
    out = check_output_folder(out_dir, force=force)
    kw = dict(
        size=size,
        spacing_mm=spacing_mm,
        fov_mm=fov_mm,
        level=level,
        centre=centre,
        noise_hu=noise_hu,
        blur=blur,
        metal=metal,
        body_composition=body_composition,
    )
    first = make_phantom(seed, **kw)  # bad arguments fail here, before any file
    written: list[Path] = []
    shown = []
    with atomic_folder(out, force=force) as tmp:
        for i in tqdm(range(n), desc="phantoms", disable=not progress):
            ph = first if i == 0 else make_phantom(seed + i, **kw)
            written += [out / p.name for p in write_case(tmp, i, ph)]
            if len(shown) < n_montage:
                shown.append(ph)
        montage(shown, tmp / "montage.png", force=True)
    return written + [out / "montage.png"]
