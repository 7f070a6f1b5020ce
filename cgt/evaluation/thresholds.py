"""Choosing exit thresholds — on validation logits only — and sweeping them.

Every function here works from cached per-exit logits, so hundreds of threshold settings are
evaluated in a fraction of a second. A *setting* is one τ per early exit, shape (E − 1,).
The reported test numbers apply thresholds that were chosen here on the validation split.
A policy is a name of cgt.policy or a learned policy (cgt.learned_policy): its per-exit thresholds are
chosen here the same way.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..cost import ExitCosts
from ..learned_policy import ExitPolicy, always_exit_threshold, check_exit_policy, direction, early_exit_scores
from ..policy import passes, threshold_grid


@dataclass
class SettingsEval:
    """Accuracy, average cost and exit distribution of S threshold settings on one split."""

    thresholds: np.ndarray
    """(S, E − 1) per-exit thresholds."""
    accuracy: np.ndarray
    """(S,)"""
    relative_cost: np.ndarray
    """(S,) average cost / full-network cost."""
    exit_fractions: np.ndarray
    """(S, E) fraction of samples leaving at each exit."""


def evaluate_settings(exit_logits: torch.Tensor, y: torch.Tensor, costs: ExitCosts, thresholds: np.ndarray,
                      policy: ExitPolicy = "max_softmax", chunk: int = 256) -> SettingsEval:
    """Evaluate many threshold settings at once from logits (E, N, K); same rule as
    `inference.exits_from_logits` (first exit whose score passes; the last always accepts).
    Only `costs.relative` is read: FLOPs (cgt.cost.ExitCosts) or measured time per exit
    (cgt.deployment.timecost.ExitTimes, for budgets in µs) fit alike."""
    num_exits = exit_logits.shape[0]
    check_exit_policy(policy, num_exits)
    thresholds = np.atleast_2d(np.asarray(thresholds, dtype=np.float32))
    if thresholds.shape[1] != num_exits - 1:
        raise ValueError(f"settings have {thresholds.shape[1]} thresholds; need {num_exits - 1} per setting")
    exit_scores = early_exit_scores(exit_logits, policy).numpy()              # (E−1, N)
    correct = (exit_logits.argmax(-1) == y).numpy()                          # (E, N)
    cum_rel = costs.relative
    acc, cost, fractions = [], [], []
    for start in range(0, len(thresholds), chunk):
        taus = thresholds[start:start + chunk, :, None]                       # (S, E−1, 1)
        leave = passes(exit_scores[None], taus, direction(policy))           # (S, E−1, N)
        accept = np.concatenate([leave, np.ones((len(taus), 1, exit_scores.shape[1]), bool)], axis=1)  # (S, E, N)
        exit_idx = accept.argmax(axis=1)                                      # (S, N)
        acc.append(correct[exit_idx, np.arange(correct.shape[1])].mean(axis=1))
        frac = np.stack([(exit_idx == e).mean(axis=1) for e in range(num_exits)], axis=1)
        fractions.append(frac)
        cost.append(frac @ cum_rel)
    return SettingsEval(thresholds, np.concatenate(acc), np.concatenate(cost), np.concatenate(fractions))


def sweep_global(exit_logits: torch.Tensor, y: torch.Tensor, costs: ExitCosts, policy: ExitPolicy = "max_softmax",
                 grid: np.ndarray | None = None) -> SettingsEval:
    """One τ shared by every early exit, over a grid: the accuracy/cost curve."""
    grid = threshold_grid(direction(policy)) if grid is None else np.asarray(grid)
    return evaluate_settings(exit_logits, y, costs, np.repeat(grid[:, None], exit_logits.shape[0] - 1, axis=1), policy)


def per_exit_candidates(val_logits: torch.Tensor, policy: ExitPolicy, per_exit: int = 24) -> list[np.ndarray]:
    """Candidate τ per early exit: quantiles of that exit's validation scores (plus the extremes)."""
    exit_scores = early_exit_scores(val_logits, policy).numpy()
    extremes = [0.0, 1.0]
    return [np.unique(np.concatenate([np.quantile(s, np.linspace(0, 1, per_exit)), extremes])) for s in exit_scores]


@dataclass
class Candidates:
    """Per-exit threshold settings, each evaluated once on validation; every operating point is
    picked from these, so fitting several points costs one evaluation."""

    settings: np.ndarray
    """(S, E − 1) per-exit thresholds."""
    val: SettingsEval
    """Their accuracy and cost on validation."""
    last_exit_accuracy: float
    """Validation accuracy of the last exit alone."""
    policy: ExitPolicy


def candidates(val_logits: torch.Tensor, y_val: torch.Tensor, costs: ExitCosts, policy: ExitPolicy = "max_softmax",
               per_exit: int = 24) -> Candidates:
    grids = per_exit_candidates(val_logits, policy, per_exit)
    settings = np.array(list(itertools.product(*grids)), dtype=np.float32)
    last = (val_logits[-1].argmax(-1) == y_val).float().mean().item()
    return Candidates(settings, evaluate_settings(val_logits, y_val, costs, settings, policy), last, policy)


OBJECTIVES = ("tolerance", "target", "budget")


def pick(c: Candidates, objective: str, tolerance: float = 0.005, budget: float = 0.5,
         target: float | None = None) -> tuple[np.ndarray, bool]:
    """(per-exit thresholds, whether the objective was met), chosen on validation only.

    objective='tolerance': the cheapest setting whose validation accuracy is within `tolerance`
        (absolute, 0.005 = 0.5 points) of this network's own last exit;
    objective='target': the cheapest setting whose validation accuracy reaches `target` (absolute;
        one target for every method makes their operating points comparable);
    objective='budget': the most accurate setting whose relative cost is ≤ `budget`.
    Ties go to the more accurate, then the cheaper setting. When no setting meets the objective:
    an accuracy objective takes the most accurate setting, a budget takes the cheapest (every
    sample leaves at exit 1); the flag says so.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid choices: {list(OBJECTIVES)}")
    if not 0 <= tolerance < 1 or budget <= 0:
        raise ValueError(f"tolerance={tolerance} must be in [0, 1) and budget={budget} > 0")
    if objective == "target" and (target is None or not 0 <= target <= 1):
        raise ValueError(f"objective='target' needs a target accuracy in [0, 1]; got {target}")
    ev = c.val
    most_accurate_first = np.lexsort((ev.relative_cost, -ev.accuracy))
    if objective == "budget":
        ok = ev.relative_cost <= budget + 1e-12
        order = most_accurate_first
    else:
        goal = c.last_exit_accuracy - tolerance if objective == "tolerance" else target
        ok = ev.accuracy >= goal - 1e-12
        order = np.lexsort((-ev.accuracy, ev.relative_cost))  # cheapest first, then most accurate
    chosen = [i for i in order if ok[i]]
    if chosen:
        return c.settings[chosen[0]], True
    if objective == "budget":  # e.g. a budget below exit 1's cost: exit everything as early as possible
        return np.full(c.settings.shape[1], always_exit_threshold(c.policy), np.float32), False
    return c.settings[most_accurate_first[0]], False


REACHED_FRACTION = 0.9
"""A method 'reaches' a budget b when some threshold setting spends between 0.9·b and b on validation
(it *can* spend the budget; whether spending it pays is the fit's business)."""


def max_affordable_cost(c: Candidates, budget: float) -> float:
    """The most any candidate setting spends on validation within `budget` (0 when none fits)."""
    cost = c.val.relative_cost
    return float(cost[cost <= budget + 1e-12].max(initial=0.0))


def budget_reached(c: Candidates, budget: float) -> bool:
    """Whether the method can spend (nearly) `budget` on validation: REACHED_FRACTION of it."""
    return max_affordable_cost(c, budget) >= REACHED_FRACTION * budget - 1e-12


def fit_operating_point(val_logits: torch.Tensor, y_val: torch.Tensor, costs: ExitCosts, objective: str,
                        policy: ExitPolicy = "max_softmax", tolerance: float = 0.005, budget: float = 0.5,
                        target: float | None = None, per_exit: int = 24) -> np.ndarray:
    """Per-exit thresholds (E − 1,) chosen on validation data (see `pick` for the objectives)."""
    if objective not in OBJECTIVES:  # before the candidates are evaluated
        raise ValueError(f"unknown objective {objective!r}; valid choices: {list(OBJECTIVES)}")
    return pick(candidates(val_logits, y_val, costs, policy, per_exit), objective, tolerance, budget, target)[0]
