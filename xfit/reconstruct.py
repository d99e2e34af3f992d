"""``xfit reconstruct AP LAT [MORE...] -o OUT``: read X-rays, fit the prior, write the outputs.

The library entry points are :func:`reconstruct` (one vertebra) and
:func:`reconstruct_vertebrae` (one fit per target, every choice in a :class:`ReconstructSettings`,
run in stages), in memory (:class:`Reconstruction`);
:func:`write_reconstruction` writes the output folder of the conventions: ``recon.nii.gz`` (HU,
RAS, in the X-rays' world frame: the affine says where the cube is), ``labels.nii.gz``,
``uncertainty.nii.gz`` (several restarts), ``preview.png``, ``report.json`` and optionally
``surface.stl``; :func:`write_vertebrae` writes one such folder per vertebra plus a combined
``labels.nii.gz``.

Targets: without one the prior's cube sits at the isocentre and the whole images are fitted
(xfit's simulated views). With ``--target ROW,COL`` per image the clicks are triangulated
(:func:`xfit.fitting.roi.triangulate`), with ``--target auto`` the prior's mean vertebra is
searched for (:func:`xfit.fitting.roi.auto_target`); the cube is centred there and each image
cropped to what the cube sees, area-averaged to about one prior voxel
(:func:`regions_of_interest`).

Ground truth (``gt``) for the report: a CT whose grid centre is the isocentre of the X-rays (as
``xfit simulate`` makes them by default); it is resampled onto the fit's grid. Its label map is
taken from ``gt_seg`` or from a ``*_seg.nii.gz`` / ``seg.nii.gz`` beside it (the vertebra at the
grid centre is the truth, :func:`centred_vertebra`).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import struct
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import InputError
from .geometry import View, view_dict
from .io import (
    atomic_folder,
    atomic_write,
    check_device,
    check_output_folder,
    finite_json,
    read_nifti,
    read_xray,
    resample_onto,
    write_nifti,
)

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
    #: per image: (transposed, rows flipped, columns flipped) from the file's array to ``images``
    orientations: list[tuple[bool, bool, bool]] = field(default_factory=list)
    #: per image: (rows, cols) of the file's array
    stored_shapes: list[tuple[int, int]] = field(default_factory=list)

    def clicked(self, index: int, rc: Sequence[float]) -> tuple[float, float]:
        """A pixel (row, col) clicked in file ``index`` as stored -> the pixel of ``images[index]``.

        Raises:
            InputError: the pixel lies outside the file's image.
        """
        from .geometry import pixel_inside
        from .io import stored_to_image

        rows, cols = self.stored_shapes[index]
        r, c = (float(x) for x in rc)
        if not pixel_inside((r, c), (rows, cols)):
            raise InputError(
                f"--target {r:g},{c:g} lies outside image {index} ({self.paths[index].name}: {rows} x {cols} px)"
            )
        return stored_to_image((r, c), self.stored_shapes[index], self.orientations[index])


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
        orientations=[tuple(x.orientation) for x in xrays],
        stored_shapes=[tuple(x.stored_shape or x.image.shape) for x in xrays],
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
    #: where the cube was placed and how (None: at the isocentre, as before targets existed)
    target: Target | None = None
    #: per view, the region of interest fitted (None: the whole images)
    rois: list | None = None
    #: the images and views actually fitted (the ROI crops; the inputs without a target)
    fit_images: list[np.ndarray] = field(default_factory=list)
    fit_views: list[View] = field(default_factory=list)

    @property
    def hu(self) -> np.ndarray:
        return self.fit.hu

    @property
    def labels(self) -> np.ndarray:
        return self.fit.labels

    @property
    def affine(self) -> np.ndarray:
        return self.fit.affine


def gt_on_grid(
    gt_path: str | Path,
    affine: np.ndarray,
    shape: Sequence[int],
    gt_seg: str | Path | None = None,
    iso_in_gt_mm: Sequence[float] | None = None,
):
    """Ground-truth HU (and label map, or None) resampled onto the fit's grid.

    The X-rays' world frame has their isocentre at the origin; in the CT's own frame that point
    is ``iso_in_gt_mm`` (default: the CT's grid centre, where ``xfit simulate`` puts it).

    Args:
        affine: ``[4, 4]`` voxel index -> X-ray world mm of the fit's grid.
        shape: its (I, J, K).
    Returns:
        ``(hu [I, J, K], labels [I, J, K] int16 or None)``.
    """
    gt_path = Path(gt_path)
    gt = read_nifti(gt_path)
    iso = gt.centre_mm if iso_in_gt_mm is None else np.asarray(iso_in_gt_mm, dtype=np.float64)
    grid = np.asarray(affine, dtype=np.float64).copy()
    grid[:3, 3] += iso  # X-ray world -> CT world
    hu = resample_onto(gt, grid, shape, order=1, cval=-1000.0).data
    seg_path = Path(gt_seg) if gt_seg is not None else _find_seg(gt_path)
    labels = None
    if seg_path is not None:
        seg = read_nifti(seg_path)
        if seg.data.shape != gt.data.shape:
            raise InputError(f"{seg_path} does not share the grid of {gt_path}")
        labels = np.rint(resample_onto(seg, grid, shape, order=0, cval=0.0).data).astype(np.int16)
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
    for a, b in (
        ("_ct.nii.gz", "_seg.nii.gz"),
        ("_ct.nii", "_seg.nii"),
        ("ct.nii.gz", "seg.nii.gz"),
        (".nii.gz", "_seg.nii.gz"),
    ):
        if name.endswith(a):
            cand = ct_path.with_name(name[: -len(a)] + b)
            if cand.exists() and cand != ct_path:
                return cand
    return None


#: Margin of each region of interest around the projection of the prior's cube (fraction of
#: its size per side): room for the similarity transform and the pose corrections.
ROI_MARGIN = 0.15
#: Largest combined label map of several vertebrae (voxels; int16 plus float32 work arrays).
MAX_COMBINED_VOXELS = 256**3
#: HU above which the prior's mean vertebra counts as bone in the auto-target template.
TEMPLATE_BONE_HU = 150.0
#: ``--target auto`` warns when the inverted images match better by this much (NCC), or when its
#: best match is below :data:`AUTO_MIN_SCORE`. On the 20 whole-body pairs of bench/auto_target.py
#: the best match scored 0.25-0.39 and the inverted images' best 0.065-0.21 less (high-passed NCC).
AUTO_DARK_MARGIN = 0.02
AUTO_MIN_SCORE = 0.2
#: Without a target, images larger than this (pixels) get a warning: the whole image is fitted.
LARGE_IMAGE_PIXELS = 512 * 512
#: Largest number of vertebrae in one run.
MAX_TARGETS = 64


@dataclass
class Target:
    """Where the prior's cube is placed: its centre in the X-rays' world frame.

    Attributes:
        point_mm: ``[3]`` world mm (the X-rays' frame: their isocentre is the origin).
        method: ``"isocentre"`` (no target given), ``"clicks"`` (``--target ROW,COL`` per image,
            triangulated) or ``"auto"`` (:func:`xfit.fitting.roi.auto_target`).
        pixels_rc: per view, the (row, col) of the point in the input image.
        details: triangulation residuals or the auto-search candidates.
    """

    point_mm: np.ndarray
    method: str
    pixels_rc: list[tuple[float, float]]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "point_mm": [float(x) for x in self.point_mm],
            "method": self.method,
            "pixels_rc": [[float(r), float(c)] for r, c in self.pixels_rc],
            **self.details,
        }


def group_targets(pixels: Sequence[Sequence[float]], n_views: int) -> list[list[tuple[float, float]]]:
    """``--target`` values in the order given: one per image for each vertebra.

    Raises:
        InputError: a count that is not a multiple of the number of images, or too many.
    """
    if len(pixels) == 0 or len(pixels) % n_views:
        raise InputError(
            f"{len(pixels)} --target value(s) for {n_views} images: give one ROW,COL per "
            "image for each vertebra, in the order of the images"
        )
    groups = [[(float(r), float(c)) for r, c in pixels[i : i + n_views]] for i in range(0, len(pixels), n_views)]
    if len(groups) > MAX_TARGETS:
        raise InputError(f"{len(groups)} vertebrae targeted; at most {MAX_TARGETS} per run")
    return groups


def mean_volume(prior) -> tuple[Any, np.ndarray]:
    """The prior's mean vertebra as its bone's attenuation above soft tissue ``[R, R, R]``
    (1/mm, torch; 0 below :data:`TEMPLATE_BONE_HU`) and its affine: the auto-target template.

    Only the bone is kept: the soft tissue of the cube would project as a box whose edges match
    any edge in a radiograph (the end of the field, the pelvis) better than the vertebra does.
    """
    import torch

    from .io import hu_to_mu
    from .prior.sample import generate_hu, prior_affine

    w = prior.w_mean.float()[None, None].expand(1, prior.num_ws, -1)
    with torch.no_grad():
        hu, _ = generate_hu(prior, w)
    hu = hu.clamp(*prior.hu_window)[0].cpu()
    return hu_to_mu(hu.clamp_min(TEMPLATE_BONE_HU)) - hu_to_mu(hu.new_tensor(TEMPLATE_BONE_HU)), prior_affine(prior)


def locate(prior, inputs: Inputs, clicks: Sequence[tuple[float, float]] | str | None) -> Target:
    """The cube's centre: the isocentre, the triangulated clicks, or the automatic search.

    Raises:
        InputError: a click outside its image, clicks whose rays do not meet, or views too
            close to parallel to triangulate.
    """
    import torch

    from .fitting.roi import auto_target, triangulate
    from .geometry import world_to_pixel

    if clicks is None:
        origin = torch.zeros(1, 3, dtype=torch.float64)
        pix = [tuple(world_to_pixel(origin, v)[0].tolist()) for v in inputs.views]
        return Target(np.zeros(3), "isocentre", pix)
    if isinstance(clicks, str):
        if clicks != "auto":
            raise InputError(f"--target must be ROW,COL or 'auto', got {clicks!r}")
        mu, affine = mean_volume(prior)
        found = auto_target(inputs.images, inputs.views, mu, affine)
        info = found.to_dict()
        dark = auto_target([img.max() - img for img in inputs.images], inputs.views, mu, affine, top_k=1)
        if dark.score > found.score + AUTO_DARK_MARGIN:
            warnings.warn(
                f"--target auto matches the prior's vertebra better with the images inverted (NCC "
                f"{dark.score:.2f} against {found.score:.2f}): is bone dark in them? then give --invert"
            )
        elif found.score < AUTO_MIN_SCORE:
            warnings.warn(
                f"--target auto found no clear vertebra (best NCC {found.score:.2f}); check the region of "
                "interest in preview.png, or click the vertebra with --target ROW,COL"
            )
        return Target(
            np.asarray(found.point_mm, dtype=np.float64),
            "auto",
            list(found.pixels_rc),
            {"score": info["score"], "candidates": info["candidates"]},
        )
    tri = triangulate(inputs.views, list(clicks))
    info = tri.to_dict()
    return Target(
        np.asarray(tri.point_mm, dtype=np.float64),
        "clicks",
        list(clicks),
        {"residual_mm": info["residual_mm"], "distances_mm": info["distances_mm"]},
    )


def regions_of_interest(prior, inputs: Inputs, target: Target):
    """Crops of every image around the cube at ``target`` (area-averaged to about one prior
    voxel at the target) with their views.

    Returns:
        ``(images [list of [r, c]], views, rois)``.
    Raises:
        InputError: the cube's projection leaves an image.
    """
    from .fitting.roi import crop_image, roi_for_cube

    spacing = float(prior.config.spacing_mm)
    fov = spacing * int(prior.config.resolution)
    rois = [
        roi_for_cube(v, target.point_mm, fov, margin=ROI_MARGIN, spacing_mm=spacing, index=i)
        for i, v in enumerate(inputs.views)
    ]
    images = [crop_image(img, roi) for img, roi in zip(inputs.images, rois)]
    return images, [roi.view for roi in rois], rois


@dataclass(frozen=True)
class ReconstructSettings:
    """Every choice of a reconstruction besides the X-ray files; the defaults are those of
    ``xfit reconstruct``. See :func:`reconstruct_vertebrae`.

    Attributes:
        targets: ``None`` (one fit, the cube at the isocentre, the whole images), ``"auto"`` (one
            vertebra found automatically), or per vertebra one (row, col) per image, in the
            file's own pixel array as stored (a viewer's rows and columns; xfit maps them through
            the same flips and transpose as the image, :meth:`Inputs.clicked`). With a target
            each image is cropped to the region the cube sees (:func:`regions_of_interest`) and
            the outputs sit at the target in the X-rays' world frame.
        prior: prior checkpoint (default: the one shipped with xfit, :data:`DEFAULT_PRIOR`).
        angles, sdd_mm, sod_mm, pixel_spacing_mm, flip_lr, invert: geometry and intensity
            overrides of the images' sidecars and DICOM tags (:func:`load_inputs`).
        allow_single_view: accept one image (depth then comes from the prior alone).
        config: fitting config YAML (default ``configs/fit.yaml``); ``steps``, ``restarts``,
            ``refine_pose`` and ``transform`` override it.
        device: torch device; seed: the fit's seed.
        gt, gt_seg: ground-truth CT (and labels) for the metrics (:func:`gt_on_grid`).
        gt_isocenter_mm: where the X-rays' isocentre lies in the ground truth CT's frame
            (default: its grid centre; ``xfit simulate`` records it in ``simulate.json``).
        encoder: warm-start encoder checkpoint (default: ``<prior>.encoder.safetensors`` beside
            the prior when it exists; otherwise the fit starts from ``w_mean``). Not used with a
            target: the encoder expects the vertebra at the isocentre.
        level: the vertebra the X-rays are aimed at (``"L1"``), recorded in the report; a warning
            says so when the prior was never trained on that level.
        method: ``"fit"`` (the prior), ``"ceiling"`` (the prior fitted to ``gt``) or a
            feed-forward baseline (``x2ct-cnn``, ``x2ct-gan``, ``ear``, ``transvert``,
            ``xctrsnet``, ``igcn``; :mod:`xfit.baselines`) with its ``checkpoint`` (default: the
            shipped one). With ``"fit"``, ``checkpoint`` is that of the fit config's
            ``init_network`` (the network whose volume starts the fit).
        progress: show the fit's progress bar.
    """

    targets: Sequence[Sequence[tuple[float, float]]] | str | None = None
    prior: str | Path | None = None
    angles: Sequence[float] | None = None
    sdd_mm: float | None = None
    sod_mm: float | None = None
    pixel_spacing_mm: float | Sequence[float] | None = None
    flip_lr: bool | None = None
    invert: bool = False
    allow_single_view: bool = False
    config: str | Path | None = None
    steps: int | None = None
    restarts: int | None = None
    refine_pose: bool | None = None
    transform: bool | None = None
    device: str = "cpu"
    seed: int = 0
    gt: str | Path | None = None
    gt_seg: str | Path | None = None
    gt_isocenter_mm: Sequence[float] | None = None
    encoder: str | Path | None = None
    level: str | None = None
    method: str = "fit"
    checkpoint: str | Path | None = None
    progress: bool = True

    def fit_overrides(self) -> dict[str, Any]:
        """The fit config keys these settings override (those given). ``steps`` sets the steps of
        every fit, from a network's start too (``warm_steps``)."""
        return {
            k: v
            for k, v in dict(
                steps=self.steps,
                warm_steps=self.steps,
                restarts=self.restarts,
                refine_pose=self.refine_pose,
                transform=self.transform,
            ).items()
            if v is not None
        }


def reconstruct(
    images: Sequence[str | Path],
    *,
    target: Sequence[tuple[float, float]] | str | None = None,
    **kwargs: Any,
) -> Reconstruction:
    """Reconstruct one vertebra from X-ray files; see :func:`reconstruct_vertebrae`.

    Args:
        target: ``None`` (the cube at the isocentre, the whole images fitted), one (row, col)
            per image (the vertebra's centre as clicked in each), or ``"auto"``.
        kwargs: the other fields of :class:`ReconstructSettings`.
    """
    clicks = [list(target)] if target is not None and not isinstance(target, str) else target
    return reconstruct_vertebrae(images, targets=clicks, **kwargs)[0]


def reconstruct_vertebrae(
    images: Sequence[str | Path], settings: ReconstructSettings | None = None, **kwargs: Any
) -> list[Reconstruction]:
    """Reconstruct vertebrae from X-ray files, one fit per target; see the module docstring.

    Stages: the request is checked (:func:`check_request`), the images read
    (:func:`read_inputs`), the targets grouped and checked (:func:`target_groups`), the fit
    config and the files checked (:func:`fit_setup`), the prior loaded and checked against them
    (:func:`check_prior`), every target placed (:func:`place_targets`); then per target the
    method runs (:func:`run_method`) and its result is judged against the ground truth when
    there is one (:func:`judge`). Every check comes before any fit.

    Args:
        images: two or more X-ray files (PNG/JPEG/TIFF 8/16-bit with sidecars, or DICOM).
        settings: :class:`ReconstructSettings`; or give its fields as keyword arguments
            (``targets=..., steps=...``), not both.
    Raises:
        InputError, GeometryError: bad inputs, targets or geometry (before any fit).
        TypeError: an unknown keyword, or both ``settings`` and keywords.
    """
    if settings is None:
        settings = ReconstructSettings(**kwargs)
    elif kwargs:
        raise TypeError("give either a ReconstructSettings or its fields as keywords, not both")
    s = settings
    t0 = time.perf_counter()
    check_request(s)
    inputs = read_inputs(images, s)
    groups, clicked = target_groups(inputs, s.targets)
    prior_path, cfg = fit_setup(s)
    from .prior.checkpoint import load_prior

    loaded = load_prior(prior_path, device=s.device)
    check_prior(loaded, cfg, s)
    located, crops = place_targets(loaded, inputs, groups, clicked)
    t_setup = time.perf_counter() - t0
    out = []
    for target, crop in zip(located, crops):
        t1 = time.perf_counter()
        fit_images, fit_views, rois = crop if crop is not None else (inputs.images, inputs.views, None)
        result, init_note = run_method(loaded, fit_images, fit_views, target, rois, cfg, s)
        rec = Reconstruction(
            fit=result,
            inputs=inputs,
            prior_path=prior_path,
            prior_sha256=loaded.sha256,
            settings={
                "angles_deg": [v.angle_deg for v in inputs.views],
                "level": s.level,
                "device": s.device,
                "seed": s.seed,
                "method": s.method,
                "init": init_note,
                "invert": s.invert,
                "flip_lr": s.flip_lr,
                "fit": result.config,
            },
            target=target,
            rois=rois,
            fit_images=list(fit_images),
            fit_views=list(fit_views),
        )
        if s.gt is not None:
            judge(rec, loaded, s)
        rec.seconds = time.perf_counter() - t1 + t_setup / len(located)
        out.append(rec)
    return out


def check_request(s: ReconstructSettings) -> None:
    """The checks that need no file: the device, ``ceiling`` without ``gt``, the baseline (its
    checkpoint loads) and the level's name.

    Raises:
        InputError, CheckpointError: the first problem found.
    """
    check_device(s.device)
    if s.method == "ceiling" and s.gt is None:
        raise InputError("--method ceiling fits the prior to the 3D truth, not to the X-rays: give --gt CT.nii.gz")
    if s.method not in ("fit", "ceiling"):
        from .baselines.infer import load_baseline

        load_baseline(s.method, s.checkpoint, s.device)  # an unknown method or bad checkpoint fails first
    if s.level is not None:
        from .levels import level_label

        level_label(s.level)  # an unknown level fails before any work


def read_inputs(images: Sequence[str | Path], s: ReconstructSettings) -> Inputs:
    """The X-rays with the settings' geometry overrides (:func:`load_inputs`); warns when a
    single view is fitted."""
    inputs = load_inputs(
        images,
        angles=s.angles,
        sdd_mm=s.sdd_mm,
        sod_mm=s.sod_mm,
        pixel_spacing_mm=s.pixel_spacing_mm,
        flip_lr=s.flip_lr,
        invert=s.invert,
        allow_single_view=s.allow_single_view or s.method == "igcn",  # IGCN takes a single projection
    )
    if len(inputs.views) == 1 and s.method != "igcn":
        warnings.warn("fitting a single view: depth along the beam is determined by the prior alone")
    return inputs


def target_groups(
    inputs: Inputs, targets: Sequence[Sequence[tuple[float, float]]] | str | None
) -> tuple[list, list | None]:
    """The targets as one entry per fit: ``None`` (the isocentre), ``"auto"``, or per vertebra
    one (row, col) per image of ``inputs.images`` (the clicks mapped from the files as stored).

    Returns:
        ``(groups, clicked)``: ``clicked`` the clicks as given (in the files), or ``None``.
    Raises:
        InputError: a bad target, a group of the wrong size, a click outside its image.
    """
    if isinstance(targets, str) and targets != "auto":
        raise InputError(f"--target must be ROW,COL or 'auto', got {targets!r}")
    if targets is not None and not isinstance(targets, str) and any(len(g) != len(inputs.views) for g in targets):
        raise InputError(
            f"each vertebra needs one (row, col) per image ({len(inputs.views)}), got groups of "
            f"{sorted({len(g) for g in targets})}"
        )
    groups: list = (
        [None]
        if targets is None
        else (
            ["auto"] if isinstance(targets, str) else group_targets([p for g in targets for p in g], len(inputs.views))
        )
    )
    if targets is None:
        for i, img in enumerate(inputs.images):
            if img.size > LARGE_IMAGE_PIXELS:
                warnings.warn(
                    f"{inputs.paths[i].name} is {img.shape[0]} x {img.shape[1]} px: without --target the "
                    "whole image is fitted, which is slow; --target ROW,COL per image (or auto) fits only "
                    "what the prior's cube sees"
                )
    clicked = None
    if groups[0] not in (None, "auto"):  # every click is checked before the prior is loaded
        clicked = groups
        groups = [[inputs.clicked(i, rc) for i, rc in enumerate(g)] for g in groups]
    return groups, clicked


def fit_setup(s: ReconstructSettings):
    """The prior's path and the fit config (:class:`~xfit.fitting.FitConfig`), with every file
    of the settings checked before the prior is loaded.

    Returns:
        ``(prior_path, cfg)``.
    Raises:
        InputError: the default prior missing, a bad config, ``checkpoint`` with ``fit`` but no
            ``init_network``, a missing ``gt``, ``gt_seg`` or ``encoder``.
    """
    from .fitting import load_fit_config

    prior_path = Path(s.prior) if s.prior is not None else DEFAULT_PRIOR
    if s.prior is None and not prior_path.exists():
        raise InputError(f"the default prior {prior_path} is missing from this installation; give --prior")
    cfg = load_fit_config(s.config, **s.fit_overrides())  # a bad config fails before the prior is loaded
    if s.method == "fit" and s.checkpoint is not None and cfg.init_network is None:
        raise InputError(
            "--checkpoint with --method fit is the checkpoint of the network that starts the fit; "
            "the fit config sets no init_network"
        )
    if s.method == "fit" and s.checkpoint is not None:
        from .fitting.config import network_parts

        parts = network_parts(cfg.init_network)
        if len(parts) > 1:  # a given file is the first network's: it starts the fit alone
            cfg = dataclasses.replace(cfg, init_network=parts[0])
    for extra in (s.gt, s.gt_seg, s.encoder):
        if extra is not None and not Path(extra).is_file():
            raise InputError(f"{extra}: file not found")
    return prior_path, cfg


def check_prior(prior, cfg, s: ReconstructSettings) -> None:
    """Check the loaded prior against the settings: a given initialising network must be on its
    grid; warn when it never saw ``s.level``.

    Raises:
        InputError: the ``checkpoint`` of ``init_network`` is off the prior's grid.
    """
    if s.method == "fit" and cfg.init_network is not None and s.checkpoint is not None:
        from .fitting.hybrid import check_init_network

        check_init_network(prior, cfg.init_network, s.checkpoint)  # a given network off the prior's grid fails first
    if s.level is not None:
        _warn_unseen_level(prior.meta, s.level)


def place_targets(prior, inputs: Inputs, groups: list, clicked: list | None):
    """Every target placed (:func:`locate`) and its region of interest cropped
    (:func:`regions_of_interest`; ``None`` at the isocentre), all checked before any fit.

    Returns:
        ``(targets, crops)``.
    Raises:
        InputError: see :func:`locate`, :func:`regions_of_interest`, :func:`check_combined_grid`.
    """
    located = [locate(prior, inputs, g) for g in groups]  # all targets checked before any fit
    for target, g in zip(located, clicked or []):
        target.details["clicked_rc"] = [[float(r), float(c)] for r, c in g]  # in the files, as stored
    crops = [regions_of_interest(prior, inputs, t) if t.method != "isocentre" else None for t in located]
    if len(located) > 1:
        check_combined_grid([t.point_mm for t in located], prior)
    return located, crops


def run_method(
    prior,
    images: Sequence[np.ndarray],
    views: Sequence[View],
    target: Target,
    rois: list | None,
    cfg,
    s: ReconstructSettings,
):
    """One target's reconstruction by the settings' method: the oracle ceiling, a feed-forward
    baseline, or the fit (started from the encoder without a crop, else from the fit config's
    start). ``rois``: the regions of interest the images were cropped to (``None``: the whole
    images, the cube at the isocentre).

    Returns:
        ``(result, init_note)``: a :class:`~xfit.fitting.FitResult` and where it started.
    """
    if s.method == "ceiling":
        from .prior.sample import prior_affine

        r = prior.config.resolution
        affine = prior_affine(prior, centre_mm=target.point_mm)
        gt_hu, gt_labels = gt_on_grid(s.gt, affine, (r, r, r), s.gt_seg, s.gt_isocenter_mm)
        result = ceiling_result(
            prior, gt_hu, None if gt_labels is None else centred_vertebra(gt_labels), images, views, target.point_mm
        )
        return result, "oracle ceiling: the prior fitted to the 3D truth (--gt)"
    if s.method != "fit":
        result = baseline_result(
            s.method,
            s.checkpoint,
            images,
            views,
            target.point_mm,
            s.device,
            centroid_rc=None if target.method == "isocentre" else target_pixels(target, rois),
        )
        return result, f"feed-forward baseline {s.method}"
    from .fitting import fit
    from .fitting.encoder import warm_start_w_plus

    if rois is None:
        w_init, init_note = warm_start_w_plus(prior, images, views, encoder=s.encoder)
    else:
        w_init, init_note = None, "w_mean (with a target; the encoder expects the vertebra at the isocentre)"
    result = fit(
        prior,
        images,
        views,
        cfg,
        seed=s.seed,
        w_init=w_init,
        centre_mm=target.point_mm,
        progress=s.progress,
        init_checkpoint=None if s.checkpoint is None else str(s.checkpoint),
    )
    if w_init is None:
        init_note = result.start if cfg.init_network is not None else init_note
    return result, init_note


def judge(rec: Reconstruction, prior, s: ReconstructSettings) -> None:
    """The ground truth ``s.gt`` on the fit's grid (``rec.gt_hu``, ``rec.gt_labels``) and the
    metrics against it (``rec.metrics``, :func:`xfit.metrics.volume_metrics`)."""
    from .metrics import volume_metrics

    result = rec.fit
    r = prior.config.resolution
    rec.gt_hu, rec.gt_labels = gt_on_grid(s.gt, result.affine, (r, r, r), s.gt_seg, s.gt_isocenter_mm)
    gt_mask = None if rec.gt_labels is None else centred_vertebra(rec.gt_labels)
    pred_mask = None if gt_mask is None else result.labels.astype(bool)
    rec.metrics = volume_metrics(result.hu, rec.gt_hu, pred_mask, gt_mask, prior.config.spacing_mm)


def target_pixels(target: Target, rois) -> list[tuple[float, float]]:
    """The target's pixel in each image handed to a baseline: ``target.pixels_rc`` (clicks, the
    automatic search's pixels or the projected isocentre), mapped into the region-of-interest
    crops when there are any (a crop pixel ``j`` covers original pixels ``row0 + j f .. + f``)."""
    if not rois:
        return [(float(r), float(c)) for r, c in target.pixels_rc]
    return [
        ((r - roi.row0 + 0.5) / roi.factor[0] - 0.5, (c - roi.col0 + 0.5) / roi.factor[1] - 0.5)
        for (r, c), roi in zip(target.pixels_rc, rois)
    ]


def baseline_result(
    method: str,
    checkpoint: str | Path | None,
    images: Sequence[np.ndarray],
    views: Sequence[View],
    centre_mm: np.ndarray,
    device: str,
    centroid_rc: Sequence[Sequence[float]] | None = None,
):
    """A feed-forward baseline's prediction as a :class:`~xfit.fitting.FitResult`, with its
    re-projections compared to the images exactly as a fit's are. ``centroid_rc``: the target's
    pixel in each image (TransVert's annotation; :func:`target_pixels`)."""
    import torch

    from .baselines.infer import predict
    from .fitting import FitResult, load_fit_config
    from .fitting.optimize import build_objective, check_images, compare_views, normalised_targets
    from .io import hu_to_mu

    check_images(images, views)  # the fit's checks (a constant image has nothing to reconstruct)
    t0 = time.perf_counter()
    hu, labels, affine, notes = predict(
        method, checkpoint, images, views, device=device, target_mm=centre_mm, centroid_rc=centroid_rc
    )
    mesh = notes.pop("mesh", None)  # IGCN's own surface: written as surface.stl with --mesh
    cfg = load_fit_config(None)
    arrays = [np.asarray(a, dtype=np.float64) for a in images]
    objective = build_objective(views, normalised_targets(arrays, "cpu"), affine, hu.shape[0], cfg)
    with torch.no_grad():
        preds = objective.render(hu_to_mu(torch.from_numpy(np.ascontiguousarray(hu, np.float32)))[None, None])
    ncc, proj = compare_views(objective, preds, arrays)
    return FitResult(
        hu=hu.astype(np.float32),
        label_prob=labels.astype(np.float32),
        labels=labels.astype(np.uint8),
        uncertainty=None,
        affine=np.asarray(affine, np.float64),
        w_plus=np.zeros((0, 0), np.float32),
        noise=[],
        history=[],
        view_ncc=ncc,
        projections=proj,
        backgrounds=None,
        views=list(views),
        pose=None,
        restarts=[],
        best_restart=0,
        stopped_at=0,
        perceptual=None,
        timings={"total": time.perf_counter() - t0},
        config={"method": method, **{k: v for k, v in notes.items() if k != "training"}},
        centre_mm=[float(x) for x in centre_mm],
        mesh=mesh,
    )


def ceiling_result(
    prior,
    gt_hu: np.ndarray,
    gt_mask: np.ndarray | None,
    images: Sequence[np.ndarray],
    views: Sequence[View],
    centre_mm: np.ndarray,
):
    """The oracle ceiling of a case as a :class:`~xfit.fitting.FitResult`: the prior's W+ and noise
    fitted to the truth ``gt_hu`` (and its centred vertebra ``gt_mask``) on the prior's cube at
    ``centre_mm`` (:func:`xfit.fitting.invert.invert_volume`), its re-projections compared to the
    images as a fit's are. It tells how well the prior can hold this anatomy at all."""
    import torch

    from .fitting import FitResult, load_fit_config
    from .fitting.invert import CEILING_STEPS, invert_volume
    from .fitting.optimize import build_objective, compare_views, normalised_targets
    from .io import hu_to_mu
    from .prior.sample import prior_affine

    inv = invert_volume(prior, gt_hu, gt_mask, steps=CEILING_STEPS)
    affine = prior_affine(prior, centre_mm=centre_mm)
    arrays = [np.asarray(a, dtype=np.float64) for a in images]
    objective = build_objective(
        views, normalised_targets(arrays, "cpu"), affine, inv.hu.shape[0], load_fit_config(None)
    )
    with torch.no_grad():
        preds = objective.render(hu_to_mu(torch.from_numpy(inv.hu))[None, None])
    ncc, proj = compare_views(objective, preds, arrays)
    labels = (inv.label_prob > 0.5).astype(np.uint8)
    return FitResult(
        hu=inv.hu,
        label_prob=inv.label_prob,
        labels=labels,
        uncertainty=None,
        affine=affine,
        w_plus=inv.w_plus,
        noise=[n[0] for n in inv.noise],
        history=[],
        view_ncc=ncc,
        projections=proj,
        backgrounds=None,
        views=list(views),
        pose=None,
        restarts=[],
        best_restart=0,
        stopped_at=CEILING_STEPS,
        perceptual=None,
        timings={"total": inv.seconds},
        config={"method": "ceiling", "steps": CEILING_STEPS, "loss": inv.loss},
        centre_mm=[float(x) for x in centre_mm],
        start="oracle ceiling",
    )


def combined_grid(
    points_mm: Sequence[np.ndarray], spacing_mm: float, resolution: int
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Axis-aligned grid (affine, shape) at ``spacing_mm`` covering every vertebra's cube of
    ``resolution`` voxels per side centred at ``points_mm``."""
    s = float(spacing_mm)
    half = s * (int(resolution) - 1) / 2.0
    pts = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    lo, hi = pts.min(0) - half, pts.max(0) + half
    shape = tuple(int(n) for n in np.rint((hi - lo) / s).astype(int) + 1)
    affine = np.diag([s, s, s, 1.0])
    affine[:3, 3] = lo
    return affine, shape


def check_combined_grid(points_mm: Sequence[np.ndarray], prior) -> None:
    """Raise InputError when the combined label map of these vertebrae would not fit in memory."""
    _, shape = combined_grid(points_mm, prior.config.spacing_mm, prior.config.resolution)
    voxels = int(np.prod(shape))
    if voxels > MAX_COMBINED_VOXELS:
        extent = [round(n * float(prior.config.spacing_mm)) for n in shape]
        raise InputError(
            f"the {len(points_mm)} targets span {extent} mm: their combined label map "
            f"would need {voxels / 1e6:.0f} M voxels (at most {MAX_COMBINED_VOXELS / 1e6:.0f} M); "
            "check the clicks, or reconstruct the vertebrae in separate runs"
        )


def combined_labels(recs: Sequence[Reconstruction], values: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One label map ``[I, J, K]`` int16 in the X-rays' frame: vertebra ``k`` carries ``values[k]``.

    Each fit's label probability is resampled onto the common grid (:func:`combined_grid`); a
    voxel takes the vertebra of highest probability above 0.5.
    Returns:
        ``(labels, affine)``.
    """
    from .io import Volume

    f = recs[0].fit
    spacing = float(np.linalg.norm(np.asarray(f.affine)[:3, 0]))
    affine, shape = combined_grid([np.asarray(r.fit.centre_mm) for r in recs], spacing, f.hu.shape[0])
    best = np.full(shape, 0.5, np.float32)
    labels = np.zeros(shape, np.int16)
    for rec, value in zip(recs, values):
        prob = resample_onto(
            Volume(rec.fit.label_prob.astype(np.float32), rec.fit.affine), affine, shape, order=1, cval=0.0
        ).data
        take = prob > best
        labels[take], best[take] = value, prob[take]
    return labels, affine


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
        if f.intensity_maps is not None:  # the fitted monotone map (input and output in std of the re-projection)
            entry["intensity_map"] = f.intensity_maps[i]
        if f.data_masks is not None:
            entry["data_term_pixels"] = float(np.asarray(f.data_masks[i]).mean())
        views.append(entry)
    for entry, roi in zip(views, rec.rois or []):
        entry["region_of_interest"] = roi.to_dict()
    return {
        "xfit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "prior": {"path": str(rec.prior_path), "sha256": rec.prior_sha256},
        "settings": rec.settings,
        "target": None if rec.target is None else rec.target.to_dict(),
        "grid": {"affine": np.asarray(f.affine).tolist(), "centre_mm": f.centre_mm},
        "transform": f.transform,
        "residual_rms_hu": f.residual_rms_hu,
        "consistency": f.consistency,
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
        own = f.mesh  # a method's own mesh (IGCN), else marching cubes of the labels
        if mesh and own is not None:
            write_stl(out / "surface.stl", np.asarray(own["vertices_mm"]), np.asarray(own["faces"]), force=True)
            surface = "surface.stl (the method's mesh)"
        elif mesh:
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
            Path(tmp).write_text(
                json.dumps(finite_json(report), indent=2, default=_json_default, allow_nan=False) + "\n"
            )
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
    fit_images = rec.fit_images or rec.inputs.images
    n_views = len(fit_images)
    cols = max(3, n_views)
    rows = len(vols) + 3 + (1 if rec.rois else 0)
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
        inp = fit_images[c]
        rep = f.projections[c]
        res = inp - rep
        lim = max(float(np.abs(res).max()), 1e-6)
        axes[base, c].imshow(inp, cmap="gray")
        masked = " (yellow: masked)" if f.data_masks is not None else ""
        axes[base, c].set_title(
            f"input {rec.inputs.paths[c].name} ({rec.inputs.views[c].angle_deg:g} deg){masked}", fontsize=8
        )
        if f.data_masks is not None and f.data_masks[c].shape == inp.shape and not f.data_masks[c].all():
            axes[base, c].contour(f.data_masks[c].astype(np.float32), levels=[0.5], colors="y", linewidths=0.5)
        axes[base + 1, c].imshow(rep, cmap="gray", vmin=float(inp.min()), vmax=float(inp.max()))
        axes[base + 1, c].set_title(preview_projection_title(f, c), fontsize=8)
        axes[base + 2, c].imshow(res, cmap="coolwarm", vmin=-lim, vmax=lim)
        axes[base + 2, c].set_title("residual", fontsize=8)
        if rec.rois:
            _show_roi(axes[base + 3, c], rec.inputs.images[c], rec.rois[c], rec.target.pixels_rc[c])
    if rec.metrics:
        txt = "  ".join(f"{k} {v:.3g}" for k, v in rec.metrics.items() if isinstance(v, (int, float)))
        fig.suptitle(txt, fontsize=9)
    fig.tight_layout()
    return figure_to_png(fig, path)


def preview_projection_title(fit: Any, c: int) -> str:
    """Title of view ``c``'s re-projection in ``preview.png``: it is shown after the fitted
    monotone intensity map when the fit had one (then comparable to a processed input), and the
    masked pixels are outlined on the input (:func:`write_preview`)."""
    what = "re-projection, fitted intensity map" if fit.intensity_maps is not None else "re-projection"
    return f"{what} (NCC {fit.view_ncc[c]:.3f})"


def _show_roi(ax, image: np.ndarray, roi, target_rc) -> None:
    """The whole input image with the region of interest (box) and the target (cross)."""
    from matplotlib.patches import Rectangle

    ax.imshow(image, cmap="gray")
    ax.add_patch(
        Rectangle((roi.col0 - 0.5, roi.row0 - 0.5), roi.cols, roi.rows, fill=False, edgecolor="y", linewidth=0.8)
    )
    ax.plot([target_rc[1]], [target_rc[0]], "r+", markersize=8)
    ax.set_title(f"whole image {image.shape[0]}x{image.shape[1]}: region of interest", fontsize=8)


def write_vertebrae(
    recs: Sequence[Reconstruction],
    out_dir: str | Path,
    *,
    names: Sequence[str],
    values: Sequence[int],
    force: bool = False,
    mesh: bool = False,
) -> Path:
    """Several vertebrae: one reconstruction folder per vertebra (``OUT/<name>/``) and one
    combined ``OUT/labels.nii.gz`` in the X-rays' frame (vertebra ``k`` labelled ``values[k]``),
    with ``OUT/report.json`` listing them. Written as a whole (:func:`xfit.io.atomic_folder`)."""
    with atomic_folder(out_dir, force=force) as out:
        for rec, name in zip(recs, names):
            write_reconstruction(rec, out / name, mesh=mesh)
        labels, affine = combined_labels(recs, values)
        write_nifti(out / "labels.nii.gz", labels, affine, force=True)
        summary = {
            "xfit_version": __version__,
            "labels": "labels.nii.gz",
            "vertebrae": [
                {
                    "name": n,
                    "label": int(v),
                    "folder": n,
                    "target": None if r.target is None else r.target.to_dict(),
                    "metrics_vs_gt": r.metrics,
                }
                for r, n, v in zip(recs, names, values)
            ],
        }
        with atomic_write(out / "report.json", force=True) as tmp:
            Path(tmp).write_text(
                json.dumps(finite_json(summary), indent=2, default=_json_default, allow_nan=False) + "\n"
            )
    return Path(out_dir)


def check_output_free(out_dir: str | Path, force: bool, inputs: Sequence[str | Path] = ()) -> Path:
    """Fail before any work when the output folder cannot be written or is taken (no ``force``);
    see :func:`xfit.io.check_output_folder`."""
    return check_output_folder(out_dir, force=force, inputs=inputs)


def preflight(
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    force: bool = False,
    device: str = "cpu",
    prior: str | Path | None = None,
    config: str | Path | None = None,
    gt: str | Path | None = None,
    gt_seg: str | Path | None = None,
    encoder: str | Path | None = None,
) -> None:
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
