"""``xfit reconstruct AP LAT [MORE...] -o OUT``: read X-rays, fit the prior, write the outputs.

The library entry point is :func:`reconstruct` (in memory: returns a :class:`Reconstruction`);
:func:`write_reconstruction` writes the output folder of the conventions:
``recon.nii.gz`` (HU, RAS, isocentre at the world origin), ``labels.nii.gz``,
``uncertainty.nii.gz`` (several restarts), ``preview.png``, ``report.json`` and optionally
``surface.stl``.

Ground truth (``gt``) for the report: a CT whose grid centre is the isocentre of the X-rays (as
``xfit simulate`` makes them by default); it is resampled onto the prior's grid. Its label map is
taken from ``gt_seg`` or from a ``*_seg.nii.gz`` / ``seg.nii.gz`` beside it (the vertebra at the grid centre is the truth, :func:`centred_vertebra`).
"""

from __future__ import annotations

import json
import platform
import struct
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import __version__
from .errors import InputError
from .geometry import View, view_dict
from .io import (Volume, atomic_folder, atomic_write, check_device, check_output_folder, finite_json, read_nifti,
                 read_xray, resample, write_nifti)

#: The prior shipped inside the package (trained on xfit's phantoms with configs/prior-64.yaml).
DEFAULT_PRIOR = Path(__file__).parent / "data" / "prior-64.safetensors"


@dataclass
class Inputs:
    """X-ray images ``[R, C]`` (bright = attenuating) with their views and source files."""

    images: list[np.ndarray]
    views: list[View]
    paths: list[Path]
    calibrated: list[bool]
    #: per image: which DICOM tag, option, sidecar key or default supplied each geometry value
    sources: list[dict[str, str]] = field(default_factory=list)


def load_inputs(
    paths: Sequence[str | Path],
    *,
    angles: Sequence[float] | None = None,
    sdd_mm: float | None = None,
    sod_mm: float | None = None,
    pixel_spacing_mm: float | Sequence[float] | None = None,
    flip_lr: bool | None = None,
    invert: bool = False,
    allow_single_view: bool = False,
) -> Inputs:
    """Read the X-rays and their geometry (sidecars, DICOM tags, then these overrides).

    Raises:
        InputError: one image without ``allow_single_view``, angle count not matching the
            images, identical angles, unreadable images.
        GeometryError: missing or impossible geometry.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("give at least two X-ray images")
    if len(paths) == 1:
        if not allow_single_view:
            raise InputError("only one X-ray given: a 3D reconstruction needs two views (or --allow-single-view)")
        warnings.warn("fitting a single view: depth along the beam is determined by the prior alone")
    if angles is not None and len(angles) != len(paths):
        raise InputError(f"{len(angles)} angle(s) given for {len(paths)} image(s)")
    xrays = []
    for i, p in enumerate(paths):
        xrays.append(
            read_xray(
                p,
                angle_deg=None if angles is None else angles[i],
                sdd_mm=sdd_mm,
                sod_mm=sod_mm,
                pixel_spacing_mm=pixel_spacing_mm,
                flip_lr=flip_lr,
                invert=invert,
            )
        )
    views = [x.view for x in xrays]
    for i in range(len(views)):
        for j in range(i):
            d = abs((views[i].angle_deg - views[j].angle_deg + 180.0) % 360.0 - 180.0)
            if d < 1.0 and views[i].pose == views[j].pose:
                raise InputError(
                    f"{paths[j].name} and {paths[i].name} have the same angle ({views[i].angle_deg:g} deg): "
                    "two different views are needed"
                )
    return Inputs(
        images=[x.image for x in xrays],
        views=views,
        paths=paths,
        calibrated=[x.line_integral_scale is not None for x in xrays],
        sources=[dict(x.sources) for x in xrays],
    )


@dataclass
class Reconstruction:
    """A reconstruction in memory: the fit result plus what is needed to write and judge it."""

    fit: Any  # xfit.fitting.FitResult
    inputs: Inputs
    prior_path: Path
    prior_sha256: str
    settings: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    gt_hu: np.ndarray | None = None
    gt_labels: np.ndarray | None = None
    seconds: float = 0.0

    @property
    def hu(self) -> np.ndarray:
        return self.fit.hu

    @property
    def labels(self) -> np.ndarray:
        return self.fit.labels

    @property
    def affine(self) -> np.ndarray:
        return self.fit.affine


def gt_on_grid(gt_path: str | Path, shape: Sequence[int], spacing_mm: float, gt_seg: str | Path | None = None):
    """Ground-truth HU (and label map, or None) resampled onto a grid centred on its own centre.

    Returns:
        ``(hu [I, J, K], labels [I, J, K] int16 or None)`` on the prior's grid.
    """
    gt_path = Path(gt_path)
    gt = read_nifti(gt_path)
    hu = resample(gt, spacing_mm, order=1, shape=tuple(shape), cval=-1000.0).data
    seg_path = Path(gt_seg) if gt_seg is not None else _find_seg(gt_path)
    labels = None
    if seg_path is not None:
        seg = read_nifti(seg_path)
        if seg.data.shape != gt.data.shape:
            raise InputError(f"{seg_path} does not share the grid of {gt_path}")
        labels = np.rint(resample(seg, spacing_mm, order=0, shape=tuple(shape), cval=0.0).data).astype(np.int16)
    return hu, labels


def _warn_unseen_level(prior_meta: dict, level: str) -> None:
    """Warn when the prior's training provenance does not include ``level``."""
    import warnings

    from .levels import format_levels, level_label, level_name
    from .prior.checkpoint import levels_seen

    seen = levels_seen(prior_meta)
    lab = level_label(level)
    if not seen:
        warnings.warn(f"the prior does not record which levels it was trained on; cannot check {level_name(lab)}")
    elif lab not in seen:
        warnings.warn(f"the prior was trained on {format_levels(sorted(seen))}, never on {level_name(lab)}")


def centred_vertebra(labels: np.ndarray) -> np.ndarray:
    """Mask ``[I, J, K]`` of the vertebra a label map's grid is centred on.

    Label maps hold every vertebra by its level (VerSe numbering); the ground truth of a
    reconstruction is the one at the grid centre: the label found there, or else the label whose
    centroid is nearest to the centre. Empty maps give an empty mask.
    """
    centre = tuple(s // 2 for s in labels.shape)
    value = int(labels[centre])
    if value == 0:
        values = [int(v) for v in np.unique(labels) if v != 0]
        if not values:
            return np.zeros(labels.shape, bool)
        from scipy import ndimage

        cents = ndimage.center_of_mass(np.ones(labels.shape), labels, values)
        c = (np.asarray(labels.shape) - 1) / 2.0
        value = values[int(np.argmin([np.sum((np.asarray(x) - c) ** 2) for x in cents]))]
    return labels == value


def _find_seg(ct_path: Path) -> Path | None:
    name = ct_path.name
    for a, b in (("_ct.nii.gz", "_seg.nii.gz"), ("_ct.nii", "_seg.nii"), ("ct.nii.gz", "seg.nii.gz"), (".nii.gz", "_seg.nii.gz")):
        if name.endswith(a):
            cand = ct_path.with_name(name[: -len(a)] + b)
            if cand.exists() and cand != ct_path:
                return cand
    return None


def reconstruct(
    images: Sequence[str | Path],
    *,
    prior: str | Path | None = None,
    angles: Sequence[float] | None = None,
    sdd_mm: float | None = None,
    sod_mm: float | None = None,
    pixel_spacing_mm: float | Sequence[float] | None = None,
    flip_lr: bool | None = None,
    invert: bool = False,
    allow_single_view: bool = False,
    config: str | Path | None = None,
    steps: int | None = None,
    restarts: int | None = None,
    refine_pose: bool | None = None,
    device: str = "cpu",
    seed: int = 0,
    gt: str | Path | None = None,
    gt_seg: str | Path | None = None,
    encoder: str | Path | None = None,
    level: str | None = None,
    progress: bool = True,
) -> Reconstruction:
    """Reconstruct a CT volume from X-ray files; see the module docstring.

    Args:
        images: two or more X-ray files (PNG/JPEG/TIFF 8/16-bit with sidecars, or DICOM).
        prior: prior checkpoint (default: the one shipped with xfit).
        config: fitting config YAML (default ``configs/fit.yaml``); ``steps``, ``restarts`` and
            ``refine_pose`` override it.
        encoder: warm-start encoder checkpoint (default: ``<prior>.encoder.safetensors`` beside
            the prior when it exists; otherwise the fit starts from ``w_mean``).
        level: the vertebra the X-rays are aimed at (``"L1"``), recorded in the report; a warning
            says so when the prior was never trained on that level.
    """
    from .fitting import fit, load_fit_config
    from .fitting.encoder import warm_start_w_plus
    from .prior.checkpoint import load_prior

    t0 = time.perf_counter()
    check_device(device)
    if level is not None:
        from .levels import level_label

        level_label(level)  # an unknown level fails before any work
    inputs = load_inputs(
        images,
        angles=angles,
        sdd_mm=sdd_mm,
        sod_mm=sod_mm,
        pixel_spacing_mm=pixel_spacing_mm,
        flip_lr=flip_lr,
        invert=invert,
        allow_single_view=allow_single_view,
    )
    prior_path = Path(prior) if prior is not None else DEFAULT_PRIOR
    if prior is None and not prior_path.exists():
        raise InputError(f"the default prior {prior_path} is missing from this installation; give --prior")
    overrides = {k: v for k, v in dict(steps=steps, restarts=restarts, refine_pose=refine_pose).items() if v is not None}
    cfg = load_fit_config(config, **overrides)  # a bad config fails before the prior is loaded
    for extra in (gt, gt_seg, encoder):
        if extra is not None and not Path(extra).is_file():
            raise InputError(f"{extra}: file not found")
    loaded = load_prior(prior_path, device=device)
    if level is not None:
        _warn_unseen_level(loaded.meta, level)
    gt_hu = gt_labels = None
    if gt is not None:
        r = loaded.config.resolution
        gt_hu, gt_labels = gt_on_grid(gt, (r, r, r), loaded.config.spacing_mm, gt_seg)
    w_init, init_note = warm_start_w_plus(loaded, inputs.images, inputs.views, encoder=encoder)
    result = fit(loaded, inputs.images, inputs.views, cfg, seed=seed, w_init=w_init, progress=progress)
    rec = Reconstruction(
        fit=result,
        inputs=inputs,
        prior_path=prior_path,
        prior_sha256=loaded.sha256,
        settings={
            "angles_deg": [v.angle_deg for v in inputs.views],
            "level": level,
            "device": device,
            "seed": seed,
            "init": init_note,
            "invert": invert,
            "flip_lr": flip_lr,
            "fit": result.config,
        },
        gt_hu=gt_hu,
        gt_labels=gt_labels,
    )
    if gt_hu is not None:
        from .metrics import volume_metrics

        gt_mask = None if gt_labels is None else centred_vertebra(gt_labels)
        pred_mask = None if gt_mask is None else result.labels.astype(bool)
        rec.metrics = volume_metrics(result.hu, gt_hu, pred_mask, gt_mask, loaded.config.spacing_mm)
    rec.seconds = time.perf_counter() - t0
    return rec


# ----------------------------------------------------------------------------- outputs


def write_stl(path: str | Path, verts: np.ndarray, faces: np.ndarray, *, force: bool = False) -> Path:
    """Binary STL of a triangle mesh (vertices ``[N, 3]`` in world mm, faces ``[M, 3]``)."""
    tri = verts[faces].astype(np.float32)  # [M, 3, 3]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    records = np.zeros(len(tri), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    records["n"], records["v"] = normals, tri
    with atomic_write(path, force=force) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"xfit surface (mm, RAS)".ljust(80, b" "))
            fh.write(struct.pack("<I", len(tri)))
            fh.write(records.tobytes())
    return Path(path)


def surface_mesh(prob: np.ndarray, affine: np.ndarray, level: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes surface of a probability volume, vertices in world mm."""
    from skimage.measure import marching_cubes

    if not (prob.min() < level < prob.max()):
        raise InputError("the label volume is empty: no surface to write")
    verts, faces, _, _ = marching_cubes(prob.astype(np.float32), level=level)
    verts_mm = (affine[:3, :3] @ verts.T).T + affine[:3, 3]
    # keep outward normals after an affine with negative determinant
    if np.linalg.det(affine[:3, :3]) < 0:
        faces = faces[:, ::-1]
    return verts_mm, faces


def _report(rec: Reconstruction) -> dict[str, Any]:
    import torch

    f = rec.fit
    views = []
    for i, (path, view) in enumerate(zip(rec.inputs.paths, rec.inputs.views)):
        entry = {"image": str(path), "view": view_dict(view), "ncc": float(f.view_ncc[i])}
        if i < len(rec.inputs.sources):
            entry["geometry_sources"] = rec.inputs.sources[i]
        if f.pose is not None:
            entry["refined_view"] = view_dict(f.views[i])
        views.append(entry)
    return {
        "xfit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "prior": {"path": str(rec.prior_path), "sha256": rec.prior_sha256},
        "settings": rec.settings,
        "views": views,
        "losses": {"final": f.history[-1] if f.history else {}, "history": f.history},
        "restarts": f.restarts,
        "best_restart": f.best_restart,
        "steps_run": f.stopped_at,
        "perceptual_term": f.perceptual,
        "timings_s": {**f.timings, "total_with_io": rec.seconds},
        "metrics_vs_gt": rec.metrics,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
    }


def write_reconstruction(rec: Reconstruction, out_dir: str | Path, *, force: bool = False, mesh: bool = False) -> Path:
    """Write the output folder (see the module docstring) as a whole; returns its path.

    Every file is written into a temporary sibling folder that replaces ``out_dir`` only when
    complete (:func:`xfit.io.atomic_folder`): an error or interrupt leaves the old folder (or
    nothing), never a mix, and ``force`` leaves no stale file of an earlier run. With ``mesh`` and
    an empty label volume the STL is skipped with a warning (noted in the report).
    """
    f = rec.fit
    with atomic_folder(out_dir, force=force) as out:
        write_nifti(out / "recon.nii.gz", f.hu.astype(np.float32), f.affine, force=True)
        write_nifti(out / "labels.nii.gz", f.labels.astype(np.int16), f.affine, force=True)
        if f.uncertainty is not None:
            write_nifti(out / "uncertainty.nii.gz", f.uncertainty.astype(np.float32), f.affine, force=True)
        surface = None
        if mesh:
            try:
                verts, faces = surface_mesh(f.label_prob, f.affine)
            except InputError as exc:
                surface = f"not written: {exc}"
                warnings.warn(f"no surface.stl: {exc}")
            else:
                write_stl(out / "surface.stl", verts, faces, force=True)
                surface = "surface.stl"
        write_preview(rec, out / "preview.png")
        report = _report(rec)
        if mesh:
            report["surface"] = surface
        with atomic_write(out / "report.json", force=True) as tmp:
            Path(tmp).write_text(json.dumps(finite_json(report), indent=2, default=_json_default,
                                            allow_nan=False) + "\n")
    return Path(out_dir)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_preview(rec: Reconstruction, path: Path) -> Path:
    """PNG: orthogonal slices of the reconstruction (and truth), input vs re-projected X-rays, residuals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .preview import BONE_WINDOW, axial, coronal, figure_to_png, sagittal

    f = rec.fit
    vols = [("reconstruction", f.hu, f.labels)]
    if rec.gt_hu is not None:
        vols.append(("ground truth", rec.gt_hu, None if rec.gt_labels is None else centred_vertebra(rec.gt_labels)))
    if f.uncertainty is not None:
        vols.append(("uncertainty (HU std)", f.uncertainty, None))
    n_views = len(rec.inputs.images)
    cols = max(3, n_views)
    rows = len(vols) + 3
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for r, (name, vol, lab) in enumerate(vols):
        is_unc = name.startswith("uncertainty")
        for c, (sname, fn) in enumerate((("axial", axial), ("coronal", coronal), ("sagittal", sagittal))):
            ax = axes[r, c]
            if is_unc:
                ax.imshow(fn(vol), cmap="magma", vmin=0, vmax=max(float(np.percentile(vol, 99.5)), 1e-6))
            else:
                ax.imshow(fn(vol), cmap="gray", vmin=BONE_WINDOW[0], vmax=BONE_WINDOW[1])
                if lab is not None and np.any(lab):
                    ax.contour(fn(lab.astype(np.float32)), levels=[0.5], colors="r", linewidths=0.6)
            ax.set_title(f"{name}: {sname}", fontsize=8)
    base = len(vols)
    for c in range(n_views):
        inp = rec.inputs.images[c]
        rep = f.projections[c]
        res = inp - rep
        lim = max(float(np.abs(res).max()), 1e-6)
        axes[base, c].imshow(inp, cmap="gray")
        axes[base, c].set_title(f"input {rec.inputs.paths[c].name} ({rec.inputs.views[c].angle_deg:g} deg)", fontsize=8)
        axes[base + 1, c].imshow(rep, cmap="gray", vmin=float(inp.min()), vmax=float(inp.max()))
        axes[base + 1, c].set_title(f"re-projection (NCC {f.view_ncc[c]:.3f})", fontsize=8)
        axes[base + 2, c].imshow(res, cmap="coolwarm", vmin=-lim, vmax=lim)
        axes[base + 2, c].set_title("residual", fontsize=8)
    if rec.metrics:
        txt = "  ".join(f"{k} {v:.3g}" for k, v in rec.metrics.items() if isinstance(v, (int, float)))
        fig.suptitle(txt, fontsize=9)
    fig.tight_layout()
    return figure_to_png(fig, path)


def check_output_free(out_dir: str | Path, force: bool, inputs: Sequence[str | Path] = ()) -> Path:
    """Fail before any work when the output folder cannot be written or is taken (no ``force``);
    see :func:`xfit.io.check_output_folder`."""
    return check_output_folder(out_dir, force=force, inputs=inputs)


def preflight(images: Sequence[str | Path], out_dir: str | Path, *, force: bool = False,
              device: str = "cpu", prior: str | Path | None = None, config: str | Path | None = None,
              gt: str | Path | None = None, gt_seg: str | Path | None = None,
              encoder: str | Path | None = None) -> None:
    """Every check of ``xfit reconstruct`` that is cheap, in one place, before any work: the
    device, the output folder (free or ``force``, writable, not holding an input), that every
    input file exists, and that the fit config is valid.

    Raises:
        InputError, OutputError, OutputExistsError: the first problem found.
    """
    from .fitting import load_fit_config

    check_device(device)
    files = [Path(p) for p in images] + [Path(p) for p in (prior, config, gt, gt_seg, encoder) if p is not None]
    check_output_free(out_dir, force, inputs=files + ([DEFAULT_PRIOR] if prior is None else []))
    for p in files:
        if not p.is_file():
            raise InputError(f"{p}: file not found" if not p.is_dir() else f"{p} is a folder, not a file")
    load_fit_config(config)
