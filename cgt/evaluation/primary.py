"""The pre-registered analysis (PREREGISTRATION.md): does CGT beat the best fixed-weight joint training?

Everything here is fixed before the runs it judges. Per dataset and protocol:

  * the comparator is the fixed-weight joint baseline (JOINT_BASELINES) with the highest mean
    *validation* AUC — chosen on validation, never on test (`choose_rival`);
  * two endpoints, each CGT variant − comparator, paired by replicate (seed, and fold where the
    protocol has folds):
      auc        test accuracy averaged over the validation-fitted accuracy–cost curve
                 (budgets 0.25 … 1.00 of the full network's FLOPs), in points;
      f1_matched macro-F1 at one matched budget (PRIMARY_BUDGET) — matched in *realised* cost: when a
                 side cannot spend the budget on validation, both sides are fitted at the cost it does
                 reach (`matched_budget`), so equal budget means equal spend; in points, over the
                 classes present in that test split;
  * the interval and p-values come from a paired bootstrap that resamples replicates and, inside each,
    test samples stratified by class (`paired_bootstrap`): it carries seed-to-seed *and* test-sample
    variance, which matters most for rare-class macro-F1;
  * the family is every (dataset, protocol, CGT variant, endpoint) of the primary protocols; Holm's
    step-down adjustment runs over the whole family, and the adjusted p-values decide the category:

      supported      Holm p(Δ ≤ 0) ≤ α                   CGT better at matched cost
      non-inferior   else Holm p(Δ ≤ −δ) ≤ α             not worse than δ at matched cost
      contradicted   else Holm p(Δ ≥ −δ) ≤ α             worse by more than δ
      inconclusive   otherwise

The inputs are plain cached logits (`RunLogits`), so the analysis runs in seconds and never trains.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..cost import ExitCosts
from ..inference import exits_from_logits
from ..methods import JOINT_BASELINES
from ..policy import check_policy
from .thresholds import REACHED_FRACTION, Candidates, candidates, max_affordable_cost, pick
from .verdicts import MARGIN, holm, t_interval

ALPHA = 0.05
"""Family-wise error rate of the primary family (Holm)."""
PRIMARY_BUDGET = 0.5
"""The matched budget of the macro-F1 endpoint, relative to the full network's FLOPs."""
CURVE_BUDGETS = tuple(np.round(np.arange(0.25, 1.0001, 0.05), 2).tolist())
"""Budgets of the validation-fitted accuracy–cost curve whose mean test accuracy is the AUC endpoint."""
RARE_TRAIN_SAMPLES = 30
"""A class with fewer training samples than this is 'rare' in the macro-F1 decomposition."""
BOOTSTRAP_SAMPLES = 4000
"""Bootstrap resamples: enough that a Holm-adjusted p below α over a family of 12 can be resolved."""
ENDPOINTS = {"auc": "accuracy AUC over budgets 0.25–1.00", "f1_matched": f"macro-F1 at matched cost {PRIMARY_BUDGET:g}"}
SUPPORTED, NON_INFERIOR, CONTRADICTED, INCONCLUSIVE = "supported", "non-inferior", "contradicted", "inconclusive"


@dataclass
class RunLogits:
    """What the analysis needs of one finished run: its cached logits and who it is."""

    method: str
    replicate: tuple
    """What pairs runs across methods: (seed,) or (seed, fold) — same data, same initialisation."""
    val: torch.Tensor
    """(E, N_val, K) validation logits."""
    y_val: torch.Tensor
    test: torch.Tensor
    """(E, N_test, K) test logits."""
    y_test: torch.Tensor
    train_counts: np.ndarray | None = None
    """(K,) training samples per class (for the rare/common decomposition of macro-F1); None: unknown."""
    _fitted: dict = field(default_factory=dict, init=False, repr=False)

    def fitted(self, costs: ExitCosts, policy: str) -> Candidates:
        """Threshold candidates evaluated on validation (computed once per run and policy)."""
        if policy not in self._fitted:
            self._fitted[policy] = candidates(self.val, self.y_val, costs, policy)
        return self._fitted[policy]


# ---------------------------------------------------------------- fitting on validation
def fit_at_budget(run: RunLogits, costs: ExitCosts, budget: float, policy: str = "max_softmax") -> dict:
    """The validation-fitted point at `budget`: thresholds, its validation cost and accuracy, and its
    test predictions and realised test cost."""
    fitted = run.fitted(costs, policy)
    taus, _ = pick(fitted, "budget", budget=budget)
    taus = [float(t) for t in taus]
    out = {"thresholds": taus, "max_val_cost": max_affordable_cost(fitted, budget)}
    for split, (logits, y) in {"val": (run.val, run.y_val), "test": (run.test, run.y_test)}.items():
        preds, exits = exits_from_logits(logits, taus, policy)
        fractions = np.bincount(exits.numpy(), minlength=logits.shape[0]) / len(y)
        out[f"{split}_cost"] = float(fractions @ costs.relative)
        out[f"{split}_correct"] = (preds == y).numpy()
        out[f"{split}_preds"] = preds.numpy()
    return out


def reached(point: dict, budget: float) -> bool:
    """Whether the method can spend (nearly) the budget on validation: REACHED_FRACTION of it."""
    return point["max_val_cost"] >= REACHED_FRACTION * budget - 1e-12


def validation_auc(run: RunLogits, costs: ExitCosts, policy: str = "max_softmax",
                   budgets: Sequence[float] = CURVE_BUDGETS) -> float:
    """Mean validation accuracy of the validation-fitted curve: what the comparator is chosen by."""
    return float(np.mean([fit_at_budget(run, costs, b, policy)["val_correct"].mean() for b in budgets]))


def choose_rival(runs: Sequence[RunLogits], costs: ExitCosts, policy: str = "max_softmax",
                 baselines: Sequence[str] = JOINT_BASELINES) -> tuple[str, pd.DataFrame]:
    """(the comparator, the table it was chosen from): the fixed-weight joint baseline with the highest
    mean validation AUC over its replicates. Ties go to the earlier baseline of `baselines`."""
    rows = [{"method": m, "replicates": sum(r.method == m for r in runs),
             "validation AUC, %": 100 * np.mean([validation_auc(r, costs, policy) for r in runs if r.method == m])}
            for m in baselines if any(r.method == m for r in runs)]
    if not rows:
        raise ValueError(f"no fixed-weight joint baseline among the runs (methods: {sorted({r.method for r in runs})}); "
                         f"the comparator is chosen among {list(baselines)}")
    table = pd.DataFrame(rows)
    best = int(np.argmax(table["validation AUC, %"].to_numpy()))  # argmax: the first of equal maxima
    table["chosen"] = [i == best for i in range(len(table))]
    return str(table["method"].iloc[best]), table


def matched_budget(a: dict, b: dict, budget: float) -> float:
    """The budget both sides are compared at: the nominal one when both can spend it; otherwise the
    most the weaker spender can spend on validation (equal realised cost, not equal nominal budget)."""
    if reached(a, budget) and reached(b, budget):
        return budget
    return min(budget, a["max_val_cost"], b["max_val_cost"])


# ---------------------------------------------------------------- statistics of one paired replicate
def macro_f1(y: np.ndarray, pred: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Macro-F1 over the fixed label set `labels` (F1_c = 2·TP / (predicted_c + true_c))."""
    per_class = f1_per_class(y, pred, num_classes)
    return float(per_class[labels].mean())


def f1_per_class(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) F1 of each class; 0 where a class is neither true nor predicted."""
    tp = np.bincount(y[y == pred], minlength=num_classes)
    denominator = np.bincount(pred, minlength=num_classes) + np.bincount(y, minlength=num_classes)
    return np.divide(2 * tp, denominator, out=np.zeros(num_classes), where=denominator > 0)


def f1_decomposition(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, rare: np.ndarray,
                     num_classes: int) -> dict[str, float]:
    """Δ macro-F1 (a − b, points, over the classes present in y) split into what the rare classes and
    what the other classes contribute; the two parts sum to the whole difference."""
    labels = np.unique(y)
    delta = (f1_per_class(y, pred_a, num_classes) - f1_per_class(y, pred_b, num_classes))[labels] * 100 / len(labels)
    is_rare = rare[labels]
    return {"total": float(delta.sum()), "rare": float(delta[is_rare].sum()), "rest": float(delta[~is_rare].sum())}


@dataclass
class PairedReplicate:
    """Per-sample material of one replicate for one endpoint, both sides on the same test samples."""

    y: np.ndarray
    a: np.ndarray
    """Side A (the CGT variant): per-sample score (AUC: mean correctness over budgets) or predictions."""
    b: np.ndarray
    """Side B (the comparator), same kind as `a`."""
    _labels: np.ndarray | None = field(default=None, init=False, repr=False)

    def delta(self, endpoint: str, idx: np.ndarray | None, num_classes: int) -> float:
        """A − B in points on the test samples `idx` (None: all of them)."""
        y, a, b = (self.y, self.a, self.b) if idx is None else (self.y[idx], self.a[idx], self.b[idx])
        if endpoint == "auc":
            return float(100 * (a.mean() - b.mean()))
        labels = self.labels  # the full test split's classes: fixed across resamples
        return 100 * (macro_f1(y, a, labels, num_classes) - macro_f1(y, b, labels, num_classes))

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = np.unique(self.y)
        return self._labels


def stratified_resample(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of a bootstrap resample that keeps every class's count (each class resampled within itself)."""
    return _Strata(y).draw(rng)


class _Strata:
    """The class blocks of a label vector, laid out once so that each resample is one vectorised draw."""

    def __init__(self, y: np.ndarray):
        self.order = np.argsort(y, kind="stable")
        counts = np.bincount(y)
        self.starts = np.repeat(np.cumsum(counts) - counts, counts)  # start of each position's class block
        self.sizes = np.repeat(counts, counts)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        return self.order[self.starts + (rng.random(len(self.order)) * self.sizes).astype(np.int64)]


def paired_bootstrap(replicates: Sequence[PairedReplicate], endpoint: str, num_classes: int,
                     samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    """(samples,) bootstrap distribution of the mean paired Δ: replicates resampled with replacement,
    and inside each, test samples resampled within each class (the same indices for both sides)."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; valid choices: {list(ENDPOINTS)}")
    rng = np.random.default_rng(seed)
    strata = [_Strata(rep.y) for rep in replicates]
    n = len(replicates)
    out = np.empty(samples)
    for s in range(samples):
        chosen = rng.integers(0, n, n)
        out[s] = np.mean([replicates[r].delta(endpoint, strata[r].draw(rng), num_classes) for r in chosen])
    return out


def bootstrap_p_values(draws: np.ndarray, margin: float = MARGIN) -> dict[str, float]:
    """One-sided bootstrap p-values (add-one, never 0): superiority (H0: Δ ≤ 0), non-inferiority
    (H0: Δ ≤ −δ) and inferiority by more than δ (H0: Δ ≥ −δ)."""
    n = len(draws)
    return {"superiority": (1 + np.sum(draws <= 0)) / (n + 1),
            "non_inferiority": (1 + np.sum(draws <= -margin)) / (n + 1),
            "inferiority": (1 + np.sum(draws >= -margin)) / (n + 1)}


# ---------------------------------------------------------------- one hypothesis, then the family
def compare(cgt_runs: Sequence[RunLogits], rival_runs: Sequence[RunLogits], costs: ExitCosts, num_classes: int,
            policy: str = "max_softmax", samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, dict]:
    """Both endpoints of one CGT variant against the comparator, paired by replicate: endpoint → its
    row (Δ, interval, raw one-sided p-values, realised costs, budget reached k/n, F1 decomposition)."""
    check_policy(policy)
    rival = {r.replicate: r for r in rival_runs}
    mine = {c.replicate: c for c in cgt_runs}
    if set(mine) != set(rival):
        raise ValueError(f"the CGT variant's replicates {sorted(mine, key=str)} and the comparator's "
                         f"{sorted(rival, key=str)} differ: every replicate must be paired")
    pairs = [(mine[k], rival[k]) for k in sorted(mine, key=str)]
    if len(pairs) < 2:
        raise ValueError(f"{len(pairs)} paired replicate(s); the pre-registered analysis needs at least 2")
    for c, r in pairs:
        if not torch.equal(c.y_test, r.y_test):
            raise ValueError(f"replicate {c.replicate}: the two methods' test labels differ — not the same test split")
    auc, f1, costs_seen, curve_costs, parts = [], [], [], [], []
    for c, r in pairs:
        curve = [(fit_at_budget(c, costs, b, policy), fit_at_budget(r, costs, b, policy)) for b in CURVE_BUDGETS]
        auc.append(PairedReplicate(c.y_test.numpy(), np.mean([p["test_correct"] for p, _ in curve], axis=0),
                                   np.mean([q["test_correct"] for _, q in curve], axis=0)))
        curve_costs.append({"cgt_cost": np.mean([p["test_cost"] for p, _ in curve]),
                            "rival_cost": np.mean([q["test_cost"] for _, q in curve])})
        nominal = fit_at_budget(c, costs, PRIMARY_BUDGET, policy), fit_at_budget(r, costs, PRIMARY_BUDGET, policy)
        b_star = matched_budget(*nominal, PRIMARY_BUDGET)
        at = nominal if b_star == PRIMARY_BUDGET else (fit_at_budget(c, costs, b_star, policy),
                                                      fit_at_budget(r, costs, b_star, policy))
        f1.append(PairedReplicate(c.y_test.numpy(), at[0]["test_preds"], at[1]["test_preds"]))
        costs_seen.append({"budget": b_star, "cgt_cost": at[0]["test_cost"], "rival_cost": at[1]["test_cost"],
                           "cgt_reached": reached(nominal[0], PRIMARY_BUDGET),
                           "rival_reached": reached(nominal[1], PRIMARY_BUDGET)})
        if c.train_counts is not None:
            rare = np.asarray(c.train_counts) < RARE_TRAIN_SAMPLES
            parts.append(f1_decomposition(f1[-1].y, f1[-1].a, f1[-1].b, rare, num_classes))
    n = len(pairs)
    rows = {}
    for endpoint, reps, spent in (("auc", auc, curve_costs), ("f1_matched", f1, costs_seen)):
        observed = [rep.delta(endpoint, None, num_classes) for rep in reps]
        draws = paired_bootstrap(reps, endpoint, num_classes, samples, seed)
        t = t_interval(observed)
        row = {"n": n, "delta": float(np.mean(observed)), "per_replicate": observed,
               "ci_low": float(np.percentile(draws, 2.5)), "ci_high": float(np.percentile(draws, 97.5)),
               "t_low": t.low, "t_high": t.high,
               **{f"p_{k}": v for k, v in bootstrap_p_values(draws).items()},
               "cgt_cost": float(np.mean([x["cgt_cost"] for x in spent])),
               "rival_cost": float(np.mean([x["rival_cost"] for x in spent]))}
        if endpoint == "f1_matched":
            row |= {"matched_budget": float(np.mean([x["budget"] for x in spent])),
                    "cgt_reached": f"{sum(x['cgt_reached'] for x in spent)}/{n}",
                    "rival_reached": f"{sum(x['rival_reached'] for x in spent)}/{n}"}
            if parts:
                row |= {"delta_rare": float(np.mean([p["rare"] for p in parts])),
                        "delta_rest": float(np.mean([p["rest"] for p in parts]))}
        rows[endpoint] = row
    return rows


def categorise(table: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Holm over the whole family (every row of `table`), per one-sided test; the adjusted p-values
    decide each row's category (module docstring)."""
    if table.empty:
        raise ValueError("an empty family: no hypothesis to judge")
    out = table.copy()
    for test in ("superiority", "non_inferiority", "inferiority"):
        out[f"p_{test}_holm"] = holm(out[f"p_{test}"].to_numpy()) if len(out) else []
    category = np.where(out["p_superiority_holm"] <= alpha, SUPPORTED,
                        np.where(out["p_non_inferiority_holm"] <= alpha, NON_INFERIOR,
                                 np.where(out["p_inferiority_holm"] <= alpha, CONTRADICTED, INCONCLUSIVE)))
    out["verdict"] = category
    return out


REPRODUCED, NOT_REPRODUCED, CANNOT_TELL = "reproduced", "not reproduced", "cannot tell"


def dataset_answer(categories: Sequence[str]) -> str:
    """The pre-registered answer for one dataset from its rows' verdicts: reproduced when some row is
    supported and none contradicted; not reproduced when none is supported and every row is non-inferior
    or contradicted (the data can tell, and CGT is not better); otherwise cannot tell."""
    categories = list(categories)
    if not categories:
        raise ValueError("no verdicts to answer from")
    if SUPPORTED in categories and CONTRADICTED not in categories:
        return REPRODUCED
    if SUPPORTED not in categories and all(c in (NON_INFERIOR, CONTRADICTED) for c in categories):
        return NOT_REPRODUCED
    return CANNOT_TELL


def primary_family(groups: dict[tuple[str, str], dict], cgt_methods: Sequence[str], policy: str = "max_softmax",
                   samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The whole pre-registered family. `groups`: (dataset, protocol) → {"runs": [RunLogits], "costs":
    ExitCosts, "num_classes": K}. Returns (verdicts, one row per hypothesis, Holm over all of them;
    the comparator choice, one row per group and joint baseline)."""
    rows, choices = [], []
    for (dataset, protocol), group in groups.items():
        runs, costs, k = group["runs"], group["costs"], group["num_classes"]
        rival, chosen_from = choose_rival(runs, costs, policy)
        choices.append(chosen_from.assign(dataset=dataset, protocol=protocol))
        for cgt in cgt_methods:
            cgt_runs = [r for r in runs if r.method == cgt]
            if not cgt_runs:
                raise ValueError(f"{dataset} ({protocol}): no {cgt} runs; the pre-registered family needs every "
                                 f"CGT variant {list(cgt_methods)}")
            for endpoint, row in compare(cgt_runs, [r for r in runs if r.method == rival], costs, k, policy,
                                         samples, seed).items():
                rows.append({"dataset": dataset, "protocol": protocol, "CGT": cgt, "comparator": rival,
                             "endpoint": endpoint, **row})
    return categorise(pd.DataFrame(rows)), pd.concat(choices, ignore_index=True)
