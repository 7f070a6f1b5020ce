"""Tables of the results: summaries over seeds, the paper's numbers beside ours, per-class F1, and the
paper's claim tested with the paired verdict rule of cgt.evaluation.verdicts."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..cost import ExitCosts
from ..evaluation import verdicts
from ..fileio import atomic_path
from ..methods import BASELINES, CGT_METHODS, JOINT_BASELINES, display_order

# The only numbers known from the paper (its abstract and third-party summaries); the dataset is not stated there.
PAPER_REPORTED = pd.DataFrame([
    {"method": "soft_cgt", "f1": 95.0, "precision": 96.0, "recall": 95.0, "exit1_pct": 60.0, "exit2_pct": 21.3, "exit3_pct": 18.7},
    {"method": "hard_cgt", "f1": 92.0, "precision": 93.0, "recall": 92.0, "exit1_pct": np.nan, "exit2_pct": np.nan, "exit3_pct": np.nan},
])

SUMMARY_COLUMNS = {  # column of metrics_table → (label, scale)
    "accuracy": ("accuracy", 100), "f1_macro": ("F1", 100), "precision_macro": ("precision", 100),
    "recall_macro": ("recall", 100), "exit1_pct": ("exit 1 %", 1), "exit2_pct": ("exit 2 %", 1),
    "exit3_pct": ("exit 3 %", 1), "avg_cost_relative": ("rel. cost", 1), "avg_cost_flops": ("MFLOPs", 1e-6),
}
HYPERSPECTRAL_COLUMNS = {"average_accuracy": ("AA", 100), "kappa": ("kappa", 100)}
WEIGHTED_COLUMNS = {"f1_weighted": ("F1 (weighted)", 100), "precision_weighted": ("precision (weighted)", 100),
                    "recall_weighted": ("recall (weighted)", 100)}



def summarise(table: pd.DataFrame, point: str) -> pd.DataFrame:
    """Mean and sample SD (n − 1) over replicates (seeds, and folds where there are folds) per (dataset,
    method) at one operating point, in display units; `seeds` counts the replicates."""
    df = table[table["operating_point"] == point]
    columns = SUMMARY_COLUMNS | HYPERSPECTRAL_COLUMNS | WEIGHTED_COLUMNS
    scaled = df[["dataset", "method"]].copy()
    scaled["replicate"] = df[_replicate_key(df)].astype(str).agg("/".join, axis=1)
    for col, (label, scale) in columns.items():
        scaled[label] = df[col] * scale
    grouped = scaled.groupby(["dataset", "method"], sort=False)
    labels = [label for label, _ in columns.values()]
    out = grouped[labels].mean().add_suffix(" mean").join(grouped[labels].std(ddof=1).add_suffix(" sd"))
    out["seeds"] = grouped["replicate"].nunique()
    return out.reset_index()


def format_pm(summary: pd.DataFrame, decimals: dict[str, int] | None = None, hyperspectral: bool = False) -> pd.DataFrame:
    """'mean ± sample SD' strings for a Markdown/CSV table (a single seed shows the mean alone)."""
    decimals = decimals or {"rel. cost": 3, "MFLOPs": 2}
    cols = SUMMARY_COLUMNS | (HYPERSPECTRAL_COLUMNS if hyperspectral else {})
    out = summary[["method"]].copy()
    for label, _ in cols.values():
        d = decimals.get(label, 1)
        out[label] = [f"{m:.{d}f}" if np.isnan(sd) else f"{m:.{d}f} ± {sd:.{d}f}"
                      for m, sd in zip(summary[f"{label} mean"], summary[f"{label} sd"])]
    out["n (seeds)"] = summary["seeds"]
    return out


def paper_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """Our F1/precision/recall (macro and weighted rows) and exit split beside the paper's, with the difference."""
    rows = []
    for _, paper in PAPER_REPORTED.iterrows():
        for _, ours in summary[summary["method"] == paper["method"]].iterrows():
            for averaging, suffix in (("macro", ""), ("weighted", " (weighted)")):
                row = {"dataset": ours["dataset"], "method": paper["method"], "averaging": averaging}
                for key, label in (("f1", "F1"), ("precision", "precision"), ("recall", "recall"),
                                   ("exit1_pct", "exit 1 %"), ("exit2_pct", "exit 2 %"), ("exit3_pct", "exit 3 %")):
                    ours_label = label + suffix if key in ("f1", "precision", "recall") else label
                    row[f"{label} paper"] = paper[key]
                    row[f"{label} ours"] = round(ours[f"{ours_label} mean"], 1)
                    row[f"{label} diff"] = round(ours[f"{ours_label} mean"] - paper[key], 1) \
                        if not np.isnan(paper[key]) else np.nan
                rows.append(row)
    return pd.DataFrame(rows)


def per_class_f1(table: pd.DataFrame, class_names: list[str], point: str = "paper_tau") -> pd.DataFrame:
    """F1 (%) of every class (rows) for every method (columns), mean over seeds, at one operating point."""
    df = table[table["operating_point"] == point]
    per_method = {}
    for method, rows in df.groupby("method", sort=False):
        values = np.array([[np.nan if v is None else v for v in f] for f in rows["f1_per_class"]], dtype=float)
        seen = (~np.isnan(values)).sum(axis=0)  # seeds whose test split holds the class
        per_method[method] = np.where(seen > 0, 100 * np.nansum(values, axis=0) / np.maximum(seen, 1), np.nan)
    out = pd.DataFrame(per_method, index=pd.Index(class_names, name="class")).round(1)
    return out[display_order(out.columns)]


def cost_frame(costs: ExitCosts) -> pd.DataFrame:
    """FLOPs per sample at each exit: block, head, cumulative, relative to the full network (last row)."""
    exits = [f"exit {e + 1}" for e in range(len(costs.block_flops))]
    frame = pd.DataFrame({"block MFLOPs": [f / 1e6 for f in costs.block_flops],
                          "head MFLOPs": [f / 1e6 for f in costs.head_flops],
                          "cumulative MFLOPs": costs.cumulative / 1e6,
                          "relative to full network": costs.relative}, index=pd.Index(exits, name="exit"))
    frame.loc["full network"] = [sum(costs.block_flops) / 1e6, costs.head_flops[-1] / 1e6,
                                 costs.full_network / 1e6, 1.0]
    return frame.round(4)


# ---------------------------------------------------------------- the claim, tested (cgt.evaluation.verdicts)
QUALITY = {"accuracy": "accuracy", "f1_macro": "macro-F1"}


def _paired(df: pd.DataFrame, cgt: str, base: str, column: str, scale: float) -> np.ndarray:
    """Per-replicate differences CGT − baseline (same seed, and fold where there are folds), replicates both
    have, in display units."""
    key = _replicate_key(df)
    a, b = df[df["method"] == cgt].set_index(key)[column], df[df["method"] == base].set_index(key)[column]
    common = a.index.intersection(b.index).sort_values()
    return scale * (a.loc[common].to_numpy(dtype=float) - b.loc[common].to_numpy(dtype=float))


def strongest_baseline(table: pd.DataFrame) -> str | None:
    """The baseline with the highest mean *validation* accuracy — over the validation-fitted accuracy–cost
    curve (the `auc` rows) when the table has them, so one rival serves every operating point (at the common
    target every method is fitted to the same validation accuracy, which could not tell them apart); else
    over `table` as given. The hardest rival, chosen without test data. None if no baseline."""
    auc = table[table["operating_point"] == "auc"] if "operating_point" in table else table.iloc[:0]
    source = auc if not auc.empty else table
    baselines = source[source["method"].isin(BASELINES)]
    if baselines.empty:
        return None
    return str(baselines.groupby("method", sort=False)["val_accuracy"].mean().idxmax())


def comparisons(methods, strongest: str | None = None) -> list[tuple[str, str]]:
    """(CGT variant, baseline) pairs among the methods present: every fixed-weight joint baseline (the
    paper's claim), and the strongest baseline when it is another one."""
    present = set(methods)
    rivals = JOINT_BASELINES + ([strongest] if strongest and strongest not in JOINT_BASELINES else [])
    return [(c, b) for c in CGT_METHODS for b in rivals if c in present and b in present]


def _rival_kind(base: str, strongest: str | None) -> str:
    """Why a baseline is compared: fixed-weight joint training (the paper's claim), the strongest baseline, or both."""
    kinds = (["joint"] if base in JOINT_BASELINES else []) + (["strongest"] if base == strongest else [])
    return ", ".join(kinds)


def verdict_table(table: pd.DataFrame, point: str, margin: float = verdicts.MARGIN) -> pd.DataFrame:
    """The paper's claim — lower cost *and* higher quality than fixed-weight joint training (and than
    the strongest baseline, `strongest_baseline`) — at one operating point, for accuracy and macro-F1: paired differences with 95 % t intervals, the sign
    pattern over seeds, Holm-adjusted p-values over the table's comparisons, and the category."""
    df = table[table["operating_point"] == point]
    strongest = strongest_baseline(table)
    rows = []
    for cgt, base in comparisons(df["method"], strongest):
        d_cost = _paired(df, cgt, base, "avg_cost_relative", 1.0)
        row = {"CGT": cgt, "vs": base, "rival": _rival_kind(base, strongest), "n (seeds)": len(d_cost),
               "Δ rel. cost [95% CI]": _interval(d_cost, 3) + f" ({verdicts.sign_pattern(d_cost, 'lower')} cheaper)"}
        for column, label in QUALITY.items():
            d = _paired(df, cgt, base, column, 100.0)
            row[f"Δ {label}, points [95% CI]"] = _interval(d, 2) + f" ({verdicts.sign_pattern(d)} higher)"
            row[f"p {label}"] = verdicts.paired_p_value(d) if len(d) >= 2 else np.nan
            row[f"verdict ({label})"] = verdicts.verdict(d_cost, d, margin)
        rows.append(row)
    return _holm_columns(pd.DataFrame(rows))


def matched_cost_table(table: pd.DataFrame, points: list[str], margin: float = verdicts.MARGIN) -> pd.DataFrame:
    """CGT against each joint baseline at each budget (the validation-fitted points) and over the
    validation-fitted accuracy–cost curve (`auc`): exploratory. Each row shows both sides' realised cost
    and 'reached k/n' (seeds in which the method could spend the budget or reach the common target);
    quality alone decides, so a row where one side spent less is labelled by those columns, not hidden."""
    rows = []
    strongest = strongest_baseline(table)
    for point in points:
        df = table[table["operating_point"] == point]
        for cgt, base in comparisons(df["method"], strongest):
            row = {"CGT": cgt, "vs": base, "rival": _rival_kind(base, strongest), "at": point}
            d_cost = _paired(df, cgt, base, "avg_cost_relative", 1.0)
            row["n (seeds)"] = len(d_cost)
            # What each side really spent, and in how many seeds it could spend the budget at all: a method
            # that cannot is compared at a lower cost, which this table shows rather than hides (the
            # pre-registered analysis, cgt.evaluation.primary, compares at equal realised cost instead).
            for side, name in (("CGT", cgt), ("rival", base)):
                mine = df[df["method"] == name]
                row[f"rel. cost {side}"] = f"{mine['avg_cost_relative'].mean():.3f}" if len(mine) else "—"
                met = mine["objective_met"].dropna()  # the `auc` rows have no single objective
                row[f"reached {side}"] = f"{int(met.sum())}/{len(mine)}" if len(met) else "—"
            row["Δ rel. cost (mean)"] = f"{d_cost.mean():+.3f}" if len(d_cost) else "—"
            for column, label in QUALITY.items():
                d = _paired(df, cgt, base, column, 100.0)
                row[f"Δ {label}, points [95% CI]"] = _interval(d, 2) + f" ({verdicts.sign_pattern(d)} higher)"
                row[f"p {label}"] = verdicts.paired_p_value(d) if len(d) >= 2 else np.nan
                row[f"verdict ({label})"] = verdicts.matched_cost_verdict(d, margin)
            rows.append(row)
    return _holm_columns(pd.DataFrame(rows))


def _replicate_key(df: pd.DataFrame) -> list[str]:
    """What pairs rows across methods: the seed, and the fold where the protocol has folds."""
    return ["seed", "fold"] if "fold" in df and df["fold"].notna().any() else ["seed"]


def learned_policy_table(rows: pd.DataFrame, comparator: str, margin: float = verdicts.MARGIN) -> pd.DataFrame:
    """Does a learned exit policy change the answer? From `compare_policies_run` rows (every method, both
    policies, each budget): per budget, (a) learned − threshold for each method, paired by replicate —
    does the policy help joint training as much as CGT? — and (b) each CGT variant + learned policy against
    `comparator` + learned policy. Accuracy in points at the realised costs shown; quality alone decides
    (exploratory)."""
    ok = rows[rows["objective_met"].astype(bool)]
    key = _replicate_key(ok)
    out = []
    for budget, at in ok.groupby("budget", sort=True):
        pivot = at.pivot_table(index=[*key, "method"], columns="policy", values=["accuracy", "avg_cost_relative"])
        methods = set(at["method"])
        pairs = [(m, "threshold", m, "learned") for m in display_order(methods)]
        pairs += [(comparator, "learned", c, "learned") for c in CGT_METHODS if c in methods]
        for base_m, base_p, new_m, new_p in pairs:
            if base_m not in methods or ("accuracy", new_p) not in pivot or ("accuracy", base_p) not in pivot:
                continue  # a side with no reachable point at this budget: nothing to pair
            a, b = pivot.xs(new_m, level="method"), pivot.xs(base_m, level="method")
            common = a.index.intersection(b.index)
            new_acc, base_acc = a.loc[common, ("accuracy", new_p)], b.loc[common, ("accuracy", base_p)]
            both = new_acc.notna() & base_acc.notna()  # the same replicates for Δ and for the costs shown
            d = 100 * (new_acc[both] - base_acc[both]).to_numpy(float)
            out.append({"budget": budget, "comparison": f"{new_m} + {new_p} vs {base_m} + {base_p}", "n": len(d),
                        "rel. cost (new / base)": f"{a.loc[common, ('avg_cost_relative', new_p)][both].mean():.3f} / "
                                                  f"{b.loc[common, ('avg_cost_relative', base_p)][both].mean():.3f}",
                        "Δ accuracy, points [95% CI]": _interval(d, 2) + f" ({verdicts.sign_pattern(d)} higher)",
                        "verdict": verdicts.matched_cost_verdict(d, margin)})
    return pd.DataFrame(out)


def _interval(d: np.ndarray, decimals: int) -> str:
    if len(d) < 2:
        return "—" if len(d) == 0 else f"{d.mean():+.{decimals}f}"
    i = verdicts.t_interval(d)
    return f"{i.mean:+.{decimals}f} [{i.low:+.{decimals}f}, {i.high:+.{decimals}f}]"


def _holm_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Replace the raw p-value columns by Holm-adjusted ones (over all rows and both quality metrics)."""
    if df.empty:
        return df
    p_cols = [f"p {label}" for label in QUALITY.values()]
    raw = df[p_cols].to_numpy(dtype=float).ravel()
    adjusted = np.full(raw.shape, np.nan)
    ok = ~np.isnan(raw)
    adjusted[ok] = verdicts.holm(raw[ok])
    for k, col in enumerate(p_cols):
        df[f"{col} (Holm)"] = [f"{v:.3f}" if not np.isnan(v) else "—" for v in adjusted.reshape(-1, len(p_cols))[:, k]]
    return df.drop(columns=p_cols)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (NaN shown as an em dash), each float rounded to what its column can resolve
    (`_display_format`); the CSV beside it (`write_table`) keeps full precision."""
    formats = [_display_format(str(column)) for column in df.columns]

    def cell(v, fmt: str) -> str:
        if isinstance(v, (float, np.floating)) and not isinstance(v, bool):
            return "—" if np.isnan(v) else format(float(v), fmt)
        return str(v)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v, f) for v, f in zip(row, formats)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# Column-label words that name a fraction shown to three decimals, and words that name a percentage or
# percentage points shown to two; the earlier match in a label wins ("Δ acc matched cost (40 %)" is an
# accuracy, "Δ cost matched cost (40 %)" a cost).
_FRACTION_WORDS = re.compile(r"\bcost\b|\brel(?:\.|ative)|\bauroc\b|\bcos\b|^τ$|^t \(", re.IGNORECASE)
_PERCENT_WORDS = re.compile(r"\bacc|%|\bf1\b|\bprecision\b|\brecall\b|\bpoints\b|\bece\b", re.IGNORECASE)


def _display_format(column: str) -> str:
    """The format spec for a float column of a displayed table, from its label. Percentages and points differ
    between methods in the first or second decimal (a test set of ~10⁴ samples resolves 0.01 points), so
    two decimals; relative cost, AUROC, cosines, thresholds and temperatures are fractions, so three;
    p-values three significant digits (they span orders of magnitude); counts none; anything else two."""
    label = column.strip()
    if label.startswith("n (") or label in ("seed", "records", "parameters"):
        return ".0f"
    if label.startswith("p "):
        return ".3g"
    fraction, percent = _FRACTION_WORDS.search(label), _PERCENT_WORDS.search(label)
    if fraction and (percent is None or fraction.start() < percent.start()):
        return ".3f"
    return ".2f"


def write_table(df: pd.DataFrame, stem: str | Path) -> None:
    """CSV and Markdown, atomically."""
    for suffix, text in ((".csv", df.to_csv(index=False)), (".md", to_markdown(df))):
        with atomic_path(f"{stem}{suffix}") as tmp:
            Path(tmp).write_text(text)


def calibration_table(runs) -> pd.DataFrame:
    """Per method and exit, mean over seeds of cgt.evaluation.calibration.exit_calibration on each run's cached
    logits: the validation-fitted temperature, test ECE (%) before / after scaling, and the test AUROC
    of (1 − confidence) for the exit's own mistakes before / after."""
    from ..evaluation.calibration import exit_calibration

    rows = [{"method": r.method, "seed": r.seed, **c} for r in runs for c in exit_calibration(r.run.logits)]
    df = pd.DataFrame(rows)
    grouped = df.groupby(["method", "exit"], sort=False)
    out = grouped[["temperature", "ece", "ece_scaled", "failure_auroc", "failure_auroc_scaled"]].mean()
    out[["ece", "ece_scaled"]] *= 100
    out["n (seeds)"] = grouped["seed"].nunique()
    out = out.rename(columns={"temperature": "T (val NLL)", "ece": "ECE %", "ece_scaled": "ECE % scaled",
                              "failure_auroc": "failure AUROC", "failure_auroc_scaled": "failure AUROC scaled"})
    out = out.round({"T (val NLL)": 2, "ECE %": 2, "ECE % scaled": 2, "failure AUROC": 3, "failure AUROC scaled": 3})
    order = display_order(out.index.get_level_values("method"))
    return out.reset_index().sort_values("method", key=lambda m: m.map(order.index), kind="stable")


def risk_control_table(runs) -> pd.DataFrame:
    """The risk-controlled operating points (cgt.evaluation.risk) per method: the guarantee, and over seeds (mean ±
    sample SD) the controlled loss realised on test, the accuracy gap to the last exit and the cost."""
    rows = []
    for r in runs:
        points = r.metrics["operating_points"]
        last = points["full_network"]["test"]["accuracy"]
        for name, point in points.items():
            if "risk" not in point:
                continue
            risk = point["risk"]
            guarantee = (f"E[loss] ≤ {risk['eps']:g}" if risk["method"] == "crc"
                         else f"P(loss ≤ {risk['eps']:g}) ≥ {1 - risk['delta']:g}")
            rows.append({"method": r.method, "seed": r.seed, "point": name, "guarantee": guarantee,
                         "τ": point["thresholds"][0], "test loss %": 100 * risk["test_loss"],
                         "test accuracy gap, points": 100 * (last - point["test"]["accuracy"]),
                         "rel. cost": point["test"]["avg_cost_relative"]})
    if not rows:
        return pd.DataFrame(columns=["method", "point", "guarantee"])
    df = pd.DataFrame(rows)
    grouped = df.groupby(["method", "point", "guarantee"], sort=False)
    out = grouped[["τ"]].mean().round(4)
    for column, decimals in (("test loss %", 2), ("test accuracy gap, points", 2), ("rel. cost", 3)):
        mean, sd = grouped[column].mean(), grouped[column].std(ddof=1)
        out[column] = [f"{m:.{decimals}f}" if np.isnan(v) else f"{m:.{decimals}f} ± {v:.{decimals}f}"
                       for m, v in zip(mean, sd)]
    out["n (seeds)"] = grouped["seed"].nunique()
    order = display_order(df["method"])
    return out.reset_index().sort_values("method", key=lambda m: m.map(order.index), kind="stable")
