"""Result tables (cgt.reporting.tables) and the README block (cgt.reporting.readme) on synthetic per-seed metrics whose
verdicts are known in advance."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cgt.evaluation import verdicts
from cgt.reporting import readme, results_pages
from cgt.reporting.tables import (
    comparisons,
    format_pm,
    matched_cost_table,
    paper_comparison,
    per_class_f1,
    summarise,
    verdict_table,
    write_table,
)

SEEDS = range(5)
JITTER = [0.001, -0.001, 0.0005, -0.0005, 0.0]


def row(method, seed, point="paper_tau", accuracy=0.90, f1=0.88, cost=0.50, f1_per_class=(0.9, 0.8, None),
        reached=True):
    return {"dataset": "toy", "method": method, "seed": seed, "operating_point": point, "accuracy": accuracy,
            "val_accuracy": accuracy, "objective_met": reached,
            "f1_macro": f1, "precision_macro": f1, "recall_macro": f1, "f1_weighted": accuracy,
            "precision_weighted": accuracy, "recall_weighted": accuracy, "average_accuracy": f1, "kappa": f1,
            "avg_cost_relative": cost, "avg_cost_flops": cost * 1e6, "exit1_pct": 50.0, "exit2_pct": 30.0,
            "exit3_pct": 20.0, "f1_per_class": list(f1_per_class)}


@pytest.fixture
def table() -> pd.DataFrame:
    """joint_uniform is the reference; hard_cgt: cheaper and 2 points better (supported); soft_cgt:
    cheaper, equal quality (non-inferior); soft_cgt_linear: costlier (contradicted)."""
    rows = []
    for s, j in zip(SEEDS, JITTER):
        rows.append(row("joint_uniform", s, accuracy=0.90 + j, f1=0.88 + j))
        rows.append(row("hard_cgt", s, accuracy=0.92 + 2 * j, f1=0.90 - j, cost=0.40 + j))
        rows.append(row("soft_cgt", s, accuracy=0.90 - j, f1=0.88 + j / 2, cost=0.45 + j))
        rows.append(row("soft_cgt_linear", s, accuracy=0.91 + j, f1=0.89, cost=0.60 + j))
        for m in ("joint_uniform", "hard_cgt", "soft_cgt", "soft_cgt_linear"):
            rows.append(row(m, s, point="val_budget_40", accuracy=0.90 + (0.01 if m == "hard_cgt" else j),
                            cost=0.21 if m == "soft_cgt" else 0.4, reached=m != "soft_cgt"))
    return pd.DataFrame(rows)


def test_verdict_table_categories_and_holm(table):
    df = verdict_table(table, "paper_tau").set_index("CGT")
    assert list(df["vs"]) == ["joint_uniform"] * 3 and set(df["n (seeds)"]) == {5}
    assert list(df["rival"]) == ["joint, strongest"] * 3  # the only baseline here
    assert df.loc["hard_cgt", "verdict (accuracy)"] == verdicts.SUPPORTED
    assert df.loc["soft_cgt", "verdict (accuracy)"] == verdicts.NON_INFERIOR
    assert df.loc["soft_cgt_linear", "verdict (accuracy)"] == verdicts.CONTRADICTED
    assert df.loc["hard_cgt", "Δ accuracy, points [95% CI]"].startswith("+2.00 [") and "(5/5 higher)" in \
        df.loc["hard_cgt", "Δ accuracy, points [95% CI]"]
    assert "(5/5 cheaper)" in df.loc["hard_cgt", "Δ rel. cost [95% CI]"]
    # Holm over 3 comparisons × 2 metrics: every adjusted p is at least the raw one
    d = 100 * (table.query("method == 'hard_cgt' and operating_point == 'paper_tau'")["accuracy"].to_numpy()
               - table.query("method == 'joint_uniform' and operating_point == 'paper_tau'")["accuracy"].to_numpy())
    assert float(df.loc["hard_cgt", "p accuracy (Holm)"]) >= round(verdicts.paired_p_value(d), 3)


def test_matched_cost_table_uses_quality_alone(table):
    df = matched_cost_table(table, ["val_budget_40"]).set_index("CGT")
    assert df.loc["hard_cgt", "verdict (accuracy)"] == verdicts.MORE_ACCURATE
    assert df.loc["hard_cgt", "Δ rel. cost (mean)"] == "+0.000"
    # a side that cannot spend the budget is shown, not hidden: its realised cost and 'reached 0/5'
    assert df.loc["soft_cgt", "rel. cost CGT"] == "0.210" and df.loc["soft_cgt", "rel. cost rival"] == "0.400"
    assert df.loc["soft_cgt", "reached CGT"] == "0/5" and df.loc["soft_cgt", "reached rival"] == "5/5"


def test_comparisons_are_cgt_against_joint_baselines_present():
    assert comparisons(["hard_cgt", "joint_uniform", "last_exit"]) == [("hard_cgt", "joint_uniform")]
    # the strongest baseline joins when it is not a joint one already
    assert comparisons(["hard_cgt", "joint_uniform", "self_distill"], strongest="self_distill") == [
        ("hard_cgt", "joint_uniform"), ("hard_cgt", "self_distill")]
    assert comparisons(["hard_cgt", "joint_uniform"], strongest="joint_uniform") == [("hard_cgt", "joint_uniform")]


def test_the_strongest_baseline_is_chosen_on_validation_and_is_compared():
    """self_distill is the most accurate baseline on validation, last_exit on test: the rival is self_distill."""
    import pandas as pd

    from cgt.reporting.tables import strongest_baseline

    rows = [{"method": m, "seed": s, "operating_point": "paper_tau", "accuracy": test + 0.001 * s,
             "val_accuracy": val + 0.001 * s, "f1_macro": test, "avg_cost_relative": 0.5} for m, val, test in
            (("joint_uniform", 0.90, 0.90), ("self_distill", 0.93, 0.90), ("hard_cgt", 0.95, 0.95),
             ("last_exit", 0.91, 0.97)) for s in range(3)]
    df = pd.DataFrame(rows)
    assert strongest_baseline(df) == "self_distill"  # hard_cgt is not a baseline; last_exit is test-best only
    table = verdict_table(df, "paper_tau")
    assert list(table["vs"]) == ["joint_uniform", "self_distill"]
    assert list(table["rival"]) == ["joint", "strongest"]
    assert strongest_baseline(df[df["method"] == "hard_cgt"]) is None


def test_summary_uses_the_sample_sd(table):
    s = summarise(table, "paper_tau").set_index("method")
    acc = 100 * (0.90 + np.array(JITTER))
    assert s.loc["joint_uniform", "accuracy sd"] == pytest.approx(acc.std(ddof=1))
    shown = format_pm(summarise(table, "paper_tau"))
    assert shown.iloc[0]["n (seeds)"] == 5 and " ± " in shown.iloc[0]["accuracy"]


def test_paper_comparison_has_macro_and_weighted_rows(table):
    df = paper_comparison(summarise(table, "paper_tau"))
    assert list(df.query("method == 'soft_cgt'")["averaging"]) == ["macro", "weighted"]
    weighted = df.query("method == 'soft_cgt' and averaging == 'weighted'").iloc[0]
    assert weighted["recall ours"] == pytest.approx(90.0, abs=0.1)  # weighted recall = accuracy


def test_per_class_f1_skips_classes_without_test_samples(table):
    f1 = per_class_f1(table, ["a", "b", "c"])
    assert f1.loc["a", "hard_cgt"] == 90.0 and np.isnan(f1.loc["c", "hard_cgt"])
    assert list(f1.columns) == ["joint_uniform", "hard_cgt", "soft_cgt", "soft_cgt_linear"]


def test_the_results_pages_are_made_of_the_tables(table, tmp_path):
    """The sentences about the claim are counted from the verdict tables; nothing else is invented."""
    verdict = verdict_table(table, "paper_tau")
    for name, df in {"verdicts_paper_tau": verdict, "verdicts_val_common_target": verdict,
                     "verdicts_matched_cost": matched_cost_table(table, ["val_budget_40"]),
                     "vs_paper": paper_comparison(summarise(table, "paper_tau"))}.items():
        write_table(df, tmp_path / f"table_toy_{name}")
    bullets = results_pages.reading(tmp_path, "toy")
    assert bullets[0].startswith("* **At the paper's fixed τ = 0.9** (3 comparisons, n = 5 paired seeds)")
    assert "accuracy: 1 supported, 1 cheaper, non-inferior, 1 contradicted" in bullets[0]
    assert "favourable: `hard_cgt` vs `joint_uniform`; `soft_cgt` vs `joint_uniform`" in bullets[0]
    assert "more accurate: `hard_cgt` vs `joint_uniform` (val_budget_40)" in bullets[2]
    # soft_cgt: macro 88 / 88 / 88, weighted 90 / 90 / 90 against the paper's 95 / 96 / 95
    assert "is closer to our weighted averaging (90.0 / 90.0 / 90.0; macro: 88.0 / 88.0 / 88.0)" in \
        results_pages.averaging_sentence(tmp_path, ["toy"])


def _gpu_record(speedups: list[float]) -> dict:
    return {"measured": "2026-11-29T23:00:00+00:00", "git": {"commit": "abcdef0123", "dirty": None},
            "torch": "2.11.0", "cpu_cores": 16, "device": "cuda: TestGPU",
            "training": [{"device": "cuda", "threads": None, "precision": "fp32", "train_samples": 54000,
                          "epoch_seconds": [3.0, 1.5], "val_acc_per_exit": [0.8, 0.85, 0.9]}],
            "inference": {"tau": 0.9, "test_samples": 100, "prediction_disagreements": 0, "exit_disagreements": 1,
                          "exit_fractions": [0.5, 0.2, 0.3],
                          "batches": [{"batch": b, "samples": 100, "full_us_per_sample": 1.0,
                                       "early_exit_us_per_sample": 1.0 / sp, "speedup": sp}
                                      for b, sp in zip((1024, 1), speedups)]},
            "runner_scaling": {"dataset": "indian_pines", "profile": "quick", "epochs": 5, "threads_per_run": 1,
                               "rows": [{"workers": 1, "runs": 16, "wall_s": 100.0, "mean_run_s": 6.0, "speedup_vs_1_worker": 1.0},
                                        {"workers": 4, "runs": 16, "wall_s": 40.0, "mean_run_s": 8.0, "speedup_vs_1_worker": 2.5}]}}


def test_gpu_and_scaling_parts_quote_the_artifact(tmp_path):
    import json

    assert "Not measured on a GPU" in "\n".join(results_pages.gpu_section(tmp_path))
    (tmp_path / "cuda_check.json").write_text(json.dumps(_gpu_record([0.5, 1.25])))
    text = "\n".join(results_pages.gpu_section(tmp_path))
    assert "| cuda | fp32 | 2 | 1.50 | 0.800 / 0.850 / 0.900 |" in text and "commit `abcdef0`" in text
    assert "in 1 exits and 0 predictions" in text and "| 1024 | 1.00 | 2.00 | 0.50× |" in text
    assert "At batch 1024 the early-exit pass is *slower*" in text
    (tmp_path / "cuda_check.json").write_text(json.dumps(_gpu_record([1.5, 1.25])))
    assert "*slower*" not in "\n".join(results_pages.gpu_section(tmp_path))
    scaling = "\n".join(results_pages.scaling_section(tmp_path))
    assert "| speed-up over 1 worker | 1.00× | 2.50× |" in scaling and "not measured yet" in scaling
    (tmp_path / "runner_scaling.json").write_text(json.dumps(
        {**_gpu_record([1, 1])["runner_scaling"], "device": "cpu: x86_64, 2 threads", "cpu_cores": 2,
         "git": {"commit": "1234567"}}))
    scaling = "\n".join(results_pages.scaling_section(tmp_path))
    assert "`figures/runner_scaling.json` (cpu: x86_64, 2 threads, 2 cores" in scaling and "not measured yet" not in scaling


def test_the_timing_sentence_tells_the_runner_stage_from_the_notebooks():
    t = {"git": {"commit": "abcdef0123", "dirty": False}, "finished": "2026-11-29T23:00:00", "device": "cpu",
         "wall_time_s": 600, "steps": [
             {"step": "training runs (2 workers)", "seconds": 300, "runs_trained": 20, "runs_cached": 0},
             {"step": "training runs: recipe check (2 workers)", "seconds": 60, "runs_trained": 4, "runs_cached": 0},
             {"step": "01_baselines [x]", "seconds": 240, "runs_trained": 0, "runs_cached": 24}]}
    text = readme._describe(t)
    assert text.startswith("1 notebooks in 10 min") and "first 20 training runs (2 workers) in 5 min" in text
    assert "; then 4 training runs: recipe check (2 workers) in 1 min" in text
    assert "24 training runs trained, 24 taken from the run cache" in text


def test_the_pipeline_comparison_is_quoted_with_its_ratio(tmp_path):
    import json

    record = {"profile": "quick", "device": "cpu: x86_64, 2 threads", "git": {"commit": "1234567abc"},
              "rows": [{"workers": 1, "wall_s": 900.0}, {"workers": 2, "wall_s": 600.0}], "speedup": 1.5}
    # a record from before the one-thread rule (no threads_per_cpu_run) says so, and how to measure again
    (tmp_path / "pipeline_workers_quick.json").write_text(json.dumps(record))
    text = "\n".join(results_pages.scaling_section(tmp_path))
    assert "serially 15.0 min, with `--workers 2` 10.0 min (1.50× faster)." in text
    assert "earlier thread rule" in text and "cgt scaling --pipeline quick --workers 2" in text
    (tmp_path / "pipeline_workers_quick.json").write_text(json.dumps(record | {"threads_per_cpu_run": 1}))
    text = "\n".join(results_pages.scaling_section(tmp_path))
    assert "earlier thread rule" not in text and "Less than" not in text
    # beside a run-list measurement on the same kind of machine that gained more, the gap is explained
    rows = [{"workers": n, "runs": 16, "wall_s": w, "mean_run_s": 6.0, "speedup_vs_1_worker": sp}
            for n, w, sp in ((1, 100.0, 1.0), (2, 54.3, 1.84))]
    (tmp_path / "runner_scaling.json").write_text(json.dumps(
        {**_gpu_record([1, 1])["runner_scaling"], "rows": rows, "device": "cpu", "cpu_cores": 2, "git": {"commit": "1"}}))
    text = "\n".join(results_pages.scaling_section(tmp_path))
    assert "Less than the 1.84× of the run list above" in text and "execute one after another either way" in text


def test_the_ablation_part_names_its_grid_and_shows_gating_beside_routing(tmp_path):
    """'When does CGT help?': the grid a dataset ran is named from its verdict table's configurations,
    the favourable ones are listed from their verdicts, and the gating table is quoted."""
    from cgt.experiments import ablations

    names = [c.name for c in ablations.GRIDS["reduced"]]
    verdict_col = f"verdict {ablations.POINTS['@0.9']}"
    df = pd.DataFrame({"config": names, "n (seeds)": 3,
                       verdict_col: [verdicts.NON_INFERIOR] + [verdicts.CONTRADICTED] * (len(names) - 1)})
    write_table(df, tmp_path / "table_toy_ablation_verdicts")
    write_table(pd.DataFrame({"config": ["joint_uniform"], "exit 1: train weight %": [33.3],
                              "exit 1: test routed %": [71.0]}), tmp_path / "table_toy_ablation_gating")
    text = "\n".join(results_pages.ablation_section(tmp_path, "toy"))
    assert f"On toy, {ablations.GRID_WORDS['reduced']}. {len(names)} configurations" in text
    assert f"{verdicts.NON_INFERIOR}" in text and f"(favourable: `{names[0]}`)" in text
    assert "Training-time gating against test-time routing" in text and "exit 1: test routed %" in text
    assert ablations.grid_of(names + ["joint_uniform"]) == "reduced"
    assert ablations.grid_of([c.name for c in ablations.GRIDS["full"]]) == "full" and ablations.grid_of(["x"]) is None


def test_the_readme_answer_block_is_made_of_the_artifacts(table, tmp_path):
    """Without pre-registered verdicts the block says so; with them, each dataset gets its answer by the
    pre-registered rule, and the headline table quotes the matched-budget point's means and the verdicts."""
    from cgt.evaluation import primary

    rows = [row(m, s, point="val_budget_50", accuracy=0.9 + 0.01 * k, f1=0.8, cost=0.5)
            for k, m in enumerate(["joint_uniform", "hard_cgt"]) for s in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "metrics_fashion_mnist_all_runs.csv", index=False)
    block = readme.headline_markdown(tmp_path)
    assert "Not answered yet at this commit" in block
    assert "| `joint_uniform` | 90.00 | 80.00 | 0.500 | — |" in block
    assert "| `hard_cgt` | 91.00 | 80.00 | 0.500 | — |" in block
    verdict_rows = [{"dataset": "fashion_mnist", "protocol": "random", "CGT": "hard_cgt", "comparator": "joint_uniform",
                     "endpoint": e, "delta": d, "ci_low": d - 1, "ci_high": d + 1, "verdict": v}
                    for e, d, v in (("auc", 1.5, primary.SUPPORTED), ("f1_matched", 0.1, primary.NON_INFERIOR))]
    pd.DataFrame(verdict_rows).to_csv(tmp_path / "table_primary_verdicts_raw.csv", index=False)
    block = readme.headline_markdown(tmp_path)
    assert "**fashion_mnist** (random; against `joint_uniform`, chosen on validation): **reproduced**" in block
    assert f"| `hard_cgt` | 91.00 | 80.00 | 0.500 | {primary.SUPPORTED} · {primary.NON_INFERIOR} |" in block


def test_the_learned_policy_table_pairs_policies_and_methods_by_replicate():
    """joint_uniform gains 1 point from the learned policy, hard_cgt 3; with it, hard_cgt is 2.5 points above
    joint_uniform (seed-to-seed jitter keeps the intervals finite); an unreachable row is left out."""
    from cgt.reporting.tables import learned_policy_table

    jitter = [0.001, -0.001, 0.0]
    rows = []
    for s, j in enumerate(jitter):
        for method, thr, learned in (("joint_uniform", 0.90, 0.91), ("hard_cgt", 0.905, 0.935)):
            rows.append({"method": method, "seed": s, "policy": "threshold", "budget": 0.4, "accuracy": thr + j,
                         "avg_cost_relative": 0.4, "objective_met": True})
            rows.append({"method": method, "seed": s, "policy": "learned", "budget": 0.4,
                         "accuracy": learned + 2 * j * (method == "hard_cgt"), "avg_cost_relative": 0.39,
                         "objective_met": True})
        rows.append({"method": "hard_cgt", "seed": s, "policy": "learned", "budget": 0.1, "accuracy": np.nan,
                     "avg_cost_relative": np.nan, "objective_met": False})
    table = learned_policy_table(pd.DataFrame(rows), "joint_uniform").set_index("comparison")
    assert set(table["budget"]) == {0.4}
    assert table.loc["joint_uniform + learned vs joint_uniform + threshold", "Δ accuracy, points [95% CI]"].startswith("+1.00")
    assert table.loc["hard_cgt + learned vs hard_cgt + threshold", "Δ accuracy, points [95% CI]"].startswith("+3.00")
    row = table.loc["hard_cgt + learned vs joint_uniform + learned"]
    assert row["Δ accuracy, points [95% CI]"].startswith("+2.50") and row["n"] == 3
    assert row["rel. cost (new / base)"] == "0.390 / 0.390"


def test_markdown_tables_are_rounded_for_display_and_csv_keeps_full_precision(tmp_path):
    """Percentages and points to 2 decimals, relative cost and AUROC to 3, p-values to 3 significant digits,
    counts as integers, NaN as a dash; the CSV beside the table keeps every digit."""
    df = pd.DataFrame({"method": ["hard_cgt"], "acc @τ_train": [98.28988335889214],
                       "cost @τ_train": [0.6191409596782315], "Δ acc matched cost (40 %)": [-0.123456],
                       "Δ cost matched cost (40 %)": [0.0123456], "failure AUROC": [0.87654],
                       "p accuracy (Holm)": [0.000123456], "n (seeds)": [5.0], "F1": [np.nan]})
    write_table(df, tmp_path / "t")
    row = (tmp_path / "t.md").read_text().splitlines()[2]
    assert row == "| hard_cgt | 98.29 | 0.619 | -0.12 | 0.012 | 0.877 | 0.000123 | 5 | — |"
    assert pd.read_csv(tmp_path / "t.csv")["acc @τ_train"][0] == 98.28988335889214


def test_auc_rows_have_no_single_objective_so_reached_is_a_dash(table):
    """The `auc` row summarises a whole curve: 'reached' is shown as —, never a false 0/n."""
    auc = table[table["operating_point"] == "val_budget_40"].assign(operating_point="auc", objective_met=np.nan)
    df = matched_cost_table(pd.concat([table, auc]), ["auc"]).set_index("CGT")
    assert set(df["reached CGT"]) == {"—"} and set(df["reached rival"]) == {"—"}


def test_the_premise_is_quoted_from_the_fair_interference_table_and_an_old_one_is_named(tmp_path):
    write_table(pd.DataFrame({"method": ["joint_uniform"], "seeds": [3], "cos exits 1·3": ["0.300 [0.100, 0.500]"],
                              "lowest pair cos": ["0.300 [0.100, 0.500]"], "exit 1 norm share %": ["40.0 [35.0, 45.0]"],
                              "exit 3 norm share %": ["30.0 [25.0, 35.0]"]}), tmp_path / "table_toy_ablation_interference")
    write_table(pd.DataFrame({"method": ["joint_uniform"], "records": [68], "cos exits 1·3": [0.239],
                              "exit 3 norm share %": [31.5]}), tmp_path / "table_old_ablation_interference")
    lines = "\n".join(readme.premise_lines(tmp_path))
    assert "toy (`joint_uniform`, 3 seeds): the last exit holds 30.0 [25.0, 35.0] % of the gradient norm" in lines
    assert "cos exits 1·3: 0.300 [0.100, 0.500]" in lines
    assert "`table_old_ablation_interference.csv` predates the fair measurement" in lines


def test_floor_comparison_pairs_by_fold_and_seed_and_flags_below_the_floor():
    """Hand-checked: method a beats the SVM by 6 and 8 points on its two cells (mean +7.0, clears the 5-point
    margin); b is 2 points below on both (flagged); the random-forest rows and other operating points are ignored."""
    from cgt.reporting.results_pages import floor_comparison

    floor = pd.DataFrame({"protocol": ["blocked"] * 4 + ["random"], "fold": [0, 1, 0, 1, None],
                          "seed": [0, 0, 0, 0, 0], "model": ["svm_rbf", "svm_rbf", "random_forest", "random_forest",
                                                           "svm_rbf"],
                          "oa": [0.70, 0.60, 0.10, 0.10, 0.99]})
    metrics = pd.DataFrame({"method": ["a", "a", "b", "b", "a"], "fold": [0, 1, 0, 1, 0], "seed": [0] * 5,
                            "operating_point": ["full_network"] * 4 + ["paper_tau"],
                            "accuracy": [0.76, 0.68, 0.68, 0.58, 0.0]})
    out = floor_comparison(floor, metrics, "blocked").set_index("method")
    assert out.loc["a", "replicates"] == 2 and out.loc["a", "network − SVM, points"] == "+7.0 ± 1.4"
    assert out.loc["a", "clears the floor by ≥ 5"] == "yes"
    assert out.loc["b", "network − SVM, points"] == "-2.0 ± 0.0"
    assert out.loc["b", "clears the floor by ≥ 5"] == "no: below the floor"


def test_the_published_range_sentence_places_the_reference_method_and_says_why_outside():
    from cgt.reporting.results_pages import published_range_sentence

    comparison = pd.DataFrame({"method": ["joint_uniform", "hard_cgt"], "network OA %": ["71.6", "90.0"]})
    inside = published_range_sentence(comparison, "joint_uniform")
    assert "65–82 % OA" in inside and "`joint_uniform`'s full network here reaches 71.6 %, inside that range." in inside
    above = published_range_sentence(comparison, "hard_cgt")
    assert "reaches 90.0 %, above that range: those protocols split differently" in above
    assert published_range_sentence(comparison, "soft_cgt") == ""


def test_floor_comparison_pairs_by_seed_where_the_protocol_has_no_folds():
    from cgt.reporting.results_pages import floor_comparison

    floor = pd.DataFrame({"protocol": ["random", "random"], "fold": [np.nan, np.nan], "seed": [0, 1],
                          "model": ["svm_rbf", "svm_rbf"], "oa": [0.80, 0.90]})
    metrics = pd.DataFrame({"method": ["a", "a"], "fold": [np.nan, np.nan], "seed": [1, 0],
                            "operating_point": ["full_network"] * 2, "accuracy": [0.91, 0.85]})
    row = floor_comparison(floor, metrics, "random").iloc[0]
    assert row["replicates"] == 2 and row["network − SVM, points"] == "+3.0 ± 2.8"  # +1 and +5, paired by seed


def test_the_performance_page_shows_the_time_model_the_choice_and_the_latency_targets(tmp_path):
    """bench.json's time-model columns and `chosen` reach the table; each latency target is stated met or not,
    and a speed-up goal above the time model's own prediction is called out of reach, with that ceiling."""
    import json

    def rec(engine, measured, time_predicted, **kw):
        return {"dataset": "fashion_mnist", "batch_size": 1, "threads": 1, "engine": engine, "median_us_per_sample": 50.0,
                "iqr_us_per_sample": 1.0, "measured_speedup": measured, "predicted_speedup": 2.5, "ratio": measured / 2.5,
                "time_predicted_speedup": time_predicted, "time_ratio": measured / time_predicted,
                "speedup_over_best_full": measured, "exit_fractions": [0.6, 0.1, 0.3], "chosen": False, **kw}

    records = [rec("onnx_full", 1.0, 1.0), rec("onnx_early_exit_segments", 1.1, 1.2, chosen=True),
               rec("onnx_chosen", 1.1, 1.2, chosen_pass="segments")]
    (tmp_path / "bench.json").write_text(json.dumps(records))
    text = "\n".join(results_pages.bench_table(tmp_path))
    assert "| fashion_mnist | onnx_early_exit_segments ✓ | 1 | 1 | 50.0 [1.0] | 1.10× | 2.50× | 44 % | 1.20× | 92 % | 1.10× |" in text
    assert "| fashion_mnist | onnx_chosen (runs segments) |" in text
    assert "Latency targets (2 of 3 met" in text
    assert ("chosen pass / ONNX Runtime full 1.10 (segments), goal ≥ 1.40: **not met** — out of reach for these "
            "segment graphs, this network and exit mix on this machine: the segments' own measured times, their exit "
            "decision included, predict at most 1.20× (exits taken 60.0 / 10.0 / 30.0 %)") in text
    records[1]["time_predicted_speedup"] = 1.5  # a ceiling above the goal: missed, but not out of reach
    (tmp_path / "bench.json").write_text(json.dumps(records))
    assert "out of reach" not in "\n".join(results_pages.bench_table(tmp_path))


def test_the_performance_page_shows_the_exit_plans_as_validation_chose_them(tmp_path):
    """Each plan's line of the choice made on validation reaches the page's plan table beside its measured time;
    the chosen plan's Fashion-MNIST target, missed with its time model below the goal, names the highest
    prediction of any plan."""
    import json

    def rec(engine, name, accuracy, predicted_us, measured, time_predicted, chosen=False, **kw):
        plan = [int(e) - 1 for e in name.split("+")]
        return {"dataset": "fashion_mnist", "batch_size": 1, "threads": 1, "engine": engine,
                "median_us_per_sample": 40.0 / measured, "iqr_us_per_sample": 1.0, "measured_speedup": measured,
                "predicted_speedup": 2.0, "ratio": measured / 2.0, "time_predicted_speedup": time_predicted,
                "time_ratio": measured / time_predicted, "speedup_over_best_full": measured, "chosen": False,
                "exit_fractions": [0.6, 0.1, 0.3],
                "val_plan": {"plan": plan, "name": name, "val_accuracy": accuracy, "predicted_us": predicted_us,
                             "eligible": accuracy >= 0.9, "chosen": chosen}, **kw}

    records = [rec("onnx_full", "3", 0.92, 40.0, 1.0, 1.0),
               rec("onnx_early_exit_segments", "1+2+3", 0.9, 30.0, 1.25, 1.3, chosen=True),
               rec("onnx_plan_1+3", "1+3", 0.9, 29.5, 1.3, 1.35, plan="1+3"),
               rec("onnx_plan_2+3", "2+3", 0.89, 25.0, 1.5, 1.6, plan="2+3")]
    chosen = {k: v for k, v in records[1].items() if k != "val_plan"}  # the loader's pass: every exit kept
    records.append(chosen | {"engine": "onnx_chosen", "chosen_pass": "segments"})
    (tmp_path / "bench.json").write_text(json.dumps(records))
    text = "\n".join(results_pages.bench_table(tmp_path))
    assert "| fashion_mnist | 1 | 1 | 1+2+3 | 90.00 | 30.0 | yes | **chosen** | 32.0 | 1.25× |" in text
    assert "| fashion_mnist | 1 | 1 | 2+3 | 89.00 | 25.0 | no |  | 26.7 | 1.50× |" in text
    assert text.index("| 1+2+3 |") < text.index("| 1+3 |") < text.index("| 2+3 |") < text.index("| 3 |")
    assert ("exit plan chosen on validation / ONNX Runtime full 1.25 (onnx_early_exit_segments (exits 1+2+3)), goal "
            "≥ 1.40: **not met** — out of reach for this plan's segment graphs on this machine: their own measured "
            "times predict at most 1.30× for its exit mix (exits taken 60.0 / 10.0 / 30.0 %); of every plan's time "
            "model the highest prediction is 1.60× (exits 2+3, measured 1.50×)") in text


def test_a_missed_latency_target_says_where_the_time_went():
    """At two threads: a chosen plain-network pass slower than the best full row is called the same network
    (with both times and IQRs); a missed time-model ratio of the 2-thread segments pass, which the loader does
    not run, names the pass it runs and that pass's own ratio. A row the loader does run gets no excuse."""
    def rec(engine, median, **kw):
        return {"dataset": "indian_pines", "batch_size": 1, "threads": 2, "engine": engine, "median_us_per_sample": median,
                "iqr_us_per_sample": 2.0, "measured_speedup": 30.0 / median, "time_predicted_speedup": 1.0,
                "time_ratio": 1.0, "speedup_over_best_full": 20.0 / median, "exit_fractions": [0.4, 0.4, 0.2], **kw}

    records = [rec("onnx_full", 30.0), rec("onnx_full_1_thread", 20.0),
               rec("onnx_early_exit_segments", 33.0, time_ratio=0.8),
               rec("onnx_chosen", 21.0, chosen_pass="full@1", time_ratio=0.97)]
    lines = "\n".join(results_pages.latency_target_lines(records))
    assert ("chosen pass / best full network 0.95 (full@1), goal ≥ 1.00: **not met** — the chosen pass is the plain "
            "network itself, the onnx_full_1_thread row's sessions, so the two tie by construction: 21.0 µs per sample "
            "through `predict` against 20.0 µs (IQRs 2.0 and 2.0 µs)") in lines
    assert ("measured / time-predicted 0.80 (onnx_early_exit_segments), goal ≥ 0.90: **not met** — 33.0 µs per "
            "sample [IQR 2.0] on 2-thread sessions, which the loader does not run here; the pass it runs (full@1) "
            "measures 0.97 of its time-predicted speed-up") in lines
    records[3]["chosen_pass"] = "segments"  # the loader runs the missed row itself: nothing to explain it away
    lines = "\n".join(results_pages.latency_target_lines(records))
    assert "measured / time-predicted 0.80 (onnx_early_exit_segments), goal ≥ 0.90: **not met**.\n" in lines + "\n"
    # with bootstrap replicates: the ratio's interval, paired by round, and whether the run can tell
    records[3]["chosen_pass"] = "full@1"
    records[1]["bootstrap_us_per_sample"] = [20.0 + (i % 5) for i in range(40)]  # 20, 21, 22, 23, 24, 20, ...
    records[3]["bootstrap_us_per_sample"] = [22.0] * 40
    lines = "\n".join(results_pages.latency_target_lines(records))
    assert "with a 95 % bootstrap interval over its rounds, paired by round; the interval covers this run's rounds" in lines
    assert "for 1 of them the run cannot tell met from not met: the interval holds the goal" in lines
    assert "**not met** (95 % interval 0.91–1.09: this run cannot tell) — the chosen pass is" in lines
    records[3]["median_us_per_sample"], records[3]["speedup_over_best_full"] = 19.9, 20.0 / 19.9
    lines = "\n".join(results_pages.latency_target_lines(records))  # met, and still said to be the same network
    assert "goal ≥ 1.00: **met** (95 % interval 0.91–1.09: this run cannot tell) — the chosen pass is the plain" in lines
    records[3]["chosen_pass"] = "full"  # the plain network on the 2-thread sessions is not the best full row: no tie
    assert "tie by construction" not in "\n".join(results_pages.latency_target_lines(records))
    records[3]["chosen_pass"] = "full@1"
    records[3]["speedup_over_best_full"] = 0.998  # a miss is not rounded up to its goal
    assert "chosen pass / best full network 0.998 (full@1), goal ≥ 1.00: **not met**" in "\n".join(
        results_pages.latency_target_lines(records))


def test_where_the_time_goes_names_the_ceiling_of_a_free_exit_decision():
    """The breakdown sentence quotes bench_components.json's segments that decide nothing when it has them."""
    breakdown = {"batch_size": 1, "segment_us": [12.0, 20.0, 16.0], "full_us": 32.0,
                 "cumulative_time_share": [0.375, 1.0, 1.5], "cumulative_flops_share": [0.06, 0.53, 1.0],
                 "exit_fractions": [0.6, 0.1, 0.3], "time_predicted_speedup": 1.3, "flops_predicted_speedup": 2.5}
    components = {"fashion_mnist": {"onnx_segments": [breakdown], "torch_block_us": [48, 51, 45],
                                    "torch_head_us": [14, 14, 15], "flops_share": [0.06, 0.53, 1.0]}}
    records = [{"dataset": "fashion_mnist", "threads": 1, "batch_size": 1, "engine": "onnx_early_exit_segments",
                "measured_speedup": 1.25}]
    assert "decide nothing" not in "\n".join(results_pages.where_time_goes_sentences(records, components))
    breakdown |= {"undecided_segment_us": [10.0, 19.0, 15.0], "undecided_time_predicted_speedup": 1.36}
    text = "\n".join(results_pages.where_time_goes_sentences(records, components))
    assert ("the best ONNX Runtime early-exit row measures 1.25× (96 % of the time-predicted, 50 % of the "
            "FLOPs-predicted). Segments that decide nothing (no score, no class in the graph) take 10.0 / 19.0 / "
            "15.0 µs: even a free exit decision would predict at most 1.36×.") in text


def test_accuracy_vs_latency_reaches_the_performance_page():
    """latency_curves.json → the figure link and, at the shown budgets, both fits scored by both yardsticks;
    a budget no setting met is marked."""
    fit = {"test_accuracy": [0.80, 0.85], "test_predicted_us": [12.0, 20.0], "test_relative_flops": [0.2, 0.5],
           "budget_met": [False, True]}
    curves = {"fashion_mnist": {"time_fitted": fit, "flops_fitted": fit | {"test_accuracy": [0.80, 0.90]},
                                "relative_budgets": [0.5, 0.6], "plain_network": {"test_accuracy": 0.9, "us": 30.0},
                                "method": "soft_cgt", "seed": 0, "split": "random", "device": "cpu: x86_64, 2 threads"}}
    text = "\n".join(results_pages.latency_budget_lines(curves, shown=(0.5, 0.6)))
    assert "![accuracy vs latency, fashion_mnist](../figures/accuracy_vs_latency_fashion_mnist.png)" in text
    assert "plain network 90.0 % at 30.0 µs" in text
    assert "| 0.5 | 80.0 (unmet) | 12.0 | 0.20 | 80.0 (unmet) | 12.0 | 0.20 |" in text
    assert "| 0.6 | 85.0 | 20.0 | 0.50 | 90.0 | 20.0 | 0.50 |" in text
    assert "| 0.7 |" not in "\n".join(results_pages.latency_budget_lines(curves, shown=(0.5,)))


def test_latency_figures_are_drawn_from_the_benchmarks_curves(tmp_path, monkeypatch):
    """`python -m cgt bench` writes latency_curves.json (cgt.deployment, which draws nothing); the reporting
    floor draws accuracy_vs_latency_<dataset> from it, each with a sidecar naming its source; no file, no figure."""
    import torch

    from cgt.cost import ExitCosts
    from cgt.deployment.timecost import ExitTimes, budget_curves
    from cgt.experiments.provenance import write_sidecar
    from cgt.fileio import read_json, write_json_atomic
    from cgt.reporting import paper_figures

    monkeypatch.setattr(paper_figures, "figures_dir", lambda profile: tmp_path)
    assert paper_figures.save_latency_figures("paper") == []
    y = torch.tensor([0, 0, 1, 1])
    logits = torch.stack([torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.2, 0.0], [0.2, 0.0]]),
                          torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [0.0, 3.0]])])
    curves = budget_curves(logits, y, logits, y, ExitTimes((10e-6, 30e-6), 35e-6, "onnx_segments"),
                           ExitCosts((10, 30), (1, 1)), "test machine")
    source = tmp_path / "latency_curves.json"
    write_json_atomic(source, {"fashion_mnist": curves | {"split": "random", "method": "soft_cgt", "seed": 0}})
    write_sidecar(source, params={"profile": "paper", "repeats": 30}, device="cpu", seed=0, wall_time_s=1.0)
    paths = paper_figures.save_latency_figures("paper")
    assert sorted(p.name for p in paths) == ["accuracy_vs_latency_fashion_mnist.pdf", "accuracy_vs_latency_fashion_mnist.png"]
    params = read_json(tmp_path / "accuracy_vs_latency_fashion_mnist.png.provenance.json")["params"]
    assert params["dataset"] == "fashion_mnist" and params["repeats"] == 30 and params["source"].endswith("latency_curves.json")
