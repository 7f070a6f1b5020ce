"""When does CGT help? The ablation grid of notebook 06 as data, its runs, and its tables.

A configuration is one line: a name, a method, strategy options on top of the method's, training
overrides, and the inference threshold that matches its training (τ_infer = τ_train). Add one to
`GRIDS` (or pass your own list) and the notebook trains, evaluates and reports it like the others.

    results = run_grid("indian_pines", "quick", GRIDS["full"], seeds=[0, 1, 2])
    table = config_table(results)        # one row per (configuration, seed)
    verdicts = grid_verdicts(table, GRIDS["full"])  # each against joint_uniform (same recipe), paired by seed
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..evaluation import verdicts
from ..evaluation.metrics import early_exit_metrics
from ..inference import exits_from_logits
from ..policy import PAPER_TAU
from .train_evaluate import EvaluatedRun, run_methods


@dataclass(frozen=True)
class Config:
    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    """Strategy options on top of the method's own (cgt.methods)."""
    train: dict[str, Any] = field(default_factory=dict)
    """TrainConfig overrides (e.g. label smoothing)."""
    tau_infer: float = PAPER_TAU
    """The inference threshold that matches training: τ_infer = τ_train."""


REFERENCE = Config("joint_uniform", "joint_uniform")
"""What every configuration is compared with (the paired verdict rule of cgt.evaluation.verdicts)."""


def hard_grid(taus=(0.5, 0.8, 0.9), normalize=(True, False), leaks=(1e-3, 1e-1)) -> list[Config]:
    return [Config(f"hard τ={t} norm={'on' if n else 'off'} ε={e:g}", "hard_cgt",
                   {"tau_train": t, "normalize": n, "eps_leak": e}, tau_infer=t)
            for t in taus for n in normalize for e in leaks]


def soft_grid(scales=(1.0, 5.0, 20.0)) -> list[Config]:
    return ([Config(f"soft k={k:g}", "soft_cgt", {"sigmoid_scale": k}) for k in scales]
            + [Config("soft linear", "soft_cgt", {"residual": "linear"})])


def schedule_grid() -> list[Config]:
    """Gate versus schedule: each CGT variant with fixed λ = (1, 1, 1) instead of the annealed λ."""
    return [Config("hard λ=(1,1,1)", "hard_cgt", {"lambdas": [1.0, 1.0, 1.0]}, tau_infer=0.5),
            Config("soft λ=(1,1,1)", "soft_cgt", {"lambdas": [1.0, 1.0, 1.0]})]


GRIDS: dict[str, list[Config]] = {
    "full": hard_grid() + soft_grid() + schedule_grid(),
    "reduced": hard_grid(taus=(0.5, 0.9), leaks=(1e-3,)),
}
"""`full`: every gate setting of the grid (Indian Pines); `reduced`: τ_train × normalisation for HardCGT
(Fashion-MNIST, whose runs cost five times more)."""
GRID_WORDS = {
    "full": "the full grid: HardCGT τ_train ∈ {0.5, 0.8, 0.9} × normalisation on/off × ε_leak ∈ {10⁻³, 10⁻¹}, "
            "SoftCGT with sigmoid scale k ∈ {1, 5, 20} and the linear residual, and each variant with fixed "
            "λ = (1, 1, 1)",
    "reduced": "the reduced grid: HardCGT τ_train ∈ {0.5, 0.9} × normalisation on/off at ε_leak = 10⁻³ only "
               "(the pipeline's most expensive runs; the full grid would not fit its time budget)",
}
"""What each grid holds, in the README's words."""
DEFAULT_GRID = {"indian_pines": "full", "fashion_mnist": "reduced"}
DEFAULT_SEEDS = 3
"""The grid trains the profile's first three seeds — on a protocol with folds, its first seed on every fold
(each fold is a replicate: `grid_seeds`)."""
INTERFERENCE_METHODS = ("joint_uniform", "joint_annealed", "hard_cgt", "soft_cgt")
"""The methods whose gradients notebook 06 logs."""
INTERFERENCE_SEEDS = 3
"""...for the profile's first three seeds: the summary's intervals are over seeds, the unit that varies."""
LOG_GRADIENTS_EVERY = 25
"""Steps between gradient-interference records in notebook 06 (its default; overhead measured in the README)."""
SELECTION_POINT = "val_budget_40"
"""Where the best configuration of each method is chosen: validation accuracy at the matched-cost point."""


def grid_seeds(profile_seeds: list[int], split: str) -> list[int]:
    """The seeds the grid trains: the first DEFAULT_SEEDS, or on a protocol with folds the first seed alone
    (its K folds are the replicates; seeds × folds would multiply the grid's cost by K)."""
    return profile_seeds[:1] if split == "blocked" else profile_seeds[:DEFAULT_SEEDS]


def interference_folds(split: str, folds: list[int] | None) -> list[int] | None:
    """The folds the gradient-logging runs use: the first planned fold of a protocol with folds (the
    interference summary's intervals are over seeds), None without folds."""
    return (folds or [0])[:1] if split == "blocked" else None


def grid_of(names: list[str]) -> str | None:
    """The name of the largest grid of GRIDS whose every configuration is among `names` (a table's
    configurations), or None when none is."""
    held = [g for g, cs in GRIDS.items() if {c.name for c in cs} <= set(names)]
    return max(held, key=lambda g: len(GRIDS[g]), default=None)


def with_label_smoothing(config: Config, smoothing: float = 0.1) -> Config:
    """The recipe check: the same configuration trained with label smoothing (the authors' setting)."""
    return Config(f"{config.name} + smoothing {smoothing:g}", config.method, config.options,
                  config.train | {"label_smoothing": smoothing}, config.tau_infer)


LABEL_SMOOTHING = 0.1
"""The recipe check's smoothing: the authors' setting (notebook 06's `label_smoothing` default)."""


def recipe_check(results: dict[str, list[EvaluatedRun]], configs: list[Config],
                 smoothing: float = LABEL_SMOOTHING) -> tuple[list[Config], list[Config]]:
    """(the best configuration of each method, chosen on validation; those trained again with label
    smoothing plus joint_uniform with the same smoothing — like for like, their reference). No smoothed
    configurations when smoothing is 0. Notebook 06 trains the second list after its grid; the pipeline's
    runner plans the same list from the same grid, so both train the same runs."""
    best = best_by_validation(results, configs)
    if not smoothing:
        return best, []
    return best, [with_label_smoothing(c, smoothing) for c in [*best, REFERENCE]]


def best_by_validation(results: dict[str, list[EvaluatedRun]], configs: list[Config],
                       point: str = SELECTION_POINT) -> list[Config]:
    """Per method of the grid: the configuration with the highest mean validation accuracy at `point`
    (by default the matched-cost point, so a configuration cannot win by spending more). Chosen
    without looking at test data, so the test numbers of the chosen ones stay honest."""
    best: dict[str, tuple[float, Config]] = {}
    for c in configs:
        acc = float(np.mean([r.metrics["operating_points"][point]["val"]["accuracy"] for r in results[c.name]]))
        if c.method not in best or acc > best[c.method][0]:
            best[c.method] = (acc, c)
    return [c for _, c in best.values()]


def run_grid(dataset: str, profile: str, configs: list[Config], seeds: list[int] | None = None,
             **kwargs: Any) -> dict[str, list[EvaluatedRun]]:
    """Train (or load) the reference and every configuration × seed; name → its evaluated runs."""
    names = [c.name for c in configs]
    if len(set(names)) != len(names) or REFERENCE.name in names:
        raise ValueError(f"configuration names must be unique and not {REFERENCE.name!r}: {names}")
    out = {}
    for c in [REFERENCE, *configs]:
        out[c.name] = run_methods(dataset, profile, [c.method], seeds, options={c.method: c.options},
                                  train_overrides=c.train or None, **kwargs)
    return out


def routed_accuracy(logits: torch.Tensor, y: torch.Tensor, tau: float) -> list[float | None]:
    """Per exit: accuracy on the samples that leave there at global τ (None where none leave)."""
    preds, exits = exits_from_logits(logits, tau)
    return [float((preds[exits == e] == y[exits == e]).float().mean()) if (exits == e).any() else None
            for e in range(logits.shape[0])]


def config_table(results: dict[str, list[EvaluatedRun]], configs: list[Config],
                 budget_point: str = "val_budget_40") -> pd.DataFrame:
    """One row per (configuration, seed): test accuracy and cost at τ_infer = τ_train, at τ = 0.9 and at
    the validation-fitted matched-cost point; the oracle accuracy; accuracy of each exit on the samples
    it takes at τ_infer."""
    taus = {c.name: c.tau_infer for c in [REFERENCE, *configs]}
    rows = []
    for name, runs in results.items():
        for r in runs:
            test, y = r.run.logits["test"], r.run.logits["y_test"]
            num_classes = test.shape[-1]
            at_train = early_exit_metrics(test, y, *exits_from_logits(test, taus[name]), r.costs, num_classes)
            points = r.metrics["operating_points"]
            row = {"config": name, "fold": r.fold, "seed": r.seed,
                   "acc @τ_train": 100 * at_train["accuracy"], "cost @τ_train": at_train["avg_cost_relative"],
                   f"acc @{PAPER_TAU}": 100 * points["paper_tau"]["test"]["accuracy"],
                   f"cost @{PAPER_TAU}": points["paper_tau"]["test"]["avg_cost_relative"],
                   f"acc @{budget_point}": 100 * points[budget_point]["test"]["accuracy"],
                   f"cost @{budget_point}": points[budget_point]["test"]["avg_cost_relative"],
                   "oracle acc": 100 * r.metrics["per_exit"]["test"]["oracle_accuracy"]}
            for e, acc in enumerate(routed_accuracy(test, y, taus[name])):
                row[f"exit {e + 1} acc on its samples"] = np.nan if acc is None else 100 * acc
            rows.append(row)
    return pd.DataFrame(rows)


POINTS = {"@τ_train": "τ_infer = τ_train", f"@{PAPER_TAU}": f"τ = {PAPER_TAU}", "@val_budget_40": "matched cost (40 %)"}


def reference_for(config: Config) -> Config:
    """What a configuration is compared with: joint_uniform trained with the same recipe (like for like —
    a label-smoothed configuration against a label-smoothed joint_uniform)."""
    smoothing = config.train.get("label_smoothing")
    return with_label_smoothing(REFERENCE, smoothing) if smoothing else REFERENCE


def grid_verdicts(table: pd.DataFrame, configs: list[Config], margin: float = verdicts.MARGIN) -> pd.DataFrame:
    """Every configuration against joint_uniform trained with the same recipe (`reference_for`) at each
    point, paired by seed, with cgt.evaluation.verdicts' rule (accuracy; at matched cost, quality alone)."""
    references = {reference_for(c).name for c in configs} | {REFERENCE.name}
    present = set(table["config"])
    rows = []
    for c in configs:
        if c.name in references:
            continue
        reference = reference_for(c).name
        if reference not in present:
            raise ValueError(f"configuration {c.name!r} needs its like-for-like reference {reference!r} in the table "
                             f"(train it with run_grid)")
        rows.append({"config": c.name, "against": reference, **paired_verdicts(table, c.name, reference, margin)})
    return pd.DataFrame(rows)


def recipe_verdicts(table: pd.DataFrame, pairs: list[tuple[Config, Config]],
                    margin: float = verdicts.MARGIN) -> pd.DataFrame:
    """Each (configuration, the same with the recipe change) pair: the change's effect, paired by seed."""
    return pd.DataFrame([{"config": changed.name, "against": base.name,
                          **paired_verdicts(table, changed.name, base.name, margin)} for base, changed in pairs])


def paired_verdicts(table: pd.DataFrame, name: str, reference: str, margin: float = verdicts.MARGIN) -> dict[str, Any]:
    """Configuration `name` against `reference` at each point of POINTS: mean paired Δ and the verdict."""
    key = ["fold", "seed"] if "fold" in table and table["fold"].notna().any() else ["seed"]  # the replicates
    ref = table[table["config"] == reference].set_index(key)
    df = table[table["config"] == name].set_index(key)
    seeds = sorted(set(df.index) & set(ref.index))
    row: dict[str, Any] = {"n (seeds)": len(seeds)}
    for suffix, label in POINTS.items():
        d_acc = (df.loc[seeds, f"acc {suffix}"] - ref.loc[seeds, f"acc {suffix}"]).to_numpy(float)
        d_cost = (df.loc[seeds, f"cost {suffix}"] - ref.loc[seeds, f"cost {suffix}"]).to_numpy(float)
        row[f"Δ acc {label}"] = f"{d_acc.mean():+.2f}" if len(seeds) else "—"
        row[f"Δ cost {label}"] = f"{d_cost.mean():+.3f}" if len(seeds) else "—"
        row[f"verdict {label}"] = (verdicts.matched_cost_verdict(d_acc, margin) if "budget" in suffix
                                   else verdicts.verdict(d_cost, d_acc, margin))
    return row


def mean_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over replicates per configuration (the heatmap's numbers), in grid order."""
    return table.drop(columns=[c for c in ("seed", "fold") if c in table]).groupby("config", sort=False).mean()


def gate_vs_routing(results: dict[str, list[EvaluatedRun]], configs: list[Config]) -> pd.DataFrame:
    """Per configuration (first replicate): the fraction of the training loss weight each exit held in the
    last epoch (what the gate let each exit learn) beside the test-time exit distribution at τ_infer
    (where samples are sent)."""
    taus = {c.name: c.tau_infer for c in [REFERENCE, *configs]}
    rows = []
    for name, runs in results.items():
        r = runs[0]
        _, exits = exits_from_logits(r.run.logits["test"], taus[name])
        routed = np.bincount(exits.numpy(), minlength=r.run.logits["test"].shape[0]) / len(exits)
        weight = r.run.history[-1]["mean_weight"]
        row = {"config": name}
        for e, (w, f) in enumerate(zip(weight, routed)):
            row[f"exit {e + 1}: train weight %"] = round(100 * w / sum(weight), 1)
            row[f"exit {e + 1}: test routed %"] = round(100 * f, 1)
        rows.append(row)
    return pd.DataFrame(rows)


def interference_summary(histories: dict[str, list[list[dict]]]) -> pd.DataFrame:
    """Per method, over seeds (`histories`: method → one training history per seed): each seed's mean over
    the second half of its gradient records (cgt.interference), then the mean over seeds with a 95 %
    Student-t interval — the cosine between the first and the last exit's gradients on the block both
    reach, the lowest pair cosine, and each exit's share of the gradient norm on block 0."""
    rows = []
    for method, per_seed in histories.items():
        seeds = []
        for hist in per_seed:
            records = [g for h in hist for g in h.get("gradients", [])]
            late = records[len(records) // 2:]
            if late:
                seeds.append(_late_interference(late))
        if not seeds:
            continue
        num_exits = len(seeds[0]["shares"])
        row = {"method": method, "seeds": len(seeds),
               f"cos exits 1·{num_exits}": _over_seeds([s["cos_first_last"] for s in seeds], 3),
               "lowest pair cos": _over_seeds([s["lowest"] for s in seeds], 3)}
        for e in range(num_exits):
            row[f"exit {e + 1} norm share %"] = _over_seeds([100 * s["shares"][e] for s in seeds], 1)
        rows.append(row)
    return pd.DataFrame(rows)


def _late_interference(late: list[dict]) -> dict[str, Any]:
    """One seed's late-training means: first-vs-last cosine, the lowest pair cosine, the norm shares."""
    num_exits = len(late[0]["norm_share"])
    pair_means = {(a, b): np.nanmean([np.nan if g["cosine"][a][b] is None else g["cosine"][a][b] for g in late])
                  for a in range(num_exits) for b in range(a + 1, num_exits)}
    return {"cos_first_last": float(pair_means[(0, num_exits - 1)]), "lowest": float(min(pair_means.values())),
            "shares": [float(np.mean([g["norm_share"][e] for g in late])) for e in range(num_exits)]}


def _over_seeds(values: list[float], decimals: int) -> str:
    """'mean [95 % t interval]' over seeds (the mean alone for one seed)."""
    if len(values) < 2:
        return f"{values[0]:.{decimals}f}"
    i = verdicts.t_interval(values)
    return f"{i.mean:.{decimals}f} [{i.low:.{decimals}f}, {i.high:.{decimals}f}]"
