"""Whole-torso X-rays for training networks that see only crops (the config's ``whole_body``).

A real radiograph integrates the whole torso, not the prior's cube: every ray also crosses the
soft tissue, ribs, lungs and neighbouring vertebrae outside it. Line integrals add along a ray,
so a whole-torso X-ray of a crop is its cube's X-ray plus the X-ray of everything outside the
cube. The trainer keeps a bank of such *outside* images, made once per run from xfit's own
torso phantoms (seeds ``seed, seed+1, ...``, published body composition; a user's CT collection
need not hold whole torsos), and adds one, drawn at random, to an example's line integrals
(:meth:`xfit.baselines.train.BaselineTrainer.with_outside`). The outside of one phantom around
the crop of another is not one body, but it carries the right amounts and textures: what a
network needs in order not to read the torso as vertebra.

Each outside image is the projection of a phantom drawn on a ``fov_mm`` x ``fov_mm`` grid (long
enough in z to fill the detector), centred on its vertebra like the prior's crops, with the
central cube set to air. The bank is cached in the run folder's ``cache/`` under a name that
holds its settings, so ``--resume`` does not draw it again.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import load_tensors, read_safetensors, save_safetensors
from ..errors import CheckpointError
from ..geometry import View
from ..phantoms import make_phantom
from ..projector import project
from ..units import hu_to_mu


def torso_shape(cube: int, spacing_mm: float, fov_mm: float, views: Sequence[View]) -> tuple[int, int, int]:
    """Voxels ``(x, y, z)`` of an outside phantom: ``fov_mm`` across, and in z enough to cover
    every detector row where it leaves the torso (cone beams magnify toward the source), all of
    ``cube``'s parity so that the central ``cube`` block is the crop of the same seed."""
    half_torso = fov_mm / 2
    z_mm = fov_mm
    for v in views:
        side_mm = max(r * p for r, p in zip(v.shape, v.pixel_spacing_mm))
        scale = 1.0 if v.projection == "parallel" else (v.sod_mm + half_torso) / v.sdd_mm
        z_mm = min(z_mm, max(side_mm * scale, cube * spacing_mm))
    even = lambda mm: max(cube, 2 * math.ceil(mm / spacing_mm / 2) + cube % 2)  # noqa: E731
    xy = even(fov_mm)
    return xy, xy, even(z_mm + 4 * spacing_mm)


def outside_images(seed: int, cube: int, spacing_mm: float, fov_mm: float, views: Sequence[View]) -> np.ndarray:
    """Line integrals ``[V, rows, cols]`` (per mm of path x mu, as :func:`xfit.projector.project`)
    of phantom ``seed``'s torso outside the central ``cube``³ block (``spacing_mm`` voxels), one
    per view, isocentre at the crop's centre."""
    shape = torso_shape(cube, spacing_mm, fov_mm, views)
    ph = make_phantom(seed, size=shape, spacing_mm=spacing_mm, centre="vertebra", body_composition="published")
    mu = hu_to_mu(torch.from_numpy(np.ascontiguousarray(ph.hu, dtype=np.float32)))
    lo = [(n - cube) // 2 for n in shape]
    mu[lo[0] : lo[0] + cube, lo[1] : lo[1] + cube, lo[2] : lo[2] + cube] = 0.0
    with torch.no_grad():
        return project(mu[None, None], ph.affine, list(views))[0].numpy()


def bank_name(cube: int, spacing_mm: float, fov_mm: float, seed: int, count: int, views: Sequence[View]) -> str:
    """Cache file name of a bank: its settings' digest."""
    key = json.dumps([cube, spacing_mm, fov_mm, seed, count, [repr(v) for v in views]], sort_keys=True, default=str)
    return f"outside-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


def outside_bank(
    cube: int,
    spacing_mm: float,
    fov_mm: float,
    seed: int,
    count: int,
    views: Sequence[View],
    cache_dir: Path | None = None,
    progress: bool = False,
) -> Tensor:
    """``[count, V, rows, cols]`` float32 outside images of phantoms ``seed .. seed+count-1``
    (:func:`outside_images`), read from ``cache_dir`` when made before, else made and cached."""
    path = None if cache_dir is None else Path(cache_dir) / bank_name(cube, spacing_mm, fov_mm, seed, count, views)
    want = (count, len(views), *views[0].shape)
    if path is not None and path.is_file():
        try:
            data, _ = read_safetensors(path, "outside bank")
            bank = load_tensors(data, path).get("outside")
        except CheckpointError:
            bank = None  # a damaged cache is made again
        if bank is not None and tuple(bank.shape) == want and bool(torch.isfinite(bank).all()):
            return bank
    from tqdm.auto import tqdm

    imgs = [
        outside_images(seed + k, cube, spacing_mm, fov_mm, views)
        for k in tqdm(range(count), desc="outside bank", disable=not progress)
    ]
    bank = torch.from_numpy(np.stack(imgs).astype(np.float32))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_safetensors(path, {"outside": bank}, {"what": "outside bank"}, force=True)
    return bank
