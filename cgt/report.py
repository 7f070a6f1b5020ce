"""Tables of the paper's results, aggregated over seeds, beside the numbers the paper reports."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .fileio import atomic_path
from .methods import CGT_METHODS, JOINT_BASELINES

# PAPER.md §3: the only numbers known from the paper; the dataset is not stated in our sources.
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


def summarise(table: pd.DataFrame, point: str) -> pd.DataFrame:
    """Mean and std over seeds per (dataset, method) at one operating point, in display units."""
    df = table[table["operating_point"] == point]
    columns = SUMMARY_COLUMNS | HYPERSPECTRAL_COLUMNS
    scaled = df[["dataset", "method", "seed"]].copy()
    for col, (label, scale) in columns.items():
        scaled[label] = df[col] * scale
    grouped = scaled.groupby(["dataset", "method"], sort=False)
    labels = [label for label, _ in columns.values()]
    out = grouped[labels].mean().add_suffix(" mean").join(grouped[labels].std(ddof=0).add_suffix(" std"))
    out["seeds"] = grouped["seed"].nunique()
    return out.reset_index()


def format_pm(summary: pd.DataFrame, decimals: dict[str, int] | None = None, hyperspectral: bool = False) -> pd.DataFrame:
    """'mean ± std' strings for a Markdown/CSV table."""
    decimals = decimals or {"rel. cost": 3, "MFLOPs": 2}
    cols = SUMMARY_COLUMNS | (HYPERSPECTRAL_COLUMNS if hyperspectral else {})
    out = summary[["method"]].copy()
    for label, _ in cols.values():
        d = decimals.get(label, 1)
        out[label] = [f"{m:.{d}f} ± {s:.{d}f}" for m, s in zip(summary[f"{label} mean"], summary[f"{label} std"])]
    out["seeds"] = summary["seeds"]
    return out


def paper_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """Our macro F1/precision/recall and exit split beside the paper's, with the difference."""
    rows = []
    for _, paper in PAPER_REPORTED.iterrows():
        for _, ours in summary[summary["method"] == paper["method"]].iterrows():
            row = {"dataset": ours["dataset"], "method": paper["method"]}
            for key, label in (("f1", "F1"), ("precision", "precision"), ("recall", "recall"),
                               ("exit1_pct", "exit 1 %"), ("exit2_pct", "exit 2 %"), ("exit3_pct", "exit 3 %")):
                row[f"{label} paper"] = paper[key]
                row[f"{label} ours"] = round(ours[f"{label} mean"], 1)
                row[f"{label} diff"] = round(ours[f"{label} mean"] - paper[key], 1) if not np.isnan(paper[key]) else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def claims_table(table: pd.DataFrame, point: str = "paper_tau") -> pd.DataFrame:
    """The paper's claim, tested: does CGT lower the average cost *and* raise accuracy against
    fixed-weight joint training? Paired by seed (same initialisation and data order): Δ = CGT −
    baseline, mean ± std over seeds, accuracy in points, cost relative to the full network."""
    df = table[table["operating_point"] == point].set_index(["method", "seed"])
    rows = []
    for cgt in CGT_METHODS:
        for base in JOINT_BASELINES:
            if cgt not in df.index.get_level_values(0) or base not in df.index.get_level_values(0):
                continue
            seeds = sorted(set(df.loc[cgt].index) & set(df.loc[base].index))
            d_acc = 100 * (df.loc[cgt].loc[seeds, "accuracy"] - df.loc[base].loc[seeds, "accuracy"])
            d_cost = df.loc[cgt].loc[seeds, "avg_cost_relative"] - df.loc[base].loc[seeds, "avg_cost_relative"]
            cost_word = "cheaper" if d_cost.mean() < -1e-9 else "costlier" if d_cost.mean() > 1e-9 else "same cost"
            acc_word = "more accurate" if d_acc.mean() > 0 else "less accurate" if d_acc.mean() < 0 else "same accuracy"
            verdict = f"{cost_word}, {acc_word}"
            if abs(d_acc.mean()) <= d_acc.std(ddof=0):
                verdict += " (accuracy difference within the seed spread)"
            verdict += ": claim holds" if (cost_word, acc_word) == ("cheaper", "more accurate") else ": claim does not hold"
            rows.append({"CGT": cgt, "vs": base, "Δ accuracy (points)": f"{d_acc.mean():+.2f} ± {d_acc.std(ddof=0):.2f}",
                         "Δ rel. cost": f"{d_cost.mean():+.3f} ± {d_cost.std(ddof=0):.3f}", "seeds": len(seeds),
                         "verdict": verdict})
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (NaN shown as an em dash)."""
    def cell(v) -> str:
        return "—" if isinstance(v, float) and np.isnan(v) else str(v)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, stem: str | Path) -> None:
    """CSV and Markdown, atomically."""
    for suffix, text in ((".csv", df.to_csv(index=False)), (".md", to_markdown(df))):
        with atomic_path(f"{stem}{suffix}") as tmp:
            Path(tmp).write_text(text)


RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


def results_markdown(fig_dir: Path, datasets: list[str]) -> str:
    """The README's results section, assembled from the tables and figures 04_figures wrote."""
    parts = []
    for ds in datasets:
        tables = {p: fig_dir / f"table_{ds}_{p}.md" for p in ("val_tolerance", "paper_tau", "vs_paper")}
        all_runs = fig_dir / f"metrics_{ds}_all_runs.csv"
        missing = [str(p) for p in [*tables.values(), all_runs] if not p.exists()]
        if missing:
            raise FileNotFoundError(f"missing result tables {missing}: run `python -m cgt paper` first")
        parts += [f"### {ds}", "",
                  f"![accuracy vs cost, {ds}]({fig_dir.name}/accuracy_vs_cost_{ds}.png)", "",
                  "Per-exit thresholds fitted on validation (cheapest setting within 0.5 points of the last "
                  "exit's validation accuracy), applied to test; mean ± std over seeds:", "",
                  tables["val_tolerance"].read_text(), "",
                  "At the paper's fixed τ = 0.9:", "", tables["paper_tau"].read_text(), "",
                  "Beside the numbers the paper reports (dataset not stated in the paper's sources; "
                  "ours = mean over seeds at τ = 0.9, macro averages):", "", tables["vs_paper"].read_text(), ""]
        runs = pd.read_csv(all_runs)
        for point, label in (("paper_tau", "at τ = 0.9"), ("val_tolerance", "at the validation-fitted operating point")):
            parts += [f"The paper's claim — lower cost and higher accuracy than fixed-weight joint training — "
                      f"tested {label} (paired by seed, CGT − baseline):", "", to_markdown(claims_table(runs, point)), ""]
    return "\n".join(parts)


def update_readme(readme: Path, section: str) -> None:
    """Replace the text between the results markers of the README (atomically)."""
    text = readme.read_text()
    if RESULTS_START not in text or RESULTS_END not in text:
        raise ValueError(f"{readme} has no {RESULTS_START} … {RESULTS_END} markers")
    head, rest = text.split(RESULTS_START, 1)
    _, tail = rest.split(RESULTS_END, 1)
    with atomic_path(readme) as tmp:
        Path(tmp).write_text(f"{head}{RESULTS_START}\n{section}\n{RESULTS_END}{tail}")
