"""Metrics (cgt.evaluation.metrics) and the per-run evaluation (cgt.evaluation.evaluate), on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from cgt.cost import ExitCosts
from cgt.evaluation.evaluate import EvalConfig, evaluate_logits, metrics_table
from cgt.evaluation.metrics import (
    classification_metrics,
    early_exit_metrics,
    expected_calibration_error,
    per_exit_metrics,
)
from cgt.inference import exits_from_logits

# y_true / y_pred, 3 classes:   class 0: 3 samples, 2 right (one predicted 1)
#                               class 1: 2 samples, 1 right (one predicted 2)
#                               class 2: 1 sample,  right
Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2])


def test_classification_metrics_by_hand():
    """Accuracy, macro/weighted P/R/F1, average accuracy and Cohen's κ of a 6-sample case, worked out by hand."""
    m = classification_metrics(Y_TRUE, Y_PRED, num_classes=3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class: P = [2/2, 1/2, 1/2], R = [2/3, 1/2, 1/1], F1 = 2PR/(P+R) = [0.8, 0.5, 2/3]
    p, r, f1 = [1.0, 0.5, 0.5], [2 / 3, 0.5, 1.0], [0.8, 0.5, 2 / 3]
    assert m["precision_macro"] == pytest.approx(sum(p) / 3)
    assert m["recall_macro"] == pytest.approx(sum(r) / 3)
    assert m["f1_macro"] == pytest.approx(sum(f1) / 3)  # 0.6556
    assert m["f1_macro"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))
    support = [3, 2, 1]
    assert m["f1_weighted"] == pytest.approx(sum(f * s for f, s in zip(f1, support)) / 6)  # 0.6778
    assert m["precision_weighted"] == pytest.approx(sum(v * s for v, s in zip(p, support)) / 6)
    assert m["recall_weighted"] == pytest.approx(4 / 6)  # weighted recall is accuracy
    assert m["average_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)  # mean per-class recall, 0.7222
    # κ = (p_o − p_e)/(1 − p_e); p_o = 4/6, p_e = Σ_c true_c·pred_c / N² = (3·2 + 2·2 + 1·2)/36 = 1/3
    assert m["kappa"] == pytest.approx((4 / 6 - 1 / 3) / (1 - 1 / 3))  # 0.5
    assert m["f1_per_class"] == pytest.approx(f1)
    # a class with no true sample has no F1 (None), whatever was predicted
    assert classification_metrics(Y_TRUE, Y_PRED, num_classes=4)["f1_per_class"][3] is None


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_average_accuracy_ignores_classes_absent_from_y_true():
    """AA averages recall over the classes that occur: class 3 only predicted, class 2 absent, do not count."""
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 3, 1, 1]), num_classes=4)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["average_accuracy"] == pytest.approx((1 / 2 + 1) / 2)


def test_single_class_case_uses_accuracy_for_aa():
    """With one class present, AA equals accuracy (and nothing raises)."""
    m = classification_metrics(np.array([1, 1, 1, 1]), np.array([1, 1, 0, 1]), num_classes=3)
    assert m["average_accuracy"] == m["accuracy"] == pytest.approx(0.75)


def test_macro_f1_is_not_changed_by_a_class_that_never_occurs():
    """A class absent from both y_true and y_pred leaves macro F1 / precision / recall unchanged."""
    three = classification_metrics(Y_TRUE, Y_PRED, num_classes=3)
    four = classification_metrics(Y_TRUE, Y_PRED, num_classes=4)  # class 3: no sample, no prediction
    for key in ("f1_macro", "precision_macro", "recall_macro"):
        assert four[key] == pytest.approx(three[key]), key


def test_macro_f1_averages_over_the_classes_of_the_test_split_whatever_is_predicted():
    """Two methods on the same samples average over the same classes: those present in y_true. A method
    that predicts an absent class (3) is not averaged over one more class; its mistake is a miss of class 1."""
    y = np.array([0, 0, 1, 1])
    a = classification_metrics(y, np.array([0, 0, 1, 0]), num_classes=4)
    b = classification_metrics(y, np.array([0, 0, 1, 3]), num_classes=4)
    # a: P = [2/3, 1], R = [1, 1/2] → F1 = [0.8, 2/3];  b: P = [1, 1], R = [1, 1/2] → F1 = [1, 2/3]
    assert a["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert b["f1_macro"] == pytest.approx((1 + 2 / 3) / 2)  # scikit-learn's union default: (1 + 2/3 + 0) / 3


# ---------------------------------------------------------------- early-exit metrics
COSTS = ExitCosts(block_flops=(100, 200, 300), head_flops=(10, 10, 10))  # cumulative 110, 320, 630; full 610


def onehot_logits(classes: list[list[int]], k: int = 3, big: float = 10.0) -> torch.Tensor:
    """(E, N, K) logits with a confident vote for classes[e][i]."""
    t = torch.zeros(len(classes), len(classes[0]), k)
    for e, row in enumerate(classes):
        for i, c in enumerate(row):
            t[e, i, c] = big
    return t


def test_early_exit_metrics_by_hand():
    """Exit distribution, average cost and both overthinking counts on a 3-exit, 4-sample hand case."""
    y = torch.tensor([0, 1, 2, 0])
    logits = onehot_logits([[0, 0, 2, 1],    # exit 1: right on s0, s2
                            [1, 0, 2, 1],    # exit 2: right on s2
                            [1, 1, 2, 0]])   # exit 3: right on s1, s2, s3
    # s0: right at exit 1, wrong at exit 3 → overthinking_last_exit (and s2 is right everywhere: not counted)
    preds = torch.tensor([0, 0, 2, 0])
    exits = torch.tensor([0, 1, 0, 2])       # taken: s0 at exit 1 (right), s1 at exit 2 (wrong; never right
    #                                           before), s2 at exit 1 (right), s3 at exit 3 (right)
    m = early_exit_metrics(logits, y, preds, exits, COSTS, num_classes=3)
    assert m["exit_distribution"] == [0.5, 0.25, 0.25]
    assert m["avg_cost_flops"] == pytest.approx(0.5 * 110 + 0.25 * 320 + 0.25 * 630)  # 292.5
    assert m["avg_cost_relative"] == pytest.approx(292.5 / 610)
    assert m["overthinking_last_exit"] == 1     # s0
    assert m["overthinking_policy"] == 0        # s1 was wrong at exit 1 too
    assert m["accuracy"] == pytest.approx(3 / 4) and m["n_samples"] == 4


def test_policy_overthinking_counts_a_sample_right_earlier_but_taken_wrong_later():
    """overthinking_policy: right at exit 1 but left (wrong) at exit 2 counts; right at the taken exit does not."""
    y = torch.tensor([0, 1, 2])
    logits = onehot_logits([[0, 1, 0],       # exit 1: s0 right, s1 right, s2 wrong
                            [1, 1, 2],       # exit 2: s0 wrong, s1 right, s2 right
                            [0, 0, 0]])      # exit 3: s0 right, s1 wrong, s2 wrong
    preds, exits = torch.tensor([1, 1, 2]), torch.tensor([1, 1, 1])  # all leave at exit 2
    m = early_exit_metrics(logits, y, preds, exits, COSTS, num_classes=3)
    assert m["overthinking_policy"] == 1        # s0 only (s1 right where taken; s2 never right before)
    assert m["overthinking_last_exit"] == 2     # s1 (right at exits 1–2) and s2 (right at exit 2 only)
    assert m["exit_distribution"] == [0.0, 1.0, 0.0]


def test_per_exit_and_oracle_accuracy():
    """Per-exit accuracy and oracle accuracy (some exit is right) of the hand case."""
    y = torch.tensor([0, 1, 2, 0])
    logits = onehot_logits([[0, 0, 2, 1], [1, 0, 2, 1], [1, 1, 2, 0]])
    out = per_exit_metrics(logits, y)
    assert out["accuracy"] == pytest.approx([0.5, 0.25, 0.75])
    assert out["oracle_accuracy"] == pytest.approx(1.0)  # every sample is right somewhere
    y2 = torch.tensor([2, 1, 2, 0])                      # s0 now wrong at every exit
    assert per_exit_metrics(logits, y2)["oracle_accuracy"] == pytest.approx(0.75)
    assert len(out["ece"]) == 3


def test_ece_zero_when_calibrated_positive_when_overconfident():
    """ECE = 0 when confidence equals accuracy in every bin; > 0 (= the gap) for an overconfident model."""
    # two classes, logits [0, 0]: confidence 0.5, prediction class 0, right on half of the samples
    calibrated = torch.zeros(8, 2)
    y_half = torch.tensor([0, 1] * 4)
    assert expected_calibration_error(calibrated, y_half) == pytest.approx(0.0, abs=1e-7)
    # certain and always right: also perfectly calibrated
    sure = torch.tensor([[30.0, 0.0]] * 4)
    assert expected_calibration_error(sure, torch.zeros(4, dtype=torch.long)) == pytest.approx(0.0, abs=1e-6)
    # certain but right only half the time: ECE = |0.5 − 1.0| = 0.5
    assert expected_calibration_error(torch.tensor([[30.0, 0.0]] * 8), y_half) == pytest.approx(0.5, abs=1e-6)
    # confidence 0.8 (logit gap ln 4), right 60 %: |0.6 − 0.8| = 0.2
    lg = torch.tensor([[np.log(4.0), 0.0]] * 10, dtype=torch.float32)
    y = torch.tensor([0] * 6 + [1] * 4)
    assert expected_calibration_error(lg, y) == pytest.approx(0.2, abs=1e-6)


# ---------------------------------------------------------------- evaluate_logits / metrics_table
def random_logits(seed: int, n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    signal = torch.nn.functional.one_hot(y, 4).float()
    logits = torch.stack([torch.randn(n, 4, generator=g) + s * signal for s in (1.0, 2.5, 4.0)])
    return logits, y


def test_evaluate_logits_operating_points():
    """evaluate_logits reports every operating point; full_network costs exactly the full network; the
    matched-cost points respect their budgets on validation; the budget curve's AUC is its mean."""
    val, y_val = random_logits(0)
    test, y_test = random_logits(1)
    m = evaluate_logits(val, y_val, test, y_test, COSTS, num_classes=4)
    points = m["operating_points"]
    last = points["full_network"]
    # risk-controlled points only where 120 validation samples can certify them (LTT at ε = 1 % needs 230)
    assert list(points) == ["full_network", "paper_tau", "val_tolerance", "val_budget_30", "val_budget_40", "val_budget_50",
                            "risk_crc_1", "risk_crc_2", "risk_crc_5", "risk_ltt_2", "risk_ltt_5"]
    for name in ("risk_crc_1", "risk_crc_5", "risk_ltt_5"):
        point = points[name]
        assert len(set(point["thresholds"])) == 1 and 0 <= point["risk"]["test_loss"] <= 1
        # the controlled loss never exceeds the accuracy drop's upper bound: early wrong where the last is right
        assert point["risk"]["val_loss"] >= last["val"]["accuracy"] - point["val"]["accuracy"] - 1e-9
    last = points["full_network"]
    for split, (lg, y) in (("val", (val, y_val)), ("test", (test, y_test))):
        assert last[split]["avg_cost_relative"] == 1.0 and last[split]["avg_cost_flops"] == COSTS.full_network
        assert last[split]["exit_distribution"] == [0.0, 0.0, 1.0]
        assert last[split]["accuracy"] == pytest.approx((lg[-1].argmax(-1) == y).float().mean().item())
    # paper_tau: the fixed τ = 0.9 applied to test logits
    preds, exits = exits_from_logits(test, 0.9)
    assert points["paper_tau"]["thresholds"] == [0.9, 0.9]
    assert points["paper_tau"]["test"]["accuracy"] == pytest.approx((preds == y_test).float().mean().item())
    for budget in EvalConfig().budgets:
        assert points[f"val_budget_{round(100 * budget)}"]["val"]["avg_cost_relative"] <= budget + 1e-9
    curve = m["budget_curve"]
    assert len(curve["budget"]) == len(curve["test_accuracy"]) == 16 and curve["budget"][0] == 0.25
    assert curve["auc_accuracy"] == pytest.approx(np.mean(curve["test_accuracy"]))
    assert curve["test_accuracy"][-1] == pytest.approx(max(curve["test_accuracy"]), abs=0.05)
    last_val = last["val"]["accuracy"]
    assert points["val_tolerance"]["val"]["accuracy"] >= last_val - EvalConfig().tolerance - 1e-9
    assert len(m["sweep"]["tau"]) == len(m["sweep"]["test_accuracy"]) == len(m["sweep"]["val_accuracy"])


def test_val_fitted_thresholds_do_not_depend_on_test_data():
    """Replacing the test logits changes test numbers only: the fitted thresholds come from validation."""
    val, y_val = random_logits(0)
    a = evaluate_logits(val, y_val, *random_logits(1), COSTS, num_classes=4)
    b = evaluate_logits(val, y_val, *random_logits(2), COSTS, num_classes=4)
    for point in ("val_tolerance", "val_budget_30", "val_budget_50"):
        assert a["operating_points"][point]["thresholds"] == b["operating_points"][point]["thresholds"]
        assert a["operating_points"][point]["val"] == b["operating_points"][point]["val"]


def test_metrics_table_one_row_per_operating_point():
    """metrics_table: one row per (run, operating point) and one `auc` row per run on test, with the table
    columns and per-exit percentages."""
    val, y_val = random_logits(0)
    runs = []
    for method, seed in (("joint_uniform", 0), ("hard_cgt", 0)):
        m = evaluate_logits(val, y_val, *random_logits(1), COSTS, num_classes=4)
        m["run"] = {"dataset": "toy", "method": method, "seed": seed}
        runs.append(m)
    table = metrics_table(runs)
    assert len(table) == 2 * (6 + 5 + 1)  # 6 points, 5 risk-controlled points (120 validation samples), auc
    assert list(table["operating_point"][:4]) == ["full_network", "paper_tau", "val_tolerance", "val_budget_30"]
    auc = table[(table.method == "hard_cgt") & (table.operating_point == "auc")].iloc[0]
    assert auc["accuracy"] == runs[1]["budget_curve"]["auc_accuracy"]
    assert set(table["method"]) == {"joint_uniform", "hard_cgt"}
    row = table[(table.method == "hard_cgt") & (table.operating_point == "full_network")].iloc[0]
    assert row["avg_cost_relative"] == 1.0 and row["exit3_pct"] == 100.0
    assert {"f1_macro", "kappa", "exit1_pct", "exit1_acc", "oracle_accuracy"} <= set(table.columns)
    assert len(metrics_table(runs, split="val")) == 2 * (6 + 5)


def test_common_target_is_shared_by_every_method_of_a_seed():
    """add_common_target: per seed, target = best joint baseline's last-exit validation accuracy − 0.5 points;
    every method's point reaches it on validation when it can, and says when it cannot."""
    from pathlib import Path

    from cgt.experiments.train_evaluate import COMMON_TARGET, EvaluatedRun, add_common_target
    from cgt.runs import TrainedRun

    runs = []
    for seed in (0, 1):
        for method, shift in (("joint_uniform", 0), ("joint_depth", 1), ("hard_cgt", 2)):
            val, y_val = random_logits(10 * seed + shift)
            test, y_test = random_logits(100 + seed)
            if method == "hard_cgt":
                val = val / 4  # weak exits: may not reach the others' target
            logits = {"val": val, "y_val": y_val, "test": test, "y_test": y_test}
            run = TrainedRun(Path("."), {}, [], None, logits, cached=True)
            m = evaluate_logits(val, y_val, test, y_test, COSTS, num_classes=4)
            m["run"] = {"dataset": "toy", "method": method, "seed": seed}
            runs.append(EvaluatedRun(method, seed, run, m, COSTS))
    targets = add_common_target(runs)
    for seed in (0, 1):
        best = max(r.metrics["operating_points"]["full_network"]["val"]["accuracy"] for r in runs
                   if r.seed == seed and r.method != "hard_cgt")
        assert targets[seed] == pytest.approx(best - 0.005)
    for r in runs:
        point = r.metrics["operating_points"][COMMON_TARGET]
        assert point["target"] == targets[r.seed]
        assert point["target_reached"] == (point["val"]["accuracy"] >= targets[r.seed] - 1e-12)
    assert COMMON_TARGET in set(metrics_table([r.metrics for r in runs])["operating_point"])


def test_with_folds_the_common_target_is_per_fold_and_seed_and_the_table_has_the_fold():
    """Two folds of one seed: each (fold, seed) cell gets its own target, from its own joint baseline."""
    from pathlib import Path

    from cgt.experiments.train_evaluate import COMMON_TARGET, EvaluatedRun, add_common_target
    from cgt.runs import TrainedRun

    runs = []
    for fold in (0, 3):
        for method, shift in (("joint_uniform", 0), ("hard_cgt", 1)):
            val, y_val = random_logits(10 * fold + shift)
            test, y_test = random_logits(100 + fold)
            run = TrainedRun(Path("."), {}, [], None, {"val": val, "y_val": y_val, "test": test, "y_test": y_test},
                             cached=True)
            m = evaluate_logits(val, y_val, test, y_test, COSTS, num_classes=4)
            m["run"] = {"dataset": "toy", "method": method, "seed": 0, "fold": fold}
            runs.append(EvaluatedRun(method, 0, run, m, COSTS, fold))
    targets = add_common_target(runs)
    assert sorted(targets) == [(0, 0), (3, 0)]
    for (fold, _), target in targets.items():
        base = next(r for r in runs if r.fold == fold and r.method == "joint_uniform")
        assert target == pytest.approx(base.metrics["operating_points"]["full_network"]["val"]["accuracy"] - 0.005)
        assert all(r.metrics["operating_points"][COMMON_TARGET]["target"] == target for r in runs if r.fold == fold)
    table = metrics_table([r.metrics for r in runs])
    assert sorted(set(table["fold"])) == [0, 3] and table.columns[:4].tolist() == ["dataset", "method", "fold", "seed"]
    # metrics written before folds existed (no "fold" key) read as fold None
    del runs[0].metrics["run"]["fold"]
    assert metrics_table([runs[0].metrics])["fold"].isna().all()


def test_a_run_is_evaluated_once_per_code_version_and_settings(tmp_path, monkeypatch):
    """Loading a finished run again reuses its metrics.json (evaluate_run not called) when the run's artifacts, the
    evaluation settings and the cgt source are what it was computed from and the file is intact; any of them
    changed, it is evaluated again."""
    from cgt.experiments import train_evaluate
    from cgt.experiments.train_evaluate import EVALUATION_RECORD, load_finished, run_methods

    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path))
    (first,) = run_methods("indian_pines", "smoke", ["joint_uniform"], train_overrides={"epochs": 1}, progress=False)
    assert (first.run.run_dir / EVALUATION_RECORD).exists()
    calls = []
    evaluate = train_evaluate.evaluate_run

    def counted(*args, **kwargs):
        calls.append(args[3] if len(args) > 3 else kwargs.get("cfg"))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train_evaluate, "evaluate_run", counted)

    def load(eval_cfg=EvalConfig()):
        (again,) = load_finished("indian_pines", "smoke", ["joint_uniform"], train_overrides={"epochs": 1},
                                 eval_cfg=eval_cfg)
        return again.metrics

    assert load() == first.metrics and calls == []  # from the cache: the same metrics, nothing computed
    metrics = first.run.run_dir / "metrics.json"
    metrics.write_text(metrics.read_text()[:100])  # cut short: computed again, never trusted
    assert load() == first.metrics and len(calls) == 1
    assert load() == first.metrics and len(calls) == 1  # and cached again
    other = load(EvalConfig(paper_tau=0.8))  # other settings: computed, and they show
    assert len(calls) == 2 and other["operating_points"]["paper_tau"] != first.metrics["operating_points"]["paper_tau"]
    assert load() == first.metrics and len(calls) == 3  # one evaluation is kept per run: the latest
    monkeypatch.setattr(train_evaluate, "package_version", lambda: "edited")  # the code changed: computed
    assert load() == first.metrics and len(calls) == 4
