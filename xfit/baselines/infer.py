"""Inference of a trained baseline: X-rays + views -> HU volume, labels, affine, notes.

:func:`predict` is what ``xfit reconstruct --method NAME`` calls. The cube is the network's
(``resolution^3`` at ``spacing_mm``, RAS-aligned) centred on ``target_mm`` (default: the world
origin = the views' isocentre), so the output lies in the X-rays' world frame like the fit's.
Labels: X2CT-CNN, X2CT-GAN and EAR have no segmentation output, so their vertebra label is the
connected component of ``HU > LABEL_THRESHOLD_HU`` (150 HU) nearest the cube centre, holes filled
(:func:`xfit.baselines.common.labels_from_hu`). X-CTRSNet's labels come from its segmentation
network and TransVert's from its shape output (with the predicted level in ``notes["level"]``);
both in the fit's convention (the vertebra of interest = 1). ``notes["labels"]`` says which.

CT: TransVert and IGCN have no CT output. Their ``hu`` is the predicted shape rendered as two
levels (:data:`SHAPE_HU`: water outside, bone inside), so the front door can write and re-project
it; ``notes["ct_output"]`` is False and CT metrics of it mean nothing. IGCN's mesh (world mm) is
in ``notes["mesh"]`` (``vertices_mm [N, 3]``, ``faces [M, 3]``); its labels are the mesh
voxelised.

Views that differ from the training views (angles beyond the trained jitter, distances, detector
shape or pixel spacing, projection, a pose) still run: the footprint resampling and the lifting
follow the given geometry, and one warning names every difference.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import file_sha256
from ..errors import CheckpointError, InputError
from ..geometry import View
from ..prior.config import unit_to_hu
from .common import (
    CT_OUTPUT,
    LABEL_THRESHOLD_HU,
    Lifter,
    centred_component,
    check_method,
    cube_affine,
    footprints,
    labels_from_hu,
)
from .methods import DATA_DIR
from .registry import Baseline, load_model

_warned: set[str] = set()
_cache: dict[tuple[str, str, str], tuple[int, Baseline]] = {}
#: (outside, inside) HU of the two-level volume a shape-only method (TransVert) returns as ``hu``.
SHAPE_HU = (0.0, 700.0)


def shipped_checkpoint(method: str, tag: str | None = None, data_dir: str | Path | None = None) -> Path:
    """Path of the shipped checkpoint of ``method`` in ``data_dir`` (default: the package's, read
    at call time; it may not exist yet); with a ``tag`` (``jitter``) the shipped variant
    ``baseline-<method>-<tag>.safetensors``."""
    folder = DATA_DIR if data_dir is None else Path(data_dir)
    return folder / f"baseline-{check_method(method)}{'-' + tag if tag else ''}.safetensors"


def _angle_off(view: View, trained: View, jitter_deg: float) -> bool:
    """Whether ``view``'s angle is beyond ``trained``'s nominal angle +- ``jitter_deg``."""
    d = (view.angle_deg - trained.angle_deg + 180.0) % 360.0 - 180.0
    return abs(d) > jitter_deg + 1e-6


def angles_off(views: Sequence[View], baseline: Baseline, tolerance_deg: float = 0.0) -> list[int]:
    """Indices of the ``views`` (of those the baseline reads) whose angle it was not trained on:
    beyond its nominal angle +- (its trained jitter + ``tolerance_deg``)."""
    vc = baseline.config.views
    pairs = zip(views, vc.views(), vc.jitters())
    return [i for i, (v, t, jit) in enumerate(pairs) if _angle_off(v, t, jit + tolerance_deg)]


def view_differences(views: Sequence[View], baseline: Baseline) -> list[str]:
    """Human-readable differences between ``views`` and the views the baseline was trained on."""
    vc = baseline.config.views
    trained = vc.views()
    out = []
    for i, (v, t, jit) in enumerate(zip(views, trained, vc.jitters())):
        if _angle_off(v, t, jit):
            out.append(
                f"view {i} angle {v.angle_deg:g} deg (trained {t.angle_deg:g}" + (f" +- {jit:g}" if jit else "") + ")"
            )
        for key, unit in (("sdd_mm", " mm"), ("sod_mm", " mm")):
            if abs(getattr(v, key) - getattr(t, key)) > 1e-6:
                out.append(f"view {i} {key[:3]} {getattr(v, key):g}{unit} (trained {getattr(t, key):g})")
        if tuple(v.shape) != tuple(t.shape):
            out.append(f"view {i} detector {v.shape[0]}x{v.shape[1]} (trained {t.shape[0]}x{t.shape[1]})")
        if not np.allclose(v.pixel_spacing_mm, t.pixel_spacing_mm, atol=1e-9):
            out.append(
                f"view {i} pixel spacing {v.pixel_spacing_mm[0]:g},{v.pixel_spacing_mm[1]:g} mm "
                f"(trained {t.pixel_spacing_mm[0]:g},{t.pixel_spacing_mm[1]:g})"
            )
        if v.projection != t.projection:
            out.append(f"view {i} {v.projection} beam (trained {t.projection})")
        if v.pose is not None or any(abs(x) > 1e-9 for x in v.offset_px):
            out.append(f"view {i} has a pose or principal point offset (trained without)")
    return out


def load_baseline(method: str, checkpoint: str | Path | None = None, device: str | torch.device = "cpu") -> Baseline:
    """Load (and cache) a baseline checkpoint of ``method`` (default: the shipped one)."""
    path = Path(checkpoint) if checkpoint is not None else shipped_checkpoint(method)
    if checkpoint is None and not path.is_file():
        raise CheckpointError(
            f"no shipped checkpoint for {method} ({path}); train one with "
            f"`xfit train-baseline {method} CT_DIR -o RUN` and pass --checkpoint RUN/baseline.safetensors"
        )
    if not path.is_file():
        return load_model(path, method, device)  # CheckpointError naming the file
    key = (method, str(path.resolve()), str(device))
    mtime = path.stat().st_mtime_ns
    hit = _cache.get(key)
    if hit is None or hit[0] != mtime:
        hit = (mtime, load_model(path, method, device))
        _cache[key] = hit
    return hit[1]


def predict(
    method: str,
    checkpoint: str | Path | None,
    images: Sequence[np.ndarray],
    views: Sequence[View],
    *,
    device: str | torch.device = "cpu",
    target_mm: Sequence[float] | None = None,
    centroid_rc: Sequence[Sequence[float]] | None = None,
    label_prob: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Reconstruct with a trained baseline.

    Args:
        method: ``x2ct-cnn``, ``x2ct-gan``, ``ear``, ``transvert``, ``xctrsnet`` or ``igcn``
            (one view).
        checkpoint: a ``baseline.safetensors`` (``None``: the shipped one of ``method``).
        images: one ``[R, C]`` X-ray per view (line integrals or any gray scale, bright = bone;
            each is standardised, so gain and offset do not matter).
        views: their geometry, in the order the network was trained on (AP first).
        device: torch device.
        target_mm: cube centre in the views' world frame (default: the origin).
        centroid_rc: TransVert's vertebra annotation: per view, the (row, col) of the vertebra's
            centroid in that image (``--target``); default: the projection of ``target_mm``.
            Ignored by the other methods.
        label_prob: also return ``notes["label_prob"]``, ``[R, R, R]`` float32: the probability of
            the vertebra label (the sigmoid of a segmentation output, before its threshold and
            component; the 0/1 mask for networks without one). Not JSON: pop it before writing.
    Returns:
        ``(hu [R, R, R] float32, labels [R, R, R] uint8, affine [4, 4] float64, notes)``.
    Raises:
        InputError: an unknown method, another number of views than trained, bad images.
        CheckpointError: a missing, foreign or mismatched checkpoint.
    """
    check_method(method)
    t0 = time.perf_counter()
    b = load_baseline(method, checkpoint, device)
    cfg = b.config
    n_trained = len(cfg.views.angles_deg)
    if len(images) != len(views):
        raise InputError(f"got {len(images)} images but {len(views)} views")
    if len(views) != n_trained:
        raise InputError(f"the {method} network was trained on {n_trained} views; got {len(views)}")
    arrs = []
    for i, (img, v) in enumerate(zip(images, views)):
        a = np.asarray(img, dtype=np.float32)
        if a.ndim != 2 or tuple(a.shape) != tuple(v.shape):
            raise InputError(f"image {i} has shape {list(a.shape)}, its view's detector is {list(v.shape)}")
        if not np.isfinite(a).all():
            raise InputError(f"image {i} holds NaN or infinite values")
        arrs.append(a)
    diffs = view_differences(views, b)
    if diffs:
        msg = f"{method} was trained on other views: " + "; ".join(diffs) + "; it runs, but expect lower quality"
        if msg not in _warned:
            _warned.add(msg)
            warnings.warn(msg, stacklevel=2)
    centre = tuple(float(x) for x in (target_mm if target_mm is not None else (0.0, 0.0, 0.0)))
    R = cfg.resolution
    vs = [list(views)]
    fps = []
    for i, a in enumerate(arrs):  # views may differ in detector shape: one footprint each
        fps.append(footprints(torch.from_numpy(a)[None, None], [[views[i]]], centre, cfg.fov_mm, R)[:, 0])
    x = torch.stack(fps, 1).to(device)
    lifter = Lifter(vs, centre, cfg.fov_mm)
    extra: dict[str, Any] = {}
    prob = None
    with torch.no_grad():
        if method == "transvert":
            hu, labels, extra = _transvert(b, x, lifter, views, centre, centroid_rc)
        elif method == "igcn":
            hu, labels, extra = _igcn(b, x, lifter, centre)
        else:
            out = b.model(x, lifter)
            hu = unit_to_hu(out["volume"][0, 0].float().clamp(-1, 1), tuple(cfg.hu_window)).cpu().numpy()
            if "seg_logit" in out:
                prob = torch.sigmoid(out["seg_logit"][0, 0].float()).cpu().numpy().astype(np.float32)
                labels = centred_component(prob > 0.5)
                extra["labels"] = (
                    "segmentation output: sigmoid > 0.5, the component nearest the cube centre, holes filled"
                )
            else:
                labels = labels_from_hu(hu.astype(np.float32))
    hu = hu.astype(np.float32)
    sha = file_sha256(b.path) if b.path is not None else None
    notes = {
        "method": method,
        "checkpoint": str(b.path) if b.path else None,
        "checkpoint_sha256": sha,
        "labels": f"threshold: connected component of HU > {LABEL_THRESHOLD_HU:g} nearest the cube centre, "
        "holes filled (the network has no segmentation output)",
        "ct_output": CT_OUTPUT[method],
        "view_differences": diffs,
        "trained_views": cfg.to_dict()["views"],
        "training": {
            k: v for k, v in b.meta.get("training", {}).items() if k in ("steps", "images", "examples", "levels")
        },
        "seconds": time.perf_counter() - t0,
    }
    notes.update(extra)
    if label_prob:
        notes["label_prob"] = prob if prob is not None else (np.asarray(labels) > 0).astype(np.float32)
    return hu, labels, cube_affine(R, cfg.spacing_mm, centre), notes


def _igcn(
    b: Baseline, x: torch.Tensor, lifter: Lifter, centre: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """IGCN's prediction: (two-level hu, labels, notes with the mesh in world mm)."""
    from . import igcn

    cfg = b.config
    verts = b.model(x, lifter)["vertices"][0].float().cpu().numpy().astype(np.float64)
    faces = b.model.faces.cpu().numpy()
    labels = igcn.decode_mesh(verts, faces, cfg.resolution, cfg.spacing_mm)
    hu = np.where(labels > 0, SHAPE_HU[1], SHAPE_HU[0]).astype(np.float32)
    notes = {
        "labels": "mesh output: the deformed template voxelised by ray parity, the component nearest the cube "
        "centre, holes filled",
        "hu": f"no CT output: the labels rendered as {SHAPE_HU[1]:g} HU inside, {SHAPE_HU[0]:g} HU outside",
        "mesh_size": {"vertices": int(verts.shape[0]), "faces": int(faces.shape[0])},
        "mesh": {"vertices_mm": verts + np.asarray(centre), "faces": faces},
    }
    return hu, labels, notes


def _transvert(
    b: Baseline,
    x: torch.Tensor,
    lifter: Lifter,
    views: Sequence[View],
    centre: tuple[float, ...],
    centroid_rc: Sequence[Sequence[float]] | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """TransVert's prediction: (two-level hu, labels, notes)."""
    from ..geometry import world_to_pixel
    from ..levels import LABEL_TO_LEVEL, level_name
    from . import transvert

    cfg = b.config
    if centroid_rc is None:
        pt = torch.tensor([centre], dtype=torch.float64)
        centroid_rc = [tuple(world_to_pixel(pt, v)[0].tolist()) for v in views]
        where = "the projected cube centre"
    else:
        if len(centroid_rc) != len(views):
            raise InputError(f"centroid_rc needs one (row, col) per view ({len(views)}), got {len(centroid_rc)}")
        centroid_rc = [tuple(float(c) for c in rc) for rc in centroid_rc]
        if any(len(rc) != 2 or not all(np.isfinite(rc)) for rc in centroid_rc):
            raise InputError(f"centroid_rc must hold finite (row, col) pairs, got {centroid_rc}")
        where = "the given target pixels"
    ann = transvert.annotation_pixels(list(centroid_rc), list(views), centre, cfg.fov_mm, cfg.resolution)
    shape = b.model(x, lifter, ann.to(x.device))["shape"][0, 0].float().cpu().numpy()
    labels, level = transvert.decode_shape(shape)
    hu = np.where(labels > 0, SHAPE_HU[1], SHAPE_HU[0]).astype(np.float32)
    notes = {
        "labels": "shape output: voxels above half the predicted level index, the component nearest the cube "
        "centre, holes filled",
        "level": level_name(level) if level in LABEL_TO_LEVEL else None,
        "level_index": level,
        "annotation": f"disc of radius 1 px at {where}: "
        + "; ".join(f"view {i} ({r:.1f}, {c:.1f})" for i, (r, c) in enumerate(centroid_rc)),
        "hu": f"no CT output: the shape rendered as {SHAPE_HU[1]:g} HU inside, {SHAPE_HU[0]:g} HU outside",
    }
    return hu, labels, notes
