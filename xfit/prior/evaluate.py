"""How realistic and diverse are a prior's samples? ``xfit evaluate-prior PRIOR --data DIR``.

Held-out real CTs are prepared exactly like training data (:func:`xfit.prior.data.load_training_set`:
one crop of ``R^3`` voxels at ``spacing_mm`` centred on each labelled vertebra), so real and
generated volumes share one grid. Both are compared in HU clamped to the prior's window:

* **HU distribution**: Wasserstein-1 distance (HU) and L1 distance (in [0, 2]) between the pooled
  voxel histograms (:data:`HIST_BINS` bins over the window).
* **Bone fraction**: fraction of voxels above 250 HU per volume, mean/std real vs generated.
* **Vertebra size**: bounding-box extent (mm) of the label mask along x, y, z (RAS axes),
  mean/std real vs generated; volumes with an empty mask are counted, not measured.
* **Label check** (:func:`label_check`): is each label mask one crisp vertebra? Per volume, the
  connected components (26-connectivity) of the mask, the largest component's share of the mask,
  the fraction of mask voxels in axial slices above or below the largest component (where the
  neighbouring levels lie), the extent (mm) the other pieces add to the bounding box, and, where
  the neighbours' labels are known (phantoms), the fraction of the mask on a neighbour's level. A
  volume whose largest component holds less than :data:`CRISP_FRACTION` of its mask (or whose
  mask overlaps a neighbour by more than :data:`MAX_NEIGHBOUR_OVERLAP`) is not crisp. Training
  crops hold the centred vertebra only (:func:`xfit.prior.data.sample_mask` keeps its label
  value), so real crops have one component; pieces in generated labels come from the generator.
* **Feature Fréchet distance** (``feature_fd``): there is no pretrained 3D network offline, so the
  features are fixed and hand-made (:func:`volume_features`, version :data:`FEATURES_VERSION`):
  8-bin HU histograms at full, 1/2 and 1/4 resolution (average pooling) plus the log radial power
  spectrum in 12 frequency shells (histogram fractions in [0, 1], log10 powers of the volume in
  window units; no data-dependent scaling). The number is comparable between evaluations made
  with the same xfit feature version, not with FID values from elsewhere; identical sets give 0,
  and with fewer volumes than the 36 features it is biased upward (use many samples).
* **Diversity**: mean SSIM over :data:`DIVERSITY_PAIRS` seeded random pairs within each set (lower =
  more diverse; compare generated with real).
* **Memorisation** (with ``train_dir``): for each volume, the smallest MSE (unit intensity, i.e.
  HU mapped to [-1, 1]) to any training crop; generated samples much closer to the training set
  than held-out real volumes are would indicate copying.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..io import atomic_write, check_device, check_output_file, finite_json, portable_path
from ..metrics import ssim3d
from ..units import unit_to_hu
from .checkpoint import Prior
from .config import PriorConfig
from .data import BONE_HU, DataSettings, load_training_set
from .sample import as_prior, check_num_samples, check_truncation, generate_samples

FEATURES_VERSION = 1
HIST_BINS = 250
#: A label mask is crisp when its largest connected component holds at least this share of it.
CRISP_FRACTION = 0.99
#: ... and at most this share of it lies on a neighbouring vertebra's label (when known).
MAX_NEIGHBOUR_OVERLAP = 0.01
DIVERSITY_PAIRS = 64
_FEATURE_HIST_BINS = 8
_SPECTRUM_SHELLS = 12


@dataclass
class VolumeSet:
    """Volumes on one grid.

    Attributes:
        hu: ``[N, R, R, R]`` float32 HU clamped to the window.
        labels: ``[N, R, R, R]`` bool vertebra masks.
        sources: N descriptions (file and vertebra, or sample index).
    """

    hu: np.ndarray
    labels: np.ndarray
    sources: list[str]

    def __len__(self) -> int:
        return int(self.hu.shape[0])


def load_real_set(
    data_dir: str | Path,
    config: PriorConfig,
    *,
    masks_dir: str | Path | None = None,
    max_real: int | None = None,
    progress: bool = False,
) -> VolumeSet:
    """CT folder -> crops prepared exactly as for training (first ``max_real`` if given).

    Raises:
        InputError: no usable CT in the folder (the message names the files).
    """
    # every vertebra level, cropped exactly as for training (xfit.prior.train.data_settings)
    settings = DataSettings(config.resolution, config.spacing_mm, tuple(config.hu_window), None)
    data = load_training_set(data_dir, settings, masks_dir=masks_dir, cache_dir=None, progress=progress)
    vol = data.volumes if max_real is None else data.volumes[:max_real]
    vol = vol.float()
    hu = unit_to_hu(vol[:, 0], config.hu_window).numpy().astype(np.float32)
    return VolumeSet(hu, (vol[:, 1] > 0).numpy(), list(data.sources[: len(vol)]))


# ----------------------------------------------------------------------------- statistics


def hu_histogram(hu: np.ndarray, window: tuple[float, float], bins: int = HIST_BINS) -> np.ndarray:
    """Normalised histogram ``[bins]`` of all voxels over the window (values clamped into it)."""
    lo, hi = window
    h, _ = np.histogram(np.clip(hu, lo, hi), bins=bins, range=(lo, hi))
    return h / max(h.sum(), 1)


def histogram_distances(p: np.ndarray, q: np.ndarray, window: tuple[float, float]) -> tuple[float, float]:
    """(Wasserstein-1 in HU, L1) between two normalised histograms on the same bins."""
    width = (window[1] - window[0]) / len(p)
    w1 = float(np.abs(np.cumsum(p) - np.cumsum(q)).sum() * width)
    return w1, float(np.abs(p - q).sum())


def bone_fractions(hu: np.ndarray) -> np.ndarray:
    """Fraction ``[N]`` of voxels above 250 HU per volume."""
    return (hu > BONE_HU).reshape(len(hu), -1).mean(1)


def label_extents_mm(labels: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Bounding-box extent ``[N, 3]`` (mm along x, y, z) of each mask; NaN rows for empty masks."""
    out = np.full((len(labels), 3), np.nan)
    for n, m in enumerate(labels):
        for ax in range(3):
            other = tuple(a for a in range(3) if a != ax)
            idx = np.flatnonzero(m.any(axis=other))
            if idx.size:
                out[n, ax] = (idx[-1] - idx[0] + 1) * spacing_mm
    return out


def label_check(labels: np.ndarray, spacing_mm: float, neighbours: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Is each label mask one vertebra without pieces of its neighbours? (module docstring)

    Args:
        labels: ``[N, I, J, K]`` bool masks (axis 2 is z, superior).
        spacing_mm: voxel size (mm).
        neighbours: optional ``[N, I, J, K]`` bool masks of the other vertebrae (their levels are
            known for phantoms), for ``neighbour_overlap``.

    Returns:
        Per volume (arrays of length N; NaN where a mask is empty or no neighbours are given):
        ``components`` (int), ``largest_fraction``, ``beyond_z_fraction`` (mask voxels in slices
        outside the largest component's z-range), ``extent_excess_mm`` ``[N, 3]`` (bounding-box
        extent of the whole mask minus the largest component's, x/y/z), ``neighbour_overlap``
        (fraction of the mask on neighbour voxels) and ``crisp`` (bool, see
        :data:`CRISP_FRACTION` and :data:`MAX_NEIGHBOUR_OVERLAP`).

    Raises:
        InputError: ``labels`` is not 4-D or ``neighbours`` has another shape.
    """
    from scipy import ndimage

    labels = np.asarray(labels, bool)
    if labels.ndim != 4:
        raise InputError(f"labels must be [N, I, J, K], got shape {list(labels.shape)}")
    if neighbours is not None and np.shape(neighbours) != labels.shape:
        raise InputError(
            f"neighbours must have the labels' shape {list(labels.shape)}, got {list(np.shape(neighbours))}"
        )
    n = len(labels)
    out = dict(
        components=np.zeros(n, np.int64),
        largest_fraction=np.full(n, np.nan),
        beyond_z_fraction=np.full(n, np.nan),
        extent_excess_mm=np.full((n, 3), np.nan),
        neighbour_overlap=np.full(n, np.nan),
        crisp=np.zeros(n, bool),
    )
    structure = np.ones((3, 3, 3), bool)
    for i, m in enumerate(labels):
        total = int(m.sum())
        if total == 0:
            continue
        lab, k = ndimage.label(m, structure=structure)
        sizes = np.bincount(lab.ravel())[1:]
        big = lab == int(np.argmax(sizes)) + 1
        out["components"][i] = k
        out["largest_fraction"][i] = sizes.max() / total
        zs = np.flatnonzero(big.any(axis=(0, 1)))
        z_all = m.sum(axis=(0, 1))
        out["beyond_z_fraction"][i] = (z_all[: zs[0]].sum() + z_all[zs[-1] + 1 :].sum()) / total
        out["extent_excess_mm"][i] = (
            label_extents_mm(m[None], spacing_mm)[0] - label_extents_mm(big[None], spacing_mm)[0]
        )
        crisp = out["largest_fraction"][i] >= CRISP_FRACTION
        if neighbours is not None:
            out["neighbour_overlap"][i] = float((m & neighbours[i]).sum()) / total
            crisp = crisp and out["neighbour_overlap"][i] <= MAX_NEIGHBOUR_OVERLAP
        out["crisp"][i] = crisp
    return out


def label_check_summary(check: dict[str, np.ndarray]) -> dict[str, Any]:
    """JSON-able summary of :func:`label_check`: means over the non-empty masks, the number of
    masks that are not crisp, and the per-volume values."""
    ok = ~np.isnan(check["largest_fraction"])
    mean = lambda x: _json(np.mean(x[ok], 0)) if ok.any() else None  # noqa: E731
    return {
        "components": mean(check["components"].astype(float)),
        "largest_fraction": mean(check["largest_fraction"]),
        "beyond_z_fraction": mean(check["beyond_z_fraction"]),
        "extent_excess_mm": mean(check["extent_excess_mm"]),
        "neighbour_overlap": mean(check["neighbour_overlap"])
        if not np.isnan(check["neighbour_overlap"][ok]).all()
        else None,
        "not_crisp": int((ok & ~check["crisp"]).sum()),
        "empty": int((~ok).sum()),
        "crisp_fraction_threshold": CRISP_FRACTION,
        "per_volume": [
            {
                "components": int(check["components"][i]),
                "largest_fraction": _json(check["largest_fraction"][i]),
                "beyond_z_fraction": _json(check["beyond_z_fraction"][i]),
                "neighbour_overlap": _json(check["neighbour_overlap"][i]),
                "crisp": bool(check["crisp"][i]),
            }
            for i in range(len(ok))
        ],
    }


def _radial_power(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """log10 mean power ``[N, shells]`` of the (windowed, mean-free) volumes per frequency shell."""
    r = hu.shape[-1]
    x = torch.from_numpy((hu - hu.mean(axis=(1, 2, 3), keepdims=True)) / (window[1] - window[0]))
    power = torch.fft.rfftn(x.double(), dim=(1, 2, 3)).abs().square().numpy()
    f = [np.fft.fftfreq(r), np.fft.fftfreq(r), np.fft.rfftfreq(r)]
    fi, fj, fk = np.meshgrid(*f, indexing="ij")
    radius = np.sqrt(fi**2 + fj**2 + fk**2)
    edges = np.linspace(0, 0.5, _SPECTRUM_SHELLS + 1)
    shell = np.digitize(radius, edges) - 1  # DC (radius 0) falls in shell 0 with low frequencies
    out = np.zeros((len(hu), _SPECTRUM_SHELLS))
    for s in range(_SPECTRUM_SHELLS):
        sel = (shell == s) & (radius > 0)
        out[:, s] = np.log10(power[:, sel].mean(1) + 1e-12)
    return out


def volume_features(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Fixed prior-independent features ``[N, D]`` of HU volumes (see the module docstring).

    Multi-scale HU histograms (8 bins, scales 1, 2, 4) and the 12-shell log radial power spectrum
    (``D = 36`` for R >= 16). Version :data:`FEATURES_VERSION`.
    """
    lo, hi = window
    x = torch.from_numpy(np.clip(hu, lo, hi).astype(np.float32))[:, None]
    feats = []
    for scale in (1, 2, 4):
        if x.shape[-1] // scale < 2:
            continue
        xs = torch.nn.functional.avg_pool3d(x, scale) if scale > 1 else x
        flat = xs.flatten(1).numpy()
        edges = np.linspace(lo, hi, _FEATURE_HIST_BINS + 1)
        idx = np.clip(np.digitize(flat, edges) - 1, 0, _FEATURE_HIST_BINS - 1)
        feats.append(np.stack([(idx == b).mean(1) for b in range(_FEATURE_HIST_BINS)], 1))
    feats.append(_radial_power(np.clip(hu, lo, hi).astype(np.float64), window))
    return np.concatenate(feats, 1)


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to features ``[N1, D]`` and ``[N2, D]``."""
    from scipy import linalg

    if len(f1) < 2 or len(f2) < 2:
        raise InputError(f"the Fréchet distance needs >= 2 volumes per set, got {len(f1)} and {len(f2)}")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.atleast_2d(np.cov(f1, rowvar=False)), np.atleast_2d(np.cov(f2, rowvar=False))
    with warnings.catch_warnings():  # singular covariances are expected with few volumes
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.all(np.isfinite(covmean)):
            eps = np.eye(len(s1)) * 1e-6
            covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    fd = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))
    return max(fd, 0.0)


def mean_pairwise_ssim(hu: np.ndarray, data_range: float, *, pairs: int = DIVERSITY_PAIRS, seed: int = 0) -> float:
    """Mean 3D SSIM over up to ``pairs`` distinct random pairs (all pairs if fewer); NaN if N < 2."""
    n = len(hu)
    if n < 2:
        return math.nan
    all_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if len(all_pairs) > pairs:
        rng = np.random.default_rng(seed)
        all_pairs = [all_pairs[k] for k in rng.choice(len(all_pairs), pairs, replace=False)]
    return float(np.mean([ssim3d(hu[i], hu[j], data_range) for i, j in all_pairs]))


def nearest_mse(query: np.ndarray, reference: np.ndarray, window: tuple[float, float], chunk: int = 16) -> np.ndarray:
    """For each query volume the smallest MSE ``[Nq]`` to any reference volume (unit intensity)."""
    scale = 2.0 / (window[1] - window[0])
    ref = torch.from_numpy(reference.reshape(len(reference), -1).astype(np.float64) * scale)
    ref_sq = ref.square().sum(1)
    out = []
    for i in range(0, len(query), chunk):
        q = torch.from_numpy(query[i : i + chunk].reshape(-1, ref.shape[1]).astype(np.float64) * scale)
        d = q.square().sum(1)[:, None] + ref_sq[None] - 2 * q @ ref.T
        out.append((d.clamp_min(0).min(1).values / ref.shape[1]).numpy())
    return np.concatenate(out)


def _stats(x: np.ndarray) -> dict[str, Any]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        ok = ~np.isnan(x).any(1)
        return {
            "mean": _json(np.mean(x[ok], 0)) if ok.any() else [None] * x.shape[1],
            "std": _json(np.std(x[ok], 0)) if ok.any() else [None] * x.shape[1],
            "empty": int((~ok).sum()),
        }
    return {"mean": _json(x.mean()), "std": _json(x.std()), "median": _json(np.median(x))}


def _json(x: Any) -> Any:
    """Floats (NaN/inf -> None) or lists of them, for strict JSON."""
    if isinstance(x, np.ndarray):
        return [_json(v) for v in x.tolist()]
    x = float(x)
    return x if math.isfinite(x) else None


def compare_volume_sets(
    real: VolumeSet,
    fake: VolumeSet,
    *,
    spacing_mm: float,
    hu_window: tuple[float, float],
    train: VolumeSet | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every statistic of the module docstring for two sets on the same grid (JSON-able dict)."""
    if real.hu.shape[1:] != fake.hu.shape[1:]:
        raise InputError(f"real and generated volumes differ in grid: {real.hu.shape[1:]} vs {fake.hu.shape[1:]}")
    window = (float(hu_window[0]), float(hu_window[1]))
    w1, l1 = histogram_distances(hu_histogram(real.hu, window), hu_histogram(fake.hu, window), window)
    f_real, f_fake = volume_features(real.hu, window), volume_features(fake.hu, window)
    report: dict[str, Any] = {
        "n_real": len(real),
        "n_fake": len(fake),
        "hu_w1": w1,
        "hu_hist_l1": l1,
        "bone_fraction": {"real": _stats(bone_fractions(real.hu)), "fake": _stats(bone_fractions(fake.hu))},
        "vertebra_extent_mm": {
            "real": _stats(label_extents_mm(real.labels, spacing_mm)),
            "fake": _stats(label_extents_mm(fake.labels, spacing_mm)),
        },
        "label_check": {
            "real": label_check_summary(label_check(real.labels, spacing_mm)),
            "fake": label_check_summary(label_check(fake.labels, spacing_mm)),
        },
        "feature_fd": _json(frechet_distance(f_real, f_fake)) if len(real) > 1 and len(fake) > 1 else None,
        "features_version": FEATURES_VERSION,
        "diversity_ssim": {
            "real": _json(mean_pairwise_ssim(real.hu, window[1] - window[0], seed=seed)),
            "fake": _json(mean_pairwise_ssim(fake.hu, window[1] - window[0], seed=seed)),
        },
        "nearest_train_mse": None,
    }
    if train is not None:
        report["nearest_train_mse"] = {
            "real": _stats(nearest_mse(real.hu, train.hu, window)),
            "fake": _stats(nearest_mse(fake.hu, train.hu, window)),
        }
    return report


# ----------------------------------------------------------------------------- entry point


def evaluate_prior(
    prior: Prior | str | Path,
    data_dir: str | Path,
    *,
    n_samples: int = 64,
    seed: int = 0,
    max_real: int | None = None,
    train_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    truncation_psi: float = 1.0,
    out: str | Path | None = None,
    force: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Compare ``n_samples`` prior samples with held-out real CTs (see the module docstring).

    Args:
        prior: loaded prior or checkpoint path.
        data_dir: folder of held-out NIfTI CTs (+ ``*_seg`` masks), never seen in training.
        n_samples: generated volumes (latent seed ``seed``).
        max_real: use at most this many real crops (the first ones).
        train_dir: the training CT folder, for the memorisation check.
        masks_dir: masks folder for ``data_dir`` (as in training).
        out: write the report here as JSON (``report.json``).
        force: overwrite ``out``.

    Returns:
        JSON-able report (NaN/inf written as null).

    Raises:
        InputError: unusable data folder or n_samples < 1; CheckpointError: bad prior;
        OutputExistsError: ``out`` exists without ``force``.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise InputError(f"n_samples must be >= 1, got {n_samples}")
    check_num_samples(n_samples)
    truncation_psi = check_truncation(truncation_psi)
    if max_real is not None and (isinstance(max_real, bool) or not isinstance(max_real, int) or max_real < 1):
        raise InputError(f"max_real must be a whole number >= 1, got {max_real!r}")
    if not isinstance(prior, Prior):
        device = check_device(device)
    for folder in (data_dir, train_dir, masks_dir):
        if folder is not None and not Path(folder).is_dir():
            raise InputError(
                f"{folder}: folder not found" if not Path(folder).exists() else f"{folder} is not a folder"
            )
    if out is not None:  # checked before any work: free (or force) and writable
        check_output_file(out, force=force)
    prior = as_prior(prior, device=device)
    cfg = prior.config
    real = load_real_set(data_dir, cfg, masks_dir=masks_dir, max_real=max_real, progress=progress)
    train = load_real_set(train_dir, cfg, progress=progress) if train_dir is not None else None
    hu, labels = generate_samples(prior, n_samples, seed=seed, truncation_psi=truncation_psi)
    fake = VolumeSet(hu, labels, [f"sample{i:03d}" for i in range(n_samples)])
    report = {
        "prior": {
            "path": portable_path(prior.path),
            "sha256": prior.sha256,
            "resolution": cfg.resolution,
            "spacing_mm": cfg.spacing_mm,
            "hu_window": list(cfg.hu_window),
        },
        "settings": {
            "data_dir": portable_path(data_dir),
            "train_dir": None if train_dir is None else portable_path(train_dir),
            "n_samples": n_samples,
            "seed": seed,
            "max_real": max_real,
            "truncation_psi": truncation_psi,
        },
        **compare_volume_sets(real, fake, spacing_mm=cfg.spacing_mm, hu_window=cfg.hu_window, train=train, seed=seed),
    }
    if out is not None:
        with atomic_write(out, force=force) as tmp:
            Path(tmp).write_text(json.dumps(finite_json(report), indent=2, allow_nan=False) + "\n")
    return report
