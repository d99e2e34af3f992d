"""One trainer for every baseline: ``xfit train-baseline NAME CT_DIR -o RUN`` or
``torchrun --nproc-per-node N -m xfit.baselines.train NAME CT_DIR -o RUN``.

Data: the prior's vertebra-centred crops of a CT collection (same layouts, levels, crop size,
spacing and HU window; :func:`xfit.prior.data.load_training_set`, cached in ``RUN/cache``). Each
step draws a batch of crops, simulates their X-rays on the fly with :func:`xfit.projector.project`
exactly as ``xfit simulate`` does (HU of the crop -> mu -> line integrals; views of the config
with the isocentre at the crop centre; each angle drawn in ``angle +- angle_jitter_deg``), turns
them into footprints (:mod:`xfit.baselines.common`; with the config's ``whole_body`` on, an
example's line integrals first get a whole torso around the crop, :meth:`BaselineTrainer.with_outside`;
with ``style`` on, its X-rays are then made clinical-style radiographs at a random strength,
:meth:`BaselineTrainer.styled`)
and takes one optimiser step on the method's
loss (X2CT-GAN and TransVert: one LSGAN discriminator step, then one generator step). TransVert's
target is the crop's mask valued with its level (the training set's ``levels``) and its annotation
the projected centroid of that mask; X-CTRSNet also segments the ground-truth crop (RSC); IGCN's
template mesh is made from the mean label of all crops before the first step
(:func:`xfit.baselines.igcn.template_from_crops`) and its targets are points of each crop's mask
surface drawn from the trainer's random stream.

Every random draw comes from one ``torch.Generator`` per process, checkpointed with the weights,
the optimisers and the global torch RNG, so ``--resume`` continues bit-for-bit. The guards of
:mod:`xfit.prior.train` apply (non-finite state, crops or loss; a torn log line), and
:func:`check_training` refuses a seed or Adam numbers torch would reject, before anything is written. Several processes
(torchrun, gloo on the CPU) all-reduce gradients by hand after each backward, as
:mod:`xfit.prior.train` does, and average the batch-norm statistics after each step.

Run folder: ``config.json``, ``log.jsonl`` (one JSON line per ``log_every`` steps),
``state.safetensors`` (resume), ``baseline.safetensors`` (the usable network, refreshed at each
checkpoint; :func:`xfit.baselines.registry.load_model`), ``cache/``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..checkpoint import file_sha256
from ..devices import AMP_CHOICES
from ..distributed import all_reduce_grads, broadcast_module, init_distributed, rank_world
from ..errors import CheckpointError, InputError
from ..io import hu_to_mu, portable_path, read_sidecar, write_sidecar
from ..levels import format_levels
from ..prior.checkpoint import flatten_optimizer, load_training_state, restore_optimizer, save_training_state
from ..prior.config import unit_to_hu
from ..prior.data import MAX_OUTSIDE, DataSettings, load_training_set
from ..prior.datasets import find_cases
from ..prior.train import amp_enabled as prior_amp_enabled
from ..projector import project
from ..training import (
    add_run_arguments,
    check_crops,
    check_losses,
    check_run_folder,
    levels_arg,
    prune_empty,
    require_run_config,
    rng_state_tensors,
    skip_lines,
    trim_log,
    write_run_config,
    writer_lock,
)
from . import ear, igcn, transvert, x2ct, xctrsnet
from .common import ADVERSARIAL, BaselineConfig, Lifter, cube_affine, footprints, load_config, save_model
from .registry import Baseline, build_model, load_model

STATE_FILE = "state.safetensors"
MODEL_FILE = "baseline.safetensors"
#: Where a fine-tuning run records the network it started from (``--init-from``).
INIT_FILE = "init_from.json"
STARTED_MARKERS = (STATE_FILE, MODEL_FILE, "log.jsonl")
#: Whether ``amp="auto"`` uses bfloat16 autocast on the CPU: ``bench/baselines.py`` measured
#: training 1.8-2.0x faster with it on this 2-core CPU for every method (docs/baselines.md).
CPU_BF16_AUTO = True


def amp_enabled(amp: str, device: torch.device) -> bool:
    """Resolve ``amp`` for a baseline: :func:`xfit.prior.train.amp_enabled` with
    :data:`CPU_BF16_AUTO` (bf16 measured faster for every baseline on this CPU)."""
    return prior_amp_enabled(amp, device, CPU_BF16_AUTO)


def default_weights(method: str) -> dict[str, float]:
    """The paper's loss weights of a method."""
    if method == "ear":
        return ear.default_weights()
    if method == "transvert":
        return transvert.default_weights()
    if method == "xctrsnet":
        return xctrsnet.default_weights()
    if method == "igcn":
        return igcn.default_weights()
    return x2ct.default_weights(method)


#: IGCN's template mesh (vertices, faces): data the network deforms, not its architecture; its
#: sizes are the training crops'.
MESH_BUFFERS = ("template", "faces")


def load_start_network(path: str | Path, cfg: BaselineConfig) -> Baseline:
    """The network a fine-tuning run starts from (``--init-from``): a checkpoint of ``cfg``'s
    method whose cube (resolution, spacing, HU window) and architecture are ``cfg``'s.

    Raises:
        CheckpointError: a missing, foreign or corrupt checkpoint, or one of another method.
        InputError: another cube or architecture (the message names what differs).
    """
    start = load_model(path, cfg.method)
    for key in ("resolution", "spacing_mm", "hu_window"):
        mine, theirs = getattr(cfg, key), getattr(start.config, key)
        if [float(x) for x in np.atleast_1d(mine)] != [float(x) for x in np.atleast_1d(theirs)]:
            raise InputError(f"--init-from {path}: its {key} is {theirs}, this config's {mine}")
    want = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items() if k not in MESH_BUFFERS}
    have = {k: tuple(v.shape) for k, v in start.model.state_dict().items() if k not in MESH_BUFFERS}
    if want != have:
        raise InputError(f"--init-from {path}: its architecture (arch widths) is not this config's")
    return start


def start_record(start: Baseline) -> dict[str, Any]:
    """What ``init_from.json`` and the training summary say about the start network: its file,
    SHA-256 and the images it had been trained on."""
    path = Path(start.path) if start.path is not None else None
    digest = file_sha256(path) if path is not None and path.is_file() else None
    return {
        "path": portable_path(path) if path is not None else None,
        "sha256": digest,
        "images": (start.meta.get("training") or {}).get("images"),
    }


def data_settings(cfg: BaselineConfig, levels=None, max_outside: float = MAX_OUTSIDE) -> DataSettings:
    """The prior's crop settings for a baseline config."""
    return DataSettings(cfg.resolution, cfg.spacing_mm, tuple(cfg.hu_window), levels_arg(levels), max_outside)


class BaselineTrainer:
    """Networks, optimisers and random stream of one training process."""

    def __init__(
        self,
        cfg: BaselineConfig,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world: int = 1,
        amp: str = "off",
        cache_dir: Path | None = None,
    ) -> None:
        self.cfg, self.device, self.rank, self.world = cfg, torch.device(device), rank, world
        self.cache_dir = cache_dir
        self._outside: torch.Tensor | None = None
        t = cfg.training
        torch.manual_seed(t.seed)
        self.G = build_model(cfg).to(self.device).train()
        self.D = (
            x2ct.PatchDiscriminator3D.from_config(cfg).to(self.device).train() if cfg.method in ADVERSARIAL else None
        )
        for m in self.modules().values():
            broadcast_module(m)
        betas = tuple(float(b) for b in t.betas)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.lr, betas=betas, weight_decay=t.weight_decay)
        self.opt_d = None if self.D is None else torch.optim.Adam(self.D.parameters(), lr=t.d_lr, betas=betas)
        self.weights = {**default_weights(cfg.method), **{k: float(v) for k, v in t.weights.items()}}
        self.gen = torch.Generator().manual_seed(t.seed * 1000 + rank)
        torch.manual_seed(t.seed * 1000 + rank)
        self.step = 0
        self.amp = amp_enabled(amp, self.device)
        self.affine = torch.as_tensor(cube_affine(cfg.resolution, cfg.spacing_mm), dtype=torch.float32)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"G": self.G} if self.D is None else {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_g": self.opt_g} if self.opt_d is None else {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def lr_at(self, step: int) -> float:
        """Learning rate of ``step`` (0-based): constant, or linear warm-up then cosine."""
        t = self.cfg.training
        if t.warmup_steps and step < t.warmup_steps:
            return t.lr * (step + 1) / t.warmup_steps
        if t.schedule == "constant":
            return t.lr
        span = max(t.steps - t.warmup_steps, 1)
        return 0.5 * t.lr * (1 + math.cos(math.pi * min((step - t.warmup_steps) / span, 1.0)))

    # -- data

    def draw_views(self, n: int) -> list[list]:
        """Per example, the config's views with jittered angles (from the trainer's stream)."""
        vc = self.cfg.views
        jit = torch.tensor(vc.jitters(), dtype=torch.float64)
        out = []
        for _ in range(n):
            if bool((jit > 0).any()):
                d = (torch.rand(len(vc.angles_deg), generator=self.gen, dtype=torch.float64) * 2 - 1) * jit
                out.append(vc.views([a + float(x) for a, x in zip(vc.angles_deg, d)]))
            else:
                out.append(vc.views())
        return out

    def make_inputs(self, crops: torch.Tensor) -> tuple[torch.Tensor, Lifter, torch.Tensor, torch.Tensor]:
        """Crops ``[B, 2, R, R, R]`` (unit intensity, label) -> footprints, lifter, target, label."""
        crops = crops.float()
        target, label = crops[:, :1].to(self.device), crops[:, 1:2].to(self.device)
        views = self.draw_views(crops.shape[0])
        mu = hu_to_mu(unit_to_hu(crops[:, :1], tuple(self.cfg.hu_window)))
        with torch.no_grad():
            images = torch.cat([project(mu[b : b + 1], self.affine, views[b]) for b in range(crops.shape[0])])
        if self.cfg.whole_body.probability > 0:
            images = self.with_outside(images)
        if self.cfg.style.probability > 0:
            images = self.styled(images, views)
        x = footprints(images, views, (0.0, 0.0, 0.0), self.cfg.fov_mm, self.cfg.resolution).to(self.device)
        return x, Lifter(views, (0.0, 0.0, 0.0), self.cfg.fov_mm), target, label

    def outside_bank(self, progress: bool = False) -> torch.Tensor:
        """The run's whole-torso outside images ``[count, V, rows, cols]`` of the config's views
        (:func:`xfit.baselines.wholebody.outside_bank`, cached in ``cache_dir``), made once."""
        if self._outside is None:
            from .wholebody import outside_bank

            wb, cfg = self.cfg.whole_body, self.cfg
            self._outside = outside_bank(
                cfg.resolution,
                cfg.spacing_mm,
                wb.fov_mm,
                wb.seed,
                wb.count,
                cfg.views.views(),
                cache_dir=self.cache_dir,
                progress=progress,
            )
        return self._outside

    def with_outside(self, images: torch.Tensor) -> torch.Tensor:
        """Line integrals ``[B, V, R, C]`` -> the same, each example with probability
        ``whole_body.probability`` plus the outside images of a torso drawn from the bank (draws
        from the trainer's stream, so a resumed run repeats them). The bank holds the config's
        nominal views; with angle jitter the torso is that of the nominal angle."""
        bank = self.outside_bank()
        out = images.clone()
        for b in range(images.shape[0]):
            use, u = torch.rand(2, generator=self.gen, dtype=torch.float64).tolist()
            if use < self.cfg.whole_body.probability:
                out[b] += bank[min(int(u * len(bank)), len(bank) - 1)].to(out)
        return out

    def styled(self, images: torch.Tensor, views: list[list]) -> torch.Tensor:
        """Line integrals ``[B, V, R, C]`` -> the same, each example with probability
        ``style.probability`` replaced by its clinical-style radiographs at a random strength
        (:class:`~xfit.baselines.common.StyleConfig`; draws from the trainer's stream, noise seeded
        by the training seed, rank, step, example and view, so a resumed run repeats them)."""
        from ..radiograph import PRESETS, preset_for, radiograph

        st = self.cfg.style
        out = images.clone()
        for b in range(images.shape[0]):
            use, u = torch.rand(2, generator=self.gen, dtype=torch.float64).tolist()
            if use >= st.probability:
                continue
            strength = st.min_strength + u * (st.max_strength - st.min_strength)
            for v, view in enumerate(views[b]):
                style = dataclasses.replace(PRESETS[preset_for(view)], strength=strength)
                rad = radiograph(
                    images[b, v].double().cpu().numpy(),
                    view,
                    style,
                    seed=(self.cfg.training.seed, self.rank, self.step, b, v),
                )
                out[b, v] = torch.from_numpy(rad.image).to(out)
        return out

    # -- one step

    def _forward(self, x: torch.Tensor, lifter: Lifter, *extra: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.G(x, lifter, *extra)
        return {k: v.float() for k, v in out.items()}

    def annotation(self, label: torch.Tensor, lifter: Lifter) -> torch.Tensor:
        """TransVert's annotation discs ``[B, V, R, R]`` around the projected centroids of the
        crops' vertebra masks (``label [B, 1, R, R, R]``)."""
        cfg = self.cfg
        pts = transvert.mask_centroids(label, cfg.spacing_mm)
        return transvert.annotation_points(pts, lifter.views, (0.0, 0.0, 0.0), cfg.fov_mm, cfg.resolution).to(
            self.device
        )

    def _d(self, v: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.D(v).float()

    def losses(
        self,
        out: dict[str, torch.Tensor],
        target: torch.Tensor,
        label: torch.Tensor,
        d_fake: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The method's loss terms; for TransVert ``target`` is its level-valued voxel map."""
        if self.cfg.method == "ear":
            return ear.losses(out, target, label, self.weights)
        if self.cfg.method == "xctrsnet":
            return xctrsnet.losses(out, target, label, self.weights)
        if self.cfg.method == "transvert":
            return transvert.generator_losses(out["shape"], target, self.weights, d_fake)
        return x2ct.generator_losses(out["volume"], target, self.weights, d_fake)

    def train_step(self, crops: torch.Tensor, levels: torch.Tensor | None = None) -> dict[str, float]:
        """One optimisation step on a batch of crops ``[B, 2, R, R, R]``; returns the loss terms.

        ``levels``: ``[B]`` VerSe values of the crops' vertebrae (TransVert's target; required
        for it, ignored by the others)."""
        lr = self.lr_at(self.step)
        for g in self.opt_g.param_groups:
            g["lr"] = lr
        x, lifter, target, label = self.make_inputs(crops)
        logs: dict[str, float] = {"lr": lr}
        method = self.cfg.method
        if method == "transvert":
            if levels is None or levels.shape != (crops.shape[0],):
                raise InputError(
                    f"transvert needs one level per crop ([{crops.shape[0]}]), got "
                    f"{None if levels is None else list(levels.shape)}"
                )
            target = transvert.shape_target(label, levels)
            out = self._forward(x, lifter, self.annotation(label, lifter))
        elif method == "xctrsnet":
            out = self._forward(x, lifter, target)
        else:
            out = self._forward(x, lifter)
        if method == "igcn":  # surface points of the masks, drawn from the trainer's stream
            n_pts = int({**igcn.DEFAULT_ARCH, **self.cfg.arch}["gt_points"])
            gt_pts, gt_normals = igcn.surface_points(label, self.cfg.spacing_mm, n_pts, self.gen)
        key = "shape" if method == "transvert" else "volume"
        scale = 1.0 / transvert.MAX_LEVEL if method == "transvert" else 1.0
        d_loss = transvert.discriminator_loss if method == "transvert" else x2ct.discriminator_loss
        d_fake = None
        if self.D is not None:
            self.D.requires_grad_(True)
            loss_d = d_loss(self._d(target * scale), self._d(out[key].detach() * scale))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            all_reduce_grads(self.D)
            self.opt_d.step()
            logs["loss_d"] = loss_d.item()
            self.D.requires_grad_(False)
            d_fake = self._d(out[key] * scale)
        if method == "igcn":
            terms = igcn.losses(out, gt_pts, gt_normals, self.G, lifter, self.weights)
        else:
            terms = self.losses(out, target, label, d_fake)
        self.opt_g.zero_grad(set_to_none=True)
        terms["total"].backward()
        all_reduce_grads(self.G)
        self.opt_g.step()
        self._sync_buffers()
        self.step += 1
        logs.update({f"loss_{k}" if k != "total" else "loss": v.item() for k, v in terms.items()})
        return logs

    def _sync_buffers(self) -> None:
        if self.world == 1:
            return
        for m in self.modules().values():
            for b in m.buffers():
                if b.is_floating_point():
                    dist.all_reduce(b)
                    b /= self.world

    # -- state

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to continue bit-for-bit, as (tensors, JSON metadata)."""
        tensors: dict[str, torch.Tensor] = {}
        for name, module in self.modules().items():
            for k, v in module.state_dict().items():
                tensors[f"{name}.{k}"] = v.detach().cpu().contiguous()
        meta: dict[str, Any] = {
            "step": self.step,
            "world_size": self.world,
            "method": self.cfg.method,
            "config": self.cfg.to_dict(),
        }
        for name, opt in self.optimizers().items():
            ts, m = flatten_optimizer(opt, name)
            tensors.update(ts)
            meta[name] = m
        tensors.update(rng_state_tensors(self.gen, self.world))
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore :meth:`state`.

        Raises:
            CheckpointError: a state of another method or architecture.
            InputError: another number of processes.
        """
        if meta.get("method") != self.cfg.method:
            raise CheckpointError(f"the training state is of method {meta.get('method')!r}, not {self.cfg.method!r}")
        if meta.get("world_size", 1) != self.world:
            raise InputError(
                f"the run was trained with {meta.get('world_size')} process(es); resume with the same number"
            )
        try:
            for name, module in self.modules().items():
                head = f"{name}."
                module.load_state_dict(
                    {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}, strict=True
                )
        except RuntimeError as exc:
            raise CheckpointError(
                f"the training state does not match this architecture ({str(exc).splitlines()[0]})"
            ) from exc
        for name, opt in self.optimizers().items():
            restore_optimizer(opt, tensors, meta[name])
        self.gen.set_state(tensors[f"rng.{self.rank}.gen"])
        torch.set_rng_state(tensors[f"rng.{self.rank}.global"])
        self.step = int(meta["step"])


# ----------------------------------------------------------------------------------------------
# Run


def run_started(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a started run (state, network or log)."""
    return any((Path(run_dir) / m).exists() for m in STARTED_MARKERS)


def _clear_run(run_dir: Path) -> None:
    for name in (*STARTED_MARKERS, "config.json"):
        (run_dir / name).unlink(missing_ok=True)


def same_config(saved: dict, cfg: BaselineConfig) -> bool:
    try:
        return BaselineConfig.from_dict(saved).to_dict() == cfg.to_dict()
    except InputError:
        return False


def check_training(cfg: BaselineConfig) -> None:
    """The numbers of ``cfg.training`` that torch would take badly or refuse only after the crops
    are prepared: ``seed`` in [0, 2^32 - 1], Adam ``betas`` two numbers in [0, 1), ``lr``,
    ``d_lr`` and ``weight_decay`` >= 0.

    Raises:
        InputError: the first bad value.
    """
    t = cfg.training
    if not 0 <= t.seed <= 2**32 - 1:
        raise InputError(f"training.seed must be in [0, {2**32 - 1}], got {t.seed}")
    if len(t.betas) != 2 or not all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in t.betas
    ):
        raise InputError(f"training.betas must be two numbers in [0, 1), got {t.betas}")
    for key in ("lr", "d_lr", "weight_decay"):
        if not getattr(t, key) >= 0:
            raise InputError(f"training.{key} must be >= 0, got {getattr(t, key)}")


def train(
    cfg: BaselineConfig,
    ct_dir: str | Path,
    run_dir: str | Path,
    *,
    masks_dir=None,
    layout=None,
    class_map=None,
    levels=None,
    max_outside: float = MAX_OUTSIDE,
    workers: int | None = None,
    amp: str = "auto",
    resume: bool = False,
    force: bool = False,
    device: str | torch.device | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    init_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train (or resume) a baseline on a CT collection; returns the training summary.

    Args:
        cfg: the baseline config (method, cube, widths, views, training).
        ct_dir, masks_dir, layout, class_map, levels, max_outside, workers: the collection and
            its crops, as for :func:`xfit.prior.train.train`.
        amp: bfloat16 autocast of the networks (``auto``: see :func:`amp_enabled`; ``bf16``;
            ``off``). Not part of the config: a run may resume with another choice.
        resume: continue bit-for-bit from ``run_dir/state.safetensors``.
        force: restart in a folder holding a started run (the data cache is kept).
        max_steps: stop after this many total steps (default ``training.steps``).
        init_from: fine-tune: start the network from this checkpoint of the same method and
            architecture (a ``baseline.safetensors``, e.g. a shipped one) instead of random
            weights; the optimiser and the step count start afresh. Not with ``resume``.
    Raises:
        InputError, OutputExistsError, CheckpointError: before any training work (a state or
        crops holding NaN or Inf included). XfitError: a loss that is not finite stops the run
        at once (:func:`xfit.training.check_losses`).
    """
    if amp not in AMP_CHOICES:
        raise InputError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    check_training(cfg)
    created = not Path(run_dir).exists()
    try:
        with writer_lock(run_dir):  # a second trainer on this folder is refused
            return _train(
                cfg,
                ct_dir,
                Path(run_dir),
                masks_dir=masks_dir,
                layout=layout,
                class_map=class_map,
                levels=levels,
                max_outside=max_outside,
                workers=workers,
                amp=amp,
                resume=resume,
                force=force,
                device=device,
                max_steps=max_steps,
                progress=progress,
                init_from=init_from,
            )
    except BaseException:
        if rank_world()[0] == 0 and not run_started(run_dir):
            prune_empty(Path(run_dir), created)
        raise


def _train(
    cfg,
    ct_dir,
    run_dir: Path,
    *,
    masks_dir,
    layout,
    class_map,
    levels,
    max_outside,
    workers,
    amp,
    resume,
    force,
    device,
    max_steps,
    progress,
    init_from=None,
) -> dict[str, Any]:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rank, world = init_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    state_path = run_dir / STATE_FILE
    if init_from is not None and resume:
        raise InputError("--init-from starts a new run from a network, --resume continues a run: give one")
    start = load_start_network(init_from, cfg) if init_from is not None else None
    find_cases(ct_dir, layout, masks_dir, class_map)  # a bad folder fails before anything is created
    settings = data_settings(cfg, levels, max_outside)
    check_run_folder(
        run_dir,
        resume=resume,
        force=force,
        rank=rank,
        started=run_started,
        config_matches=lambda saved: same_config(saved, cfg),
        clear=_clear_run,
    )
    if world > 1:
        dist.barrier()
    load = dict(layout=layout, masks_dir=masks_dir, class_map=class_map, cache_dir=run_dir / "cache", workers=workers)
    if rank == 0:
        data = load_training_set(ct_dir, settings, progress=progress, **load)
    if world > 1:
        dist.barrier()
    if rank != 0:
        data = load_training_set(ct_dir, settings, progress=False, **load)
    check_crops(data.volumes)
    trainer = BaselineTrainer(cfg, device, rank, world, amp=amp, cache_dir=run_dir / "cache")
    if cfg.whole_body.probability > 0:  # made by the first process, read by the others
        if rank == 0:
            trainer.outside_bank(progress=progress)
        if world > 1:
            dist.barrier()
        trainer.outside_bank()
    if cfg.method == "igcn" and start is not None:  # a fine-tune keeps its start network's mesh
        trainer.G.set_template(start.model.template.float(), start.model.faces.long())
    elif cfg.method == "igcn":  # the template mesh: the mean label of the crops (the same on every rank)
        trainer.G.set_template(*igcn.template_from_crops(data.volumes, cfg))
    if start is not None:
        trainer.G.load_state_dict(start.model.state_dict())
    if resume:
        tensors, meta = load_training_state(state_path)
        if cfg.method == "igcn" and "G.template" in tensors:  # the run's mesh (a fine-tune's is its start's)
            trainer.G.set_template(tensors["G.template"].float(), tensors["G.faces"].long())
        trainer.load_state(tensors, meta)
        if rank == 0:  # drop lines logged after the checkpoint
            trim_log(run_dir / "log.jsonl", trainer.step)
            if not (run_dir / "config.json").exists():  # resumed with --config: the state matched it
                write_run_config(run_dir, cfg)
    elif rank == 0:
        write_run_config(run_dir, cfg)
    t = cfg.training
    batch = int(t.batch_size)
    total = max_steps if max_steps is not None else int(t.steps)
    summary: dict[str, Any] = {
        "method": cfg.method,
        "examples": len(data.sources),
        "levels": data.level_counts(),
        "levels_text": format_levels(sorted(set(data.levels))),
        "layout": data.layout,
        "skipped_count": len(data.skipped),
        "skipped": skip_lines(data.skipped),
        "world_size": world,
        "device": str(device),
        "amp_bf16": trainer.amp,
        "views": cfg.to_dict()["views"],
    }
    if start is not None:
        summary["init_from"] = start_record(start)
        if rank == 0:
            write_sidecar(run_dir / INIT_FILE, summary["init_from"], force=True)
    elif resume and (run_dir / INIT_FILE).is_file():
        summary["init_from"] = read_sidecar(run_dir / INIT_FILE)
    from tqdm.auto import tqdm

    log_path = run_dir / "log.jsonl"
    bar = tqdm(
        total=total, initial=trainer.step, desc=f"train-baseline {cfg.method}", disable=not (progress and rank == 0)
    )
    t0, step0, seconds0 = time.perf_counter(), trainer.step, 0.0
    volumes = data.volumes
    levels_all = torch.tensor([int(x) for x in data.levels], dtype=torch.float32)
    try:  # the bar ends its line before an error is printed
        while trainer.step < total:
            idx = torch.randint(len(volumes), (batch,), generator=trainer.gen)
            logs = trainer.train_step(volumes[idx], levels_all[idx])
            step = trainer.step
            check_losses(logs, step, device)
            elapsed = time.perf_counter() - t0
            ips = (step - step0) * batch * world / max(elapsed, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", img_s=f"{ips:.2f}")
            if rank == 0 and (step % t.log_every == 0 or step == total):
                with open(log_path, "a") as fh:
                    fh.write(
                        json.dumps(
                            {
                                "step": step,
                                "images": step * batch * world,
                                "img_per_s": ips,
                                **logs,
                                "time": time.time(),
                            }
                        )
                        + "\n"
                    )
            if step % t.checkpoint_every == 0 or step == total:
                tensors, meta = trainer.state()  # collective with several processes
                if rank == 0:
                    summary.update(
                        {
                            "steps": step,
                            "images": step * batch * world,
                            "img_per_s": ips,
                            "seconds_this_session": seconds0 + elapsed,
                        }
                    )
                    save_model(run_dir / MODEL_FILE, trainer.G, cfg, summary, force=True)
                    save_training_state(state_path, tensors, meta, force=True)
    finally:
        bar.close()
    if world > 1:
        dist.barrier()
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m xfit.baselines.train NAME CT_DIR -o RUN`` (and torchrun); errors end as ``xfit``'s do."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m xfit.baselines.train", description=__doc__.splitlines()[0])
    p.add_argument("method")
    p.add_argument("ct_dir")
    add_run_arguments(p)
    p.add_argument("--init-from", default=None, help="fine-tune from this checkpoint of the same method")
    a = p.parse_args(argv)

    def body() -> None:
        cfg = resolve_config(a.method, a.config, a.out, a.resume)
        try:
            train(
                cfg,
                a.ct_dir,
                a.out,
                masks_dir=a.masks,
                layout=a.layout,
                class_map=a.class_map,
                levels=a.levels,
                workers=a.workers,
                amp=a.amp,
                resume=a.resume,
                force=a.force,
                device=a.device,
                max_steps=a.max_steps,
                init_from=a.init_from,
            )
        finally:
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()

    from ..console import run_entry_point

    run_entry_point(body, "python -m xfit.baselines.train")


def resolve_config(method: str, config: str | None, run_dir: str | Path, resume: bool) -> BaselineConfig:
    """The config of a run: ``config`` (name or file), else the run's own with ``resume``, else
    ``xfit/configs/baseline-<method>.yaml``; its method must be ``method``."""
    from .common import check_method

    check_method(method)
    saved = Path(run_dir) / "config.json"
    if config is not None:
        cfg = load_config(config)
    elif resume and saved.is_file():
        try:
            cfg = BaselineConfig.from_dict(json.loads(saved.read_text()), where=str(saved))
        except ValueError as exc:
            raise InputError(f"{saved}: cannot read the run's config: {exc}") from exc
        except RecursionError:
            raise InputError(f"{saved}: cannot read the run's config: nested too deeply") from None
    else:
        if resume:
            require_run_config(run_dir)
        cfg = load_config(method)
    if cfg.method != method:
        raise InputError(f"the config is for method {cfg.method!r}, not {method!r}")
    check_training(cfg)
    return cfg


if __name__ == "__main__":
    main()
