"""The results pages (results/*.md), assembled from artifacts only: the tables and figures the pipeline
wrote, its timing record, the benchmark's bench.json. Every table is stored once, on its page; every
number and every sentence about the paper's claim is generated here.

    python -m cgt results [--profile paper]
      → results/index.md          how claims are judged, the pre-registered verdicts, links to the pages
        results/<dataset>.md      one dataset: every table, figure and exploratory verdict (and its protocols)
        results/performance.md    wall clock against FLOPs, the GPU check, training runs on workers
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..evaluation import verdicts
from ..experiments import ablations
from ..experiments.provenance import project_relative, write_sidecar
from ..experiments.recipe import METHOD as REFERENCE_METHOD
from ..fileio import atomic_path, read_json
from ..methods import CGT_METHODS, JOINT_BASELINES
from ..policy import PAPER_TAU
from .readme import PROTOCOLS
from .tables import PAPER_REPORTED, QUALITY, to_markdown

FIGURE_LINK = "../figures"
"""Where a page's images are, relative to the page (results/ beside figures/)."""
POINT_WORDS = {"paper_tau": f"at the paper's fixed τ = {PAPER_TAU}",
               "val_common_target": "at the common validation-fitted operating point"}


def _signed(value, digits: int = 2) -> str:
    """A paired difference as the tables print it (+0.38); read back from CSV it lost its sign."""
    return f"{value:+.{digits}f}" if isinstance(value, (int, float)) else str(value)


def _table(fig_dir: Path, ds: str, name: str) -> tuple[str, pd.DataFrame]:
    md, csv = fig_dir / f"table_{ds}_{name}.md", fig_dir / f"table_{ds}_{name}.csv"
    if not md.exists() or not csv.exists():
        raise FileNotFoundError(f"missing result table {md}: run `python -m cgt paper` first")
    return md.read_text(), pd.read_csv(csv)


def rule_paragraph() -> str:
    d = verdicts.MARGIN
    return (f"**How the claim is judged** (`cgt/evaluation/verdicts.py`; margins fixed before any run was looked at). For each "
            f"CGT variant against each fixed-weight joint baseline, every replicate gives a paired difference (same seed, "
            f"and fold where there are folds = same data, initialisation and data order), CGT − baseline, in relative cost and in points of accuracy or "
            f"macro-F1; intervals are Student-t over the seeds, ± is the sample SD. **supported**: the cost "
            f"difference's 95 % CI lies below 0 and the quality difference's 95 % CI above 0; **cheaper, "
            f"non-inferior**: cost 95 % CI below 0 and the quality difference's 90 % CI lower bound above −δ "
            f"(δ = {d} points); **contradicted**: quality 95 % CI entirely below −δ, or cost 95 % CI entirely above 0; "
            f"**inconclusive** otherwise (fewer than 2 seeds: *insufficient seeds*). At matched cost the quality "
            f"difference alone decides (*more accurate* / *non-inferior* / *contradicted* / *inconclusive*). "
            f"The tables are exploratory: each states its number of comparisons, and p-values (two-sided paired "
            f"t-tests) are Holm-adjusted over all of a table's comparisons and both quality metrics.")


def _counts_sentence(df: pd.DataFrame, label: str) -> str:
    counts = df[f"verdict ({label})"].value_counts()
    order = [verdicts.SUPPORTED, verdicts.NON_INFERIOR, verdicts.MORE_ACCURATE, verdicts.NON_INFERIOR_MATCHED,
             verdicts.CONTRADICTED, verdicts.INCONCLUSIVE, verdicts.INSUFFICIENT]
    return ", ".join(f"{counts[c]} {c}" for c in order if c in counts)


def _named(df: pd.DataFrame, label: str, categories: tuple[str, ...], with_point: bool = False) -> str:
    rows = df[df[f"verdict ({label})"].isin(categories)]
    return "; ".join(f"`{r['CGT']}` vs `{r['vs']}`" + (f" ({r['at']})" if with_point else "") for _, r in rows.iterrows())


def reading(fig_dir: Path, ds: str) -> list[str]:
    """Bullet points on the claim for one dataset, derived from its verdict tables."""
    bullets = []
    for point, words in POINT_WORDS.items():
        _, df = _table(fig_dir, ds, f"verdicts_{point}")
        if df.empty:
            continue
        parts = []
        for label in QUALITY.values():
            named = _named(df, label, (verdicts.SUPPORTED, verdicts.NON_INFERIOR))
            parts.append(f"{label}: {_counts_sentence(df, label)}" + (f" (favourable: {named})" if named else ""))
        bullets.append(f"* **{words.capitalize()}** ({len(df)} comparisons, n = {df['n (seeds)'].min()} paired "
                       f"seeds): " + "; ".join(parts) + ".")
    _, df = _table(fig_dir, ds, "verdicts_matched_cost")
    if not df.empty:
        parts = []
        for label in QUALITY.values():
            named = _named(df, label, (verdicts.MORE_ACCURATE,), with_point=True)
            parts.append(f"{label}: {_counts_sentence(df, label)}" + (f" (more accurate: {named})" if named else ""))
        bullets.append(f"* **At matched cost** ({len(df)} comparisons over the budgets "
                       f"{', '.join(sorted(set(df['at'])))}): " + "; ".join(parts) + ".")
    return bullets


def averaging_sentence(fig_dir: Path, datasets: list[str], min_gap: float = 1.0) -> str:
    """Which F1 averaging the paper's SoftCGT numbers fit better, judged only on the datasets where
    macro and weighted averages differ (on balanced classes they coincide and cannot tell)."""
    paper = PAPER_REPORTED.set_index("method").loc["soft_cgt"]
    sentences = ["The paper does not say how its F1 / precision / recall are averaged "
                 "(weighted recall is by definition the overall accuracy)."]
    for ds in datasets:
        _, df = _table(fig_dir, ds, "vs_paper")
        rows = {r["averaging"]: r for _, r in df[df["method"] == "soft_cgt"].iterrows()}
        if set(rows) != {"macro", "weighted"}:
            continue
        gap = abs(rows["macro"]["F1 ours"] - rows["weighted"]["F1 ours"])
        if gap < min_gap:
            sentences.append(f"On {ds} our SoftCGT's macro and weighted F1 differ by {gap:.1f} points, so the "
                             f"averaging cannot be told from it.")
            continue
        distance = {a: sum(abs(r[f"{k} ours"] - paper[k.lower()]) for k in ("F1", "precision", "recall"))
                    for a, r in rows.items()}
        closer = min(distance, key=distance.get)
        shown = {a: f"{r['F1 ours']:.1f} / {r['precision ours']:.1f} / {r['recall ours']:.1f}" for a, r in rows.items()}
        sentences.append(f"On {ds} they differ by {gap:.1f} points (its rare classes), and the paper's "
                         f"{paper['f1']:.0f} / {paper['precision']:.0f} / {paper['recall']:.0f} (F1 / precision / "
                         f"recall) is closer to our {closer} averaging ({shown[closer]}; "
                         f"{'weighted' if closer == 'macro' else 'macro'}: "
                         f"{shown['weighted' if closer == 'macro' else 'macro']}), so {closer} averaging is the "
                         f"more likely reading — a hint, not a proof, since the paper's networks and split are not ours.")
    return " ".join(sentences)


def bench_table(fig_dir: Path) -> list[str]:
    """The latency protocol's records (figures/bench.json) as a table, and the targets, met or not."""
    from ..deployment.bench import target_check

    path = fig_dir / "bench.json"
    if not path.exists():
        return ["No benchmark artifact (`figures/bench.json`): run `python -m cgt bench --profile paper`."]
    records = read_json(path)
    lines = ["Each row's speed-up is over the same engine's full network; the time model predicts it from each exit "
             "segment's measured time (`cgt/deployment/timecost.py`), the FLOPs model from FLOPs. ✓ marks the pass "
             "`cgt.deployment.exported.load` chooses (`onnx_chosen` times `predict` itself, which runs it); the last "
             "column compares each row with the fastest full-network engine of its batch size at its thread count or "
             "fewer: a thread count is a ceiling, so at 2 threads `onnx_full_1_thread` (the plain network on the "
             "loader's one-thread sessions, which it may run any pass on: `segments@1`) is timed in the same rounds.", "",
             "| dataset | engine | batch | threads | µs / sample (median [IQR]) | measured speed-up | FLOPs-predicted "
             "| measured / FLOPs-predicted | time-predicted | measured / time-predicted | over the best full network |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        engine = r["engine"] + (" ✓" if r.get("chosen") else "") + (f" (runs {r['chosen_pass']})" if "chosen_pass" in r else "")
        lines.append(f"| {r['dataset']} | {engine} | {r['batch_size']} | {r['threads']} | "
                     f"{r['median_us_per_sample']:.1f} [{r['iqr_us_per_sample']:.1f}] | {r['measured_speedup']:.2f}× | "
                     f"{r['predicted_speedup']:.2f}× | {100 * r['ratio']:.0f} % | {r['time_predicted_speedup']:.2f}× | "
                     f"{100 * r['time_ratio']:.0f} % | {r['speedup_over_best_full']:.2f}× |")
    lines += ["", *latency_target_lines(records), "", *exit_plan_lines(records),
              "The FLOPs-ratio targets of an earlier round (the FLOPs model is the wrong yardstick at this size; "
              "kept for comparison):", ""]
    for t in target_check(records):
        lines.append(f"* {t['dataset']}, batch {t['batch_size']}: the best early-exit row ({t['best_engine']}, "
                     f"{t['best_threads']} thread(s)) reaches {100 * t['best_ratio']:.0f} % of the FLOPs-predicted "
                     f"speed-up — target {100 * t['target_ratio']:.0f} %: **{'met' if t['met'] else 'not met'}**"
                     + ("; some early-exit row is slower than its engine's full network"
                        if t["early_exit_slower_anywhere"] else "") + ".")
    lines += authors_timing_sentences(records)
    components = fig_dir / "bench_components.json"
    if components.exists():
        lines += where_time_goes_sentences(records, read_json(components))
    curves = fig_dir / "latency_curves.json"
    if curves.exists():
        lines += ["", *latency_budget_lines(read_json(curves))]
    return lines


def latency_budget_lines(curves: dict[str, dict], shown=(0.5, 0.7, 0.9, 1.1)) -> list[str]:
    """Accuracy vs latency (figures/latency_curves.json, cgt.deployment.timecost.budget_curves): per dataset, its
    figure and, at a few budgets relative to the plain network, the thresholds fitted on validation to time and
    to FLOPs, each scored on test by the time model and by FLOPs."""
    rel = FIGURE_LINK
    lines = ["**Accuracy vs latency.** Thresholds fitted on validation to a latency budget (the time model of "
             "ONNX Runtime's segments at batch 1, 1 thread, from the table above) and, beside them, to the same "
             "budget in FLOPs; each scored on test by both yardsticks (predicted µs per sample; FLOPs relative to "
             "the plain network). Budgets are fractions of the plain network's time or FLOPs.", ""]
    for ds, c in curves.items():
        time_fit, flops_fit = c["time_fitted"], c["flops_fitted"]
        plain = c["plain_network"]
        lines += [f"![accuracy vs latency, {ds}]({rel}/accuracy_vs_latency_{ds}.png)", "",
                  f"{ds} ({c['method']}, seed {c['seed']}, {c['split']} split, test set; {c['device']}; plain "
                  f"network {100 * plain['test_accuracy']:.1f} % at {plain['us']:.1f} µs):", "",
                  "| budget (× plain network) | fitted to time: accuracy % | µs / sample | FLOPs | "
                  "fitted to FLOPs: accuracy % | µs / sample | FLOPs |", "|---|---|---|---|---|---|---|"]
        for i, r in enumerate(c["relative_budgets"]):
            if not any(abs(r - s) < 1e-9 for s in shown):
                continue
            cells = [f"{100 * f['test_accuracy'][i]:.1f}{'' if f['budget_met'][i] else ' (unmet)'} | "
                     f"{f['test_predicted_us'][i]:.1f} | {f['test_relative_flops'][i]:.2f}" for f in (time_fit, flops_fit)]
            lines.append(f"| {r:.1f} | {cells[0]} | {cells[1]} |")
        lines.append("")
    return lines


def latency_target_lines(records: list[dict]) -> list[str]:
    """The latency targets (cgt.deployment.bench.latency_targets), met or not; for a speed-up goal above what the
    time model predicts for the measured exit fractions, the ceiling: no dispatch can beat the segments' own time."""
    from ..deployment.bench import latency_targets

    targets = latency_targets(records)
    undecided = [t for t in targets if not t.get("decided", True)]
    lines = [f"Latency targets ({sum(t['met'] for t in targets)} of {len(targets)} met; ratios of medians from one run, "
             f"with a 95 % bootstrap interval over its rounds, paired by round; the interval covers this run's rounds, "
             f"not what differs between runs (the machine's phase, where the process's memory landed), so a tie "
             f"can land on either side of its goal from one run to the next"
             + (f"; for {len(undecided)} of them the run cannot tell met from not met: the interval holds the goal"
                if undecided else "") + "):", ""]
    for t in targets:
        line = (f"* {t['dataset']}, batch {t['batch_size']}, {t['threads']} thread(s): {t['target']} "
                f"{_beside_goal(t['value'], t['goal'])} ({t['engine']}), goal ≥ {t['goal']:.2f}: "
                f"**{'met' if t['met'] else 'not met'}**")
        if "interval" in t:
            lo, hi = t["interval"]
            line += (f" (95 % interval {lo:.2f}–{hi:.2f}"
                     + ("" if t["decided"] else ": this run cannot tell") + ")")
        line += _why(t, {r["engine"]: r for r in records
                         if (r["dataset"], r["batch_size"], r["threads"]) == (t["dataset"], t["batch_size"], t["threads"])})
        lines.append(line + ".")
    return lines


def exit_plan_lines(records: list[dict]) -> list[str]:
    """Per (dataset, batch size, threads), the exit plans (cgt.deployment.plans) as the choice on validation saw
    them and as the run measured them; [] when the records have no plans."""
    groups = dict.fromkeys((r["dataset"], r["batch_size"], r["threads"]) for r in records if "val_plan" in r)
    if not groups:
        return []
    lines = ["**Exit plans.** Which exits to keep, chosen on validation: of the plans whose validation accuracy is at "
             "least the all-exit pass's, the one with the lowest time-model prediction for the validation exit mix "
             "(this row's rounds), if 3 % below the all-exit pass's (`cgt/deployment/plans.py`). A left-out exit's "
             "blocks run merged into the next kept exit's segment; the samples it would take go on. Measured: each "
             "plan's per-segment pass on the timed test samples (the plain network for plan 3), over ONNX Runtime "
             "full.", "",
             "| dataset | batch | threads | exits kept | validation accuracy % | predicted µs / sample (validation "
             "mix) | as accurate as every exit | chosen | measured µs / sample | measured speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for ds, batch_size, threads in groups:
        rows = [r for r in records if (r["dataset"], r["batch_size"], r["threads"]) == (ds, batch_size, threads)
                and "val_plan" in r]
        for r in sorted(rows, key=lambda r: -len(r["val_plan"]["plan"])):
            plan = r["val_plan"]
            lines.append(f"| {ds} | {batch_size} | {threads} | {plan['name']} | {100 * plan['val_accuracy']:.2f} | "
                         f"{plan['predicted_us']:.1f} | {'yes' if plan['eligible'] else 'no'} | "
                         f"{'**chosen**' if plan['chosen'] else ''} | {r['median_us_per_sample']:.1f} | "
                         f"{r['measured_speedup']:.2f}× |")
    return lines + [""]


def _beside_goal(value: float, goal: float) -> str:
    """A ratio to two decimals, or three where two would round a miss up to its goal (0.998 → '0.998', not '1.00')."""
    return f"{value:.3f}" if value < goal and f"{value:.2f}" == f"{goal:.2f}" else f"{value:.2f}"


def _why(target: dict, rows: dict[str, dict]) -> str:
    """Where the time goes for a missed latency target, and what a chosen plain network is compared with, from
    the records of its row ('' if nothing to say)."""
    from ..deployment import chooser
    from ..deployment.bench import FULL_ENGINES, PASS_ENGINES

    segments, chosen = rows.get("onnx_early_exit_segments"), rows.get("onnx_chosen")
    if target["target"] == "chosen pass / ONNX Runtime full" and segments and not target["met"] \
            and segments["time_predicted_speedup"] < target["goal"]:
        return (f" — out of reach for these segment graphs, this network and exit mix on this machine: the "
                f"segments' own measured times, their exit decision included, predict at most "
                f"{segments['time_predicted_speedup']:.2f}× (exits taken "
                f"{' / '.join(f'{100 * f:.1f}' for f in segments['exit_fractions'])} %), before any dispatch "
                f"(where the time goes, below: the same without the decision)")
    planned = next((r for r in rows.values() if r.get("val_plan", {}).get("chosen")), None)
    if target["target"].startswith("exit plan chosen on validation") and planned and not target["met"] \
            and planned["time_predicted_speedup"] < target["goal"]:
        best = max((r for r in rows.values() if "val_plan" in r), key=lambda r: r["time_predicted_speedup"])
        return (f" — out of reach for this plan's segment graphs on this machine: their own measured times predict "
                f"at most {planned['time_predicted_speedup']:.2f}× for its exit mix (exits taken "
                f"{' / '.join(f'{100 * f:.1f}' for f in planned['exit_fractions'])} %); of every plan's time model the "
                f"highest prediction is {best['time_predicted_speedup']:.2f}× (exits {best['val_plan']['name']}, "
                f"measured {best['measured_speedup']:.2f}×)")
    own = rows.get(PASS_ENGINES.get(chosen.get("chosen_pass", ""), "")) if chosen else None
    best = min((rows[e] for e in FULL_ENGINES if e in rows), key=lambda r: r["median_us_per_sample"], default=None)
    if target["target"] == "chosen pass / best full network" and own is not None and own is best \
            and chooser.base_pass(chosen["chosen_pass"]) == "full":
        return (f" — the chosen pass is the plain network itself, the {best['engine']} row's sessions, so the two "
                f"tie by construction: {chosen['median_us_per_sample']:.1f} µs per sample through `predict` against "
                f"{best['median_us_per_sample']:.1f} µs (IQRs {chosen['iqr_us_per_sample']:.1f} and "
                f"{best['iqr_us_per_sample']:.1f} µs); `predict` adds a length, an attribute read and the exit "
                f"index copied out to the same single-sample call; the rest is timing noise")
    if target["target"] == "measured / time-predicted" and segments and chosen and target["threads"] > 1 \
            and not target["met"] and chosen.get("chosen_pass") != "segments":
        return (f" — {segments['median_us_per_sample']:.1f} µs per sample [IQR {segments['iqr_us_per_sample']:.1f}] on "
                f"{target['threads']}-thread sessions, which the loader does not run here; the pass it runs "
                f"({chosen.get('chosen_pass')}) measures {chosen['time_ratio']:.2f} of its time-predicted speed-up")
    return ""


def authors_timing_sentences(records: list[dict]) -> list[str]:
    """What timing 'every exit computed, then select' (the authors' evaluation) shows and hides."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in records):
        rows = [r for r in records if r["dataset"] == ds]
        theirs = [r["measured_speedup"] for r in rows if r["engine"] == "torch_all_exits_then_select"]
        ours = [r["measured_speedup"] for r in rows if r["engine"] == "torch_early_exit"]
        if theirs and ours:
            out.append(f"* {ds}, timed the authors' way (every exit computed, then the thresholds applied): "
                       f"{min(theirs):.2f}–{max(theirs):.2f}× the full network's speed over the settings above, "
                       f"against {min(ours):.2f}–{max(ours):.2f}× for the PyTorch early-exit pass on the same "
                       f"samples. That timing cannot show a speed-up whatever the exits decide: every sample "
                       f"pays for every block and every head.")
    return out


def where_time_goes_sentences(records: list[dict], components: dict) -> list[str]:
    """Per dataset: ONNX Runtime's per-segment times against the FLOPs model, and eager PyTorch's
    per-block and per-head times (bench_components.json)."""
    out = []
    for ds, c in components.items():
        for b in c["onnx_segments"]:
            best = max((r["measured_speedup"] for r in records if r["dataset"] == ds and r["threads"] == 1
                        and r["batch_size"] == b["batch_size"] and r["engine"].startswith("onnx_early_exit")),
                       default=float("nan"))
            out.append(f"* Where the time goes on {ds}, ONNX Runtime, batch {b['batch_size']}, 1 thread: the exit "
                       f"segments take {' / '.join(f'{v:.1f}' for v in b['segment_us'])} µs per sample (full "
                       f"network {b['full_us']:.1f}), so reaching exits 1 / 2 / 3 costs "
                       f"{' / '.join(f'{100 * v:.0f}' for v in b['cumulative_time_share'])} % of the full network's "
                       f"time where FLOPs say {' / '.join(f'{100 * v:.0f}' for v in b['cumulative_flops_share'])} %. "
                       f"For the measured exit fractions these times predict a {b['time_predicted_speedup']:.2f}× "
                       f"speed-up, the FLOPs {b['flops_predicted_speedup']:.2f}×; the best ONNX Runtime early-exit "
                       f"row measures {best:.2f}× ({100 * best / b['time_predicted_speedup']:.0f} % of the "
                       f"time-predicted, {100 * best / b['flops_predicted_speedup']:.0f} % of the FLOPs-predicted)."
                       + (f" Segments that decide nothing (no score, no class in the graph) take "
                          f"{' / '.join(f'{v:.1f}' for v in b['undecided_segment_us'])} µs: even a free exit "
                          f"decision would predict at most {b['undecided_time_predicted_speedup']:.2f}×."
                          if "undecided_segment_us" in b else ""))
        out.append(f"* Eager PyTorch on {ds}, batch 1: blocks {' / '.join(f'{v:.0f}' for v in c['torch_block_us'])} µs "
                   f"per call, heads {' / '.join(f'{v:.0f}' for v in c['torch_head_us'])} µs, while the exits' "
                   f"cumulative FLOPs shares are {' / '.join(f'{v:.3f}' for v in c['flops_share'])}: at this size a "
                   f"layer's time is mostly per-operator overhead, not arithmetic.")
    return out


def dataset_section(fig_dir: Path, ds: str) -> list[str]:
    """One dataset's (or split's) part of the results block: readings, tables, verdicts, figures."""
    rel = FIGURE_LINK
    parts = [*reading(fig_dir, ds), "",
             "FLOPs per sample at each exit (cumulative: every block and head passed), and the network's "
             "parameter count:", "", _table(fig_dir, ds, "costs")[0], "",
             f"![accuracy vs cost, {ds}]({rel}/accuracy_vs_cost_{ds}.png)", "",
             "At the common validation-fitted operating point (test split; mean ± sample SD over seeds):", "",
             _table(fig_dir, ds, "val_common_target")[0], "",
             f"At the paper's fixed τ = {PAPER_TAU} (test split; mean ± sample SD over seeds):", "",
             _table(fig_dir, ds, "paper_tau")[0], ""]
    for point, words in POINT_WORDS.items():
        md, df = _table(fig_dir, ds, f"verdicts_{point}")
        parts += [f"The claim {words} (exploratory; {len(df)} comparisons, Holm-adjusted p over "
                  f"{2 * len(df)} tests):", "", md, ""]
    md, df = _table(fig_dir, ds, "verdicts_matched_cost")
    parts += [f"At matched cost — validation-fitted points at fixed budgets, and `auc`, the mean test accuracy "
              f"of the validation-fitted accuracy–cost curve over budgets 0.25–1.00 (exploratory; {len(df)} "
              f"comparisons):", "", md, "",
              "Beside the numbers the paper reports (dataset not stated in the paper's sources; ours = mean over "
              f"seeds at τ = {PAPER_TAU}, macro and weighted averages):", "", _table(fig_dir, ds, "vs_paper")[0], ""]
    parts += ["Calibration per exit (from the cached logits): the temperature fitted on validation (NLL), test ECE "
              "before and after scaling, and the test AUROC of (1 − confidence) for the exit's own mistakes — what "
              "an exit decision relies on (mean over seeds):", "", _table(fig_dir, ds, "calibration")[0], ""]
    parts += ["A learned exit policy (per exit, a logistic model on max-probability, margin, entropy and agreement "
              "with earlier exits, fitted on validation; `cgt/learned_policy.py`) against max-softmax thresholds at "
              "the same budgets: does it help joint training as much as CGT does, and does CGT + learned policy beat "
              "the joint baseline chosen on validation + learned policy (exploratory; accuracy in points, paired by "
              "replicate):", "", _table(fig_dir, ds, "learned_policy")[0] if (fig_dir / f"table_{ds}_learned_policy.md").exists()
              else "*Not in these figures: the next `make paper` writes `table_" + ds + "_learned_policy`.*", ""]
    parts += ["Risk-controlled thresholds (one global τ chosen on validation with a guarantee on the loss \"early exit "
              "wrong where the last exit is right\", which bounds the accuracy lost against the full network; CRC in "
              "expectation, LTT with probability ≥ 0.9): the loss and accuracy gap realised on test, and the cost:", "",
              _table(fig_dir, ds, "risk_control")[0], ""]
    if ds.startswith("indian_pines"):
        parts += floor_section(fig_dir, ds, PROTOCOLS[ds][1])
        parts += [f"F1 per class at τ = {PAPER_TAU} (%, mean over seeds) — the rare classes are where macro and weighted "
                  "averages part:", "", _table(fig_dir, ds, "per_class_f1")[0], "",
                  f"![per-class F1, {ds}]({rel}/per_class_f1_{ds}.png)", ""]
    return parts


FLOOR_TABLE = "table_indian_pines_floor.csv"
FLOOR_MARGIN = 5.0
"""Points of overall accuracy a network should clear the SVM floor by (issue 22's target), mean over replicates."""
CLEARS = f"clears the floor by ≥ {FLOOR_MARGIN:.0f}"
PUBLISHED_OA = (65.0, 82.0)
"""Overall accuracy (%) published for small CNNs on leakage-reduced Indian Pines protocols, the range issue 22
cites: Audebert et al. 2019 (IEEE GRSM, Table III, per-class disjoint split), Hong et al.'s fixed train/test
split, Nalepa et al. 2019 (GRSL, patch-based folds)."""


def floor_comparison(floor: pd.DataFrame, metrics: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Each method's full network against the RBF SVM on the same pixels (same protocol, fold and seed):
    the paired difference in overall accuracy, in points, mean ± sample SD over the replicates both have."""
    keys = ["fold", "seed"]
    svm = floor[(floor.protocol == protocol) & (floor.model == "svm_rbf")][keys + ["oa"]]
    full = metrics[metrics.operating_point == "full_network"][["method", *keys, "accuracy"]]
    paired = full.merge(svm, on=keys, how="inner")  # fold is NaN on both sides outside blocked; merge pairs NaN keys
    paired["gap"] = (paired.accuracy - paired.oa) * 100
    rows = []
    for method, group in paired.groupby("method", sort=False):
        gap = group.gap
        rows.append({"method": method, "replicates": len(gap),
                     "network OA %": f"{100 * group.accuracy.mean():.1f}", "SVM OA %": f"{100 * group.oa.mean():.1f}",
                     "network − SVM, points": f"{gap.mean():+.1f} ± {gap.std(ddof=1) if len(gap) > 1 else 0.0:.1f}",
                     CLEARS: "yes" if gap.mean() >= FLOOR_MARGIN
                     else ("no: below the floor" if gap.mean() < 0 else "no")})
    return pd.DataFrame(rows)


def published_range_sentence(comparison: pd.DataFrame, method: str) -> str:
    """Where `method`'s full-network OA (a floor_comparison row) falls against the published range, and why
    the range is a reference, not a bar, when it falls outside."""
    row = comparison[comparison.method == method]
    if row.empty:
        return ""
    oa, (low, high) = float(row["network OA %"].iloc[0]), PUBLISHED_OA
    where = "inside" if low <= oa <= high else "below" if oa < low else "above"
    return (f"Published leakage-reduced protocols report {low:.0f}–{high:.0f} % OA for small CNNs on Indian Pines "
            f"(Audebert et al. 2019, per-class disjoint split; Hong et al.'s fixed split; Nalepa et al. 2019, "
            f"patch-based folds); `{method}`'s full network here reaches {oa:.1f} %, {where} that range"
            + ("." if where == "inside" else ": those protocols split differently (fixed or per-class splits, not "
                                             "tiles dealt to folds), so the range locates this result, it does not "
                                             "bound it."))


def floor_section(fig_dir: Path, ds: str, protocol: str) -> list[str]:
    """The classic floor (RBF SVM, random forest on per-pixel spectra) beside the networks' full network."""
    from ..experiments.floors import floor_summary

    if not (fig_dir / FLOOR_TABLE).exists() or not (fig_dir / f"metrics_{ds}_all_runs.csv").exists():
        return [f"*The classic floor is not in these figures (`figures/{FLOOR_TABLE}`); notebook 04 writes it.*", ""]
    floor = pd.read_csv(fig_dir / FLOOR_TABLE)
    comparison = floor_comparison(floor, pd.read_csv(fig_dir / f"metrics_{ds}_all_runs.csv"), protocol)
    summary = floor_summary(floor[floor.protocol == protocol])
    below = comparison[comparison[CLEARS] != "yes"].method.tolist()
    verdict = (f"**{len(below)} of {len(comparison)} methods do not clear the SVM floor by {FLOOR_MARGIN:.0f} points**"
               + (f" ({', '.join(f'`{m}`' for m in below)})." if below else ".")) if len(comparison) else ""
    return [f"The classic floor on the same pixels ({protocol} protocol; `figures/{FLOOR_TABLE}`): an RBF SVM "
            "(C and γ chosen on validation) and a random forest on the raw per-pixel spectra, standardised on the "
            "training pixels (%, mean ± sample SD over replicates):", "", to_markdown(summary), "",
            "Each method's full network against the SVM, paired by fold and seed (test split, overall accuracy):",
            "", to_markdown(comparison), "", verdict, "",
            *([published_range_sentence(comparison, REFERENCE_METHOD), ""] if protocol == "blocked" else [])]


def spatial_section(fig_dir: Path, ds: str) -> list[str]:
    """The dataset on the spatial split: what it is, the drop from the random split, what it left out,
    then the same tables and verdicts as on the random split."""
    md, df = _table(fig_dir, ds, "split_comparison")
    counts_md, counts = _table(fig_dir, f"{ds}_spatial", "split_counts")
    drops = {name: df[f"{name} drop"] for name in ("OA", "macro-F1")}
    return [f"## {ds}, spatial split: the extrapolation stress test (exploratory)", "",
            f"The paper's random pixel split puts training pixels inside nearly every test patch. On the spatial "
            f"split (`split=\"spatial\"`: each class cut into disjoint regions, a guard band of the patch radius "
            f"between training and evaluation pixels; split seed = training seed, {len(counts)} seeds) no "
            f"evaluation patch contains a training pixel. Without the leak, OA falls by "
            f"{drops['OA'].min():.1f}–{drops['OA'].max():.1f} points and macro-F1 by "
            f"{drops['macro-F1'].min():.1f}–{drops['macro-F1'].max():.1f} points across the methods (τ = {PAPER_TAU}; "
            f"OA, AA, κ, macro-F1 in %, mean ± sample SD over seeds):", "", md, "",
            "Pixels per split, and the classes each seed's split could not place in validation or test (their "
            "fields are too small to hold a training part, a guard band and an evaluation part; a class absent "
            "from test but predicted there counts with F1 = 0 in the macro average):", "", counts_md, "",
            *dataset_section(fig_dir, f"{ds}_spatial")]


def ablation_section(fig_dir: Path, ds: str) -> list[str]:
    """'When does CGT help?' for one dataset, from notebook 06's tables: which gate settings the paired
    rule finds favourable or contradicted at each point, and what the gradient measurements show."""
    head = ["## When does CGT help? The gate settings of notebook 06", ""]
    md, df = _table(fig_dir, ds, "ablation_verdicts")
    grid = ablations.grid_of(df["config"].tolist())
    bullets = []
    for column in [c for c in df.columns if c.startswith("verdict ")]:
        counts = df[column].value_counts()
        favourable = df.loc[df[column].isin([verdicts.SUPPORTED, verdicts.NON_INFERIOR, verdicts.MORE_ACCURATE]),
                            "config"].tolist()
        bullets.append(f"* {column[len('verdict '):]}: " + ", ".join(f"{n} {v}" for v, n in counts.items())
                       + (f" (favourable: {'; '.join(f'`{c}`' for c in favourable)})" if favourable else "") + ".")
    parts = head + [(f"On {ds}, {ablations.GRID_WORDS[grid]}. " if grid else "")
                    + f"{len(df)} configurations against `joint_uniform`, paired by seed (n = {df['n (seeds)'].min()}):",
                    "", *bullets, "", md, "",
                    f"![ablation heatmap, {ds}]({FIGURE_LINK}/ablation_heatmap_{ds}.png)", ""]
    parts += recipe_sentences(fig_dir, ds)
    if (fig_dir / f"table_{ds}_ablation_gating.csv").exists():
        parts += ["Training-time gating against test-time routing (first seed): each exit's share of the loss "
                  "weight in the last training epoch — what the gate let it learn — beside the share of test "
                  "samples routed to it at τ_infer:", "", _table(fig_dir, ds, "ablation_gating")[0], ""]
    if (fig_dir / f"table_{ds}_ablation_interference.csv").exists():
        imd, idf = _table(fig_dir, ds, "ablation_interference")
        cos = next(c for c in idf.columns if c.startswith("cos exits 1·"))
        sentences = [f"`{r['method']}`: {cos} {r[cos]}, lowest pair {r['lowest pair cos']}, the last exit "
                     f"holds {r[idf.columns[-1]]} % of the gradient norm on block 0" for _, r in idf.iterrows()]
        conflict = [r["method"] for _, r in idf.iterrows() if _mean_of(r["lowest pair cos"]) < 0]
        parts += ["Gradient interference, second half of training (mean [95 % interval] over seeds; each pair of "
                  "exits compared on the blocks both reach, norm shares on the first block, which every exit "
                  "reaches): "
                  + "; ".join(sentences) + ". "
                  + (f"Conflicting directions (a pair's mean cosine below 0) appear in {', '.join(f'`{m}`' for m in conflict)}."
                     if conflict else "No pair of exits has a negative mean cosine in any method: the gradients "
                                      "pull the shared blocks in broadly the same direction."), "", imd, "",
                  f"![gradient interference, {ds}]({FIGURE_LINK}/ablation_interference_{ds}.png)", ""]
    return parts


def recipe_sentences(fig_dir: Path, ds: str) -> list[str]:
    """The label-smoothing check of notebook 06: each method's best configuration (chosen on validation)
    trained again with the authors' label smoothing, against itself, paired by seed."""
    path = fig_dir / f"table_{ds}_ablation_recipe.csv"
    try:
        if pd.read_csv(path).empty:
            return []
    except (FileNotFoundError, pd.errors.EmptyDataError):  # no check run (label_smoothing = 0 writes no rows)
        return []
    md, df = _table(fig_dir, ds, "ablation_recipe")
    points = [c[len("verdict "):] for c in df.columns if c.startswith("verdict ")]
    effects = [f"`{r['config']}` against `{r['against']}`: "
               + ", ".join(f"{p} Δ acc {_signed(r[f'Δ acc {p}'])} points, Δ cost {_signed(r[f'Δ cost {p}'], 3)} ({r[f'verdict {p}']})"
                           for p in points)
               for _, r in df.iterrows()]
    return ["The recipe check — the best configuration of each method (highest mean validation accuracy at "
            "matched cost; chosen without test data) trained again with label smoothing, paired by seed: "
            + "; ".join(effects) + ".", "", md, "",
            f"![best configurations, {ds}]({FIGURE_LINK}/ablation_best_{ds}.png)", ""]


def gpu_section(fig_dir: Path) -> list[str]:
    """What `python -m cgt.pipeline.cuda_check` measured on a GPU machine (figures/cuda_check.json)."""
    path = fig_dir / "cuda_check.json"
    if not path.exists():
        return ["Not measured on a GPU: `python -m cgt.pipeline.cuda_check --out figures/cuda_check.json` on a CUDA machine "
                "writes the artifact this part is generated from.", ""]
    c = read_json(path)
    commit = (c["git"].get("commit") or "unknown")[:7]
    rows = ["| device | precision | epochs | seconds per epoch (the last one) | validation accuracy per exit after them |",
            "|---|---|---|---|---|"]
    for r in c["training"]:
        where = r["device"] + (f", {r['threads']} threads" if r.get("threads") else "")
        rows.append(f"| {where} | {r['precision']} | {len(r['epoch_seconds'])} | {r['epoch_seconds'][-1]:.2f} | "
                    f"{' / '.join(f'{a:.3f}' for a in r['val_acc_per_exit'])} |")
    inf = c["inference"]
    batches = ["| batch | full network, µs per sample | early exit, µs per sample | speed-up |", "|---|---|---|---|"]
    batches += [f"| {b['batch']} | {b['full_us_per_sample']:.2f} | {b['early_exit_us_per_sample']:.2f} | "
                f"{b['speedup']:.2f}× |" for b in inf["batches"]]
    slower = [b["batch"] for b in inf["batches"] if b["speedup"] < 1]
    return [f"Measured on {c['device']} with torch {c['torch']} ({c['measured'][:10]}, commit `{commit}`; "
            f"`figures/cuda_check.json`): Fashion-MNIST, the paper profile's training settings, SoftCGT, seed 0, "
            f"{c['training'][0]['train_samples']:,} training images.", "", *rows, "",
            f"Early exit on the GPU at τ = {inf['tau']} ({inf['test_samples']:,} test images; exits taken "
            f"{' / '.join(f'{100 * f:.1f} %' for f in inf['exit_fractions'])}): its decisions differ from the ones "
            f"computed from the full network's cached per-exit logits in {inf['exit_disagreements']} exits and "
            f"{inf['prediction_disagreements']} predictions.", "", *batches, "",
            *([f"At batch {', '.join(map(str, slower))} the early-exit pass is *slower* than the full network on the "
               "GPU. Not profiled; the likely reason is that a network this small is bound by kernel launches rather "
               "than arithmetic, and compacting the undecided samples between blocks adds launches and a "
               "host-device synchronisation per exit that the skipped blocks do not pay back.", ""] if slower else [])]


def scaling_section(fig_dir: Path) -> list[str]:
    """The runner's scaling (`python -m cgt scaling`, and the same part of cuda_check) over a machine's cores."""
    found = [(p.name, read_json(p)) for p in sorted(fig_dir.glob("runner_scaling*.json"))]
    gpu = fig_dir / "cuda_check.json"
    if gpu.exists():
        c = read_json(gpu)
        found.append((gpu.name, {**c["runner_scaling"], "device": "the CPU of the GPU machine",
                                 "git": c["git"], "cpu_cores": c["cpu_cores"]}))
    parts = [] if found else ["The runner's scaling was not measured yet: `python -m cgt scaling --workers 1 2` "
                              "writes `figures/runner_scaling.json`.", ""]
    for name, r in found:
        head = "| workers × 1 thread | " + " | ".join(str(row["workers"]) for row in r["rows"]) + " |"
        parts += [f"`figures/{name}` ({r['device']}, {r['cpu_cores']} cores, commit "
                  f"`{(r['git'].get('commit') or 'unknown')[:7]}`): {r['rows'][0]['runs']} Indian Pines runs "
                  f"({r['profile']} profile, {r['epochs']} epochs) trained from scratch.", "", head,
                  "|---" * (len(r["rows"]) + 1) + "|",
                  "| wall time (s) | " + " | ".join(f"{row['wall_s']:.1f}" for row in r["rows"]) + " |",
                  "| speed-up over 1 worker | " + " | ".join(f"{row['speedup_vs_1_worker']:.2f}×" for row in r["rows"]) + " |",
                  "| mean seconds per run | " + " | ".join(f"{row['mean_run_s']:.1f}" for row in r["rows"]) + " |", ""]
    if found and not any(n.startswith("runner_scaling") for n, _ in found):
        parts += ["On this project's 2-core development machine the scaling was not measured yet "
                  "(`python -m cgt scaling --workers 1 2`).", ""]
    same_machine = {row["workers"]: row["speedup_vs_1_worker"] for n, r in found if n.startswith("runner_scaling")
                    for row in r["rows"]}
    for path in sorted(fig_dir.glob("pipeline_workers_*.json")):
        r = read_json(path)
        serial, parallel = r["rows"]
        text = (f"The whole `{r['profile']}` pipeline from nothing (`figures/{path.name}`; {r['device']}, commit "
                f"`{(r['git'].get('commit') or 'unknown')[:7]}`): serially {serial['wall_s'] / 60:.1f} min, with "
                f"`--workers {parallel['workers']}` {parallel['wall_s'] / 60:.1f} min ({r['speedup']:.2f}× faster).")
        if "threads_per_cpu_run" not in r:  # measured before every CPU run trained with one thread
            text += (" Measured under the earlier thread rule: the serial pipeline then trained each run on every "
                     "core as intra-op threads, so workers gained only what several 1-thread processes do better "
                     "than one multi-threaded run. Every CPU run now trains with one thread however it is "
                     "scheduled; `python -m cgt scaling --pipeline quick --workers 2` measures the comparison again.")
        elif same_machine.get(parallel["workers"], 0) > r["speedup"]:
            text += (f" Less than the {same_machine[parallel['workers']]:.2f}× of the run list above: the training "
                     "runs spread over the workers, but the notebooks (evaluation, tables, figures) execute one "
                     "after another either way.")
        parts += [text, ""]
    return parts


def notebook_links(folder: Path) -> list[str]:
    """Links to the published executed notebooks (`python -m cgt publish`), each with its HTML export."""
    notebooks = sorted(folder.glob("*.ipynb"))
    if not notebooks:
        return ["No executed notebooks are published (`python -m cgt publish --profile paper` writes them to `paper/`)."]
    return ["Every notebook as the paper run executed it, outputs and figures included (nothing to run; each "
            f"also as a standalone HTML export beside it in `{folder.name}/`):", ""] + [
        f"* [{p.stem}](../{folder.name}/{p.name})" for p in notebooks]


def _mean_of(cell) -> float:
    """The mean of a 'mean [low, high]' cell (or a plain number)."""
    return float(str(cell).split()[0])


def index_page(fig_dir: Path, datasets: list[str], paper_dir: Path) -> str:
    """results/index.md: how every claim is judged, the pre-registered verdicts, the pages."""
    from .readme import timing_sentence

    parts = ["# Results", "", timing_sentence(fig_dir, datasets), "", "## The pre-registered verdicts", ""]
    primary = fig_dir / "table_primary_verdicts.md"
    if primary.exists():
        parts += ["The primary analysis fixed in [PREREGISTRATION.md](../PREREGISTRATION.md) before the runs: each CGT "
                  "variant against the fixed-weight joint baseline chosen on validation, at matched cost, with a "
                  "paired class-stratified bootstrap over replicates and test samples; Holm over the whole family "
                  "decides the verdict.", "", primary.read_text(), "",
                  "The comparator of each dataset, chosen on validation:", "",
                  (fig_dir / "table_primary_comparators.md").read_text(), ""]
    else:
        parts += ["Not computed from these figures: `python -m cgt verdicts --profile paper` (part of `make paper`) "
                  "writes them from the runs the pre-registration governs. Everything below is exploratory.", ""]
    parts += ["## Exploratory tables", "", rule_paragraph(), "",
              f"CGT variants: {', '.join(f'`{m}`' for m in CGT_METHODS)}; fixed-weight joint baselines: "
              f"{', '.join(f'`{m}`' for m in JOINT_BASELINES)}; each verdict table also compares them with the "
              "strongest baseline at its operating point (the highest mean *validation* accuracy among all "
              "baselines; column `rival`).", ""]
    parts += [f"* [{ds}]({ds}.md)" for ds in datasets] + ["* [Wall clock, GPU, workers](performance.md)", ""]
    parts += ["## Which F1 averaging?", "", averaging_sentence(fig_dir, datasets), "",
              "## The executed notebooks", "", *notebook_links(paper_dir), ""]
    return "\n".join(parts)


def dataset_page(fig_dir: Path, ds: str, spatial: bool) -> str:
    """results/<ds>.md: one dataset's tables, figures and exploratory verdicts."""
    parts = [f"# Results: {ds}", "", *dataset_section(fig_dir, ds)]
    if spatial:
        parts += spatial_section(fig_dir, ds)
    if (fig_dir / f"table_{ds}_ablation_verdicts.csv").exists():
        parts += ablation_section(fig_dir, ds)
    return "\n".join(parts)


def performance_page(fig_dir: Path) -> str:
    """results/performance.md: the wall-clock benchmark, the GPU check, the runner's scaling."""
    return "\n".join(["# Performance", "", "## Wall clock (`figures/bench.json`)", "", *bench_table(fig_dir), "",
                      "## On a GPU (`figures/cuda_check.json`)", "", *gpu_section(fig_dir),
                      "## Training runs on workers", "", *scaling_section(fig_dir)])


def write_pages(fig_dir: Path, out_dir: Path, datasets: list[str], spatial: list[str] = (),
                seconds: float = 0.0) -> list[Path]:
    """Every results page, atomically, each with a provenance sidecar naming the artifacts it was made from
    (`seconds`: the caller's time spent before, added to each page's own)."""
    t0 = time.perf_counter()
    own = [ds for ds in datasets if ds not in {f"{s}_spatial" for s in spatial}]  # a spatial split is on its dataset's page
    pages = {"index.md": index_page(fig_dir, own, fig_dir.parent / "paper"),
             **{f"{ds}.md": dataset_page(fig_dir, ds, ds in spatial) for ds in own},
             "performance.md": performance_page(fig_dir)}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in pages.items():
        path = out_dir / name
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text + "\n")
        sources = sorted(project_relative(p) for p in fig_dir.glob("table_*.csv"))
        write_sidecar(path, params={"sources": sources}, wall_time_s=seconds + time.perf_counter() - t0)
        written.append(path)
    return written
