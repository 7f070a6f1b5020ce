"""Evaluate a finished training run: thresholds fitted on validation, metrics reported on test.

Operating points of every run (metrics.json):
  * full_network    — no early exit: the full network's prediction (reference accuracy);
  * paper_tau       — the authors' fixed global τ = 0.9 (not fitted; labelled as such);
  * val_tolerance   — per-exit τ fitted on validation: cheapest within 0.5 points of this network's
                      own last exit (a per-method view: each method gets its own target);
  * val_budget_30 / _40 / _50 — per-exit τ fitted on validation: most accurate at ≤ 30 / 40 / 50 %
                      of the full network's cost (matched cost: every method gets the same budget).
  * risk_crc_1 / _2 / _5, risk_ltt_1 / _2 / _5 — one global τ chosen on validation with a guarantee
                      on the accuracy lost against the last exit (ε = 1, 2, 5 %; cgt.evaluation.risk): CRC in
                      expectation, LTT with probability ≥ 1 − δ (δ = 0.1).
Plus the budget curve (val_budget at budgets 0.25 … 1.00, its test accuracy and macro-F1, and their
mean over the budgets: the area under the validation-fitted accuracy–cost curve), and the global-τ
sweep on validation and, with the same thresholds, on test.

Across methods, `common_target_point` adds the one comparable tolerance point: the cheapest per-exit
τ whose validation accuracy reaches a target shared by every method (see cgt.reporting.tables).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..cost import ExitCosts
from ..fileio import write_json_atomic
from ..inference import exits_from_logits
from ..policy import PAPER_TAU, check_policy, never_exit
from ..runs import TrainedRun
from .metrics import early_exit_metrics, per_exit_metrics
from .thresholds import Candidates, budget_reached, candidates, pick, sweep_global


@dataclass
class EvalConfig:
    """How thresholds are chosen."""

    policy: str = "max_softmax"
    """Exit policy: max_softmax (paper) or entropy."""
    paper_tau: float = PAPER_TAU
    """Fixed global threshold of the paper-style table row."""
    tolerance: float = 0.005
    """val_tolerance and the common target: allowed validation-accuracy drop (absolute)."""
    budgets: tuple[float, ...] = (0.3, 0.4, 0.5)
    """Matched-cost operating points: allowed average cost relative to the full network."""
    curve_budgets: tuple[float, ...] = tuple(np.round(np.arange(0.25, 1.0001, 0.05), 2).tolist())
    """Budgets of the validation-fitted accuracy–cost curve (its mean accuracy is the AUC)."""
    risk_epsilons: tuple[float, ...] = (0.01, 0.02, 0.05)
    """Tolerated risks of the risk-controlled points (cgt.evaluation.risk): accuracy lost against the last exit."""
    risk_delta: float = 0.1
    """LTT: the guarantee holds with probability at least 1 − δ."""


def budget_point_name(budget: float) -> str:
    return f"val_budget_{round(100 * budget):d}"


def _metrics_at(splits: dict, taus, how: str, costs: ExitCosts, num_classes: int, policy: str,
                decisions: dict | None = None) -> dict:
    """Metrics on every split for per-exit thresholds `taus` (or given (preds, exits) per split)."""
    decisions = decisions or {s: exits_from_logits(l, [float(t) for t in taus], policy) for s, (l, _) in splits.items()}
    return {"thresholds": [float(t) for t in taus], "how": how,
            **{s: early_exit_metrics(l, y, *decisions[s], costs, num_classes) for s, (l, y) in splits.items()}}


def evaluate_logits(val_logits: torch.Tensor, y_val: torch.Tensor, test_logits: torch.Tensor, y_test: torch.Tensor,
                    costs: ExitCosts, num_classes: int, cfg: EvalConfig = EvalConfig()) -> dict:
    check_policy(cfg.policy)
    num_exits = val_logits.shape[0]
    splits = {"val": (val_logits, y_val), "test": (test_logits, y_test)}

    def at(taus, how: str, decisions=None) -> dict:
        return _metrics_at(splits, taus, how, costs, num_classes, cfg.policy, decisions)

    # No early exit: everyone takes the last exit's prediction (thresholds shown as the policy's
    # "never leave early" end), at exactly the full network's cost — it computes no early heads.
    never = [never_exit(cfg.policy)] * (num_exits - 1)
    last = {s: (l[-1].argmax(-1), torch.full((l.shape[1],), num_exits - 1)) for s, (l, _) in splits.items()}
    points = {"full_network": at(never, "no early exit", last)}
    for split in splits:
        points["full_network"][split] |= {"avg_cost_flops": costs.full_network, "avg_cost_relative": 1.0}
    points["paper_tau"] = at([cfg.paper_tau] * (num_exits - 1),
                             f"fixed global tau = {cfg.paper_tau} (authors' value; not fitted)")
    fitted = candidates(val_logits, y_val, costs, cfg.policy)
    taus, _ = pick(fitted, "tolerance", tolerance=cfg.tolerance)
    points["val_tolerance"] = at(taus, f"fitted on validation: cheapest within {cfg.tolerance:.3f} of its own "
                                       f"last exit's accuracy")
    for budget in cfg.budgets:
        taus, met = pick(fitted, "budget", budget=budget)
        reached = budget_reached(fitted, budget)
        points[budget_point_name(budget)] = at(taus, f"fitted on validation: most accurate at relative cost <= {budget}"
                                                     + ("" if met else " (unreachable: all leave at exit 1)")
                                                     + ("" if reached or not met else
                                                        " (cannot spend it: no setting costs >= 90 % of it)"))
        points[budget_point_name(budget)]["budget_reached"] = reached
    points |= _risk_controlled_points(splits, at, cfg)
    sweep_val = sweep_global(val_logits, y_val, costs, cfg.policy)
    sweep_test = sweep_global(test_logits, y_test, costs, cfg.policy, grid=sweep_val.thresholds[:, 0])
    return {
        "policy": cfg.policy, "costs": costs.to_dict(),
        "per_exit": {"val": per_exit_metrics(val_logits, y_val), "test": per_exit_metrics(test_logits, y_test)},
        "operating_points": points,
        "budget_curve": _budget_curve(fitted, splits, costs, num_classes, cfg),
        "sweep": {"tau": sweep_val.thresholds[:, 0].tolist(),
                  "val_accuracy": sweep_val.accuracy.tolist(), "val_relative_cost": sweep_val.relative_cost.tolist(),
                  "test_accuracy": sweep_test.accuracy.tolist(), "test_relative_cost": sweep_test.relative_cost.tolist(),
                  "test_exit_fractions": sweep_test.exit_fractions.tolist()},
    }


def _risk_controlled_points(splits: dict, at, cfg: EvalConfig) -> dict:
    """One global threshold per (method, ε) of cgt.evaluation.risk, with the validation split as the calibration
    set; each point records the controlled loss (early exit wrong where the last exit is right) on
    validation and test. A calibration set too small for a guarantee gives no point (nothing certified)."""
    from . import risk

    val_logits, y_val = splits["val"]
    losses = risk.gap_losses(val_logits, y_val, risk.conservative_first(cfg.policy), cfg.policy)  # shared by all
    points = {}
    for method in risk.METHODS:
        for eps in cfg.risk_epsilons:
            if len(y_val) < risk.min_calibration_size(method, eps, cfg.risk_delta):
                continue
            lam = risk.risk_controlled_threshold(val_logits, y_val, method, eps, cfg.risk_delta, cfg.policy, losses)
            guarantee = (f"E[loss] <= {eps}" if method == "crc" else f"P(risk <= {eps}) >= {1 - cfg.risk_delta:g}")
            point = at([lam] * (val_logits.shape[0] - 1), f"{method.upper()} on validation: {guarantee}, loss = early "
                                                          f"exit wrong where the last exit is right")
            point["risk"] = {"method": method, "eps": eps, "delta": cfg.risk_delta if method == "ltt" else None,
                             **{f"{s}_loss": float(risk.gap_losses(l, y, [lam], cfg.policy).mean())
                                for s, (l, y) in splits.items()}}
            points[risk.point_name(method, eps)] = point
    return points


def _budget_curve(fitted: Candidates, splits: dict, costs: ExitCosts, num_classes: int, cfg: EvalConfig) -> dict:
    """Test accuracy and macro-F1 of the validation-fitted point at each budget, and their means over
    the budgets (the area under the curve divided by its width: one number per run, higher is better)."""
    test_logits, y_test = splits["test"]
    val_logits, y_val = splits["val"]
    curve = {"budget": list(cfg.curve_budgets), "test_accuracy": [], "test_f1_macro": [], "test_relative_cost": [],
             "val_accuracy": []}
    for budget in cfg.curve_budgets:
        taus = [float(t) for t in pick(fitted, "budget", budget=budget)[0]]
        m = early_exit_metrics(test_logits, y_test, *exits_from_logits(test_logits, taus, cfg.policy), costs, num_classes)
        curve["test_accuracy"].append(m["accuracy"])
        curve["test_f1_macro"].append(m["f1_macro"])
        curve["test_relative_cost"].append(m["avg_cost_relative"])
        curve["val_accuracy"].append(float((exits_from_logits(val_logits, taus, cfg.policy)[0] == y_val).float().mean()))
    curve["auc_accuracy"] = float(np.mean(curve["test_accuracy"]))
    curve["auc_f1_macro"] = float(np.mean(curve["test_f1_macro"]))
    curve["val_auc_accuracy"] = float(np.mean(curve["val_accuracy"]))  # what a rival is chosen by
    return curve


def common_target_point(run: TrainedRun, costs: ExitCosts, num_classes: int, target: float,
                        cfg: EvalConfig = EvalConfig()) -> dict:
    """The cheapest per-exit τ whose *validation* accuracy reaches `target` (shared by the methods
    compared), with its metrics on validation and test; `target_reached` says whether it did."""
    lg = run.logits
    splits = {"val": (lg["val"], lg["y_val"]), "test": (lg["test"], lg["y_test"])}
    taus, met = pick(candidates(lg["val"], lg["y_val"], costs, cfg.policy), "target", target=target)
    point = _metrics_at(splits, taus, f"fitted on validation: cheapest reaching the common validation accuracy "
                                      f"{target:.4f}" + ("" if met else " (not reached: most accurate setting)"),
                        costs, num_classes, cfg.policy)
    return point | {"target": target, "target_reached": met}


def evaluate_run(run: TrainedRun, costs: ExitCosts, num_classes: int, cfg: EvalConfig = EvalConfig(),
                 write: bool = True) -> dict:
    """Metrics of one run (also written to <run_dir>/metrics.json)."""
    lg = run.logits
    metrics = evaluate_logits(lg["val"], lg["y_val"], lg["test"], lg["y_test"], costs, num_classes, cfg)
    metrics["run"] = {"dataset": run.config["dataset"], "method": run.config["method"],
                      "strategy": run.config["strategy"], "options": run.config["options"],
                      "seed": run.config["train"]["seed"], "fold": run.config.get("data_params", {}).get("fold"),
                      "run_dir": str(run.run_dir)}
    if write:
        write_json_atomic(run.run_dir / "metrics.json", metrics)
    return metrics


TABLE_COLUMNS = ["accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted", "precision_weighted",
                 "recall_weighted", "average_accuracy", "kappa", "avg_cost_relative", "avg_cost_flops",
                 "overthinking_policy", "overthinking_last_exit", "f1_per_class"]


def metrics_table(all_metrics: list[dict], split: str = "test") -> pd.DataFrame:
    """One tidy row per (dataset, method, fold, seed, operating point); on test, plus one `auc` row per run:
    the mean test accuracy, macro-F1 and cost of the validation-fitted accuracy–cost curve. `fold` is the
    cross-validation fold (None for splits without folds): verdicts pair by (fold, seed). Every row carries
    the point's validation accuracy (`val_accuracy`: what rivals and configurations are chosen by) and
    `objective_met` (a common target reached; a budget the method can spend)."""
    rows = []
    for m in all_metrics:
        ident = {"dataset": m["run"]["dataset"], "method": m["run"]["method"], "fold": m["run"].get("fold"),
                 "seed": m["run"]["seed"]}
        for point, values in m["operating_points"].items():
            v = values[split]
            row = ident | {"operating_point": point, "thresholds": values["thresholds"],
                           "objective_met": values.get("target_reached", values.get("budget_reached", True)),
                           "val_accuracy": values["val"]["accuracy"]}
            row |= {c: v[c] for c in TABLE_COLUMNS if c in v}
            row |= {f"exit{e + 1}_pct": 100 * f for e, f in enumerate(v["exit_distribution"])}
            row |= {f"exit{e + 1}_acc": a for e, a in enumerate(m["per_exit"][split]["accuracy"])}
            row["oracle_accuracy"] = m["per_exit"][split]["oracle_accuracy"]
            rows.append(row)
        if split == "test" and "budget_curve" in m:
            curve = m["budget_curve"]
            rows.append(ident | {"operating_point": "auc", "accuracy": curve["auc_accuracy"],
                                 "f1_macro": curve["auc_f1_macro"],
                                 "avg_cost_relative": float(np.mean(curve["test_relative_cost"])),
                                 "val_accuracy": curve.get("val_auc_accuracy", np.nan)})
    return pd.DataFrame(rows)
