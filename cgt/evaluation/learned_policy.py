"""The learned exit policy (cgt.learned_policy) fitted on validation logits, and compared with the
max-softmax thresholds at the same budgets — from a finished run's cached logits, no retraining.

    policy = fit_learned_policy(val_logits, y_val)                       # per-exit logistic scores
    rows = compare_policies(val_logits, y_val, test_logits, y_test, costs, num_classes)
    # one row per (policy ∈ {threshold, learned}, budget): the per-exit thresholds each picks on
    # validation for that budget (cgt.evaluation.thresholds.pick, as evaluate's val_budget_* points),
    # and its test metrics, in the columns of evaluate.metrics_table plus `policy` and `budget`
    policy, points = learned_operating_points(val_logits, y_val, costs)  # what an ONNX export carries

Why "correct" is the default target: the exit decision is there to trade accuracy for cost, and
"this exit is right" is exactly what an early exit contributes to accuracy; it is also what the
max-softmax score is meant to estimate (its failure-prediction AUROC, cgt.evaluation.calibration),
so the learned score is a direct replacement. "agrees_with_last" (the exit changes nothing against
the full network; the loss risk control bounds) ignores that an early exit may be right where the
last is wrong, and is the option. The score and the thresholds are both fitted on validation: the
logistic models have 6 parameters per exit, too few for the reuse to matter much beside the
thresholds' own validation fit.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from ..cost import ExitCosts
from ..inference import exits_from_logits
from ..learned_policy import FEATURES, TARGETS, ExitPolicy, LearnedPolicy, exit_features
from ..runs import TrainedRun
from .evaluate import TABLE_COLUMNS, budget_point_name
from .metrics import early_exit_metrics, per_exit_metrics
from .thresholds import candidates, pick

POLICY_NAMES = ("threshold", "learned")
"""The `policy` column: the max-softmax (or entropy) threshold policy, or the learned one."""
PROBABILITY_CLIP = 1e-6
"""An exit whose target is constant on validation gets a constant score: this rate, clipped away from
0 and 1 so its log-odds stay finite."""


def exit_targets(exit_logits: torch.Tensor, y: torch.Tensor, target: str = "correct") -> np.ndarray:
    """(E − 1, N) bool: is exiting at early exit e right for sample i (see TARGETS)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid choices: {list(TARGETS)}")
    preds = exit_logits.argmax(-1)
    reference = y[None] if target == "correct" else preds[-1:]
    return (preds[:-1] == reference).numpy()


def _check_split(exit_logits: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if exit_logits.ndim != 3 or exit_logits.shape[0] < 2:
        raise ValueError(f"{name} logits must be (exits ≥ 2, samples, classes); got shape {tuple(exit_logits.shape)}")
    if y.shape != (exit_logits.shape[1],):
        raise ValueError(f"{name} labels have shape {tuple(y.shape)}; the logits hold {exit_logits.shape[1]} samples")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= exit_logits.shape[2]):
        raise ValueError(f"{name} labels span {int(y.min())} … {int(y.max())}; the logits have "
                         f"{exit_logits.shape[2]} classes")


def _fit_exit(features: np.ndarray, target: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """Logistic regression on standardised features, returned as (weights, bias) on the raw features."""
    rate = float(target.mean()) if len(target) else 0.5
    if target.all() or not target.any():  # one class only: nothing to separate, the base rate is the score
        rate = min(max(rate, PROBABILITY_CLIP), 1 - PROBABILITY_CLIP)
        return np.zeros(features.shape[1]), float(np.log(rate / (1 - rate)))
    mean, std = features.mean(0), features.std(0)
    std = np.where(std > 0, std, 1.0)  # a constant feature (the agreement ones at exit 1) gets weight 0 anyway
    model = LogisticRegression(C=c, max_iter=1000).fit((features - mean) / std, target)
    w = model.coef_[0] / std
    return w, float(model.intercept_[0] - w @ mean)


def fit_learned_policy(val_logits: torch.Tensor, y_val: torch.Tensor, target: str = "correct",
                       c: float = 1.0) -> LearnedPolicy:
    """Per early exit, a logistic regression (inverse regularisation `c`) of `target` on FEATURES,
    fitted on validation logits (E, N, K) and labels (N,) only. Classes missing from y_val are
    allowed: the features do not depend on class identity; `classes_seen` records which were there."""
    if target not in TARGETS:  # before any work
        raise ValueError(f"unknown target {target!r}; valid choices: {list(TARGETS)}")
    if not c > 0:
        raise ValueError(f"c={c} must be > 0 (inverse regularisation strength)")
    _check_split(val_logits, y_val, "validation")
    targets = exit_targets(val_logits, y_val, target)
    preds = val_logits.argmax(-1)
    fits = [_fit_exit(exit_features(val_logits[e], preds[:e]).numpy(), targets[e], c)
            for e in range(val_logits.shape[0] - 1)]
    return LearnedPolicy(np.stack([w for w, _ in fits]), np.array([b for _, b in fits]), target,
                         tuple(int(k) for k in torch.unique(y_val).tolist()))


LEARNED_POINT_PREFIX = "learned_budget_"


def learned_point_name(budget: float) -> str:
    """The operating point of the learned policy at a relative-cost budget (beside evaluate's val_budget_*)."""
    return budget_point_name(budget).replace("val_budget_", LEARNED_POINT_PREFIX, 1)


def learned_operating_points(val_logits: torch.Tensor, y_val: torch.Tensor, costs: ExitCosts,
                             budgets=(0.3, 0.4, 0.5), target: str = "correct",
                             per_exit: int = 24) -> tuple[LearnedPolicy, dict[str, dict]]:
    """The learned policy fitted on validation and, per relative-cost budget, its per-exit thresholds picked on
    validation exactly as compare_policies' learned rows: (policy, {learned_budget_<pct>: {"budget",
    "thresholds", "objective_met"}}) — what an export carries (cgt.deployment.exported). A budget below exit
    1's relative cost cannot be reached by any setting and is refused, before any fitting."""
    _check_split(val_logits, y_val, "validation")
    if len(costs.relative) != val_logits.shape[0]:
        raise ValueError(f"the costs have {len(costs.relative)} exits, the validation logits {val_logits.shape[0]}: "
                         f"they must come from one model")
    unreachable = [b for b in budgets if not b >= costs.relative[0] - 1e-12]
    if unreachable or not budgets:
        raise ValueError(f"budgets {list(budgets)}: each must be at least exit 1's relative cost "
                         f"{costs.relative[0]:.4f} (no setting is cheaper than everyone leaving there)")
    learned = fit_learned_policy(val_logits, y_val, target)
    fitted = candidates(val_logits, y_val, costs, learned, per_exit)
    points = {}
    for budget in budgets:
        taus, met = pick(fitted, "budget", budget=budget)
        points[learned_point_name(budget)] = {"budget": float(budget), "thresholds": [float(t) for t in taus],
                                              "objective_met": bool(met)}
    return learned, points


def _budget_rows(policy: ExitPolicy, name: str, splits: dict, costs: ExitCosts, num_classes: int,
                 budgets, per_exit: int) -> list[dict]:
    """Rows of one policy: per budget, the validation-picked thresholds and their test metrics, or an
    explicit not-reachable row when the budget is below what leaving everyone at exit 1 costs."""
    (val_logits, y_val), (test_logits, y_test) = splits["val"], splits["test"]
    fitted = candidates(val_logits, y_val, costs, policy, per_exit)
    per_exit_test = per_exit_metrics(test_logits, y_test)
    rows = []
    for budget in budgets:
        row = {"policy": name, "operating_point": budget_point_name(budget), "budget": float(budget)}
        if budget < costs.relative[0] - 1e-12:
            rows.append(row | {"objective_met": False, "thresholds": None,
                               "how": f"not reachable: budget {budget:g} is below exit 1's relative cost "
                                      f"{costs.relative[0]:.4f}"} | {c: np.nan for c in TABLE_COLUMNS})
            continue
        taus, met = pick(fitted, "budget", budget=budget)
        taus = [float(t) for t in taus]
        m = {s: early_exit_metrics(l, y, *exits_from_logits(l, taus, policy), costs, num_classes)
             for s, (l, y) in splits.items()}
        row |= {"objective_met": met, "thresholds": taus,
                "how": f"fitted on validation: most accurate at relative cost <= {budget}"
                       + ("" if met else " (not met on validation: all leave at exit 1)")}
        row |= {c: m["test"][c] for c in TABLE_COLUMNS if c in m["test"]}
        row |= {f"exit{e + 1}_pct": 100 * f for e, f in enumerate(m["test"]["exit_distribution"])}
        row |= {f"exit{e + 1}_acc": a for e, a in enumerate(per_exit_test["accuracy"])}
        row |= {"oracle_accuracy": per_exit_test["oracle_accuracy"], "val_accuracy": m["val"]["accuracy"],
                "val_relative_cost": m["val"]["avg_cost_relative"]}
        rows.append(row)
    return rows


def compare_policies(val_logits: torch.Tensor, y_val: torch.Tensor, test_logits: torch.Tensor, y_test: torch.Tensor,
                     costs: ExitCosts, num_classes: int, budgets=(0.3, 0.4, 0.5), threshold_policy: str = "max_softmax",
                     learned: LearnedPolicy | None = None, target: str = "correct", per_exit: int = 24) -> pd.DataFrame:
    """One row per (policy, budget): the threshold policy and the learned one (fitted here on validation
    unless given), each with per-exit thresholds picked on validation for the budget, scored on test.
    Columns: policy, operating_point (val_budget_<pct>), budget, objective_met, thresholds, how, then
    evaluate.metrics_table's metric columns and val_accuracy / val_relative_cost (realised on validation)."""
    _check_split(val_logits, y_val, "validation")
    _check_split(test_logits, y_test, "test")
    if test_logits.shape[0] != val_logits.shape[0] or len(costs.block_flops) != val_logits.shape[0]:
        raise ValueError(f"validation logits have {val_logits.shape[0]} exits, test logits {test_logits.shape[0]}, "
                         f"the costs {len(costs.block_flops)}: they must come from one model")
    bad = [b for b in budgets if not b > 0]
    if bad:
        raise ValueError(f"budgets {bad} must be > 0 (relative cost against the full network)")
    learned = fit_learned_policy(val_logits, y_val, target) if learned is None else learned
    splits = {"val": (val_logits, y_val), "test": (test_logits, y_test)}
    rows = (_budget_rows(threshold_policy, "threshold", splits, costs, num_classes, budgets, per_exit)
            + _budget_rows(learned, "learned", splits, costs, num_classes, budgets, per_exit))
    return pd.DataFrame(rows)


def compare_policies_run(run: TrainedRun, costs: ExitCosts, num_classes: int, budgets=(0.3, 0.4, 0.5),
                         threshold_policy: str = "max_softmax", learned: LearnedPolicy | None = None,
                         target: str = "correct") -> pd.DataFrame:
    """`compare_policies` for a finished run, with its dataset, method and seed in front (one tidy row per
    (dataset, method, seed, policy, budget), as evaluate.metrics_table)."""
    lg = run.logits
    table = compare_policies(lg["val"], lg["y_val"], lg["test"], lg["y_test"], costs, num_classes, budgets,
                             threshold_policy, learned, target)
    ident = {"dataset": run.config["dataset"], "method": run.config["method"], "seed": run.config["train"]["seed"]}
    for i, (k, v) in enumerate(ident.items()):
        table.insert(i, k, v)
    return table


def feature_table(exit_logits: torch.Tensor, y: torch.Tensor, learned: LearnedPolicy) -> pd.DataFrame:
    """Per sample and early exit: the features (max_prob is the max-softmax score), the learned score, and
    whether the exit is right or agrees with the last — what a reader looks at to see what the policy uses."""
    learned.check_num_exits(exit_logits.shape[0])
    preds = exit_logits.argmax(-1)
    scores = learned.scores(exit_logits)
    frames = []
    for e in range(exit_logits.shape[0] - 1):
        f = pd.DataFrame(exit_features(exit_logits[e], preds[:e]).numpy(), columns=list(FEATURES))
        f.insert(0, "exit", e + 1)
        f.insert(1, "sample", np.arange(exit_logits.shape[1]))
        f["learned_score"] = scores[e].numpy()
        f["correct"] = (preds[e] == y).numpy()
        f["agrees_with_last"] = (preds[e] == preds[-1]).numpy()
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def exit_differences(exit_logits: torch.Tensor, y: torch.Tensor, threshold_taus, learned_taus,
                     learned: LearnedPolicy, threshold_policy: str = "max_softmax") -> pd.DataFrame:
    """The samples the two policies send out by different exits: per sample, each policy's exit (1-based),
    prediction and whether it is right, with the features the learned policy saw at the earlier of the
    two exits — the examples that show what the learned score changes."""
    preds_t, exits_t = exits_from_logits(exit_logits, threshold_taus, threshold_policy)
    preds_l, exits_l = exits_from_logits(exit_logits, learned_taus, learned)
    differ = torch.nonzero(exits_t != exits_l).flatten()
    table = pd.DataFrame({"sample": differ.numpy(), "label": y[differ].numpy(),
                          "threshold_exit": exits_t[differ].numpy() + 1, "threshold_pred": preds_t[differ].numpy(),
                          "learned_exit": exits_l[differ].numpy() + 1, "learned_pred": preds_l[differ].numpy()})
    table["threshold_right"] = table.threshold_pred == table.label
    table["learned_right"] = table.learned_pred == table.label
    first = torch.minimum(exits_t, exits_l)[differ]  # always an early exit: the two differ
    preds = exit_logits.argmax(-1)
    features = torch.stack([exit_features(exit_logits[e], preds[:e]) for e in range(exit_logits.shape[0] - 1)])
    features = features[first, differ].numpy()                                # (differing samples, F)
    table[[f"{name}_at_first" for name in FEATURES]] = features
    return table
