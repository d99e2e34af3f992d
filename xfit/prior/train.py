"""Train the 3D StyleGAN2 prior: ``xfit train-prior CT_DIR -o RUN`` or
``torchrun --nproc-per-node N -m xfit.prior.train CT_DIR -o RUN``.

StyleGAN2 recipe in 3D: non-saturating logistic loss, lazy R1 on reals, style mixing, an EMA
generator and differentiable augmentation of reals and fakes alike (left-right flip, small
rotation about the spine axis, shift, intensity gain/offset) for small data sets. Mixed precision
(bfloat16 autocast) on CUDA. Several processes train with DistributedDataParallel semantics:
gradients are all-reduced by hand after each backward (as stylegan2-ada does), so lazy R1 and
alternating G/D steps stay simple.

Every random draw comes from one ``torch.Generator`` per process whose state is checkpointed with
the weights, optimizers and the global torch RNG, so ``--resume`` continues bit-for-bit.

Guards: a training state, snapshot or crop cache holding NaN or Inf is refused; a loss that is not
finite stops training at the step it appears (N = 1, :func:`check_losses`), before that step's
checkpoint; a torn last line of ``log.jsonl`` (a crash while appending) is dropped with a warning.

Run folder: ``config.json``, ``log.jsonl``, ``state.safetensors`` (resume), ``prior.safetensors``
(the usable prior, refreshed at each checkpoint), ``snapshots/prior-stepNNNNNN.safetensors``
(half-precision copies, one per checkpoint), ``samples/stepNNNNNN.png``, ``cache/``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..console import run_entry_point
from ..devices import amp_enabled as devices_amp_enabled
from ..distributed import all_reduce_grads, broadcast_module, init_distributed, rank_world
from ..errors import CheckpointError, InputError
from ..levels import format_levels
from ..training import (
    STATE_FILE,
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
from .checkpoint import (
    compute_w_stats,
    flatten_optimizer,
    load_snapshot,
    load_training_state,
    restore_optimizer,
    save_prior,
    save_training_state,
    snapshot_config,
)
from .config import AugmentConfig, PriorConfig, TrainingConfig, load_config, unit_to_hu
from .data import MAX_OUTSIDE, DataSettings, load_training_set
from .datasets import find_cases
from .networks import build_discriminator, build_generator
from .snapshot import PRIOR_FILE, snapshot_cli, snapshot_run  # noqa: F401 (snapshot_run re-exported)
from .snapshot import run_config as _run_config

# ----------------------------------------------------------------------------- augmentation


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Differentiable augmentation applied identically in kind to reals and fakes.

    Args:
        x: ``[B, 2, R, R, R]`` (intensity, label) in [-1, 1]; voxel axes (i, j, k) = (x, y, z).
        cfg: ``flip_lr`` (mirror half of the batch left-right), ``rotate_deg`` (max |angle| about
            z), ``shift_vox`` (max |shift| per axis), ``intensity`` (max gain and offset change
            of channel 0).
    Returns:
        augmented ``[B, 2, R, R, R]``.
    """
    b, dev = x.shape[0], x.device
    rnd = lambda *shape: torch.rand(*shape, generator=gen).to(dev)  # noqa: E731
    if cfg.flip_lr:
        flip = rnd(b) < 0.5
        x = torch.where(flip[:, None, None, None, None], x.flip(2), x)
    rot, shift = float(cfg.rotate_deg), float(cfg.shift_vox)
    if rot > 0 or shift > 0:
        ang = torch.deg2rad((rnd(b) * 2 - 1) * rot)
        res = x.shape[-1]
        t = (rnd(b, 3) * 2 - 1) * shift * 2 / max(res - 1, 1)
        c, s = torch.cos(ang), torch.sin(ang)
        theta = torch.zeros(b, 3, 4, device=dev, dtype=x.dtype)
        # affine_grid's (x, y, z) index the last three dims in reverse order: (k, j, i);
        # rotation about world z = mixing of the i and j axes = grid components 2 and 1.
        theta[:, 0, 0] = 1
        theta[:, 1, 1], theta[:, 1, 2] = c, -s
        theta[:, 2, 1], theta[:, 2, 2] = s, c
        theta[:, :, 3] = t.to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        pad = torch.tensor([-1.0, -1.0], device=dev, dtype=x.dtype).view(1, 2, 1, 1, 1)
        x = F.grid_sample(x - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=True) + pad
    jitter = float(cfg.intensity)
    if jitter > 0:
        g = 1 + (rnd(b) * 2 - 1) * jitter
        o = (rnd(b) * 2 - 1) * jitter
        ch0 = (x[:, :1] + 1) * g.view(b, 1, 1, 1, 1) - 1 + o.view(b, 1, 1, 1, 1)
        x = torch.cat([ch0, x[:, 1:]], 1)
    return x


def to_discriminator(volume: torch.Tensor) -> torch.Tensor:
    """Generator output (intensity, label logit) -> discriminator input in [-1, 1]."""
    return torch.cat([volume[:, :1], torch.tanh(volume[:, 1:2] / 2)], 1)


# ----------------------------------------------------------------------------- training


#: Whether ``amp="auto"`` uses bfloat16 autocast on the CPU (see bench/train_amp.py and the module
#: docstring for the measurement that decides it).
CPU_BF16_AUTO = False


def amp_enabled(amp: str, device: torch.device, cpu_auto: bool = CPU_BF16_AUTO) -> bool:
    """Resolve ``amp`` (``auto`` | ``bf16`` | ``off``) for the prior's training:
    :func:`xfit.devices.amp_enabled` with ``cpu_auto`` (default :data:`CPU_BF16_AUTO`, measured
    for the prior) on the CPU."""
    return devices_amp_enabled(amp, device, cpu_auto)


def lr_factor(t: TrainingConfig, kimg: float) -> float:
    """Learning-rate multiplier at ``kimg`` thousand images: 1, then a half-cosine fall to
    ``t.lr_final`` over ``t.lr_decay_kimg`` (none when it is ``None``)."""
    if t.lr_decay_kimg is None:
        return 1.0
    start, end = t.lr_decay_kimg
    frac = min(max((kimg - start) / (end - start), 0.0), 1.0)
    return t.lr_final + (1.0 - t.lr_final) * 0.5 * (1.0 + math.cos(math.pi * frac))


class Trainer:
    """Holds networks, optimizers and RNG of one training process."""

    def __init__(
        self, cfg: PriorConfig, device: torch.device, rank: int = 0, world: int = 1, amp: str = "auto"
    ) -> None:
        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        t = cfg.training
        torch.manual_seed(t.seed)
        self.G = build_generator(cfg).to(device)
        self.D = build_discriminator(cfg).to(device)
        broadcast_module(self.G)
        broadcast_module(self.D)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        c = t.r1_interval / (t.r1_interval + 1)
        betas = tuple(t.betas)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.g_lr, betas=betas, eps=1e-8)
        self.opt_d = torch.optim.Adam(
            self.D.parameters(), lr=t.d_lr * c, betas=(betas[0] ** c, betas[1] ** c), eps=1e-8
        )
        self.base_lr = {"g": t.g_lr, "d": t.d_lr * c}
        self.gen = torch.Generator().manual_seed(t.seed * 1000 + rank)
        torch.manual_seed(t.seed * 1000 + rank)
        self.step = 0
        self.amp = amp_enabled(amp, device)

    # -- pieces of one step

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.z_dim, generator=self.gen).to(self.device)

    def _mapped(self, n: int) -> torch.Tensor:
        """W+ codes ``[n, num_ws, w_dim]`` with style mixing."""
        G = self.G
        ws = G.mapping(self._z(n))
        if torch.rand((), generator=self.gen).item() < self.cfg.training.style_mix_prob:
            cutoff = int(torch.randint(1, G.num_ws, (), generator=self.gen))
            ws2 = G.mapping(self._z(n))
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], 1)
        return ws

    def _fake(self, n: int) -> torch.Tensor:
        ws = self._mapped(n)
        noise = [torch.randn(n, *s[1:], generator=self.gen).to(self.device) for s in self.G.synthesis.noise_shapes()]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.G.synthesis(ws, noise=noise)

    def _d(self, x: torch.Tensor) -> torch.Tensor:
        x = augment(x, self.cfg.training.augment, self.gen)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.D(x).float()

    def train_step(self, reals: torch.Tensor) -> dict[str, float]:
        """One D step (with lazy R1) and one G step on a batch of reals ``[B, 2, R, R, R]``."""
        t, b = self.cfg.training, reals.shape[0]
        logs: dict[str, float] = {}
        factor = lr_factor(t, self.step * b * self.world / 1000)
        for key, opt in (("g", self.opt_g), ("d", self.opt_d)):
            for group in opt.param_groups:
                group["lr"] = self.base_lr[key] * factor
        if t.lr_decay_kimg is not None:
            logs["lr_factor"] = factor
        # --- discriminator
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        with torch.no_grad():
            fake = to_discriminator(self._fake(b).float())
        loss_d = F.softplus(self._d(fake)).mean() + F.softplus(-self._d(reals)).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        logs["loss_d"] = loss_d.item()
        if t.r1_gamma > 0 and self.step % t.r1_interval == 0:
            real = reals.detach().requires_grad_(True)
            score = self._d(real)
            (grad,) = torch.autograd.grad(score.sum(), real, create_graph=True)
            r1 = grad.square().flatten(1).sum(1).mean()
            (r1 * (t.r1_gamma / 2) * t.r1_interval).backward()
            logs["r1"] = r1.item()
        all_reduce_grads(self.D)
        self.opt_d.step()
        # --- generator
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        loss_g = F.softplus(-self._d(to_discriminator(self._fake(b).float()))).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        all_reduce_grads(self.G)
        self.opt_g.step()
        logs["loss_g"] = loss_g.item()
        if self.world > 1:  # keep the tracked mean w identical on every rank
            dist.all_reduce(self.G.mapping.w_avg)
            self.G.mapping.w_avg /= self.world
        # --- EMA
        ema_nimg = t.ema_half_life_kimg * 1000
        if t.ema_rampup is not None:  # short half-life early on, as in stylegan2-ada
            ema_nimg = min(ema_nimg, self.step * b * self.world * t.ema_rampup)
        beta = 0.5 ** (b * self.world / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.lerp_(p, 1 - beta)
            for b_ema, b_ in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b_)
        self.step += 1
        return logs

    # -- state

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to continue bit-for-bit, as (tensors, JSON metadata)."""
        tensors: dict[str, torch.Tensor] = {}
        for name, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            for k, v in module.state_dict().items():
                tensors[f"{name}.{k}"] = v.detach().cpu().contiguous()
        meta: dict[str, Any] = {"step": self.step, "world_size": self.world}
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            ts, m = flatten_optimizer(opt)
            tensors.update({f"{name}.{k}": v for k, v in ts.items()})
            meta[name] = m
        tensors.update(rng_state_tensors(self.gen, self.world))
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if meta.get("world_size", 1) != self.world:
            raise InputError(
                f"the run was trained with {meta.get('world_size')} process(es); resume with the same number"
            )
        for name, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            prefix = f"{name}."
            sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            module.load_state_dict(sd, strict=True)
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            prefix = f"{name}."
            restore_optimizer(
                opt, {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, meta[name]
            )
        self.gen.set_state(tensors[f"rng.{self.rank}.gen"])
        torch.set_rng_state(tensors[f"rng.{self.rank}.global"])
        self.step = int(meta["step"])

    def load_snapshot(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Continue from a compact snapshot (:func:`xfit.prior.checkpoint.save_snapshot`): weights
        and step; fresh Adam moments; random streams reseeded from the seed, rank and step."""
        for name, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            prefix = f"{name}."
            sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            module.load_state_dict(sd, strict=True)
        self.step = int(meta["step"])
        seed = self.cfg.training.seed * 1000 + self.rank + 7919 * (self.step + 1)
        self.gen.manual_seed(seed)
        torch.manual_seed(seed)


def volume_montage(unit_volumes, hu_window: Sequence[float], path: str | Path, *, spacing_mm: float) -> Path:
    """Montage of generator outputs ``[B, 2, R, R, R]`` (intensity in [-1, 1], label logit) through
    :func:`xfit.preview.volumes_montage`."""
    from ..preview import volumes_montage

    vol = (
        unit_volumes.detach().float().cpu() if isinstance(unit_volumes, torch.Tensor) else torch.as_tensor(unit_volumes)
    )
    hu = unit_to_hu(vol[:, 0].clamp(-1, 1), tuple(hu_window)).numpy()
    labels = (vol[:, 1] > 0).numpy()
    return volumes_montage(list(hu), path, spacing_mm=spacing_mm, labels=list(labels))


def _write_samples(trainer: Trainer, path: Path, n: int = 4) -> None:
    """PNG montage of EMA samples from fixed latents (slices and DRRs)."""
    g = torch.Generator().manual_seed(1234)
    z = torch.randn(n, trainer.cfg.z_dim, generator=g).to(trainer.device)
    with torch.no_grad():
        ws = trainer.G_ema.mapping(z)
        vol = trainer.G_ema.synthesis(ws, noise_mode="const").float().cpu()
    volume_montage(vol, trainer.cfg.hu_window, path, spacing_mm=trainer.cfg.spacing_mm)


def _export_prior(trainer: Trainer, run_dir: Path, summary: dict, n_w: int) -> None:
    """Write ``prior.safetensors`` and a half-precision snapshot ``snapshots/prior-stepNNNNNN``
    (for ``evaluate-prior`` curves over training)."""
    w_mean, w_std = compute_w_stats(trainer.G_ema, n=n_w, seed=0)
    args = (trainer.G_ema, w_mean, w_std, trainer.cfg, summary, trainer.cfg.label_names)
    save_prior(run_dir / PRIOR_FILE, *args, force=True)
    save_prior(run_dir / "snapshots" / f"prior-step{trainer.step:06d}.safetensors", *args, force=True, half=True)


#: Files and folders of a run that mean training has started (a folder holding only others, e.g.
#: after a start that failed while preparing the data, may be reused without ``--force``).
STARTED_MARKERS = (STATE_FILE, PRIOR_FILE, "log.jsonl")


def run_started(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a started run (a training state, a prior or a log)."""
    run_dir = Path(run_dir)
    return any((run_dir / m).exists() for m in STARTED_MARKERS)


def _clear_run(run_dir: Path) -> None:
    """Remove what a previous run wrote (``--force``), keeping the data cache."""
    import shutil

    for name in (STATE_FILE, PRIOR_FILE, "log.jsonl", "config.json"):
        (run_dir / name).unlink(missing_ok=True)
    for sub in ("samples", "snapshots"):
        if (run_dir / sub).is_dir():
            shutil.rmtree(run_dir / sub)


#: Training keys a run may change when it continues (``--resume``, ``--resume-from``): how long it
#: runs, its learning-rate decay and how often it writes. Everything else must match.
SCHEDULE_KEYS = ("total_kimg", "lr_decay_kimg", "lr_final", "checkpoint_every", "sample_every", "log_every")


def same_config(saved: dict, cfg: PriorConfig) -> bool:
    """Whether a stored config (``config.json``, snapshot metadata) is ``cfg`` up to the
    :data:`SCHEDULE_KEYS`: compared after parsing, so that a key added to :class:`PriorConfig`
    later (with its default) does not stop an older run from resuming."""
    try:
        parsed = PriorConfig.from_dict(saved)
    except InputError:
        return False

    def core(c: PriorConfig) -> dict:
        d = json.loads(json.dumps(c.to_dict()))
        for key in SCHEDULE_KEYS:
            d["training"].pop(key, None)
        return d

    return core(parsed) == core(cfg)


def data_settings(
    cfg: PriorConfig, levels: str | tuple[int, ...] | list[int] | None = None, max_outside: float = MAX_OUTSIDE
) -> DataSettings:
    """The crop settings of a prior config (``levels``: ``"T10-L5"``, labels, or ``None`` = all).

    The config's legacy ``training.vertebra_labels`` (label values of the old phantom format) is
    not used: crops are chosen by level.
    """
    return DataSettings(cfg.resolution, cfg.spacing_mm, tuple(cfg.hu_window), levels_arg(levels), max_outside)


def train(
    cfg: PriorConfig,
    ct_dir: str | Path,
    run_dir: str | Path,
    *,
    masks_dir: str | Path | None = None,
    layout: str | None = None,
    class_map: str | Path | None = None,
    levels: str | tuple[int, ...] | list[int] | None = None,
    max_outside: float = MAX_OUTSIDE,
    workers: int | None = None,
    amp: str = "auto",
    resume: bool = False,
    resume_from: str | Path | None = None,
    force: bool = False,
    device: str | torch.device | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume training) a prior; returns the training summary.

    Args:
        cfg: prior configuration (architecture, data and training settings).
        ct_dir: CT collection (see :mod:`xfit.prior.datasets` for the layouts).
        run_dir: output folder (see the module docstring).
        masks_dir: folder of masks named like the CTs.
        layout: collection layout (``None``: detected).
        class_map: class map of label maps in another numbering than VerSe's (TotalSegmentator).
        levels: vertebrae to train on (``"T10-L5"``, VerSe labels, or ``None`` for all).
        max_outside: largest fraction of a crop allowed outside its scan.
        workers: data preparation processes (default: one per CPU core).
        amp: bfloat16 autocast of G and D: ``auto`` (CUDA: on; CPU: :data:`CPU_BF16_AUTO`), ``bf16``
            or ``off``. Not part of the config, so a run may resume with another choice.
        resume: continue from ``run_dir/state.safetensors``.
        resume_from: continue from a compact snapshot (:func:`snapshot_run`) in a new run folder:
            weights and step, fresh optimizer moments (not bit-exact; see
            :mod:`xfit.prior.checkpoint`). ``cfg`` must be the snapshot's config.
        force: restart in a folder holding a started run (its log, state, prior, samples and
            snapshots are removed; the data cache is kept).
        max_steps: stop after this many total steps (default: ``total_kimg`` of the config).
    """
    created = not Path(run_dir).exists()
    try:
        with writer_lock(run_dir):  # a second trainer on this folder is refused
            return _train(
                cfg,
                ct_dir,
                run_dir,
                masks_dir=masks_dir,
                layout=layout,
                class_map=class_map,
                levels=levels,
                max_outside=max_outside,
                workers=workers,
                amp=amp,
                resume=resume,
                resume_from=resume_from,
                force=force,
                device=device,
                max_steps=max_steps,
                progress=progress,
            )
    except BaseException:
        if rank_world()[0] == 0 and not run_started(run_dir):
            prune_empty(Path(run_dir), created)  # a start that failed leaves nothing behind
        raise


def _train(
    cfg,
    ct_dir,
    run_dir,
    *,
    masks_dir,
    layout,
    class_map,
    levels,
    max_outside,
    workers,
    amp,
    resume,
    resume_from,
    force,
    device,
    max_steps,
    progress,
) -> dict[str, Any]:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rank, world = init_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    run_dir = Path(run_dir)
    state_path = run_dir / STATE_FILE
    find_cases(ct_dir, layout, masks_dir, class_map)  # fail on a bad folder before creating anything
    settings = data_settings(cfg, levels, max_outside)
    snap = None
    if resume_from is not None:
        if resume:
            raise InputError("--resume continues a run folder, --resume-from a snapshot: give one")
        snap = load_snapshot(resume_from)
        if not same_config(snap[1]["config"], cfg):
            raise InputError(
                f"{resume_from} was trained with another config; resume from it with its own "
                "(the default without --config)"
            )
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
    t = cfg.training
    load = dict(layout=layout, masks_dir=masks_dir, class_map=class_map, cache_dir=run_dir / "cache", workers=workers)
    if rank == 0:  # rank 0 prepares the crops, the others then read its cache
        data = load_training_set(ct_dir, settings, progress=progress, **load)
    if world > 1:
        dist.barrier()
    if rank != 0:
        data = load_training_set(ct_dir, settings, progress=False, **load)
    check_crops(data.volumes)
    if rank == 0:
        (run_dir / "samples").mkdir(exist_ok=True)
        (run_dir / "snapshots").mkdir(exist_ok=True)
    trainer = Trainer(cfg, device, rank, world, amp=amp)
    if snap is not None:
        try:
            trainer.load_snapshot(*snap)
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{resume_from}: does not match this config ({str(exc).splitlines()[0]})") from exc
        if rank == 0:
            write_run_config(run_dir, cfg)
    elif resume:
        tensors, meta = load_training_state(state_path)
        try:
            trainer.load_state(tensors, meta)
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{state_path}: does not match this config ({str(exc).splitlines()[0]})") from exc
        if rank == 0:  # drop lines logged after the checkpoint
            trim_log(run_dir / "log.jsonl", trainer.step)
            write_run_config(run_dir, cfg)  # the config it continues with (its schedule may differ)
    elif rank == 0:
        write_run_config(run_dir, cfg)
    batch = int(t.batch_size)
    total = max_steps if max_steps is not None else math.ceil(t.total_kimg * 1000 / (batch * world))
    counts = data.level_counts()
    summary: dict[str, Any] = {
        "examples": len(data.sources),
        "levels": counts,
        "levels_text": format_levels(sorted(set(data.levels))),
        "layout": data.layout,
        "data_files": len(data.reports),
        "skipped_count": len(data.skipped),
        "skipped": skip_lines(data.skipped),
        "world_size": world,
        "device": str(device),
        "amp_bf16": trainer.amp,
    }
    if snap is not None:
        summary["resumed_from"] = {"snapshot": str(resume_from), "step": snap[1]["step"]}
    from tqdm.auto import tqdm

    log_path = run_dir / "log.jsonl"
    bar = tqdm(total=total, initial=trainer.step, desc="train-prior", disable=not (progress and rank == 0))
    t0, step0 = time.perf_counter(), trainer.step
    volumes = data.volumes
    try:  # the bar ends its line before an error is printed
        while trainer.step < total:
            idx = torch.randint(len(volumes), (batch,), generator=trainer.gen)
            reals = volumes[idx].to(device=device, dtype=torch.float32)
            logs = trainer.train_step(reals)
            step = trainer.step
            check_losses(logs, step, device)
            elapsed = time.perf_counter() - t0
            ips = (step - step0) * batch * world / max(elapsed, 1e-9)
            bar.update(1)
            bar.set_postfix(d=f"{logs['loss_d']:.3f}", g=f"{logs['loss_g']:.3f}", img_s=f"{ips:.2f}")
            if rank == 0 and (step % t.log_every == 0 or step == total):
                rec = {"step": step, "kimg": step * batch * world / 1000, "img_per_s": ips, **logs, "time": time.time()}
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
            if step % t.sample_every == 0 or step == total:
                if rank == 0:
                    _write_samples(trainer, run_dir / "samples" / f"step{step:06d}.png")
            if step % t.checkpoint_every == 0 or step == total:
                tensors, meta = trainer.state()  # collective in DDP: every rank calls it
                if rank == 0:
                    summary.update({"steps": step, "kimg": step * batch * world / 1000, "img_per_s": ips})
                    _export_prior(trainer, run_dir, summary, n_w=10000 if step == total else 2000)
                    save_training_state(state_path, tensors, meta, force=True)
    finally:
        bar.close()
    if world > 1:
        dist.barrier()
    return summary


def snapshot_command(argv: list[str]) -> None:
    """``python -m xfit.prior.train snapshot RUN -o FILE``: the ``snapshot`` command on its own."""
    snapshot_cli.main(argv, prog_name="python -m xfit.prior.train snapshot")


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``python -m xfit.prior.train`` (and torchrun); ``python -m xfit.prior.train
    snapshot RUN -o FILE`` writes a compact snapshot of a run. Errors end as ``xfit``'s do."""
    import argparse
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["snapshot"]:
        snapshot_command(args[1:])
        return

    p = argparse.ArgumentParser(prog="python -m xfit.prior.train", description=__doc__.splitlines()[0])
    p.add_argument("ct_dir")
    add_run_arguments(p)
    p.add_argument("--resume-from", default=None)
    a = p.parse_args(args)

    def body() -> None:
        if a.config is not None:
            cfg = load_config(a.config)
        elif a.resume_from is not None:
            cfg = snapshot_config(a.resume_from)
        elif a.resume and (Path(a.out) / "config.json").is_file():
            cfg = _run_config(Path(a.out) / "config.json")
        else:
            if a.resume:
                require_run_config(a.out)
            cfg = load_config("64")
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
                resume_from=a.resume_from,
                force=a.force,
                device=a.device,
                max_steps=a.max_steps,
            )
        finally:
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()

    run_entry_point(body, "python -m xfit.prior.train")


if __name__ == "__main__":
    main()
