"""Inference cost per exit, in FLOPs counted by torch's own FlopCounterMode.

Units: FlopCounterMode counts 2 FLOPs per multiply-add of convolutions and matrix products;
element-wise work (BatchNorm, ReLU, pooling, softmax) is not counted, as is usual for FLOP tables.
Costs are per sample (batch size 1) and cumulative: a sample leaving at exit e paid for blocks
1..e and heads 1..e (it ran every earlier head to decide not to exit there).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .models import EarlyExitNet


@dataclass(frozen=True)
class ExitCosts:
    block_flops: tuple[int, ...]
    """FLOPs of each backbone block, per sample."""
    head_flops: tuple[int, ...]
    """FLOPs of each exit head, per sample."""

    @property
    def cumulative(self) -> np.ndarray:
        """(E,) cost of a sample that leaves at exit e: Σ_{k≤e} (block_k + head_k)."""
        return np.cumsum(np.add(self.block_flops, self.head_flops)).astype(np.float64)

    @property
    def full_network(self) -> float:
        """The plain network without early exits: every block and the last head only."""
        return float(sum(self.block_flops) + self.head_flops[-1])

    @property
    def relative(self) -> np.ndarray:
        """Cumulative cost per exit relative to the full network."""
        return self.cumulative / self.full_network

    def to_dict(self) -> dict:
        return {"block_flops": list(self.block_flops), "head_flops": list(self.head_flops),
                "cumulative_flops": self.cumulative.tolist(), "full_network_flops": self.full_network,
                "relative_cost": self.relative.tolist()}


def count_flops(module: torch.nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """FLOPs of one call `module(x)`, and its output."""
    with FlopCounterMode(display=False) as counter:
        out = module(x)
    return int(counter.get_total_flops()), out


@torch.no_grad()
def exit_costs(model: EarlyExitNet, input_shape: Sequence[int]) -> ExitCosts:
    """Per-block and per-head FLOPs of `model` for one sample of shape `input_shape` (C, H, W)."""
    was_training = model.training
    model.eval()
    p = next(model.parameters())
    h = torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device)
    blocks, heads = [], []
    for block, head in zip(model.blocks, model.heads):
        f_block, h = count_flops(block, h)
        f_head, _ = count_flops(head, h)
        blocks.append(f_block)
        heads.append(f_head)
    model.train(was_training)
    return ExitCosts(tuple(blocks), tuple(heads))


def average_cost(exit_fractions: Sequence[float] | np.ndarray, costs: ExitCosts) -> float:
    """Σ_e fraction_e × cumulative_cost_e, in FLOPs per sample."""
    fractions = np.asarray(exit_fractions, dtype=np.float64)
    if fractions.shape != (len(costs.block_flops),):
        raise ValueError(f"need one exit fraction per exit ({len(costs.block_flops)}), got shape {fractions.shape}")
    return float(fractions @ costs.cumulative)
