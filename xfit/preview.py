"""PNG previews a person can look at: orthogonal slices and projections of volumes.

Display conventions (radiological): axial slices show the patient's right on the image left and
anterior at the top; coronal slices and AP projections show the patient's right on the image
left and superior at the top; sagittal slices and lateral projections show anterior on the image
right and superior at the top (the 90 degree left lateral of ``docs/architecture.md``).
Volumes are ``[I, J, K]`` arrays in canonical RAS voxel order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .io.files import atomic_write
from .units import hu_to_mu

BONE_WINDOW = (-400.0, 1200.0)


def axial(vol: np.ndarray, k: int | None = None) -> np.ndarray:
    """Axial slice ``[J, I]`` for display (anterior up, patient's right on the left)."""
    k = vol.shape[2] // 2 if k is None else k
    return vol[::-1, ::-1, k].T


def coronal(vol: np.ndarray, j: int | None = None) -> np.ndarray:
    """Coronal slice ``[K, I]`` for display (superior up, patient's right on the left)."""
    j = vol.shape[1] // 2 if j is None else j
    return vol[::-1, j, ::-1].T


def sagittal(vol: np.ndarray, i: int | None = None) -> np.ndarray:
    """Sagittal slice ``[K, J]`` for display (superior up, anterior on the right)."""
    i = vol.shape[0] // 2 if i is None else i
    return vol[i, :, ::-1].T


def drr_ap(hu: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Parallel-beam AP line integrals ``[K, I]`` (display orientation) of a HU volume."""
    mu = hu_to_mu(hu)
    return coronal(mu.sum(1, keepdims=True) * spacing_mm, 0)


def drr_lat(hu: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Parallel-beam lateral line integrals ``[K, J]`` (display orientation) of a HU volume."""
    mu = hu_to_mu(hu)
    return sagittal(mu.sum(0, keepdims=True) * spacing_mm, 0)


def figure_to_png(fig, path: str | Path, *, force: bool = True, dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_write(path, force=force) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def volumes_montage(
    hu_volumes: Sequence[np.ndarray],
    path: str | Path,
    *,
    spacing_mm: float,
    labels: Sequence[np.ndarray | None] | None = None,
    titles: Sequence[str] | None = None,
    window: tuple[float, float] = BONE_WINDOW,
    force: bool = True,
) -> Path:
    """One row per volume: axial, coronal, sagittal mid-slices (label contour) and AP/lateral DRRs.

    Args:
        hu_volumes: ``[I, J, K]`` HU arrays (may differ in size).
        labels: optional ``[I, J, K]`` masks drawn as red contours on the slices.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(hu_volumes)
    fig, axes = plt.subplots(n, 5, figsize=(12.5, 2.6 * n), squeeze=False)
    for r, hu in enumerate(hu_volumes):
        lab = None if labels is None else labels[r]
        panels = [("axial", axial), ("coronal", coronal), ("sagittal", sagittal)]
        for c, (name, fn) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(fn(hu), cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
            if lab is not None and np.any(lab):
                ax.contour(fn(lab.astype(np.float32)), levels=[0.5], colors="r", linewidths=0.6)
            ax.set_title(name if titles is None else f"{titles[r]}: {name}", fontsize=8)
        for c, (name, fn) in enumerate([("AP DRR", drr_ap), ("lateral DRR", drr_lat)], start=3):
            img = fn(hu, spacing_mm)
            axes[r, c].imshow(img, cmap="gray", vmin=0, vmax=max(float(img.max()), 1e-6))
            axes[r, c].set_title(name, fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return figure_to_png(fig, path, force=force)
