"""Draw volumes from a trained prior: ``xfit sample PRIOR -n 8 -o OUT``.

Outputs per sample ``sampleNNN_ct.nii.gz`` (HU, float32) and ``sampleNNN_seg.nii.gz`` (label
logit > 0 -> 1, int16), on the prior's grid: ``R^3`` voxels of ``spacing_mm`` in RAS with the
grid centre at the world origin (:func:`prior_affine`). ``montage.png`` previews the first
:data:`MONTAGE_MAX` samples and ``samples.json`` records the settings and the prior's sha256.

:func:`generate_hu` is the one place that turns generator output into HU and label logits; the
fitting code uses it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, OutputExistsError
from ..io import atomic_write, write_nifti
from .checkpoint import Prior, load_prior
from .config import unit_to_hu

#: At most this many samples are drawn in the montage.
MONTAGE_MAX = 8


def as_prior(prior: Prior | str | Path, device: str | torch.device = "cpu") -> Prior:
    """A loaded :class:`Prior`, or load it from a checkpoint path (CheckpointError if invalid)."""
    return prior if isinstance(prior, Prior) else load_prior(prior, device=device)


def prior_affine(prior: Prior, resolution: int | None = None) -> np.ndarray:
    """Voxel index -> world (RAS mm) ``[4, 4]`` of the prior grid, its centre at the origin.

    ``diag(s, s, s, 1)`` with translation ``-s (r - 1) / 2`` per axis. By default ``r`` is the
    prior's resolution and ``s`` its ``spacing_mm``; a coarser ``resolution`` (a block output of
    the skip generator, :func:`generate_hu`) covers the same cube with ``s * R / r`` voxels.
    """
    full = int(prior.config.resolution)
    r = full if resolution is None else int(resolution)
    s = float(prior.config.spacing_mm) * full / r
    affine = np.diag([s, s, s, 1.0])
    affine[:3, 3] = -s * (r - 1) / 2.0
    return affine


def generate_hu(prior: Prior, w_plus: Tensor, noise: Sequence[Tensor] | None = None,
                resolution: int | None = None) -> tuple[Tensor, Tensor]:
    """Synthesise HU volumes and label logits from styles (differentiable in ``w_plus``/noise).

    Args:
        prior: loaded prior.
        w_plus: ``[B, num_ws, w_dim]`` styles on the prior's device.
        noise: optional per-layer noise (``prior.G.synthesis.noise_shapes()``); ``None`` uses the
            generator's stored constant noise (deterministic).
        resolution: stop the generator at this block (coarse-to-fine fitting; its grid is
            :func:`prior_affine` with the same ``resolution``); ``None``: full resolution.

    Returns:
        ``(hu, label_logit)``, each ``[B, r, r, r]``: HU (unclamped, so gradients flow outside the
        window) and the first label channel's logit (> 0 = inside).
    """
    out = prior.G.synthesis(w_plus, noise=noise, noise_mode="const", max_resolution=resolution)
    hu = unit_to_hu(out[:, 0].float(), prior.config.hu_window)
    return hu, out[:, 1].float()


@torch.no_grad()
def sample_w_plus(prior: Prior, n: int, *, seed: int = 0, truncation_psi: float = 1.0
                  ) -> Tensor:
    """Styles ``[n, num_ws, w_dim]`` of ``n`` seeded latents (sample i does not depend on n).

    Truncation pulls w toward the generator's tracked mean ``w_avg`` (psi = 1: none).
    """
    if n < 1:
        raise InputError(f"number of samples must be >= 1, got {n}")
    G = prior.G
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(int(seed)))
    device = G.mapping.w_avg.device
    return G.mapping(z.to(device), truncation_psi=float(truncation_psi), update_emas=False)


@torch.no_grad()
def generate_samples(prior: Prior, n: int, *, seed: int = 0, truncation_psi: float = 1.0,
                     batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples as NumPy: HU clamped to the window ``[n, R, R, R]`` float32 and masks (bool).

    Memory stays bounded by generating ``batch`` volumes at a time.
    """
    ws = sample_w_plus(prior, n, seed=seed, truncation_psi=truncation_psi)
    lo, hi = prior.config.hu_window
    hus, labels = [], []
    for i in range(0, n, max(1, batch)):
        hu, logit = generate_hu(prior, ws[i:i + batch])
        hus.append(hu.clamp(lo, hi).cpu().numpy().astype(np.float32))
        labels.append((logit > 0).cpu().numpy())
    return np.concatenate(hus), np.concatenate(labels)


def sample_paths(out_dir: Path, n: int) -> list[Path]:
    """The files :func:`sample_prior` writes (CT and label of each sample, json, montage)."""
    files = [out_dir / f"sample{i:03d}_{kind}.nii.gz" for i in range(n) for kind in ("ct", "seg")]
    return files + [out_dir / "samples.json", out_dir / "montage.png"]


def sample_prior(prior: Prior | str | Path, n: int, out_dir: str | Path, *, seed: int = 0,
                 truncation_psi: float = 1.0, force: bool = False, batch: int = 4) -> list[Path]:
    """Write ``n`` prior samples as NIfTI (HU and labels), a JSON record and a montage.

    Args:
        prior: loaded prior or checkpoint path.
        n: number of samples.
        out_dir: output folder (created).
        seed: seed of the latents (sample i is the same for any n).
        truncation_psi: 1 = no truncation, smaller = closer to the average anatomy.
        force: overwrite existing outputs.

    Returns:
        The written paths (see :func:`sample_paths`).

    Raises:
        OutputExistsError: an output file exists and ``force`` is false (checked before writing).
        InputError: ``n < 1``; CheckpointError: unreadable prior.
    """
    prior = as_prior(prior)
    out_dir = Path(out_dir)
    paths = sample_paths(out_dir, n)
    if n < 1:
        raise InputError(f"number of samples must be >= 1, got {n}")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir} exists and is a file, not a folder")
    existing = [p.name for p in paths if p.exists()]
    if existing and not force:
        raise OutputExistsError(f"{out_dir} already holds {', '.join(existing[:3])}"
                                f"{' ...' if len(existing) > 3 else ''}; use --force to overwrite")
    hu, labels = generate_samples(prior, n, seed=seed, truncation_psi=truncation_psi, batch=batch)
    affine = prior_affine(prior)
    for i in range(n):
        write_nifti(paths[2 * i], hu[i], affine, force=force)
        write_nifti(paths[2 * i + 1], labels[i].astype(np.int16), affine, force=force)
    record = {"n": n, "seed": seed, "truncation_psi": truncation_psi, "prior": str(prior.path),
              "prior_sha256": prior.sha256, "resolution": prior.config.resolution,
              "spacing_mm": prior.config.spacing_mm, "hu_window": list(prior.config.hu_window)}
    with atomic_write(paths[-2], force=force) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2))
    from ..preview import volumes_montage

    k = min(n, MONTAGE_MAX)
    volumes_montage(list(hu[:k]), paths[-1], spacing_mm=prior.config.spacing_mm,
                    labels=list(labels[:k]), titles=[f"sample{i:03d}" for i in range(k)],
                    force=force)
    return paths
