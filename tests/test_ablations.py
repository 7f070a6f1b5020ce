"""The ablation grid's helpers (cgt.experiments.ablations) on small hand-made tables and tensors."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from cgt.evaluation import verdicts
from cgt.experiments import ablations
from cgt.experiments.ablations import Config


def _rows(config: str, acc: list[float], cost: list[float]) -> list[dict]:
    """One row per seed, the same accuracy and cost at every point of ablations.POINTS."""
    return [{"config": config, "seed": s, **{f"acc {p}": a for p in ablations.POINTS},
             **{f"cost {p}": c for p in ablations.POINTS}} for s, (a, c) in enumerate(zip(acc, cost))]


def test_paired_verdicts_hand_checked():
    # Δacc per seed: +1.0, +1.2, +0.8 (mean +1.0, s = 0.2); Δcost: -0.2, -0.25, -0.15 (all below 0)
    table = pd.DataFrame(_rows("joint_uniform", [90, 90, 90], [0.5, 0.5, 0.5])
                         + _rows("gate", [91, 91.2, 90.8], [0.3, 0.25, 0.35]))
    row = ablations.paired_verdicts(table, "gate", "joint_uniform")
    assert row["n (seeds)"] == 3
    assert row["Δ acc τ = 0.9"] == "+1.00" and row["Δ cost τ = 0.9"] == "-0.200"
    # 95 % CI of Δacc: 1.0 ± 4.303 · 0.2 / √3 = 1.0 ± 0.497 → above 0; cost CI below 0 → supported
    assert row["verdict τ = 0.9"] == verdicts.SUPPORTED
    # matched cost: quality alone
    assert row["verdict matched cost (40 %)"] == verdicts.MORE_ACCURATE


def test_grid_verdicts_one_row_per_configuration_in_grid_order():
    table = pd.DataFrame(_rows("joint_uniform", [90, 91], [1, 1]) + _rows("b", [80, 81], [1, 1])
                         + _rows("a", [90, 91], [0.5, 0.5]))
    out = ablations.grid_verdicts(table, [Config("b", "hard_cgt"), Config("a", "soft_cgt")])
    assert out["config"].tolist() == ["b", "a"] and set(out["against"]) == {"joint_uniform"}
    assert out.loc[0, "verdict τ = 0.9"] == verdicts.CONTRADICTED  # 10 points worse every seed


def test_a_label_smoothed_configuration_is_compared_with_a_label_smoothed_joint_uniform():
    """Like for like: 'a + smoothing 0.1' is 2 points above plain joint_uniform but level with the smoothed one."""
    a = Config("a", "soft_cgt")
    a_smooth, ref_smooth = ablations.with_label_smoothing(a), ablations.with_label_smoothing(ablations.REFERENCE)
    table = pd.DataFrame(_rows("joint_uniform", [90, 91], [1, 1]) + _rows(ref_smooth.name, [92, 93], [1, 1])
                         + _rows(a_smooth.name, [92, 93], [1, 1]))
    (row,) = ablations.grid_verdicts(table, [a_smooth, ref_smooth]).to_dict("records")
    assert row["against"] == ref_smooth.name and row["Δ acc τ = 0.9"] == "+0.00"
    with pytest.raises(ValueError, match="like-for-like reference"):
        ablations.grid_verdicts(table.query("config != @ref_smooth.name"), [a_smooth])


def test_recipe_verdicts_compare_each_change_with_its_own_base():
    base, changed = Config("hard x", "hard_cgt"), Config("hard x + smoothing 0.1", "hard_cgt")
    table = pd.DataFrame(_rows("joint_uniform", [50, 50], [1, 1]) + _rows(base.name, [90, 91], [0.5, 0.5])
                         + _rows(changed.name, [90.1, 91.1], [0.5, 0.5]))
    (row,) = ablations.recipe_verdicts(table, [(base, changed)]).to_dict("records")
    assert row["config"] == changed.name and row["against"] == base.name
    assert row["Δ acc τ = 0.9"] == "+0.10"  # against its base, not against joint_uniform (+40.6)


def test_best_by_validation_uses_validation_accuracy_at_the_selection_point_per_method():
    def run(val_acc: float, test_acc: float):
        point = {"val": {"accuracy": val_acc}, "test": {"accuracy": test_acc}}
        return SimpleNamespace(metrics={"operating_points": {ablations.SELECTION_POINT: point}})

    configs = [Config("h1", "hard_cgt"), Config("h2", "hard_cgt"), Config("s1", "soft_cgt")]
    results = {"h1": [run(0.80, 0.99), run(0.82, 0.99)],   # mean val 0.81, best on test
               "h2": [run(0.85, 0.70), run(0.83, 0.70)],   # mean val 0.84: chosen
               "s1": [run(0.5, 0.5)]}
    assert [c.name for c in ablations.best_by_validation(results, configs)] == ["h2", "s1"]
    # the recipe check retrains those two and the reference with smoothing; none at smoothing 0
    best, smoothed = ablations.recipe_check(results, configs, 0.1)
    assert [c.name for c in smoothed] == ["h2 + smoothing 0.1", "s1 + smoothing 0.1", "joint_uniform + smoothing 0.1"]
    assert all(c.train == {"label_smoothing": 0.1} for c in smoothed) and best == ablations.best_by_validation(results, configs)
    assert ablations.recipe_check(results, configs, 0)[1] == []


def test_routed_accuracy_counts_only_the_samples_each_exit_takes():
    # 3 samples, 2 exits; at τ = 0.9: sample 0 leaves at exit 1 (p = 0.95), samples 1, 2 go to exit 2
    confident, unsure = torch.tensor([4.0, 1.0]), torch.tensor([0.0, 0.1])
    exit1 = torch.stack([confident, unsure, unsure])
    exit2 = torch.tensor([[0.0, 5.0], [5.0, 0.0], [5.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    assert ablations.routed_accuracy(torch.stack([exit1, exit2]), y, 0.9) == [1.0, 0.5]


def test_grid_names_must_be_unique():
    with pytest.raises(ValueError, match="unique"):
        ablations.run_grid("indian_pines", "smoke", [Config("a", "hard_cgt"), Config("a", "soft_cgt")])


def test_label_smoothing_is_a_training_override_and_keeps_tau_infer():
    c = ablations.with_label_smoothing(Config("hard τ=0.8", "hard_cgt", {"tau_train": 0.8}, tau_infer=0.8))
    assert c.train == {"label_smoothing": 0.1} and c.tau_infer == 0.8 and c.options == {"tau_train": 0.8}


def test_interference_summary_is_a_mean_over_seeds_with_its_interval():
    """Two seeds, each with two records (the second half = the last one): cos(1, 3) is 0.2 and 0.4 → mean
    0.3 with a t interval over the 2 seeds; norm shares likewise."""
    def history(cos13: float, share1: float) -> list[dict]:
        record = {"cosine": [[1, 0.5, cos13], [0.5, 1, 0.6], [cos13, 0.6, 1]],
                  "norm_share": [share1, 0.3, 0.7 - share1]}
        return [{"gradients": [record | {"step": 0}, record | {"step": 25}]}]

    table = ablations.interference_summary({"joint_uniform": [history(0.2, 0.2), history(0.4, 0.4)]})
    row = table.iloc[0]
    half = verdicts.t_interval([0.2, 0.4])
    assert row["seeds"] == 2
    assert row["cos exits 1·3"] == f"0.300 [{half.low:.3f}, {half.high:.3f}]"
    assert row["exit 1 norm share %"].startswith("30.0 [")
    assert row["lowest pair cos"].startswith("0.300")


def test_on_a_protocol_with_folds_configurations_pair_by_fold_and_seed():
    """Two folds of one seed are two replicates: n = 2, and each fold is compared with its own fold."""
    rows = []
    for fold, (ref, gate) in enumerate(((90.0, 91.0), (80.0, 81.2))):
        for config, acc in (("joint_uniform", ref), ("gate", gate)):
            rows += [r | {"fold": fold} for r in _rows(config, [acc], [0.5])]
    row = ablations.paired_verdicts(pd.DataFrame(rows), "gate", "joint_uniform")
    assert row["n (seeds)"] == 2 and row[f"Δ acc {ablations.POINTS[f'@{ablations.PAPER_TAU}']}"] == "+1.10"
    assert ablations.grid_seeds([0, 1, 2, 3], "blocked") == [0] and ablations.grid_seeds([0, 1, 2, 3], "random") == [0, 1, 2]
    assert ablations.interference_folds("blocked", None) == [0] and ablations.interference_folds("random", [1]) is None
