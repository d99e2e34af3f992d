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
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..devices import autocast
from ..errors import CheckpointError, InputError
from ..io import atomic_folder, atomic_write, check_output_folder, portable_path, write_nifti
from ..units import unit_to_hu
from .checkpoint import Prior, load_prior

#: At most this many samples are drawn in the montage.
MONTAGE_MAX = 8
#: Documented range of the truncation psi (1 = none, 0 = the mean, > 1 exaggerates).
TRUNCATION_RANGE = (-2.0, 2.0)
#: At most this many samples per call.
MAX_SAMPLES = 100_000


def check_truncation(psi: float) -> float:
    """A finite truncation psi within :data:`TRUNCATION_RANGE`, else InputError."""
    lo, hi = TRUNCATION_RANGE
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not math.isfinite(psi) or not lo <= psi <= hi:
        raise InputError(f"truncation psi must be a number in [{lo:g}, {hi:g}] (1 = none), got {psi!r}")
    return float(psi)


def check_num_samples(n: int) -> int:
    """A sample count in [1, :data:`MAX_SAMPLES`], else InputError."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
        raise InputError(f"number of samples must be an integer in [1, {MAX_SAMPLES}], got {n!r}")
    return n


def as_prior(prior: Prior | str | Path, device: str | torch.device = "cpu") -> Prior:
    """A loaded :class:`Prior`, or load it from a checkpoint path (CheckpointError if invalid)."""
    return prior if isinstance(prior, Prior) else load_prior(prior, device=device)


def prior_affine(
    prior: Prior, resolution: int | None = None, centre_mm: Sequence[float] | np.ndarray | None = None
) -> np.ndarray:
    """Voxel index -> world (RAS mm) ``[4, 4]`` of the prior grid, its centre at ``centre_mm``
    (default: the origin).

    ``diag(s, s, s, 1)`` with translation ``centre - s (r - 1) / 2`` per axis. By default ``r``
    is the prior's resolution and ``s`` its ``spacing_mm``; a coarser ``resolution`` (a block
    output of the skip generator, :func:`generate_hu`) covers the same cube with ``s * R / r``
    voxels.
    """
    full = int(prior.config.resolution)
    r = full if resolution is None else int(resolution)
    s = float(prior.config.spacing_mm) * full / r
    affine = np.diag([s, s, s, 1.0])
    affine[:3, 3] = -s * (r - 1) / 2.0
    if centre_mm is not None:
        affine[:3, 3] += np.asarray(centre_mm, dtype=np.float64).reshape(3)
    return affine


def synthesize(
    prior: Prior,
    w_plus: Tensor,
    noise: Sequence[Tensor] | None = None,
    resolution: int | None = None,
    amp: bool = False,
    noise_mode: str = "const",
) -> Tensor:
    """The generator's raw output ``[B, C, r, r, r]`` in float32 (channel 0 unit intensity,
    1.. label logits) from styles ``w_plus [B, num_ws, w_dim]``, with the stored constant noise
    unless ``noise`` is given (``noise_mode="none"``: no noise, the same output as zero maps
    without their cost); ``resolution`` stops at that block; ``amp`` runs the synthesis under
    bfloat16 autocast (:func:`xfit.devices.autocast`)."""
    device = w_plus.device
    with autocast(device, amp):
        out = prior.G.synthesis(w_plus, noise=noise, noise_mode=noise_mode, max_resolution=resolution)
    return out.float()


def generate_hu(
    prior: Prior,
    w_plus: Tensor,
    noise: Sequence[Tensor] | None = None,
    resolution: int | None = None,
    amp: bool = False,
) -> tuple[Tensor, Tensor]:
    """Synthesise HU volumes and label logits from styles (differentiable in ``w_plus``/noise).

    Args:
        prior: loaded prior.
        w_plus: ``[B, num_ws, w_dim]`` styles on the prior's device.
        noise: optional per-layer noise (``prior.G.synthesis.noise_shapes()``); ``None`` uses the
            generator's stored constant noise (deterministic).
        resolution: stop the generator at this block (coarse-to-fine fitting; its grid is
            :func:`prior_affine` with the same ``resolution``); ``None``: full resolution.
        amp: bfloat16 autocast of the synthesis (outputs are float32 either way).

    Returns:
        ``(hu, label_logit)``, each ``[B, r, r, r]``: HU (unclamped, so gradients flow outside the
        window) and the first label channel's logit (> 0 = inside).
    """
    out = synthesize(prior, w_plus, noise, resolution, amp)
    hu = unit_to_hu(out[:, 0], prior.config.hu_window)
    return hu, out[:, 1]


@torch.no_grad()
def sample_w_plus(prior: Prior, n: int, *, seed: int = 0, truncation_psi: float = 1.0) -> Tensor:
    """Styles ``[n, num_ws, w_dim]`` of ``n`` seeded latents (sample i does not depend on n).

    Truncation pulls w toward the generator's tracked mean ``w_avg`` (psi = 1: none).
    """
    check_num_samples(n)
    truncation_psi = check_truncation(truncation_psi)
    G = prior.G
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(int(seed)))
    device = G.mapping.w_avg.device
    return G.mapping(z.to(device), truncation_psi=float(truncation_psi), update_emas=False)


@torch.no_grad()
def generate_samples(
    prior: Prior, n: int, *, seed: int = 0, truncation_psi: float = 1.0, batch: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples as NumPy: HU clamped to the window ``[n, R, R, R]`` float32 and masks (bool).

    Memory stays bounded by generating ``batch`` volumes at a time.
    """
    hus, labels = [], []
    for hu, lab in iter_samples(prior, n, seed=seed, truncation_psi=truncation_psi, batch=batch):
        hus.append(hu)
        labels.append(lab)
    return np.concatenate(hus), np.concatenate(labels)


@torch.no_grad()
def iter_samples(prior: Prior, n: int, *, seed: int = 0, truncation_psi: float = 1.0, batch: int = 4):
    """Yield ``(hu [b, R, R, R] float32, labels [b, R, R, R] bool)`` batches of :func:`generate_samples`.

    Raises:
        CheckpointError: the generator produced NaN or infinite values (a corrupt prior).
    """
    ws = sample_w_plus(prior, n, seed=seed, truncation_psi=truncation_psi)
    lo, hi = prior.config.hu_window
    for i in range(0, n, max(1, batch)):
        hu, logit = generate_hu(prior, ws[i : i + batch])
        if not (torch.isfinite(hu).all() and torch.isfinite(logit).all()):
            raise CheckpointError(
                f"the prior {prior.path} generates NaN or infinite values (sample {i} on); "
                "the checkpoint is corrupt or its training diverged"
            )
        yield hu.clamp(lo, hi).cpu().numpy().astype(np.float32), (logit > 0).cpu().numpy()


def sample_paths(out_dir: Path, n: int) -> list[Path]:
    """The files :func:`sample_prior` writes (CT and label of each sample, json, montage)."""
    files = [out_dir / f"sample{i:03d}_{kind}.nii.gz" for i in range(n) for kind in ("ct", "seg")]
    return files + [out_dir / "samples.json", out_dir / "montage.png"]


def sample_prior(
    prior: Prior | str | Path,
    n: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    truncation_psi: float = 1.0,
    force: bool = False,
    batch: int = 4,
) -> list[Path]:
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
        OutputExistsError: ``out_dir`` exists, is not empty and ``force`` is false (checked
            before the prior is loaded). With ``force`` the whole folder is replaced once the new
            one is complete (:func:`xfit.io.atomic_folder`).
        OutputError: ``out_dir`` cannot be written.
        InputError: ``n`` outside [1, MAX_SAMPLES] or truncation outside [-2, 2] or not finite;
        CheckpointError: unreadable prior, or one that generates NaN.
    """
    check_num_samples(n)
    truncation_psi = check_truncation(truncation_psi)
    out_dir = Path(out_dir)
    check_output_folder(out_dir, force=force, inputs=[] if isinstance(prior, Prior) else [prior])
    prior = as_prior(prior)
    paths = sample_paths(out_dir, n)
    affine = prior_affine(prior)
    shown_hu, shown_labels = [], []
    with atomic_folder(out_dir, force=force) as tmp:  # the folder appears whole or not at all
        local = sample_paths(tmp, n)
        i = 0
        for hu, labels in iter_samples(prior, n, seed=seed, truncation_psi=truncation_psi, batch=batch):
            for h, lab in zip(hu, labels):  # written batch by batch: memory stays bounded for any n
                write_nifti(local[2 * i], h, affine, force=True)
                write_nifti(local[2 * i + 1], lab.astype(np.int16), affine, force=True)
                if i < MONTAGE_MAX:
                    shown_hu.append(h)
                    shown_labels.append(lab)
                i += 1
        record = {
            "n": n,
            "seed": seed,
            "truncation_psi": truncation_psi,
            "prior": portable_path(prior.path),
            "prior_sha256": prior.sha256,
            "resolution": prior.config.resolution,
            "spacing_mm": prior.config.spacing_mm,
            "hu_window": list(prior.config.hu_window),
        }
        with atomic_write(local[-2], force=True) as f:
            Path(f).write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
        from ..preview import volumes_montage

        k = len(shown_hu)
        volumes_montage(
            shown_hu,
            local[-1],
            spacing_mm=prior.config.spacing_mm,
            labels=shown_labels,
            titles=[f"sample{j:03d}" for j in range(k)],
            force=True,
        )
    return paths
