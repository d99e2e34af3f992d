"""Start the X-ray fit from a feed-forward network: its predicted volume, inverted into W+.

A network trained on the same kind of data (``xctrsnet``, ``ear``, ``x2ct-cnn``, ``x2ct-gan``;
:mod:`xfit.baselines`) reconstructs a case in about a second. Its volume is smooth but placed
right, so W+ fitted to it (:func:`xfit.fitting.invert.invert_volume`, at the generator's coarse
resolution) starts the X-ray fit near the answer instead of at the prior's mean. The X-ray fit
then refines it against the images, so the network decides the start, never the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..geometry import View
from ..prior.checkpoint import Prior
from .config import INIT_NETWORKS, FitConfig, network_parts
from .invert import invert_volume, pool_to
from .objective import Anchor


@dataclass
class NetworkStart:
    """What an initialising network gives the fit.

    Attributes:
        w_init: ``[num_ws, w_dim]`` its volume inverted into W+, or ``None`` (see ``note``; with
            0 inversion steps the fit starts at ``w_mean`` and the volume only anchors it).
        note: where the fit starts, for the report.
        hu: ``[R, R, R]`` the network's HU on the prior's grid (``None`` when the network could
            not run on these inputs).
        labels: ``[R, R, R]`` bool, its vertebra mask.
        label_prob: ``[R, R, R]`` float32 in [0, 1], the probability behind that mask (the
            network's sigmoid; the 0/1 mask itself for a network without a segmentation output).
    """

    w_init: Tensor | None
    note: str
    hu: np.ndarray | None = None
    labels: np.ndarray | None = None
    label_prob: np.ndarray | None = None


def network_checkpoint(method: str, checkpoint: str | Path | None = None) -> tuple[str, Path | None]:
    """``(network, checkpoint)`` of an ``init_network``: ``xctrsnet@style`` without a checkpoint
    is the shipped ``xfit/data/baseline-xctrsnet-style.safetensors``; a plain name keeps
    ``checkpoint`` (``None``: the shipped one).

    Raises:
        InputError: not a network with CT output.
    """
    from ..baselines.common import split_tag
    from ..baselines.infer import shipped_checkpoint

    base, tag = split_tag(method)
    if base not in INIT_NETWORKS:
        raise InputError(
            f"init_network must be one of {', '.join(INIT_NETWORKS)} (a network with CT output), got {method!r}"
        )
    if checkpoint is None and tag is not None:
        return base, shipped_checkpoint(base, tag)
    return base, (Path(checkpoint) if checkpoint is not None else None)


def start_network(
    cfg: FitConfig, torso: bool, checkpoint: str | Path | None = None, views: Sequence[View] | None = None
) -> str | None:
    """The network that starts a fit of these X-rays (``None``: none, the fit starts at
    ``w_mean``).

    ``cfg.init_network_whole_body`` when they are of a whole torso
    (:func:`xfit.fitting.optimize.shows_torso`) and the config names one, else
    ``cfg.init_network``. With ``views``, a shipped network that was not trained at their angles
    (:func:`xfit.baselines.infer.angles_off`, give or take
    ``cfg.init_network_angle_tolerance_deg``) gives way to ``cfg.init_network_other_angles`` if
    that one was, else to none. A given ``checkpoint`` (the user's own network for
    ``init_network``) always decides.

    Raises:
        CheckpointError: a shipped network's file is missing or corrupt (with ``views``).
    """
    if cfg.init_network is None:
        return None
    if checkpoint is not None:
        return cfg.init_network
    first = cfg.init_network_whole_body if torso and cfg.init_network_whole_body is not None else cfg.init_network
    tol = cfg.init_network_angle_tolerance_deg
    if views is None or trained_at(first, views, tol):
        return first
    other = cfg.init_network_other_angles
    return other if other is not None and trained_at(other, views, tol) else None


def trained_at(method: str, views: Sequence[View], tolerance_deg: float = 0.0) -> bool:
    """Whether the shipped network ``method`` (``NAME@TAG``; ``A+B``: each of them) was trained at
    the angles of ``views``: each within its nominal angle +- (its trained jitter +
    ``tolerance_deg``).

    Raises:
        CheckpointError: its file is missing or corrupt.
    """
    from ..baselines.infer import angles_off, load_baseline

    for part in network_parts(method):
        base, path = network_checkpoint(part)
        if angles_off(views, load_baseline(base, path), tolerance_deg):
            return False
    return True


def grid_mismatch(prior: Prior, method: str, checkpoint: str | Path | None = None) -> str | None:
    """Why ``method``'s network (``A+B``: any of them) cannot start a fit of ``prior`` (its output
    grid, voxels and spacing, is not the prior's), or ``None`` when it can.

    Raises:
        InputError: not a network with CT output; a ``checkpoint`` for several networks.
        CheckpointError: a missing, foreign or corrupt checkpoint.
    """
    from ..baselines.infer import load_baseline

    parts = network_parts(method)
    if len(parts) > 1:
        if checkpoint is not None:
            raise InputError(f"a checkpoint of the network that starts the fit needs one init_network, got {method!r}")
        return next((why for p in parts if (why := grid_mismatch(prior, p)) is not None), None)
    base, checkpoint = network_checkpoint(method, checkpoint)
    cfg = load_baseline(base, checkpoint).config
    pr, ps = int(prior.config.resolution), float(prior.config.spacing_mm)
    if int(cfg.resolution) == pr and abs(float(cfg.spacing_mm) - ps) <= 1e-6:
        return None
    where = f" ({checkpoint})" if checkpoint is not None else ""
    return (
        f"the initialising network {method}{where} reconstructs {cfg.resolution}^3 voxels of "
        f"{cfg.spacing_mm:g} mm, but the prior's grid is {pr}^3 of {ps:g} mm: it cannot start this fit"
    )


def check_init_network(prior: Prior, method: str, checkpoint: str | Path | None = None) -> None:
    """Refuse a network that cannot start a fit of ``prior`` (see :func:`grid_mismatch`).

    Raises:
        InputError: not a CT network, or its output grid is not the prior's.
        CheckpointError: a missing, foreign or corrupt checkpoint.
    """
    why = grid_mismatch(prior, method, checkpoint)
    if why is not None:
        raise InputError(why)


def network_start(
    prior: Prior,
    images: Sequence[np.ndarray],
    views: Sequence[View],
    centre_mm: Sequence[float],
    method: str,
    checkpoint: str | Path | None = None,
    *,
    steps: int = 100,
    resolution: int | None = None,
    fine_steps: int = 0,
    amp: bool = False,
    optimizer: str = "adam",
    label_weight: float = 0.1,
) -> NetworkStart:
    """W+ ``[num_ws, w_dim]`` that reproduces ``method``'s reconstruction of the X-rays.

    Args:
        prior: the prior being fitted.
        images, views: the fit's inputs (the network takes the first views it was trained on).
        centre_mm: world position of the fitted cube's centre.
        method, checkpoint: the network (``None``: its shipped checkpoint); ``A+B``: the mean of
            their volumes (shipped checkpoints only) and the first one's vertebra mask.
        steps: steps of the inversion, Adam steps or L-BFGS iterations (0: none; the fit starts
            at ``w_mean`` and the network's volume only enters through the anchor terms).
        resolution: generator resolution of the inversion (``None``: full).
        fine_steps: steps that continue the inversion at full resolution (0: none).
        amp: bfloat16 autocast of the generator during the inversion.
        optimizer: ``adam`` or ``lbfgs`` for both parts of the inversion (``steps`` and
            ``fine_steps`` are then its iterations).
        label_weight: weight of the label BCE against the network's mask in the inversion.
    Returns:
        :class:`NetworkStart`; its ``w_init`` is ``None`` (and ``note`` says why) when the network
        cannot take these views (fewer than it was trained on), or when the *shipped* network
        (``checkpoint`` ``None``) is not on the prior's grid (a user's own prior): the fit then
        starts at the mean, and ``note`` (the report's ``init``) says why.
    Raises:
        InputError: a given ``checkpoint`` whose grid is not the prior's; not a CT network.
        CheckpointError: a missing, foreign or corrupt checkpoint.
    """
    from ..baselines.infer import load_baseline, predict

    why = grid_mismatch(prior, method, checkpoint)
    if why is not None:
        if checkpoint is not None:
            raise InputError(why)
        # a default, not the user's choice: said in the report (``init``), not warned about
        return NetworkStart(None, f"w_mean (the shipped {method} is not on the prior's grid)")
    volumes = []
    for part in network_parts(method):  # A+B: the mean of their volumes, the first one's mask
        base, path = network_checkpoint(part, checkpoint)
        n = len(load_baseline(base, path).config.views.angles_deg)
        if len(views) < n:
            return NetworkStart(None, f"w_mean ({part} needs {n} views, got {len(views)})")
        volumes.append(
            predict(
                base,
                path,
                list(images[:n]),
                list(views[:n]),
                device=prior.w_mean.device,
                target_mm=list(centre_mm),
                label_prob=True,
            )
        )
    hu = np.mean([v[0] for v in volumes], axis=0, dtype=np.float64).astype(np.float32)
    labels, prob = volumes[0][1], volumes[0][3]["label_prob"]
    if steps == 0:
        return NetworkStart(None, f"w_mean ({method} volume as anchor only)", hu, labels.astype(bool), prob)
    # W+ alone: the fit starts from W+ and zero noise, and L-BFGS keeps its history of every
    # parameter (the noise maps would add about 0.2 GB at 64^3)
    common = dict(amp=amp, optimizer=optimizer, optimize_noise=False, outputs=False, label_weight=label_weight)
    inv = invert_volume(prior, hu, labels, steps=steps, resolution=resolution, **common)
    note = f"{method} volume inverted into W+ ({steps} {'L-BFGS ' if optimizer == 'lbfgs' else ''}steps"
    if fine_steps > 0:
        w0 = torch.from_numpy(inv.w_plus).to(prior.w_mean.device)
        inv = invert_volume(prior, hu, labels, steps=fine_steps, w_init=w0, history=inv.lbfgs_history, **common)
        note += f", then {fine_steps} at full resolution"
    return NetworkStart(
        torch.from_numpy(inv.w_plus).to(prior.w_mean.device),
        note + ")",
        hu,
        labels.astype(bool),
        prob,
    )


def anchors(
    prior: Prior, hu: np.ndarray, labels: np.ndarray, resolutions: Sequence[int], hu_weight: float, label_weight: float
) -> dict[int, Anchor]:
    """The network's volume as an :class:`~xfit.fitting.objective.Anchor` at each generator
    resolution of the fit (average-pooled from the prior's grid), with the weights of its terms."""
    from ..units import hu_to_unit

    window = tuple(prior.config.hu_window)
    unit = hu_to_unit(torch.as_tensor(np.asarray(hu, np.float32)), window)
    lab = torch.as_tensor(np.asarray(labels, np.float32))
    device = prior.w_mean.device
    return {
        r: Anchor(pool_to(unit, r).to(device), pool_to(lab, r).to(device), window, hu_weight, label_weight)
        for r in resolutions
    }


__all__ = [
    "INIT_NETWORKS",
    "NetworkStart",
    "anchors",
    "check_init_network",
    "grid_mismatch",
    "network_checkpoint",
    "network_start",
    "start_network",
    "trained_at",
]
