"""The pre-registered analysis (cgt.evaluation.primary) on hand-made logits: the comparator is chosen on
validation, cost is matched in what is spent, the bootstrap carries test-sample variance, Holm runs over
the whole family and decides."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cgt.cost import ExitCosts
from cgt.evaluation import primary
from cgt.evaluation.primary import (
    PairedReplicate,
    RunLogits,
    bootstrap_p_values,
    categorise,
    choose_rival,
    compare,
    f1_decomposition,
    macro_f1,
    matched_budget,
    paired_bootstrap,
    stratified_resample,
)
from cgt.evaluation.verdicts import holm

COSTS = ExitCosts(block_flops=(100, 100, 100), head_flops=(0, 0, 0))  # exits at 1/3, 2/3, 1 of the network
K = 3


def logits_for(labels: np.ndarray, right: np.ndarray, confidence: list) -> torch.Tensor:
    """(3, N, K) logits: at exit e, every sample predicts its label where `right`, else the next class, with
    max-softmax = confidence[e] (a number, or one per sample; the same prediction at every exit)."""
    pred = np.where(right, labels, (labels + 1) % K)
    out = torch.zeros(3, len(labels), K)
    for e, conf in enumerate(confidence):
        conf = np.broadcast_to(np.asarray(conf, dtype=np.float64), labels.shape)
        margin = np.log(conf * (K - 1) / (1 - conf))  # softmax of [m, 0, 0] has max conf
        out[e, torch.arange(len(labels)), torch.as_tensor(pred)] = torch.as_tensor(margin, dtype=torch.float32)
    return out


def run(method: str, replicate, val_right: float, test_right: float, n: int = 300, seed: int = 0,
        confidence=(0.6, 0.8, 0.95)) -> RunLogits:
    labels = np.random.default_rng(abs(hash(tuple(replicate))) % 2**32)  # a replicate's data: shared by methods
    y_val, y_test = labels.integers(0, K, n), labels.integers(0, K, n)
    rng = np.random.default_rng(seed)  # what each method gets right
    return RunLogits(method, replicate, logits_for(y_val, rng.random(n) < val_right, list(confidence)),
                     torch.as_tensor(y_val), logits_for(y_test, rng.random(n) < test_right, list(confidence)),
                     torch.as_tensor(y_test), train_counts=np.array([100, 20, 100]))


def test_the_comparator_is_the_validation_best_not_the_test_best():
    """joint_uniform is better on validation and worse on test than joint_depth: it is the comparator."""
    runs = [run("joint_uniform", (s,), val_right=0.9, test_right=0.5, seed=s) for s in range(2)]
    runs += [run("joint_depth", (s,), val_right=0.7, test_right=0.95, seed=10 + s) for s in range(2)]
    rival, table = choose_rival(runs, COSTS)
    assert rival == "joint_uniform"
    assert table.set_index("method")["chosen"].to_dict() == {"joint_uniform": True, "joint_depth": False}
    test_best = max(["joint_uniform", "joint_depth"],
                    key=lambda m: np.mean([(r.test[-1].argmax(-1) == r.y_test).float().mean() for r in runs
                                           if r.method == m]))
    assert test_best == "joint_depth" != rival


def test_no_joint_baseline_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="joint_uniform"):
        choose_rival([run("hard_cgt", (0,), 0.9, 0.9)], COSTS)


def test_matched_budget_is_what_the_weaker_spender_reaches():
    """Nominal budget 0.5: a side that can spend only 0.21 on validation moves the comparison to 0.21."""
    spends_all, stuck = {"max_val_cost": 0.49}, {"max_val_cost": 0.21}
    assert matched_budget(spends_all, {"max_val_cost": 0.46}, 0.5) == 0.5   # both reach 0.9 · 0.5 = 0.45
    assert matched_budget(spends_all, stuck, 0.5) == pytest.approx(0.21)
    assert matched_budget(stuck, spends_all, 0.5) == pytest.approx(0.21)


def test_compare_refits_the_comparator_at_the_cost_cgt_actually_spends():
    """A CGT run whose exit 1 is always sure (max-softmax 0.99 everywhere) cannot spend more than exit 1's
    cost (1/3) at budget 0.5 — unless every threshold is above 0.99, which sends everyone to the end (cost 1).
    The comparator is then fitted at the same realised cost, and the row shows both costs and 'reached 0/2'."""
    cgt = [run("hard_cgt", (s,), 0.9, 0.9, seed=s, confidence=(0.99, 0.99, 0.99)) for s in range(2)]
    mixed = np.where(np.arange(300) % 2 == 0, 0.6, 0.9)  # half the samples unsure at exit 1: it can spend 0.5
    rival = [run("joint_uniform", (s,), 0.9, 0.9, seed=20 + s, confidence=(mixed, 0.8, 0.95)) for s in range(2)]
    row = compare(cgt, rival, COSTS, K, samples=200)["f1_matched"]
    assert row["cgt_reached"] == "0/2" and row["rival_reached"] == "2/2"
    assert row["matched_budget"] == pytest.approx(1 / 3)
    assert row["cgt_cost"] == pytest.approx(1 / 3) and row["rival_cost"] <= 1 / 3 + 1e-9


def test_stratified_resample_keeps_every_class_count():
    y = np.array([0, 0, 0, 1, 2, 2, 2, 2, 1, 0])
    idx = stratified_resample(y, np.random.default_rng(0))
    assert np.array_equal(np.bincount(y[idx]), np.bincount(y))


def test_bootstrap_of_a_constant_difference_is_that_difference():
    """Side A is right on 10 more samples of 100 in every replicate and every resample keeps it so when the
    difference is the same on every sample: Δ = +10 points, a degenerate interval, p(Δ ≤ 0) at its floor."""
    y = np.arange(100) % K
    reps = [PairedReplicate(y, np.full(100, 0.6), np.full(100, 0.5)) for _ in range(3)]
    draws = paired_bootstrap(reps, "auc", K, samples=99)
    assert np.allclose(draws, 10.0)
    p = bootstrap_p_values(draws)
    assert p["superiority"] == pytest.approx(1 / 100) and p["inferiority"] == pytest.approx(1.0)


def test_bootstrap_carries_test_sample_variance_even_with_identical_replicates():
    """Two identical replicates: seed-to-seed variance is zero, yet the interval is not a point — the
    test samples are resampled too."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, K, 200)
    a, b = np.where(rng.random(200) < 0.8, y, (y + 1) % K), np.where(rng.random(200) < 0.75, y, (y + 1) % K)
    reps = [PairedReplicate(y, a, b)] * 2
    draws = paired_bootstrap(reps, "f1_matched", K, samples=300)
    observed = reps[0].delta("f1_matched", None, K)
    assert np.std(draws) > 1.0 and np.percentile(draws, 2.5) < observed < np.percentile(draws, 97.5)


def test_macro_f1_over_a_fixed_label_set_and_its_decomposition():
    y = np.array([0, 0, 1, 1, 2])
    a, b = np.array([0, 0, 1, 1, 2]), np.array([0, 0, 1, 0, 0])
    assert macro_f1(y, a, np.unique(y), K) == pytest.approx(1.0)
    # b: F1 = [2·2/(4+2), 2·1/(1+2), 0] = [2/3, 2/3, 0]
    assert macro_f1(y, b, np.unique(y), K) == pytest.approx(4 / 9)
    parts = f1_decomposition(y, a, b, rare=np.array([False, False, True]), num_classes=K)
    assert parts["rare"] == pytest.approx(100 * (1 - 0) / 3)          # class 2 alone
    assert parts["rest"] == pytest.approx(100 * (1 / 3 + 1 / 3) / 3)   # classes 0 and 1
    assert parts["rare"] + parts["rest"] == pytest.approx(parts["total"])


def test_holm_runs_over_the_whole_family_and_decides_the_category():
    """Four hypotheses from two datasets: raw p 0.01 would be 'supported' alone, but Holm over the family
    of 4 (0.01 · 3 = 0.03 after 0.004 · 4 = 0.016) keeps it, and 0.03 · 2 = 0.06 does not make it."""
    family = pd.DataFrame({"dataset": ["a", "a", "b", "b"],
                           "p_superiority": [0.004, 0.03, 0.01, 0.5],
                           "p_non_inferiority": [0.001, 0.001, 0.001, 0.9],
                           "p_inferiority": [0.9, 0.9, 0.9, 0.001]})
    out = categorise(family)
    assert np.allclose(out["p_superiority_holm"], holm([0.004, 0.03, 0.01, 0.5]))
    assert np.allclose(out["p_superiority_holm"], [0.016, 0.06, 0.03, 0.5])
    assert out["verdict"].tolist() == [primary.SUPPORTED, primary.NON_INFERIOR, primary.SUPPORTED, primary.CONTRADICTED]
    # the same four, judged per dataset table: 0.03 → 2 · 0.03 = 0.06 too; but 0.01 alone → 0.02 … the family
    # is what decides: a per-table adjustment is not what the pre-registration says
    assert categorise(family.iloc[2:])["p_superiority_holm"].tolist() == pytest.approx([0.02, 0.5])


def test_primary_family_end_to_end_on_two_groups():
    groups = {}
    for ds in ("d1", "d2"):
        runs = [run(m, (s,), 0.85, 0.85, seed=hash((ds, m, s)) % 1000) for m in ("joint_uniform", "joint_depth",
                                                                                 "hard_cgt") for s in range(3)]
        groups[(ds, "p")] = {"runs": runs, "costs": COSTS, "num_classes": K}
    verdicts, choices = primary.primary_family(groups, ["hard_cgt"], samples=100)
    assert len(verdicts) == 4 and set(verdicts["endpoint"]) == {"auc", "f1_matched"}
    assert choices.groupby("dataset")["chosen"].sum().tolist() == [1, 1]
    assert set(verdicts["verdict"]) <= {primary.SUPPORTED, primary.NON_INFERIOR, primary.CONTRADICTED,
                                        primary.INCONCLUSIVE}


def test_unpaired_or_too_few_replicates_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        compare([run("hard_cgt", (0,), 0.9, 0.9)], [run("joint_uniform", (0,), 0.9, 0.9, seed=1)], COSTS, K)
    with pytest.raises(ValueError, match="replicates .* differ"):
        compare([run("hard_cgt", (0,), 0.9, 0.9)], [run("joint_uniform", (1,), 0.9, 0.9)], COSTS, K)
    other_labels = run("joint_uniform", (1,), 0.9, 0.9, seed=5)
    other_labels.y_test = (other_labels.y_test + 1) % K  # the same replicate, another test split
    with pytest.raises(ValueError, match="test labels differ"):
        compare([run("hard_cgt", (0,), 0.9, 0.9, seed=0), run("hard_cgt", (1,), 0.9, 0.9, seed=1)],
                [run("joint_uniform", (0,), 0.9, 0.9, seed=0), other_labels], COSTS, K)


def test_the_shown_table_rounds_for_reading_and_keeps_costs_and_reach():
    from cgt.reporting.primary_tables import shown

    family = categorise(pd.DataFrame([{
        "dataset": "indian_pines", "protocol": "blocked", "CGT": "soft_cgt", "comparator": "joint_uniform",
        "endpoint": "f1_matched", "n": 10, "delta": 1.23456, "ci_low": -0.5, "ci_high": 2.9, "t_low": -0.7, "t_high": 3.1,
        "p_superiority": 0.2, "p_non_inferiority": 0.01, "p_inferiority": 0.99, "cgt_cost": 0.21234,
        "rival_cost": 0.2, "cgt_reached": "0/10", "rival_reached": "10/10", "delta_rare": 1.0, "delta_rest": 0.23456}]))
    (row,) = shown(family).to_dict("records")
    assert row["protocol"] == "blocked CV" and row["verdict"] == primary.NON_INFERIOR
    assert row["Δ, points [95% bootstrap CI]"] == "+1.23 [-0.50, +2.90]"
    assert row["rel. cost CGT / comparator"] == "0.212 / 0.200"
    assert row["budget reached CGT / comparator"] == "0/10 / 10/10"
    assert row["Δ from rare / other classes"] == "+1.00 / +0.23"


def test_the_answer_per_dataset_follows_the_preregistered_rule():
    S, N, C, I = primary.SUPPORTED, primary.NON_INFERIOR, primary.CONTRADICTED, primary.INCONCLUSIVE
    assert primary.dataset_answer([S, N, I, I, N, N]) == primary.REPRODUCED
    assert primary.dataset_answer([S, C, N, N, N, N]) == primary.CANNOT_TELL      # mixed
    assert primary.dataset_answer([N, N, C, N, N, N]) == primary.NOT_REPRODUCED
    assert primary.dataset_answer([N, I, N, N, N, N]) == primary.CANNOT_TELL     # one row could not tell
