"""Training on several processes (torchrun): DistributedDataParallel semantics by hand.

Every trainer (the prior's :mod:`xfit.prior.train`, the baselines' :mod:`xfit.baselines.train`,
the encoder's) uses these: gradients are all-reduced after each backward, as stylegan2-ada does,
so lazy regularisers and alternating G/D steps stay simple. Alone (no process group) every
function is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group started by torchrun (gloo on CPU, nccl on CUDA); (rank, world)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank_world()


def all_reduce_grads(module: torch.nn.Module) -> None:
    """Average the gradients of ``module`` over every process (one flat all-reduce; none alone)."""
    _rank, world = rank_world()
    if world == 1:
        return
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers of ``module`` to every process (none alone)."""
    if rank_world()[1] == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)
