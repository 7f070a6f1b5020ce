"""Regenerate the paper's tables and figures from the finished runs of one profile.

Only the `paper` profile writes into the committed figures/ folder; the others write under
runs/<profile>/figures/, so a quick look never overwrites the published results. Every table and
figure gets a provenance sidecar (<file>.provenance.json).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from ..data import display_name
from ..evaluation.evaluate import EvalConfig, budget_point_name, metrics_table
from ..evaluation.learned_policy import compare_policies_run
from ..experiments import ablations
from ..experiments.paths import figures_dir, runs_dir
from ..experiments.provenance import project_relative, write_sidecar
from ..experiments.train_evaluate import COMMON_TARGET, EvaluatedRun, add_common_target, load_dataset, load_finished
from ..fileio import read_json
from ..inference import early_exit_forward
from ..methods import COMPARED, JOINT_BASELINES
from ..policy import PAPER_TAU
from . import plots
from .tables import (
    calibration_table,
    cost_frame,
    format_pm,
    learned_policy_table,
    matched_cost_table,
    paper_comparison,
    per_class_f1,
    risk_control_table,
    summarise,
    verdict_table,
    write_table,
)

GATE_METHODS = ["joint_uniform", "joint_annealed", "hard_cgt", "soft_cgt", "soft_cgt_linear"]


@dataclass
class DatasetResults:
    source: str
    """The dataset as given (a name or a .npz path)."""
    dataset: str
    """Its display name, `_<split>` appended on a split other than random (file names: table_<dataset>_...)."""
    records: list[EvaluatedRun]
    table: pd.DataFrame
    """metrics_table of every run, with the common-target point added."""
    class_names: list[str]
    seconds: float
    """Time spent loading and evaluating the runs (each sidecar adds the time to write its artifact)."""
    split: str = "random"
    files: list[Path] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.records})

    @property
    def folds(self) -> list[int | None]:
        """The cross-validation folds of the records ([None] on a split without folds)."""
        return sorted({r.fold for r in self.records}, key=lambda f: -1 if f is None else f)


MATCHED_COST_POINTS = [budget_point_name(b) for b in EvalConfig().budgets] + ["auc"]
SUMMARY_POINTS = (COMMON_TARGET, "paper_tau", "full_network", *MATCHED_COST_POINTS[:-1])
VERDICT_POINTS = ("paper_tau", COMMON_TARGET)


def collect(profile: str, dataset: str, methods: list[str] | None = None, split: str = "random") -> DatasetResults:
    """Load every finished run of the profile (raises if one is missing: nothing is trained here) and
    add the common-target operating point (one validation-accuracy target per seed for all methods)."""
    t0 = time.perf_counter()
    records = load_finished(dataset, profile, methods or COMPARED, split=split)
    add_common_target(records)
    class_names = load_dataset(dataset, profile, split=split).class_names
    label = display_name(dataset) + ("" if split == "random" else f"_{split}")
    return DatasetResults(dataset, label, records, metrics_table([r.metrics for r in records]),
                          class_names, time.perf_counter() - t0, split)


def write_tables(res: DatasetResults, profile: str) -> dict[str, pd.DataFrame]:
    """Every table of one dataset, as CSV + Markdown with a sidecar; returns them by name."""
    out_dir = figures_dir(profile)
    hyperspectral = "average_accuracy" in res.table and res.source == "indian_pines"
    shown = {}
    for point in SUMMARY_POINTS:
        shown[point] = format_pm(summarise(res.table, point), hyperspectral=hyperspectral)
    shown["vs_paper"] = paper_comparison(summarise(res.table, "paper_tau"))
    for point in VERDICT_POINTS:
        shown[f"verdicts_{point}"] = verdict_table(res.table, point)
    shown["verdicts_matched_cost"] = matched_cost_table(res.table, MATCHED_COST_POINTS)
    shown["per_class_f1"] = per_class_f1(res.table, res.class_names).reset_index()
    shown["learned_policy"] = learned_policy_table(policy_rows(res.records), joint_rival(res.table))
    shown["calibration"] = calibration_table(res.records)
    shown["risk_control"] = risk_control_table(res.records)
    model = res.records[0].run.model
    costs = cost_frame(res.records[0].costs).reset_index()
    costs["parameters"] = sum(p.numel() for p in model.parameters())
    shown["costs"] = costs
    for name, df in shown.items():
        _write(res, profile, df, out_dir / f"table_{res.dataset}_{name}")
    _write(res, profile, res.table, out_dir / f"metrics_{res.dataset}_all_runs")
    return shown


def policy_rows(records: list[EvaluatedRun]) -> pd.DataFrame:
    """Every run under both exit policies (max-softmax thresholds and the learned policy, each fitted on
    validation) at the matched budgets, one tidy row per (run, policy, budget); seconds per run, no training."""
    frames = []
    for r in records:
        table = compare_policies_run(r.run, r.costs, r.run.logits["val"].shape[-1], EvalConfig().budgets)
        table["fold"] = getattr(r, "fold", None)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def joint_rival(table: pd.DataFrame) -> str:
    """The fixed-weight joint baseline with the highest mean validation AUC (the `auc` rows' val_accuracy):
    the comparator of the exploratory learned-policy table, chosen as the pre-registered one is."""
    auc = table[(table["operating_point"] == "auc") & table["method"].isin(JOINT_BASELINES)]
    return str(auc.groupby("method", sort=False)["val_accuracy"].mean().idxmax())


def _write(res: DatasetResults, profile: str, df: pd.DataFrame, stem: Path) -> None:
    t0 = time.perf_counter()
    write_table(df, stem)
    for suffix in (".csv", ".md"):
        res.files.append(Path(f"{stem}{suffix}"))
    _sidecar(res, profile, Path(f"{stem}.csv"), time.perf_counter() - t0)


def _sidecar(res: DatasetResults, profile: str, path: Path, seconds: float) -> None:
    root = runs_dir(profile)
    write_sidecar(path, params={"profile": profile, "dataset": res.dataset, "runs_root": project_relative(root),
                                "runs": sorted(str(r.run.run_dir.relative_to(root)) for r in res.records)},
                  seed=res.seeds, wall_time_s=res.seconds + seconds,
                  data_checksums={res.dataset: res.records[0].run.config["data_checksum"]})


def save(res: DatasetResults, profile: str, fig, name: str) -> None:
    t0 = time.perf_counter()
    stem = figures_dir(profile) / f"{name}_{res.dataset}"
    plots.label_figure(fig, figure_context(res))
    paths = plots.save_figure(fig, stem)
    for path in paths:
        res.files.append(path)
        _sidecar(res, profile, path, time.perf_counter() - t0)


def figure_context(res: DatasetResults) -> str:
    """What every saved figure's title starts with: the dataset and its split."""
    return f"{display_name(res.source)}, {res.split} split"


def standard_figures(res: DatasetResults, profile: str) -> list:
    """Accuracy vs cost, exit distribution, gate weights over training, per-exit accuracy, per-class F1."""
    figs = []
    histories = {(r.method, r.seed): r.run.history for r in res.records if r.method in GATE_METHODS}
    for name, fig in (
        ("accuracy_vs_cost", plots.accuracy_vs_cost([r.metrics for r in res.records], point=COMMON_TARGET)),
        ("exit_distribution", plots.exit_distribution(res.table, "paper_tau")),
        ("gate_weights", plots.per_exit_over_epochs(histories, "mean_weight", "mean loss weight")),
        ("per_exit_accuracy", plots.per_exit_accuracy(res.table)),
        ("per_class_f1", plots.per_class_f1(per_class_f1(res.table, res.class_names))),
    ):
        save(res, profile, fig, name)
        figs.append(fig)
    return figs


def exit_examples(res: DatasetResults, profile: str, method: str = "soft_cgt", tau: float = PAPER_TAU):
    """Views of *where* samples leave, from the real early-exit forward pass, chosen by what the
    prepared data holds: pixel coordinates in a scene (Indian Pines) → class map and exit-depth map
    of the test pixels; images standardised by one pixel mean/std (Fashion-MNIST) → example images.
    None when the data has neither."""
    rec = next(r for r in res.records if r.method == method and r.seed == min(x.seed for x in res.records))
    data = load_dataset(res.source, profile, split=res.split, split_seed=rec.seed, fold=rec.fold)
    if "pixels_test" in data.extras:
        name = "exit_depth_map"
    elif "pixel_mean" in data.extras:
        name = "exit_examples"
    else:
        return None
    out = early_exit_forward(rec.run.model, data.x["test"], tau, batch_size=512)
    if name == "exit_depth_map":
        fig = plots.pixel_maps(data.extras["image_shape"], data.extras["pixels_test"], out.predictions.numpy(),
                               out.exit_index.numpy(), data.class_names, rec.run.model.num_exits,
                               title=f"{method}, test pixels, tau = {tau}")
    else:
        mean, std = float(data.extras["pixel_mean"]), float(data.extras["pixel_std"])
        images = data.x["test"].numpy() * std + mean
        fig = plots.examples_per_exit(images, out.exit_index.numpy(), out.predictions.numpy(), data.y["test"].numpy(),
                                      data.class_names, rec.run.model.num_exits)
    save(res, profile, fig, name)
    return fig


SPLIT_METRICS = {"accuracy": "OA", "average_accuracy": "AA", "kappa": "κ", "f1_macro": "macro-F1"}


def split_comparison(random: DatasetResults, spatial: DatasetResults, profile: str,
                     point: str = "paper_tau") -> pd.DataFrame:
    """Per method, OA, AA, κ and macro-F1 (%, mean ± sample SD over seeds, at `point`) on the random and
    the spatial split side by side, and the drop (random − spatial, points of the means); written as
    table_<dataset>_split_comparison."""
    rows = []
    for method in dict.fromkeys(random.table["method"]):
        row = {"method": method}
        for key, name in SPLIT_METRICS.items():
            means = {}
            for label, res in (("random", random), ("spatial", spatial)):
                values = 100 * res.table.loc[(res.table["method"] == method) & (res.table["operating_point"] == point),
                                             key].to_numpy(float)
                means[label] = values.mean() if len(values) else float("nan")
                sd = values.std(ddof=1) if len(values) > 1 else float("nan")
                row[f"{name} {label}"] = f"{means[label]:.1f} ± {sd:.1f}" if len(values) > 1 else f"{means[label]:.1f}"
            row[f"{name} drop"] = round(means["random"] - means["spatial"], 1)
        row["n (seeds)"] = f"{len(random.seeds)} / {len(spatial.seeds)}"
        rows.append(row)
    df = pd.DataFrame(rows)
    combined = DatasetResults(random.source, random.dataset, random.records + spatial.records, random.table,
                              random.class_names, random.seconds + spatial.seconds, files=random.files)
    _write(combined, profile, df, figures_dir(profile) / f"table_{random.dataset}_split_comparison")
    return df


def split_counts(res: DatasetResults, profile: str) -> pd.DataFrame:
    """Per seed of a spatial-split result: pixels in train / val / test / guard band, and the classes
    the split left out of validation or test (with their labelled-pixel counts); written as
    table_<dataset>_split_counts."""
    from ..data.splits import GUARD

    rows = []
    for seed in res.seeds:
        data = load_dataset(res.source, profile, split=res.split, split_seed=seed)
        split_map = data.extras["split_map"]
        totals = {s: int(data.y[s].bincount(minlength=data.num_classes).sum()) for s in ("train", "val", "test")}
        row = {"seed": seed, **totals, "guard band": int((split_map == GUARD).sum())}
        for s in ("val", "test"):
            absent = (data.y[s].bincount(minlength=data.num_classes) == 0).nonzero().flatten().tolist()
            labelled = data.extras["labelled_per_class"]
            row[f"classes missing from {s}"] = ", ".join(f"{data.class_names[c]} ({int(labelled[c])} px)"
                                                         for c in absent) or "none"
        rows.append(row)
    df = pd.DataFrame(rows)
    _write(res, profile, df, figures_dir(profile) / f"table_{res.dataset}_split_counts")
    return df


def close(figs) -> None:
    for f in figs:
        plt.close(f)


def save_ablation_outputs(tables: dict[str, pd.DataFrame], figures: dict[str, Any], dataset: str, profile: str,
                          configs: list[ablations.Config], seeds: list[int], split: str = "random",
                          seconds: float = 0.0) -> list[Path]:
    """Notebook 06's tables (table_<dataset>_ablation_<name>.csv/.md) and figures
    (ablation_<name>_<dataset>.png/.pdf), written to the profile's figures folder, each with a sidecar
    whose wall time is `seconds` (what the caller spent computing them, if it measured it) plus the time
    spent writing that artifact here."""
    out, written = figures_dir(profile), []
    params = {"profile": profile, "dataset": dataset, "split": split, "configs": [vars(c) for c in configs]}
    for name, df in tables.items():
        t0 = time.perf_counter()
        stem = out / f"table_{dataset}_ablation_{name}"
        write_table(df, stem)
        write_sidecar(f"{stem}.csv", params=params, seed=seeds, wall_time_s=seconds + time.perf_counter() - t0)
        written += [Path(f"{stem}.csv"), Path(f"{stem}.md")]
    for name, fig in figures.items():
        plots.label_figure(fig, f"{display_name(dataset)}, {split} split")
        t0 = time.perf_counter()
        for path in plots.save_figure(fig, out / f"ablation_{name}_{dataset}"):
            write_sidecar(path, params=params, seed=seeds, wall_time_s=seconds + time.perf_counter() - t0)
            written.append(path)
    return written


def save_latency_figures(profile: str, subset: str = "") -> list[Path]:
    """accuracy_vs_latency_<dataset>.png/.pdf from the profile's latency_curves<subset>.json (written by
    `python -m cgt bench`), each with a sidecar carrying the benchmark's parameters; none without that file."""
    source = figures_dir(profile) / f"latency_curves{subset}.json"
    if not source.exists():
        return []
    t0 = time.perf_counter()
    params = read_json(source.with_name(source.name + ".provenance.json"))["params"]
    paths = []
    for ds, curves in read_json(source).items():
        fig = plots.accuracy_vs_latency(curves)
        plots.label_figure(fig, f"{display_name(ds)}, {curves['split']} split, test set ({curves['method']}, "
                                f"seed {curves['seed']})")
        for path in plots.save_figure(fig, figures_dir(profile) / f"accuracy_vs_latency_{ds}"):
            write_sidecar(path, params=params | {"dataset": ds, "source": project_relative(source)}, device="cpu",
                          seed=curves["seed"], wall_time_s=time.perf_counter() - t0)
            paths.append(path)
        plt.close(fig)
    return paths
