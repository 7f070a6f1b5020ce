"""Data-parallel training with PyTorch's own engine: DistributedDataParallel under torchrun.

    torchrun --nproc_per_node=2 -m cgt train --dataset fashion_mnist --method hard_cgt --profile paper

Each process takes every world_size-th sample of each global batch (the shuffle is the same on
every rank: it depends only on seed and epoch), DDP averages the gradients, and rank 0 alone
writes checkpoints, history and logits. CGT's gates are per sample, computed from each process's
own logits, so they need no communication. gloo on CPU, NCCL on GPUs.

BatchNorm statistics stay per process, as in standard DDP; so a multi-process run is keyed
separately from a single-process one (`world_size` enters the run's config).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return context()


def context() -> DistContext:
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def local_rows(global_batch: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This process's share of a global batch of indices."""
    return global_batch[ctx.rank::ctx.world_size] if ctx.enabled else global_batch


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
