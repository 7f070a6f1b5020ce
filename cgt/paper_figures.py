"""Regenerate the paper's tables and figures from the finished runs of one profile.

Only the `paper` profile writes into the committed figures/ folder; the others write under
runs/<profile>/figures/, so a quick look never overwrites the published results. Every table and
figure gets a provenance sidecar (<file>.provenance.json).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import time

import matplotlib.pyplot as plt
import pandas as pd

from . import plots
from .data import display_name
from .evaluate import EvalConfig, budget_point_name, metrics_table
from .experiment import COMMON_TARGET, EvaluatedRun, add_common_target, load_dataset, load_finished
from .inference import early_exit_forward
from .methods import METHODS
from .paths import figures_dir, runs_dir
from .policy import PAPER_TAU
from .provenance import project_relative, write_sidecar
from .report import (cost_frame, format_pm, matched_cost_table, paper_comparison, per_class_f1, summarise, verdict_table,
                     write_table)

GATE_METHODS = ["joint_uniform", "joint_annealed", "hard_cgt", "soft_cgt", "soft_cgt_linear"]


@dataclass
class DatasetResults:
    source: str
    """The dataset as given (a name or a .npz path)."""
    dataset: str
    """Its display name (folders, file names)."""
    records: list[EvaluatedRun]
    table: pd.DataFrame
    """metrics_table of every run, with the common-target point added."""
    class_names: list[str]
    seconds: float
    """Time spent loading and evaluating the runs (each sidecar adds the time to write its artifact)."""
    files: list[Path] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.records})


MATCHED_COST_POINTS = [budget_point_name(b) for b in EvalConfig().budgets] + ["auc"]
SUMMARY_POINTS = (COMMON_TARGET, "paper_tau", "last_exit", *MATCHED_COST_POINTS[:-1])
VERDICT_POINTS = ("paper_tau", COMMON_TARGET)


def collect(profile: str, dataset: str, methods: list[str] | None = None) -> DatasetResults:
    """Load every finished run of the profile (raises if one is missing: nothing is trained here) and
    add the common-target operating point (one validation-accuracy target per seed for all methods)."""
    t0 = time.perf_counter()
    records = load_finished(dataset, profile, methods or list(METHODS))
    add_common_target(records)
    class_names = load_dataset(dataset, profile).class_names
    return DatasetResults(dataset, display_name(dataset), records, metrics_table([r.metrics for r in records]),
                          class_names, time.perf_counter() - t0)


def write_tables(res: DatasetResults, profile: str) -> dict[str, pd.DataFrame]:
    """Every table of one dataset, as CSV + Markdown with a sidecar; returns them by name."""
    out_dir = figures_dir(profile)
    hyperspectral = "average_accuracy" in res.table and res.dataset == "indian_pines"
    shown = {}
    for point in SUMMARY_POINTS:
        shown[point] = format_pm(summarise(res.table, point), hyperspectral=hyperspectral)
    shown["vs_paper"] = paper_comparison(summarise(res.table, "paper_tau"))
    for point in VERDICT_POINTS:
        shown[f"verdicts_{point}"] = verdict_table(res.table, point)
    shown["verdicts_matched_cost"] = matched_cost_table(res.table, MATCHED_COST_POINTS)
    shown["per_class_f1"] = per_class_f1(res.table, res.class_names).reset_index()
    model = res.records[0].run.model
    costs = cost_frame(res.records[0].costs).reset_index()
    costs["parameters"] = sum(p.numel() for p in model.parameters())
    shown["costs"] = costs
    for name, df in shown.items():
        _write(res, profile, df, out_dir / f"table_{res.dataset}_{name}")
    _write(res, profile, res.table, out_dir / f"metrics_{res.dataset}_all_runs")
    return shown


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
    paths = plots.save_figure(fig, stem)
    for path in paths:
        res.files.append(path)
        _sidecar(res, profile, path, time.perf_counter() - t0)


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
    data = load_dataset(res.source, profile)
    if "pixels_test" in data.extras:
        name = "exit_depth_map"
    elif "pixel_mean" in data.extras:
        name = "exit_examples"
    else:
        return None
    rec = next(r for r in res.records if r.method == method and r.seed == min(x.seed for x in res.records))
    out = early_exit_forward(rec.run.model, data.x["test"], tau, batch_size=512)
    if name == "exit_depth_map":
        fig = plots.pixel_maps(data.extras["image_shape"], data.extras["pixels_test"], out.predictions.numpy(),
                               out.exit_index.numpy(), data.num_classes, rec.run.model.num_exits,
                               title=f"{method}, test pixels, tau = {tau}")
    else:
        mean, std = float(data.extras["pixel_mean"]), float(data.extras["pixel_std"])
        images = data.x["test"].numpy() * std + mean
        fig = plots.examples_per_exit(images, out.exit_index.numpy(), out.predictions.numpy(), data.y["test"].numpy(),
                                      data.class_names, rec.run.model.num_exits)
    save(res, profile, fig, name)
    return fig


def close(figs) -> None:
    for f in figs:
        plt.close(f)

