"""DistributedDataParallel plumbing: torchrun sets the environment, we read it.

One process per GPU (or CPU process with gloo). `init_from_env` is a no-op for a plain
`amoseg train` (WORLD_SIZE unset or 1), so the same code path trains on 1 or N devices.
Multi-node works unchanged through torchrun's rendezvous (see docs/training.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from amoseg.devices import resolve_device


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_from_env(device: str = "auto") -> DistContext:
    """Join the torchrun process group if WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return DistContext(device=dev)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local, dev, owns)


def close(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Make BatchNorm running statistics identical on every rank (rank 0's), so validation
    shards and the saved checkpoint all use the same model."""
    if ctx.active:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)
