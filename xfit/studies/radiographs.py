"""Whole-body radiographs of held-out phantoms: does the fit find and reconstruct the vertebra?

Each case is a large phantom (torso around a lumbar vertebra, :func:`xfit.phantoms.make_phantom`)
X-rayed by ``xfit simulate`` onto a large detector whose isocentre sits ``offset`` mm away from
the vertebra, in a random direction; the vertebra has the phantom's own random tilt. Three ways
of reconstructing the same PNG pair (the files a user would have) are compared:

* ``isocentre``: no target, the whole images and the cube at the isocentre (xfit before targets);
* ``clicks``: ``--target`` with the true pixels of the vertebra's centre in each view;
* ``auto``: ``--target auto``.

Every result is judged on the prior's cube centred on a vertebra of the phantom (each
reconstruction resampled onto it, air outside what it covers), against the phantom's HU and
that vertebra's label: the wanted vertebra for ``isocentre`` and ``clicks``; for ``auto``, the
vertebra it found (nearest centroid to its point), with ``wanted_vertebra`` saying whether that
is the wanted one (vertebrae look alike: without a click the search cannot know which level
is meant). Run::

    xfit study radiographs -o results/radiograph_study --cases 6

Finished cases are kept (``case*.json``) and skipped when the run is resumed; ``settings.json``
records what decides their numbers (prior sha256, geometry, steps, the fit config and the code:
:func:`study_settings`), and a resume with any of them changed is refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..geometry import world_to_pixel
from ..io import Volume, read_nifti, resample_onto, write_nifti
from ..metrics import volume_metrics
from ..phantoms.model import make_phantom
from ..prior.sample import prior_affine
from ..simulate import simulate
from .cases import drop_modes, mode_table, open_study, run_cases, write_summary
from .code_sha import BASELINE_PARTS, COMMON_PARTS, code_record

MODES = ("isocentre", "clicks", "auto")
#: Seeds of the study's phantoms (apart from the training 1000.. and held-out 0.. seeds).
SEED0 = 5000
#: The parts of the package the study's numbers depend on (:mod:`.code_sha`).
CODE_PARTS = (
    *(p for p in COMMON_PARTS if p != "studies/evaluate.py"),
    *BASELINE_PARTS,
    "reconstruct.py",
    "studies/radiographs.py",
)


def study_settings(
    prior: str | Path | None, steps: int | None, detector: Sequence[int], pixel_mm: float, offset_mm: Sequence[float]
) -> dict[str, Any]:
    """What decides a case's numbers, as JSON values (``settings.json``): the prior's sha256, the
    fit steps, detector (px), pixel spacing and isocentre offset range (mm), the default fit config
    and the code record of :data:`CODE_PARTS`."""
    import dataclasses

    from ..checkpoint import file_sha256
    from ..errors import InputError
    from ..fitting import load_fit_config
    from ..reconstruct import DEFAULT_PRIOR

    path = Path(prior) if prior is not None else DEFAULT_PRIOR
    if not path.is_file():
        raise InputError(f"prior {path} not found")
    return {
        "study": "radiographs",
        "prior_sha256": file_sha256(path),
        "steps": steps,
        "detector": [int(d) for d in detector],
        "pixel_mm": float(pixel_mm),
        "offset_mm": [float(o) for o in offset_mm],
        "fit_settings": dataclasses.asdict(load_fit_config(None)),
        "code": code_record(CODE_PARTS),
    }


def _offset(seed: int, lo_mm: float, hi_mm: float) -> np.ndarray:
    """Isocentre offset from the vertebra: random direction, mostly along z and x, |o| in [lo, hi]."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=3) * np.array([1.0, 0.5, 1.5])
    return d / np.linalg.norm(d) * rng.uniform(lo_mm, hi_mm)


def make_case(
    seed: int, folder: Path, *, detector: tuple[int, int], pixel_mm: float, offset_mm: tuple[float, float]
) -> dict[str, Any]:
    """Phantom, CT files and the simulated AP + lateral PNG pair of one case."""
    ph = make_phantom(seed, size=(160, 144, 224), spacing_mm=1.5, level="lumbar")
    folder.mkdir(parents=True, exist_ok=True)
    ct, seg = folder / "ct.nii.gz", folder / "ct_seg.nii.gz"
    write_nifti(ct, ph.hu.astype(np.float32), ph.affine, force=True)
    write_nifti(seg, ph.seg.astype(np.int16), ph.affine, force=True)
    iso = _offset(seed, *offset_mm)  # the vertebra is at the phantom's world origin
    sims = simulate(
        ct,
        [0.0, 90.0],
        folder / "xr",
        detector_shape=detector,
        pixel_spacing_mm=(pixel_mm, pixel_mm),
        isocenter_mm=iso,
        force=True,
    )
    origin = torch.zeros(1, 3, dtype=torch.float64)
    pixels = [tuple(world_to_pixel(origin, s.view)[0].tolist()) for s in sims]
    return {
        "seed": seed,
        "ct": ct,
        "seg": seg,
        "iso": iso,
        "images": [s.png for s in sims],
        "pixels": pixels,
        "label": int(ph.centre_label),
        "level": ph.info.get("centre_level"),
        "tilt_deg": ph.info["vertebra"]["sagittal_tilt_deg"],
    }


def vertebra_centroids(case: dict[str, Any]) -> tuple[list[int], np.ndarray]:
    """The labels of the phantom's vertebrae (1..99) and their centroids ``[n, 3]`` in its frame (mm)."""
    from scipy import ndimage

    seg = read_nifti(case["seg"])
    data = np.rint(seg.data).astype(np.int16)
    labels = [int(v) for v in np.unique(data) if 0 < v < 100]
    cents = np.array(ndimage.center_of_mass(np.ones(data.shape), data, labels))  # voxel indices
    return labels, cents @ seg.affine[:3, :3].T + seg.affine[:3, 3]


def found_vertebra(point_mm: np.ndarray, case: dict[str, Any]) -> tuple[int, np.ndarray]:
    """The label of the vertebra at (or nearest to) a point of the X-rays' frame, and its
    centroid in the phantom's frame (mm)."""
    labels, cents_mm = vertebra_centroids(case)
    k = int(np.argmin(np.linalg.norm(cents_mm - (np.asarray(point_mm) + case["iso"]), axis=1)))
    return labels[k], cents_mm[k]


def judge(rec, case: dict[str, Any], prior, label: int, centre_mm: np.ndarray) -> dict[str, float]:
    """Metrics of a reconstruction on the cube centred on vertebra ``label`` (its centre
    ``centre_mm`` in the phantom's frame)."""
    r = int(prior.config.resolution)
    truth_affine = prior_affine(prior, centre_mm=np.asarray(centre_mm) - case["iso"])  # X-rays' frame
    grid = truth_affine.copy()
    grid[:3, 3] += case["iso"]  # the same grid in the phantom's frame
    gt_hu = resample_onto(read_nifti(case["ct"]), grid, (r, r, r), order=1, cval=-1000.0).data
    gt_seg = resample_onto(read_nifti(case["seg"]), grid, (r, r, r), order=0, cval=0.0).data
    hu = resample_onto(
        Volume(rec.fit.hu.astype(np.float32), rec.fit.affine), truth_affine, (r, r, r), order=1, cval=-1000.0
    ).data
    lab = resample_onto(
        Volume(rec.fit.labels.astype(np.float32), rec.fit.affine), truth_affine, (r, r, r), order=0, cval=0.0
    ).data
    m = volume_metrics(hu, gt_hu, lab > 0.5, np.rint(gt_seg) == label, float(prior.config.spacing_mm))
    m["target_error_mm"] = float(np.linalg.norm(np.asarray(rec.fit.centre_mm) + case["iso"] - centre_mm))
    m["seconds"] = float(rec.seconds)
    return m


def run_case(
    index: int,
    out: Path,
    prior_path: Path | None,
    *,
    steps: int | None,
    detector,
    pixel_mm,
    offset_mm,
    modes: Sequence[str],
    keep: bool,
) -> dict[str, Any]:
    from ..prior.checkpoint import load_prior
    from ..reconstruct import DEFAULT_PRIOR, reconstruct, write_reconstruction

    prior_path = Path(prior_path) if prior_path is not None else DEFAULT_PRIOR
    prior = load_prior(prior_path)
    seed = SEED0 + index
    case = make_case(seed, out / f"case{index:02d}", detector=detector, pixel_mm=pixel_mm, offset_mm=offset_mm)
    result = {
        "case": index,
        "seed": seed,
        "level": case["level"],
        "tilt_deg": case["tilt_deg"],
        "isocentre_offset_mm": float(np.linalg.norm(case["iso"])),
        "modes": {},
    }
    for mode in modes:
        target = {"isocentre": None, "clicks": list(case["pixels"]), "auto": "auto"}[mode]
        rec = reconstruct(case["images"], prior=prior_path, target=target, steps=steps, progress=False)
        if mode == "auto":  # judged on the vertebra it found, which need not be the wanted one
            label, centre = found_vertebra(np.asarray(rec.fit.centre_mm), case)
        else:
            label, centre = case["label"], np.zeros(3)
        result["modes"][mode] = judge(rec, case, prior, label, centre)
        result["modes"][mode]["wanted_vertebra"] = float(label == case["label"])
        if keep:
            write_reconstruction(rec, out / f"case{index:02d}" / mode, force=True)
    return result


def summarize(results: Sequence[dict[str, Any]], modes: Sequence[str]) -> str:
    return mode_table(
        results, modes, ("psnr_db", "ssim", "mae_hu", "dice", "target_error_mm", "wanted_vertebra", "seconds")
    )


def run_study(
    out: str | Path,
    *,
    prior: str | Path | None = None,
    cases: int = 6,
    steps: int | None = None,
    detector: tuple[int, int] = (448, 384),
    pixel_mm: float = 0.6,
    offset_mm: tuple[float, float] = (25.0, 50.0),
    modes: Sequence[str] = MODES,
    keep: bool = False,
    redo: Sequence[str] = (),
    force: bool = False,
) -> Path:
    """The study (``xfit study radiographs``): ``cases`` phantoms, each reconstructed in every
    mode of ``modes`` (finished cases are kept and skipped; ``redo``: modes run again on them),
    then ``OUT/summary.md``. ``keep`` writes each reconstruction folder. ``force`` starts afresh.

    Raises:
        InputError: a mode that is not one of :data:`MODES`.
        OutputExistsError: ``out`` holds cases of other settings or code (:func:`open_study`).
    """
    from ..errors import InputError

    out = Path(out)
    modes, redo = list(modes), list(redo)
    if set(modes + redo) - set(MODES):
        raise InputError(f"modes must be among {', '.join(MODES)}")
    open_study(out, study_settings(prior, steps, detector, pixel_mm, offset_mm), force=force)
    t0 = time.perf_counter()
    if redo:
        drop_modes(out, redo)
    results = run_cases(
        out,
        cases,
        lambda i, todo: run_case(
            i, out, prior, steps=steps, detector=detector, pixel_mm=pixel_mm, offset_mm=offset_mm, modes=todo, keep=keep
        ),
        modes=modes,
    )
    table = summarize(results, modes)
    head = (
        f"{len(results)} held-out phantoms (seeds {SEED0}..{SEED0 + len(results) - 1}, lumbar), AP + lateral "
        f"{detector[0]}x{detector[1]} px of {pixel_mm} mm, isocentre {offset_mm[0]:g}-{offset_mm[1]:g} mm from the "
        f"vertebra; metrics on the cube centred on the wanted vertebra. This run: {time.perf_counter() - t0:.0f} s"
        + (f" (re-ran {', '.join(redo)})" if redo else "")
        + ".\n\n"
    )
    write_summary(out, head + table)
    return out
