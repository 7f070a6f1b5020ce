"""The exit rule, defined once: a score per exit, which way it passes a threshold, and the extremes.

A policy turns one exit's logits into a score in [0, 1]; a sample leaves at the first exit e < E
whose score passes that exit's threshold τ_e, and the last exit always accepts:
  * max_softmax: score = max_k p_k,            leaves if score ≥ τ   (the paper's policy)
  * entropy:     score = H(p) / log K ∈ [0, 1], leaves if score ≤ τ

Inference (cached logits and the real early-exit pass), threshold fitting, evaluation, the benchmark
and BranchyNet's training gate all decide through the functions here.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

POLICIES = ("max_softmax", "entropy")
PAPER_TAU = 0.9
"""The authors evaluate at a global max-softmax threshold of 0.9."""


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown exit policy {policy!r}; valid choices: {list(POLICIES)}")


def check_thresholds(thresholds: float | Sequence[float], num_exits: int) -> torch.Tensor:
    """One global τ or one per early exit (E − 1 values; the last exit always accepts) → (E − 1,)."""
    if np.ndim(thresholds) == 0:  # a Python, numpy or 0-d tensor scalar: one global τ
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


def normalized_entropy(probs: torch.Tensor) -> torch.Tensor:
    """(..., K) probabilities → (...) H(p) / log K, in [0, 1] (0: one-hot, 1: uniform)."""
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return entropy / torch.log(torch.tensor(float(probs.shape[-1])))


def scores(logits: torch.Tensor, policy: str) -> torch.Tensor:
    """(..., K) logits → (...) score of the policy."""
    p = logits.float().softmax(-1)
    if policy == "max_softmax":
        return p.max(-1).values
    return normalized_entropy(p)


def passes(score, threshold, policy: str):
    """Whether a score lets the sample leave; tensors and numpy arrays broadcast alike."""
    return score >= threshold if policy == "max_softmax" else score <= threshold


def accepts(logits: torch.Tensor, threshold: float, policy: str) -> torch.Tensor:
    """(..., K) logits → (...) bool: does this exit take the sample?"""
    return passes(scores(logits, policy), threshold, policy)


def accepts_row(logits: list[float], threshold: float, policy: str) -> bool:
    """`accepts` for one sample's logits as Python floats: the batch-1 latency path, where a chain of
    tiny tensor ops would cost more than the arithmetic (same rule, same numbers up to rounding)."""
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    if policy == "max_softmax":
        return 1.0 / total >= threshold  # the top class has exp(0) = 1
    entropy = -sum(p * math.log(p) for p in (v / total for v in exps) if p > 1e-12)
    return entropy / math.log(len(logits)) <= threshold


def never_exit(policy: str) -> float:
    """The threshold shown for "no early exit" (the most demanding end of the score range)."""
    return 1.0 if policy == "max_softmax" else 0.0


def always_exit(policy: str) -> float:
    """The threshold every sample passes: everything leaves at the first exit."""
    return 0.0 if policy == "max_softmax" else 1.0


def threshold_grid(policy: str, n: int = 100) -> np.ndarray:
    """n global thresholds, dense where confidences crowd (max-softmax near 1, entropy near 0)."""
    check_policy(policy)
    near = np.logspace(0, -5, n - 1)  # 1 … 1e−5
    values = 1.0 - near if policy == "max_softmax" else near
    return np.unique(np.concatenate([values, [never_exit(policy)]]))
