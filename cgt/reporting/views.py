"""What the notebooks show, one call per view: tables as DataFrames or text, figures shown inline.

The training notebooks (01–03, 05) share these views, so each is written once here:

    print(cost_table(runs[0].costs))        FLOPs per exit (deterministic: nbval checks it)
    exit_accuracy_table(runs)               each exit alone, per method
    show_training_curves(runs)              validation accuracy and loss weight per exit over epochs
    show_evaluation(runs)                   τ = 0.9 and the common fitted point, accuracy vs cost, exit split
    explain_gates(model, x, y, "hard_cgt")  the gate at work on a real batch, one row per sample
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

from ..cost import ExitCosts
from ..data import display_name
from ..evaluation.evaluate import metrics_table
from ..experiments.train_evaluate import COMMON_TARGET, EvaluatedRun, add_common_target
from ..losses import exit_weights
from ..methods import display_order, method_spec
from . import plots
from .tables import cost_frame

EVALUATION_COLUMNS = ["method", "seed", "operating_point", "accuracy", "f1_macro", "avg_cost_relative"]


def cost_table(costs: ExitCosts) -> str:
    """FLOPs per sample at each exit: block, head, cumulative, relative to the full network."""
    frame = cost_frame(costs)
    table = frame.drop(index="full network").rename_axis(None)
    return (f"{table.to_string()}\nfull network (all blocks + last head): "
            f"{frame.loc['full network', 'cumulative MFLOPs']:.4f} MFLOPs")


def exit_accuracy_table(runs: Sequence[EvaluatedRun]) -> pd.DataFrame:
    """Test accuracy of each exit on its own (no early exit) and the oracle, mean over seeds."""
    table = metrics_table([r.metrics for r in runs])
    table = table[table["operating_point"] == "full_network"]
    columns = [c for c in table.columns if c.startswith("exit") and c.endswith("_acc")] + ["oracle_accuracy"]
    means = table.groupby("method")[columns].mean()
    return means.reindex(display_order(means.index))


def show_training_curves(runs: Sequence[EvaluatedRun], keys: Sequence[str] = ("val_acc", "mean_weight")) -> None:
    """Per-exit history over epochs, one figure per key (mean over seeds, band ±1 SD)."""
    labels = {"val_acc": "validation accuracy", "mean_weight": "mean loss weight", "train_acc": "training accuracy"}
    histories = {(r.method, r.seed): r.run.history for r in runs}
    for key in keys:
        fig = plots.per_exit_over_epochs(histories, key, labels.get(key, key))
        plots.label_figure(fig, figure_context(runs))
        plt.show()


def show_evaluation(runs: Sequence[EvaluatedRun]) -> None:
    """The deployed view: metrics at the paper's τ = 0.9 and at the common validation-fitted operating
    point (one validation-accuracy target for every method; needs a joint baseline among the runs, else
    each method's own tolerance point), accuracy vs cost, exit distribution at τ = 0.9."""
    fitted = COMMON_TARGET if add_common_target(list(runs)) else "val_tolerance"
    table = metrics_table([r.metrics for r in runs])
    exit_columns = [c for c in table.columns if c.startswith("exit") and c.endswith("_pct")]
    display(table[table["operating_point"].isin(["paper_tau", fitted])][EVALUATION_COLUMNS + exit_columns])
    for fig in (plots.accuracy_vs_cost([r.metrics for r in runs], point=fitted),
                plots.exit_distribution(table, "paper_tau")):
        plots.label_figure(fig, figure_context(runs))
        plt.show()


def figure_context(runs: Sequence[EvaluatedRun]) -> str:
    """'<dataset>, <split> split' of the runs a view shows: what each of its figures' titles starts with."""
    params = runs[0].run.config["data_params"]
    return f"{display_name(params['dataset'])}, {params.get('split', 'random')} split"


def explain_gates(model, x: torch.Tensor, y: torch.Tensor, method: str, progress: float = 1.0,
                  class_names: Sequence[str] | None = None, **options: Any) -> pd.DataFrame:
    """One row per sample of a real batch: each exit's prediction and confidence, and the weight
    the method's strategy gives each exit's loss — the gate at work, readable."""
    strategy, opts = method_spec(method, **options)
    model.eval()
    with torch.no_grad():
        logits = model(x)                                                    # (E, B, K)
    weights = exit_weights(logits, y, strategy, progress=progress, **opts)   # (B, E)
    probs = logits.softmax(-1)
    conf, pred = probs.max(-1)
    true_p = probs.gather(-1, y[None, :, None].expand(logits.shape[0], -1, 1)).squeeze(-1)
    name = (lambda k: class_names[k]) if class_names else (lambda k: k)
    rows = []
    for i in range(len(y)):
        row = {"label": name(int(y[i]))}
        for e in range(logits.shape[0]):
            row[f"exit{e + 1} pred"] = name(int(pred[e, i]))
            row[f"exit{e + 1} conf"] = round(float(conf[e, i]), 3)
            row[f"exit{e + 1} p(true)"] = round(float(true_p[e, i]), 3)
        for e in range(logits.shape[0]):
            row[f"w{e + 1}"] = round(float(weights[i, e]), 3)
        rows.append(row)
    return pd.DataFrame(rows)
