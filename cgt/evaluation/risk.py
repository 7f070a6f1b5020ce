"""Risk-controlled early exit (Jazbec et al., "Fast yet Safe: Early-Exiting with Risk Control", 2024):
one global threshold chosen on a calibration split so that the accuracy lost against the full
network is bounded — in expectation, or with high probability.

The loss of sample i at threshold λ (the policy's global threshold, λ = never_exit: no early exit):

    L_i(λ) = 1[the early-exit prediction at λ is wrong and the last exit's is right] ∈ {0, 1},

so the risk R(λ) = E L(λ) bounds the accuracy gap to the full network. Candidate thresholds are
ordered from the most conservative (never exit early, L = 0) to the most aggressive.

  * CRC (conformal risk control, Angelopoulos et al. 2024): with the loss made monotone along that
    order (L̃_i(λ) = the largest L_i over λ and every more conservative candidate, an upper bound),
    take the most aggressive λ with  n/(n+1) · mean_i L̃_i(λ) + 1/(n+1) ≤ ε.
    Guarantee: E[R(λ̂)] ≤ ε over the draw of the calibration set. Needs n ≥ 1/ε − 1.
  * LTT (Learn then Test, Angelopoulos et al. 2021) with the Hoeffding–Bentkus p-value: test
    H_λ: R(λ) > ε along the order (fixed-sequence testing) and stop at the first λ not rejected at
    level δ; take the last rejected one. Guarantee: P(R(λ̂) ≤ ε) ≥ 1 − δ. Needs n ≥ log δ / log(1 − ε).

    tau = risk_controlled_threshold(val_logits, y_val, "crc", eps=0.02)   # or "ltt", delta=0.1
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import binom

from ..learned_policy import ExitPolicy, check_exit_policy, direction, early_exit_scores
from ..policy import check_policy, passes, threshold_grid

METHODS = ("crc", "ltt")
DELTA = 0.1


def check_levels(eps: float, delta: float | None = None) -> None:
    for name, value in (("eps", eps), ("delta", delta)):
        if value is not None and not 0.0 < float(value) < 1.0:
            raise ValueError(f"{name}={value} must be in the open interval (0, 1)")


def min_calibration_size(method: str, eps: float, delta: float = DELTA) -> int:
    """The fewest calibration samples for which the method can certify anything but 'never exit early'."""
    check_levels(eps, delta)
    if method == "crc":
        return max(1, math.ceil(1.0 / eps - 1.0))
    if method == "ltt":
        return math.ceil(math.log(delta) / math.log(1.0 - eps))
    raise ValueError(f"unknown risk-control method {method!r}; valid choices: {list(METHODS)}")


def _check_size(method: str, n: int, eps: float, delta: float) -> None:
    need = min_calibration_size(method, eps, delta)
    if n < need:
        raise ValueError(f"a calibration set of {n} samples is too small for {method.upper()} at eps={eps}"
                         + (f", delta={delta}" if method == "ltt" else "") + f": it needs at least {need}")


def gap_losses(logits: torch.Tensor, y: torch.Tensor, grid, policy: ExitPolicy = "max_softmax") -> np.ndarray:
    """(n, len(grid)) 0/1 losses L_i(λ) for each global threshold λ of `grid` (ordered by the caller),
    all thresholds at once: the scores are computed once and compared with every λ. A learned policy
    (cgt.learned_policy) shares one λ across its exits' scores, each an estimated P(this exit is right)."""
    check_exit_policy(policy, logits.shape[0])
    grid = torch.as_tensor(np.asarray(grid, dtype=np.float32))
    score = early_exit_scores(logits, policy)                                    # (E − 1, n)
    accept = passes(score[None], grid[:, None, None], direction(policy))         # (G, E − 1, n)
    accept = torch.cat([accept, torch.ones_like(accept[:, :1])], dim=1)           # the last exit takes the rest
    exit_index = accept.int().argmax(dim=1)                                       # (G, n): first accepting exit
    preds = _predictions_at(logits.argmax(-1), exit_index)
    full_right = logits[-1].argmax(-1) == y
    return ((preds != y[None]) & full_right[None]).T.numpy().astype(np.float64)


def _predictions_at(exit_preds: torch.Tensor, exit_index: torch.Tensor) -> torch.Tensor:
    """exit_preds (E, n), exit_index (G, n) → (G, n): each sample's prediction at its exit, per threshold."""
    n = exit_preds.shape[1]
    return exit_preds[exit_index, torch.arange(n)[None, :].expand_as(exit_index)]


def conservative_first(policy: ExitPolicy, n: int = 100) -> np.ndarray:
    """The candidate thresholds, from 'never exit early' to the most aggressive."""
    name = direction(policy)
    check_policy(name)
    grid = threshold_grid(name, n)
    return grid[::-1] if name == "max_softmax" else grid  # max-softmax: high τ is conservative; entropy: low


def crc_threshold(losses: np.ndarray, eps: float) -> int:
    """Index (into the conservative-first candidates) chosen by conformal risk control."""
    n = losses.shape[0]
    _check_size("crc", n, eps, DELTA)
    monotone = np.maximum.accumulate(losses, axis=1)  # never below the loss of a more conservative λ
    ok = n / (n + 1) * monotone.mean(axis=0) + 1.0 / (n + 1) <= eps
    # the monotone risk grows along the candidates, so those that pass form a prefix: take its last
    # element (the most conservative candidate if even it fails)
    return max(int(np.argmin(ok)) - 1, 0) if not ok.all() else losses.shape[1] - 1


def hoeffding_bentkus_p(risk_hat: float, n: int, eps: float) -> float:
    """p-value of H: R > ε given the empirical risk of n bounded losses (Bates et al. 2021)."""
    r = min(risk_hat, eps)

    def h(a: float, b: float) -> float:  # KL divergence between Bernoulli(a) and Bernoulli(b)
        return (a * math.log(a / b) if a > 0 else 0.0) + ((1 - a) * math.log((1 - a) / (1 - b)) if a < 1 else 0.0)

    hoeffding = math.exp(-n * h(r, eps))
    bentkus = math.e * binom.cdf(math.ceil(n * risk_hat), n, eps)
    return min(hoeffding, bentkus, 1.0)


def ltt_threshold(losses: np.ndarray, eps: float, delta: float = DELTA) -> int:
    """Index (into the conservative-first candidates) chosen by Learn then Test, fixed-sequence (the
    most conservative candidate when not even it is certified)."""
    n = losses.shape[0]
    _check_size("ltt", n, eps, delta)
    chosen = 0
    for j, risk in enumerate(losses.mean(axis=0)):
        if hoeffding_bentkus_p(float(risk), n, eps) > delta:
            break
        chosen = j
    return chosen


def risk_controlled_threshold(logits: torch.Tensor, y: torch.Tensor, method: str, eps: float, delta: float = DELTA,
                              policy: ExitPolicy = "max_softmax", losses: np.ndarray | None = None) -> float:
    """The global threshold `method` picks on calibration logits (E, n, K) and labels (n,); `losses`: their
    gap_losses on conservative_first(policy), when already computed (several methods and ε share them)."""
    check_levels(eps, delta)
    if method not in METHODS:
        raise ValueError(f"unknown risk-control method {method!r}; valid choices: {list(METHODS)}")
    _check_size(method, len(y), eps, delta)
    grid = conservative_first(policy)
    losses = gap_losses(logits, y, grid, policy) if losses is None else losses
    j = crc_threshold(losses, eps) if method == "crc" else ltt_threshold(losses, eps, delta)
    return float(grid[j])


def point_name(method: str, eps: float) -> str:
    return f"risk_{method}_{round(100 * eps):d}"
