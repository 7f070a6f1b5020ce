"""Exit policies, and early-exit inference that really skips the deeper blocks.

Two ways to get the same decisions:
  * `exits_from_logits` — from cached per-exit logits (E, N, K): fast, used for threshold sweeps;
  * `early_exit_forward` — the real thing: per batch, block e+1 runs only on the samples that no
    exit up to e has accepted.
tests/test_inference.py asserts both give identical predictions and exit indices on real data.

A policy turns one exit's logits into a score; the sample leaves at the first exit e < E whose
score passes that exit's threshold τ_e, and the last exit always accepts:
  * max_softmax: score = max_k p_k,        leave if score ≥ τ   (the paper's policy)
  * entropy:     score = H(p) / log K ∈ [0, 1], leave if score ≤ τ
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .models import EarlyExitNet

POLICIES = ("max_softmax", "entropy")
PAPER_TAU = 0.9  # the authors evaluate at a global max-softmax threshold of 0.9


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown exit policy {policy!r}; valid choices: {list(POLICIES)}")


def check_thresholds(thresholds: float | Sequence[float], num_exits: int) -> torch.Tensor:
    """One global τ or one per early exit (E − 1 values; the last exit always accepts) → (E − 1,)."""
    if isinstance(thresholds, (int, float)):
        values = [float(thresholds)] * (num_exits - 1)
    else:
        values = [float(t) for t in thresholds]
        if len(values) != num_exits - 1:
            raise ValueError(f"got {len(values)} per-exit thresholds {values}; a {num_exits}-exit model needs "
                             f"{num_exits - 1} (the last exit always accepts) or a single global value")
    bad = [t for t in values if not (0.0 <= t <= 1.0) or np.isnan(t)]
    if bad:
        raise ValueError(f"thresholds {bad} are outside [0, 1], the range of both policies' scores")
    return torch.tensor(values, dtype=torch.float32)


def exit_scores(logits: torch.Tensor, policy: str) -> torch.Tensor:
    """(..., K) logits → (...) score of the policy."""
    p = logits.float().softmax(-1)
    if policy == "max_softmax":
        return p.max(-1).values
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
    return entropy / np.log(logits.shape[-1])


def accepts(logits: torch.Tensor, threshold: float, policy: str) -> torch.Tensor:
    score = exit_scores(logits, policy)
    return score >= threshold if policy == "max_softmax" else score <= threshold


def exits_from_logits(exit_logits: torch.Tensor, thresholds: float | Sequence[float],
                      policy: str = "max_softmax") -> tuple[torch.Tensor, torch.Tensor]:
    """Decisions from cached logits (E, N, K) → (predictions (N,), exit index (N,), 0-based)."""
    check_policy(policy)
    if exit_logits.ndim != 3:
        raise ValueError(f"exit logits must be (exits, samples, classes); got shape {tuple(exit_logits.shape)}")
    num_exits, n, _ = exit_logits.shape
    taus = check_thresholds(thresholds, num_exits)
    accept = torch.ones(num_exits, n, dtype=torch.bool)
    for e in range(num_exits - 1):
        accept[e] = accepts(exit_logits[e], float(taus[e]), policy)
    exit_index = accept.int().argmax(dim=0)  # first accepting exit
    preds = exit_logits.argmax(-1).gather(0, exit_index[None]).squeeze(0)
    return preds, exit_index


@torch.no_grad()
def full_network_forward(model: EarlyExitNet, x: torch.Tensor) -> torch.Tensor:
    """The plain network without early exits: every block, then the last head only → (B, K)."""
    h = x
    for block in model.blocks:
        h = block(h)
    return model.heads[-1](h)


@dataclass
class EarlyExitOutput:
    predictions: torch.Tensor
    """(N,) class predicted at the exit each sample left by."""
    exit_index: torch.Tensor
    """(N,) 0-based exit each sample left by."""


@torch.no_grad()
def early_exit_forward(model: EarlyExitNet, x: torch.Tensor, thresholds: float | Sequence[float],
                       policy: str = "max_softmax", batch_size: int = 256) -> EarlyExitOutput:
    """Run `model` with early exits: deeper blocks only see the samples still undecided."""
    check_policy(policy)
    num_exits = model.num_exits
    taus = check_thresholds(thresholds, num_exits).tolist()
    model.eval()
    device = next(model.parameters()).device
    preds = torch.empty(len(x), dtype=torch.long)
    exits = torch.empty(len(x), dtype=torch.long)
    for start in range(0, len(x), batch_size):
        h = x[start:start + batch_size].to(device)
        pending = torch.arange(start, start + len(h))  # dataset indices of the rows of h
        for e in range(num_exits):
            h = model.blocks[e](h)
            logits = model.heads[e](h)
            if e == num_exits - 1:
                done = torch.ones(len(h), dtype=torch.bool, device=device)
            else:
                done = accepts(logits, taus[e], policy)
            done_cpu = done.cpu()
            preds[pending[done_cpu]] = logits.argmax(-1)[done].cpu()
            exits[pending[done_cpu]] = e
            if bool(done_cpu.all()):
                break
            if bool(done_cpu.any()):  # keep only the undecided rows for the next block
                keep = ~done
                h, pending = h[keep], pending[~done_cpu]
    return EarlyExitOutput(preds, exits)
