"""Simulate X-rays (DRRs) of a CT volume: ``xfit simulate CT.nii.gz --angles 0,90 -o OUT``.

Each view is written as a 16-bit PNG of line integrals (bright = attenuating) with its sidecar
JSON (``docs/architecture.md``, 'Intensities' and 'Sidecar'). The isocentre is the volume centre unless
a label of a mask or an explicit point is given. Optional Poisson noise models a finite dose:
``counts ~ Poisson(I0 * exp(-p))`` and ``p_noisy = -log(max(counts, 0.5) / I0)``.

``style="clinical"`` writes instead the processed radiograph of :mod:`xfit.radiograph` (spectrum,
scatter, heel, noise, blur, vendor processing, collimation, markers, grid): each view with the
preset of its angle (``ap`` or ``lateral``, :func:`xfit.radiograph.preset_for`), as an uncalibrated
8/16-bit PNG whose sidecar has no ``line_integral_scale``. The default ``style="ideal"`` is the
DRR above, unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .geometry import View, view_dict
from .io import Volume, atomic_folder, atomic_write, check_output_folder, read_nifti, write_radiograph, write_xray
from .projector import project
from .units import hu_to_mu

#: Documented ranges of the dose (photons per pixel) and the PNG scale of ``simulate``.
MAX_PHOTONS = 1.0e12
MAX_LINE_INTEGRAL_SCALE = 1.0e6


def view_name(angle_deg: float, index: int, used: set[str]) -> str:
    """File stem for a view: ``ap`` for 0 degrees, ``lat`` for 90, else ``view<angle>``."""
    base = {0.0: "ap", 90.0: "lat"}.get(float(angle_deg) % 360.0, f"view{angle_deg:g}".replace("-", "m"))
    name = base if base not in used else f"{base}_{index}"
    used.add(name)
    return name


def volume_centre_mm(volume: Volume) -> np.ndarray:
    """World position (mm) of the centre of the voxel grid."""
    centre_vox = (np.array(volume.data.shape, dtype=np.float64) - 1) / 2
    return (volume.affine @ np.append(centre_vox, 1.0))[:3]


def label_centroid_mm(mask: Volume, label: int) -> np.ndarray:
    """World centroid (mm) of the voxels of ``mask`` equal to ``label``."""
    idx = np.argwhere(np.rint(mask.data) == label)
    if idx.size == 0:
        raise InputError(f"label {label} does not occur in the mask")
    centre_vox = idx.mean(0)
    return (mask.affine @ np.append(centre_vox, 1.0))[:3]


def add_poisson_noise(p: torch.Tensor, photons: float, generator: torch.Generator) -> torch.Tensor:
    """Line integrals ``p`` with quantum noise of ``photons`` unattenuated photons per pixel."""
    check_photons(photons)
    counts = torch.poisson(photons * torch.exp(-p.double()), generator=generator)
    return (-torch.log(counts.clamp_min(0.5) / photons)).to(p.dtype)


def check_photons(photons: float) -> float:
    """The dose: a finite number of photons per pixel in (0, :data:`MAX_PHOTONS`]."""
    if (
        isinstance(photons, bool)
        or not isinstance(photons, (int, float))
        or not math.isfinite(photons)
        or not 0 < photons <= MAX_PHOTONS
    ):
        raise InputError(f"dose must be a number of photons per pixel in (0, {MAX_PHOTONS:g}], got {photons!r}")
    return float(photons)


@dataclass
class SimulatedView:
    """One simulated X-ray: line integrals ``[R, C]``, its view, and the files written."""

    image: np.ndarray
    view: View
    png: Path | None = None
    line_integral_scale: float | None = None
    #: the processed radiograph (``style="clinical"``), else None
    radiograph: Any = None
    #: the preset of its style (``ap`` or ``lateral``), else None
    preset: str | None = None


def simulate_views(
    volume: Volume,
    views: Sequence[View],
    *,
    photons: float | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> list[np.ndarray]:
    """Line integrals ``[R, C]`` per view of a HU volume (optionally with Poisson noise)."""
    mu = hu_to_mu(torch.from_numpy(np.ascontiguousarray(volume.data, dtype=np.float32))).to(device)
    affine = torch.as_tensor(volume.affine, dtype=torch.float32)
    out = []
    gen = torch.Generator().manual_seed(seed)
    for view in views:  # views may differ in detector shape: one call each
        with torch.no_grad():
            p = project(mu[None, None], affine, [view])[0, 0].cpu()
        if photons is not None:
            p = add_poisson_noise(p, photons, gen)
        out.append(p.numpy())
    return out


def simulate(
    ct_path: str | Path,
    angles: Sequence[float],
    out_dir: str | Path,
    *,
    sdd_mm: float = 1800.0,
    sod_mm: float = 1500.0,
    detector_shape: tuple[int, int] = (128, 128),
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
    projection: str = "cone",
    mask_path: str | Path | None = None,
    center_label: int | None = None,
    isocenter_mm: Sequence[float] | None = None,
    photons: float | None = None,
    line_integral_scale: float | None = None,
    seed: int = 0,
    force: bool = False,
    device: str = "cpu",
    style: str = "ideal",
    styles: Mapping[str, Any] | None = None,
) -> list[SimulatedView]:
    """Simulate one X-ray per angle and write PNG + sidecar per view into ``out_dir``.

    Args:
        angles: gantry angles in degrees (0 = AP, 90 = left lateral).
        center_label: centre the views on the centroid of this label of ``mask_path``.
        isocenter_mm: explicit isocentre (world mm); default: the volume centre.
        photons: unattenuated photons per pixel for Poisson noise (``None``: noiseless).
        style: ``"ideal"`` (line integrals) or ``"clinical"`` (processed radiographs).
        styles: the :class:`xfit.radiograph.ClinicalStyle` per preset (``ap``, ``lateral``) for
            ``"clinical"``; default :data:`xfit.radiograph.PRESETS`.
    Returns:
        the simulated views, in the order of ``angles``.
    """
    ct_path = Path(ct_path)
    if not angles:
        raise InputError("give at least one angle")
    if isocenter_mm is not None and center_label is not None:
        raise InputError("give either an isocentre or a centre label, not both")
    if center_label is not None and mask_path is None:
        raise InputError("--center-label needs --mask")
    if photons is not None:
        check_photons(photons)
    if line_integral_scale is not None and (
        isinstance(line_integral_scale, bool)
        or not isinstance(line_integral_scale, (int, float))
        or not math.isfinite(line_integral_scale)
        or not 0 < line_integral_scale <= MAX_LINE_INTEGRAL_SCALE
    ):
        raise InputError(
            f"the line integral scale must be in (0, {MAX_LINE_INTEGRAL_SCALE:g}], got {line_integral_scale!r}"
        )
    # the geometry (detector size limits included) is checked before the CT is even read
    probe = [
        View(
            angle_deg=a,
            sdd_mm=sdd_mm,
            sod_mm=sod_mm,
            shape=tuple(detector_shape),
            pixel_spacing_mm=tuple(pixel_spacing_mm),
            projection=projection,
        )
        for a in angles
    ]
    view_styles = _check_styles(style, styles, probe, photons, line_integral_scale)
    inputs = [ct_path] + ([Path(mask_path)] if mask_path is not None else [])
    check_output_folder(out_dir, force=force, inputs=inputs)
    volume = read_nifti(ct_path)
    if center_label is not None:
        mask = read_nifti(mask_path)
        if mask.data.shape != volume.data.shape or not np.allclose(mask.affine, volume.affine, atol=1e-3):
            raise InputError(f"mask {mask_path} does not share the grid of {ct_path}")
        iso = label_centroid_mm(mask, center_label)
    elif isocenter_mm is not None:
        iso = np.asarray(isocenter_mm, dtype=np.float64)
    else:
        iso = volume_centre_mm(volume)
    views = [v.with_(isocenter_mm=tuple(float(x) for x in iso)) for v in probe]
    images = simulate_views(volume, views, photons=photons, seed=seed, device=device)
    radiographs = _clinical(volume, views, images, view_styles, seed, device) if view_styles else None
    with atomic_folder(out_dir, force=force) as out:  # the folder appears whole or not at all
        used: set[str] = set()
        results = []
        for i, (view, img) in enumerate(zip(views, images)):
            png = out / f"{view_name(view.angle_deg, i, used)}.png"
            if radiographs is None:
                scale = write_xray(
                    png,
                    img,
                    view.with_(isocenter_mm=(0.0, 0.0, 0.0)),
                    line_integral_scale=line_integral_scale,
                    force=True,
                )
                results.append(SimulatedView(img, view, Path(out_dir) / png.name, scale))
            else:
                rad = radiographs[i]
                write_radiograph(
                    png, rad.codes, rad.bits, view.with_(isocenter_mm=(0.0, 0.0, 0.0)), invert=rad.inverted, force=True
                )
                results.append(SimulatedView(img, view, Path(out_dir) / png.name, None, rad, view_styles[i][0]))
        settings = {
            "ct": str(ct_path),
            "isocenter_mm": [float(x) for x in iso],
            "photons_per_pixel": photons,
            "seed": seed,
            "views": [
                dict(view_dict(r.view), png=r.png.name, line_integral_scale=r.line_integral_scale) for r in results
            ],
        }
        if radiographs is not None:  # the ideal style's simulate.json stays as it was
            settings["style"] = style
            for entry, r, (_, st) in zip(settings["views"], results, view_styles):
                entry["style"] = dict(preset=r.preset, **st.to_dict())
        with atomic_write(out / "simulate.json", force=True) as tmp:
            Path(tmp).write_text(json.dumps(settings, indent=2, allow_nan=False) + "\n")
        write_views_preview(
            [r.image if r.radiograph is None else r.radiograph.image for r in results],
            [r.png.stem for r in results],
            out / "views.png",
        )
    return results


#: Styles of ``xfit simulate --style``.
STYLES = ("ideal", "clinical")


def _check_styles(
    style: str,
    styles: Mapping[str, Any] | None,
    views: Sequence[View],
    photons: float | None,
    line_integral_scale: float | None,
) -> list[tuple[str, Any]] | None:
    """(preset, ClinicalStyle) per view for ``style="clinical"`` (None for ``"ideal"``), all checked
    against the detector before anything is read or written."""
    if style not in STYLES:
        raise InputError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    if style == "ideal":
        if styles is not None:
            raise InputError("style parameters need style 'clinical' (--style clinical)")
        return None
    from .radiograph import PRESETS, check_style, check_style_for_view, preset_for

    if photons is not None:
        raise InputError(
            "--dose is the ideal style's noise: with --style clinical set the quantum noise with "
            "--style-param photons=N"
        )
    if line_integral_scale is not None:
        raise InputError("--scale applies to line integrals: a clinical-style radiograph is not calibrated")
    chosen = dict(PRESETS if styles is None else styles)
    out = []
    for view in views:
        name = preset_for(view)
        if name not in chosen:
            raise InputError(f"no style for the {name} preset (have: {', '.join(chosen)})")
        st = check_style(chosen[name])
        check_style_for_view(st, view)
        out.append((name, st))
    return out


def _clinical(
    volume: Volume,
    views: Sequence[View],
    images: Sequence[np.ndarray],
    view_styles: Sequence[tuple[str, Any]],
    seed: int,
    device: str,
) -> list[Any]:
    """The processed radiograph of each view (tissue path lengths projected once per view)."""
    from .radiograph import material_paths, radiograph

    paths = material_paths(volume.data, volume.affine, views, device=device)
    return [
        radiograph(img, view, st, paths_mm=pth, seed=(seed, i))
        for i, (view, img, pth, (_, st)) in enumerate(zip(views, images, paths, view_styles))
    ]


def write_views_preview(images: Sequence[np.ndarray], titles: Sequence[str], path: Path) -> Path:
    """Side-by-side PNG of X-ray images (bright = attenuating)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .preview import figure_to_png

    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.4), squeeze=False)
    for ax, img, title in zip(axes[0], images, titles):
        ax.imshow(img, cmap="gray")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return figure_to_png(fig, path)
