"""Figures of training and evaluation (matplotlib/seaborn). Each function returns a Figure."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ..fileio import atomic_path
from ..losses import soft_residual
from ..methods import CGT_METHODS, JOINT_BASELINES, METHODS
from ..methods import display_order as _ordered

sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def palette(methods: Sequence[str]) -> dict[str, tuple]:
    """Stable colours: one per method of cgt.methods, in its order; methods of your own share the last."""
    order = list(METHODS)
    colours = sns.color_palette("tab10", len(order))
    return {m: colours[order.index(m) % 10] if m in order else colours[-1] for m in methods}


def history_frame(histories: Mapping[tuple[str, int], list[dict]], key: str) -> pd.DataFrame:
    """Long table (method, seed, epoch, exit, value) of a per-exit history entry."""
    rows = [{"method": m, "seed": s, "epoch": h["epoch"], "exit": e + 1, key: v}
            for (m, s), hist in histories.items() for h in hist for e, v in enumerate(h[key])]
    return pd.DataFrame(rows)


def per_exit_over_epochs(histories: Mapping[tuple[str, int], list[dict]], key: str, ylabel: str):
    """One panel per exit; one line per method (mean over seeds, band = ±1 std)."""
    df = history_frame(histories, key)
    methods = _ordered(df["method"])
    exits = sorted(df["exit"].unique())
    fig, axes = plt.subplots(1, len(exits), figsize=(4.2 * len(exits), 3.4), sharey=True, squeeze=False)
    for ax, e in zip(axes[0], exits):
        sns.lineplot(data=df[df["exit"] == e], x="epoch", y=key, hue="method", hue_order=methods,
                     palette=palette(methods), errorbar="sd", ax=ax, legend=(e == exits[-1]))
        ax.set_title(f"exit {e}")
        ax.set_ylabel(ylabel)
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.tight_layout()
    return fig


def accuracy_vs_cost(metrics: Sequence[dict], split: str = "test", point: str = "val_tolerance",
                     labels: Sequence[str] | None = None):
    """Accuracy against average relative cost over the global-τ sweep, per method (or per `labels`:
    one label per metrics dict, e.g. configurations of one method).

    Lines: mean over seeds at each τ (the τ grid is shared); band: ±1 std of accuracy. Squares:
    the single exits (exit e alone, at its cumulative cost). Stars: the validation-fitted operating
    point applied to test. Per method, the CGT variants and the best joint baseline (`emphasised`) are
    drawn strong and the other methods faint, so the comparison the paper makes can be read where ten
    curves overlap; the legend sits outside the axes, off the data.
    """
    by_method: dict[str, list[dict]] = {}
    for i, m in enumerate(metrics):
        by_method.setdefault(m["run"]["method"] if labels is None else labels[i], []).append(m)
    if labels is None:
        methods = _ordered(by_method)
        colours = palette(methods)
        strong = emphasised(by_method, point)
    else:
        methods = list(by_method)
        colours = dict(zip(methods, sns.color_palette("tab10", len(methods))))
        strong = set(methods)
    fig, ax = plt.subplots(figsize=(8.4, 4.6))
    for method in methods:
        runs = by_method[method]
        alpha, lw = (1.0, 2.0) if method in strong else (0.35, 1.0)
        acc = np.array([r["sweep"][f"{split}_accuracy"] for r in runs])
        cost = np.array([r["sweep"][f"{split}_relative_cost"] for r in runs])
        mean_acc, std_acc, mean_cost = acc.mean(0), acc.std(0), cost.mean(0)
        order = np.argsort(mean_cost)
        ax.plot(mean_cost[order], mean_acc[order], color=colours[method], label=method, lw=lw, alpha=alpha,
                zorder=2 if method in strong else 1)
        if method in strong:
            ax.fill_between(mean_cost[order], (mean_acc - std_acc)[order], (mean_acc + std_acc)[order],
                            color=colours[method], alpha=0.18, lw=0)
        exit_acc = np.mean([r["per_exit"][split]["accuracy"] for r in runs], axis=0)
        ax.scatter(runs[0]["costs"]["relative_cost"], exit_acc, marker="s", s=22, color=colours[method],
                   alpha=alpha, zorder=3)
        op = [r["operating_points"][point][split] for r in runs]
        ax.scatter(np.mean([o["avg_cost_relative"] for o in op]), np.mean([o["accuracy"] for o in op]),
                   marker="*", s=140 if method in strong else 70, color=colours[method], edgecolor="black",
                   lw=0.6, alpha=alpha, zorder=4)
    ax.set_xlabel("average cost (relative to the full network)")
    ax.set_ylabel(f"{split} accuracy")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1),
              title="bold: CGT and the best\njoint baseline (val)" if labels is None else None, title_fontsize=8)
    ax.set_title("accuracy vs cost (■ single exits, ★ validation-fitted τ)")
    fig.tight_layout()
    return fig


def emphasised(by_method: Mapping[str, list[dict]], point: str) -> set[str]:
    """The methods an accuracy–cost figure draws strong: every CGT variant present, and the joint baseline
    with the highest mean *validation* accuracy at `point` (chosen on validation, never on test)."""
    joint = [m for m in JOINT_BASELINES if m in by_method]
    strong = {m for m in CGT_METHODS if m in by_method}
    if joint:
        strong.add(max(joint, key=lambda m: np.mean([r["operating_points"][point]["val"]["accuracy"]
                                                     for r in by_method[m]])))
    return strong


def exit_distribution(table: pd.DataFrame, point: str = "paper_tau"):
    """Stacked bars: % of test samples leaving at each exit, per method (mean over seeds)."""
    df = table[table["operating_point"] == point]
    exit_cols = sorted(c for c in df.columns if c.startswith("exit") and c.endswith("_pct"))
    means = df.groupby("method")[exit_cols].mean().reindex(_ordered(df["method"]))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    left = np.zeros(len(means))
    for col, colour in zip(exit_cols, sns.color_palette("crest", len(exit_cols))):
        ax.barh(means.index, means[col], left=left, color=colour, label=col.replace("_pct", "").replace("exit", "exit "))
        left += means[col].to_numpy()
    ax.invert_yaxis()
    ax.set_xlabel(f"% of test samples, by the exit they leave at (operating point {point})")
    ax.set_xlim(0, 100)
    ax.legend(ncol=len(exit_cols), frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return fig


def per_exit_accuracy(table: pd.DataFrame):
    """Grouped bars: test accuracy of each exit on its own, per method (mean ± std over seeds)."""
    df = table[table["operating_point"] == "full_network"]
    acc_cols = sorted(c for c in df.columns if c.startswith("exit") and c.endswith("_acc"))
    long = df.melt(id_vars=["method", "seed"], value_vars=acc_cols, var_name="exit", value_name="exit accuracy")
    long["exit"] = long["exit"].str.replace("_acc", "").str.replace("exit", "exit ")
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    methods = _ordered(long["method"])
    sns.barplot(data=long, x="exit", y="exit accuracy", hue="method", hue_order=methods, palette=palette(methods),
                errorbar="sd", ax=ax)
    ax.set_ylim(max(0.0, long["exit accuracy"].min() - 0.05), 1.0)
    ax.set_title("test accuracy of each exit on its own (mean ± SD over seeds)")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.tight_layout()
    return fig


def soft_residuals(tau_train: float, sigmoid_scales: Sequence[float] = (1.0, 10.0)):
    """SoftCGT's residual forms (cgt.losses.soft_residual): how much of a sample's loss weight an exit
    passes on, against the true-class probability it assigns the sample."""
    s = torch.linspace(0, 1, 201)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for k in sigmoid_scales:
        ax.plot(s, soft_residual(s, "sigmoid", tau_train, k), label=f"sigmoid, τ = {tau_train:g}, k = {k:g}")
    ax.plot(s, soft_residual(s, "linear", tau_train, 1.0), "--", label="linear: 1 − s")
    ax.set_xlabel("true-class probability s at this exit")
    ax.set_ylabel("residual passed on")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def pixel_maps(image_shape: Sequence[int], pixels: np.ndarray, predictions: np.ndarray, exit_index: np.ndarray,
               class_names: Sequence[str], num_exits: int, title: str = ""):
    """Indian Pines: predicted class map (its key names the classes) and exit-depth map (which pixels
    leave at which exit)."""
    num_classes = len(class_names)
    h, w = image_shape
    pred_map = np.full(h * w, np.nan)
    exit_map = np.full(h * w, np.nan)
    pred_map[pixels] = predictions
    exit_map[pixels] = exit_index + 1
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    im0 = axes[0].imshow(pred_map.reshape(h, w), cmap=plt.get_cmap("tab20", num_classes), vmin=-0.5, vmax=num_classes - 0.5,
                         interpolation="nearest")
    axes[0].set_title("predicted class")
    key = fig.colorbar(im0, ax=axes[0], fraction=0.046, ticks=range(num_classes))
    key.ax.set_yticklabels(class_names, fontsize=7)
    im1 = axes[1].imshow(exit_map.reshape(h, w), cmap=plt.get_cmap("viridis", num_exits), vmin=0.5, vmax=num_exits + 0.5,
                         interpolation="nearest")
    axes[1].set_title("exit taken")
    fig.colorbar(im1, ax=axes[1], fraction=0.046, ticks=range(1, num_exits + 1), label="exit")
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def examples_per_exit(images: np.ndarray, exit_index: np.ndarray, predictions: np.ndarray, labels: np.ndarray,
                      class_names: Sequence[str], num_exits: int, per_exit: int = 8):
    """Fashion-MNIST: the first test images that leave at each exit (title: predicted / true)."""
    fig, axes = plt.subplots(num_exits, per_exit, figsize=(1.3 * per_exit, 1.6 * num_exits), squeeze=False)
    shown = wrong = 0
    for e in range(num_exits):
        idx = np.flatnonzero(exit_index == e)[:per_exit]
        shown += len(idx)
        wrong += int((predictions[idx] != labels[idx]).sum())
        for j, ax in enumerate(axes[e]):
            ax.axis("off")
            if j < len(idx):
                i = idx[j]
                ax.imshow(images[i].squeeze(), cmap="gray_r")
                colour = "black" if predictions[i] == labels[i] else "red"
                ax.set_title(_wrapped(class_names[predictions[i]]), fontsize=7, color=colour)
        axes[e][0].text(-0.3, 0.5, f"exit {e + 1}", transform=axes[e][0].transAxes, ha="right", va="center")
        if len(idx) == 0:  # an empty row is a finding, not a rendering fault: say so
            note = axes[e][0].text(0.0, 0.5, "no test image leaves at this exit", transform=axes[e][0].transAxes,
                                   ha="left", va="center", fontsize=8, color="grey")
            note.set_in_layout(False)  # it spills over the empty cells beside it; the layout must not shrink for it
    # the caption says what the colour means only when the figure shows it (a claim a reader can check)
    mistakes = f"red: wrong, {wrong} of {shown}" if wrong else f"all {shown} predicted correctly"
    fig.suptitle(f"test images by the exit they leave at (title: predicted class; {mistakes})", fontsize=9)
    fig.tight_layout()
    return fig


def _wrapped(name: str, width: int = 9) -> str:
    """A class name whole, on two lines when long (after a space or a slash): 'T-shirt/\ntop'."""
    if len(name) <= width:
        return name
    for sep in (" ", "/"):
        if sep in name:
            head, tail = name.split(sep, 1)
            return f"{head}{sep if sep == '/' else ''}\n{tail}"
    return name


def per_class_f1(f1: pd.DataFrame):
    """Heatmap of F1 (%) per class (rows) and method (columns): where the macro average's losses are."""
    fig, ax = plt.subplots(figsize=(1.0 * len(f1.columns) + 3.5, 0.32 * len(f1) + 1.6))
    sns.heatmap(f1, annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=100, cbar_kws={"label": "F1 (%)"}, ax=ax,
                annot_kws={"fontsize": 7})
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title("test F1 per class at τ = 0.9 (mean over seeds)")
    fig.tight_layout()
    return fig


def gradient_interference(histories: Mapping[str, list[dict]]):
    """Per method (one seed): over training steps, the cosine between each pair of exits' gradients on
    the shared blocks (left) and each exit's share of their total norm (right); from the `gradients`
    records of histories trained with log_gradients_every (cgt.interference)."""
    pairs, shares = [], []
    for method, hist in histories.items():
        for g in (g for h in hist for g in h.get("gradients", [])):
            num_exits = len(g["norm_share"])
            pairs += [{"method": method, "step": g["step"], "pair": f"exits {a + 1}·{b + 1}", "cosine": g["cosine"][a][b]}
                      for a in range(num_exits) for b in range(a + 1, num_exits) if g["cosine"][a][b] is not None]
            shares += [{"method": method, "step": g["step"], "exit": f"exit {e + 1}", "share": v}
                       for e, v in enumerate(g["norm_share"])]
    if not pairs:
        raise ValueError("no gradient records in these histories: train with log_gradients_every > 0")
    pairs, shares = pd.DataFrame(pairs), pd.DataFrame(shares)
    methods = _ordered(pairs["method"])
    fig, axes = plt.subplots(2, len(methods), figsize=(3.6 * len(methods), 5.6), sharex="col", squeeze=False)
    for col, method in enumerate(methods):
        top, bottom = axes[0][col], axes[1][col]
        sns.lineplot(data=pairs[pairs["method"] == method], x="step", y="cosine", hue="pair", ax=top,
                     legend=(col == len(methods) - 1))
        top.axhline(0, color="grey", lw=0.8)
        top.set_title(method)
        sns.lineplot(data=shares[shares["method"] == method], x="step", y="share", hue="exit", ax=bottom,
                     legend=(col == len(methods) - 1))
        bottom.set_ylim(0, 1)
    for ax in axes[:, -1]:
        if ax.get_legend():
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    axes[0][0].set_ylabel("cosine of exit gradients")
    axes[1][0].set_ylabel("share of gradient norm")
    fig.tight_layout()
    return fig


def config_heatmap(means: pd.DataFrame,
                   title: str = "ablation grid: means over seeds\ncolour: rank in column (bright = higher acc., lower cost)"):
    """Configuration × metric (means over seeds); colour = rank within the column (bright: better —
    higher accuracy, lower cost), so each metric's best and worst stand out whatever its unit; the
    colour key says so."""
    ranks = means.rank(pct=True)
    for column in ranks:
        if "cost" in column:
            ranks[column] = 1 - ranks[column]
    fig, ax = plt.subplots(figsize=(1.1 * means.shape[1] + 3, 0.42 * means.shape[0] + 1.5))
    sns.heatmap(ranks, annot=means.round(2), fmt="", cmap="viridis", vmin=0, vmax=1, ax=ax,
                cbar_kws={"label": "rank in column (1 = best)", "shrink": 0.8})
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=40)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    return fig


def accuracy_vs_latency(curves: dict):
    """Two panels from cgt.deployment.timecost.budget_curves: test accuracy against the time model's
    predicted µs per sample, and against relative FLOPs, for thresholds fitted on validation to a time
    budget and to a FLOPs budget (hollow markers: a budget no setting met); the plain network as a cross."""
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.9), sharey=True)
    fits = {"time_fitted": ("fitted to a latency budget (time model)", "tab:blue"),
            "flops_fitted": ("fitted to a FLOPs budget", "tab:orange")}
    for ax, x_key, xlabel in ((axes[0], "test_predicted_us", "predicted latency, µs per sample"),
                              (axes[1], "test_relative_flops", "average FLOPs (relative to the plain network)")):
        for fit, (label, colour) in fits.items():
            c = curves[fit]
            x, y, met = np.array(c[x_key]), 100 * np.array(c["test_accuracy"]), np.array(c["budget_met"])
            order = np.argsort(x)
            ax.plot(x[order], y[order], color=colour, lw=1.6, label=label)
            ax.scatter(x[met], y[met], color=colour, s=22, zorder=3)
            ax.scatter(x[~met], y[~met], facecolor="white", edgecolor=colour, s=22, zorder=3)
        plain = curves["plain_network"]
        ax.scatter(plain["us"] if x_key == "test_predicted_us" else 1.0, 100 * plain["test_accuracy"], marker="X",
                   s=70, color="black", zorder=4, label="plain network (no early exit)")
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("test accuracy, %")
    axes[1].legend(frameon=False, fontsize=8, loc="lower right")
    tm = curves["time_fitted"]["time_model"]
    fig.suptitle(f"accuracy vs latency and vs FLOPs, thresholds fitted on validation\n(latency: {tm['engine']}, "
                 f"batch {tm['batch_size']}, {tm['threads']} thread(s), {curves['device']})", fontsize=9)
    fig.tight_layout()
    return fig


def label_figure(fig, context: str) -> None:
    """Put `context` (dataset and split) at the head of a figure's title, so it stands alone: before its
    suptitle when it has one, else as its suptitle."""
    existing = fig._suptitle.get_text() if fig._suptitle is not None else ""
    fig.suptitle(f"{context}: {existing}" if existing else context, fontsize=10)
    fig.tight_layout()


def save_figure(fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write the figure as PNG and PDF atomically; returns the paths."""
    paths = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        with atomic_path(path) as tmp:
            # No creation date in PDFs: an unchanged figure must not rewrite a committed file.
            metadata = {"CreationDate": None} if fmt == "pdf" else None
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    return paths
