"""Early-exit inference that really skips the deeper blocks (the exit rule itself is cgt.policy).

Two ways to get the same decisions:
  * `exits_from_logits` — from cached per-exit logits (E, N, K): fast, used for threshold sweeps;
  * `early_exit_forward` — the real thing: per batch, block e+1 runs only on the samples that no
    exit up to e has accepted.
tests/test_inference.py asserts both give identical predictions and exit indices on real data.

`policy` is a policy name of cgt.policy or a cgt.learned_policy.LearnedPolicy (its scores use the
earlier exits' predictions, which the real pass keeps for the samples still undecided).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .learned_policy import ExitPolicy, LearnedPolicy, check_exit_policy, exit_accepts
from .models import EarlyExitNet
from .policy import accepts_row, check_thresholds


def exits_from_logits(exit_logits: torch.Tensor, thresholds: float | Sequence[float],
                      policy: ExitPolicy = "max_softmax") -> tuple[torch.Tensor, torch.Tensor]:
    """Decisions from cached logits (E, N, K) → (predictions (N,), exit index (N,), 0-based)."""
    if exit_logits.ndim != 3:
        raise ValueError(f"exit logits must be (exits, samples, classes); got shape {tuple(exit_logits.shape)}")
    num_exits, n, _ = exit_logits.shape
    check_exit_policy(policy, num_exits)
    taus = check_thresholds(thresholds, num_exits)
    accept = torch.ones(num_exits, n, dtype=torch.bool)
    preds = exit_logits.argmax(-1)
    for e in range(num_exits - 1):  # the same call the real pass makes at exit e
        accept[e] = exit_accepts(policy, e, exit_logits[e], preds[:e], float(taus[e]))
    exit_index = accept.int().argmax(dim=0)  # first accepting exit
    return preds.gather(0, exit_index[None]).squeeze(0), exit_index


@torch.inference_mode()
def full_network_forward(model: EarlyExitNet, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """The plain network without early exits: every block, then the last head only → (B, K).
    With `batch_size`, x is processed in chunks of that size (1 = the latency setting)."""
    model.eval()
    chunks = [x] if batch_size is None else [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    out = []
    for h in chunks:
        for block in model.blocks:
            h = block(h)
        out.append(model.heads[-1](h))
    return torch.cat(out)


@dataclass
class EarlyExitOutput:
    predictions: torch.Tensor
    """(N,) class predicted at the exit each sample left by."""
    exit_index: torch.Tensor
    """(N,) 0-based exit each sample left by."""


@torch.inference_mode()
def early_exit_forward(model: EarlyExitNet, x: torch.Tensor, thresholds: float | Sequence[float],
                       policy: ExitPolicy = "max_softmax", batch_size: int = 256) -> EarlyExitOutput:
    """Run `model` with early exits: deeper blocks only see the samples still undecided."""
    num_exits = model.num_exits
    check_exit_policy(policy, num_exits)
    taus = check_thresholds(thresholds, num_exits).tolist()
    model.eval()
    if batch_size == 1 and not isinstance(policy, LearnedPolicy):  # the learned rule takes the batched path
        return _early_exit_one_by_one(model, x, taus, policy)
    device = next(model.parameters()).device
    preds = torch.empty(len(x), dtype=torch.long)
    exits = torch.empty(len(x), dtype=torch.long)
    track = isinstance(policy, LearnedPolicy)  # only its scores read the earlier predictions: thresholds stay lean
    for start in range(0, len(x), batch_size):
        h = x[start:start + batch_size].to(device)
        pending = torch.arange(start, start + len(h))  # dataset indices of the rows of h
        earlier = torch.empty(0, len(h), dtype=torch.long, device=device)  # argmax of exits 0 … e − 1, per row
        for e in range(num_exits):
            h = model.blocks[e](h)
            logits = model.heads[e](h)
            if e == num_exits - 1:
                done = torch.ones(len(h), dtype=torch.bool, device=device)
            else:
                done = exit_accepts(policy, e, logits, earlier, taus[e])
                if track:
                    earlier = torch.cat([earlier, logits.argmax(-1)[None]])
            done_cpu = done.cpu()
            preds[pending[done_cpu]] = logits.argmax(-1)[done].cpu()
            exits[pending[done_cpu]] = e
            if bool(done_cpu.all()):
                break
            if bool(done_cpu.any()):  # keep only the undecided rows for the next block
                keep = ~done
                h, pending = h[keep], pending[~done_cpu]
                if track:
                    earlier = earlier[:, keep]
    return EarlyExitOutput(preds, exits)


def _early_exit_one_by_one(model: EarlyExitNet, x: torch.Tensor, taus: list[float], policy: str) -> EarlyExitOutput:
    """Batch size 1, the latency setting: no masks or gathers, and the exit decision on K plain
    floats (one device→host copy) instead of a chain of tiny tensor ops. On a small model the
    per-operator overhead rivals the arithmetic, so every avoided op counts."""
    device = next(model.parameters()).device
    last = model.num_exits - 1
    preds, exits = [], []
    for i in range(len(x)):
        h = x[i:i + 1].to(device)
        for e in range(model.num_exits):
            h = model.blocks[e](h)
            row = model.heads[e](h)[0].tolist()
            if e == last or accepts_row(row, taus[e], policy):
                break
        preds.append(max(range(len(row)), key=row.__getitem__))
        exits.append(e)
    return EarlyExitOutput(torch.tensor(preds, dtype=torch.long), torch.tensor(exits, dtype=torch.long))


def fuse_for_inference(model: EarlyExitNet) -> EarlyExitNet:
    """A deployment copy with every Conv2d → BatchNorm2d pair folded into one Conv2d.

    In eval mode the function is the same (up to float rounding) with one operator less per
    stage; applied to both sides of a latency comparison, it keeps the comparison fair.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for seq in fused.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                    seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                    seq[i + 1] = nn.Identity()
    return fused
