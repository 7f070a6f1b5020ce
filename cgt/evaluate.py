"""Evaluate a finished training run: thresholds fitted on validation, metrics reported on test.

Operating points reported for every run:
  * last_exit      — no early exit: the full network's prediction (reference accuracy);
  * paper_tau      — the authors' fixed global τ = 0.9 (not fitted; labelled as such);
  * val_tolerance  — per-exit τ fitted on validation: cheapest within 0.5 points of the last exit;
  * val_budget     — per-exit τ fitted on validation: most accurate at ≤ 50 % of the full cost.
Plus the global-τ sweep on validation and, with the same thresholds, on test.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .cost import ExitCosts
from .fileio import write_json_atomic
from .inference import exits_from_logits
from .metrics import early_exit_metrics, per_exit_metrics
from .policy import PAPER_TAU, check_policy, never_exit
from .thresholds import fit_operating_point, sweep_global
from .runs import TrainedRun


@dataclass
class EvalConfig:
    """How thresholds are chosen."""

    policy: str = "max_softmax"
    """Exit policy: max_softmax (paper) or entropy."""
    paper_tau: float = PAPER_TAU
    """Fixed global threshold of the paper-style table row."""
    tolerance: float = 0.005
    """val_tolerance: allowed validation-accuracy drop from the last exit (absolute)."""
    budget: float = 0.5
    """val_budget: allowed average cost relative to the full network."""


def evaluate_logits(val_logits: torch.Tensor, y_val: torch.Tensor, test_logits: torch.Tensor, y_test: torch.Tensor,
                    costs: ExitCosts, num_classes: int, cfg: EvalConfig = EvalConfig()) -> dict:
    check_policy(cfg.policy)
    num_exits = val_logits.shape[0]
    splits = {"val": (val_logits, y_val), "test": (test_logits, y_test)}

    def at(taus, how: str, decisions=None) -> dict:
        """Metrics on both splits for per-exit thresholds `taus` (or given (preds, exits) per split)."""
        decisions = decisions or {s: exits_from_logits(l, [float(t) for t in taus], cfg.policy) for s, (l, _) in splits.items()}
        return {"thresholds": [float(t) for t in taus], "how": how,
                **{s: early_exit_metrics(l, y, *decisions[s], costs, num_classes) for s, (l, y) in splits.items()}}

    # No early exit: everyone takes the last exit's prediction (thresholds shown as the policy's
    # "never leave early" end), at exactly the full network's cost — it computes no early heads.
    never = [never_exit(cfg.policy)] * (num_exits - 1)
    last = {s: (l[-1].argmax(-1), torch.full((l.shape[1],), num_exits - 1)) for s, (l, _) in splits.items()}
    points = {"last_exit": at(never, "no early exit", last)}
    for split in splits:
        points["last_exit"][split] |= {"avg_cost_flops": costs.full_network, "avg_cost_relative": 1.0}
    points["paper_tau"] = at([cfg.paper_tau] * (num_exits - 1),
                             f"fixed global tau = {cfg.paper_tau} (authors' value; not fitted)")
    points["val_tolerance"] = at(fit_operating_point(val_logits, y_val, costs, "tolerance", cfg.policy, tolerance=cfg.tolerance),
                                 f"fitted on validation: cheapest within {cfg.tolerance:.3f} of the last exit's accuracy")
    points["val_budget"] = at(fit_operating_point(val_logits, y_val, costs, "budget", cfg.policy, budget=cfg.budget),
                              f"fitted on validation: most accurate at relative cost <= {cfg.budget}")
    sweep_val = sweep_global(val_logits, y_val, costs, cfg.policy)
    sweep_test = sweep_global(test_logits, y_test, costs, cfg.policy, grid=sweep_val.thresholds[:, 0])
    return {
        "policy": cfg.policy, "costs": costs.to_dict(),
        "per_exit": {"val": per_exit_metrics(val_logits, y_val), "test": per_exit_metrics(test_logits, y_test)},
        "operating_points": points,
        "sweep": {"tau": sweep_val.thresholds[:, 0].tolist(),
                  "val_accuracy": sweep_val.accuracy.tolist(), "val_relative_cost": sweep_val.relative_cost.tolist(),
                  "test_accuracy": sweep_test.accuracy.tolist(), "test_relative_cost": sweep_test.relative_cost.tolist(),
                  "test_exit_fractions": sweep_test.exit_fractions.tolist()},
    }


def evaluate_run(run: TrainedRun, costs: ExitCosts, num_classes: int, cfg: EvalConfig = EvalConfig(),
                 write: bool = True) -> dict:
    """Metrics of one run (also written to <run_dir>/metrics.json)."""
    lg = run.logits
    metrics = evaluate_logits(lg["val"], lg["y_val"], lg["test"], lg["y_test"], costs, num_classes, cfg)
    metrics["run"] = {"dataset": run.config["dataset"], "method": run.config["method"],
                      "strategy": run.config["strategy"], "options": run.config["options"],
                      "seed": run.config["train"]["seed"], "run_dir": str(run.run_dir)}
    if write:
        write_json_atomic(run.run_dir / "metrics.json", metrics)
    return metrics


TABLE_COLUMNS = ["accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted", "precision_weighted",
                 "recall_weighted", "average_accuracy", "kappa", "avg_cost_relative", "avg_cost_flops",
                 "overthinking_policy", "overthinking_last_exit"]


def metrics_table(all_metrics: list[dict], split: str = "test") -> pd.DataFrame:
    """One tidy row per (dataset, method, seed, operating point)."""
    rows = []
    for m in all_metrics:
        for point, values in m["operating_points"].items():
            v = values[split]
            row = {"dataset": m["run"]["dataset"], "method": m["run"]["method"], "seed": m["run"]["seed"],
                   "operating_point": point, "thresholds": values["thresholds"]}
            row |= {c: v[c] for c in TABLE_COLUMNS}
            row |= {f"exit{e + 1}_pct": 100 * f for e, f in enumerate(v["exit_distribution"])}
            row |= {f"exit{e + 1}_acc": a for e, a in enumerate(m["per_exit"][split]["accuracy"])}
            row["oracle_accuracy"] = m["per_exit"][split]["oracle_accuracy"]
            rows.append(row)
    return pd.DataFrame(rows)
