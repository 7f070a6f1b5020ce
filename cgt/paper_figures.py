"""Regenerate the paper's tables and figures from the finished runs of one profile.

Only the `paper` profile writes into the committed figures/ folder; the others write under
runs/<profile>/figures/, so a quick look never overwrites the published results. Every table and
figure gets a provenance sidecar (<file>.provenance.json).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import plots
from .data import display_name
from .evaluate import metrics_table
from .experiment import EvaluatedRun, load_dataset, load_finished
from .inference import early_exit_forward
from .methods import METHODS
from .paths import figures_dir
from .policy import PAPER_TAU
from .provenance import write_sidecar
from .report import format_pm, paper_comparison, summarise, write_table

GATE_METHODS = ["joint_uniform", "joint_annealed", "hard_cgt", "soft_cgt", "soft_cgt_linear"]


@dataclass
class DatasetResults:
    source: str
    """The dataset as given (a name or a .npz path)."""
    dataset: str
    """Its display name (folders, file names)."""
    records: list[EvaluatedRun]
    table: pd.DataFrame
    files: list[Path] = field(default_factory=list)


def collect(profile: str, dataset: str, methods: list[str] | None = None) -> DatasetResults:
    """Load every finished run of the profile (raises if one is missing: nothing is trained here)."""
    records = load_finished(dataset, profile, methods or list(METHODS))
    return DatasetResults(dataset, display_name(dataset), records, metrics_table([r.metrics for r in records]))


def write_tables(res: DatasetResults, profile: str) -> dict[str, pd.DataFrame]:
    out_dir = figures_dir(profile)
    hyperspectral = res.dataset == "indian_pines"
    shown = {}
    for point in ("paper_tau", "val_tolerance", "last_exit"):
        summary = summarise(res.table, point)
        shown[point] = format_pm(summary, hyperspectral=hyperspectral)
        _write(res, profile, shown[point], out_dir / f"table_{res.dataset}_{point}")
    shown["paper_comparison"] = paper_comparison(summarise(res.table, "paper_tau"))
    _write(res, profile, shown["paper_comparison"], out_dir / f"table_{res.dataset}_vs_paper")
    _write(res, profile, res.table, out_dir / f"metrics_{res.dataset}_all_runs")
    return shown


def _write(res: DatasetResults, profile: str, df: pd.DataFrame, stem: Path) -> None:
    write_table(df, stem)
    for suffix in (".csv", ".md"):
        res.files.append(Path(f"{stem}{suffix}"))
    _sidecar(res, profile, Path(f"{stem}.csv"))


def _sidecar(res: DatasetResults, profile: str, path: Path) -> None:
    runs = [str(r.run.run_dir) for r in res.records]
    write_sidecar(path, params={"profile": profile, "dataset": res.dataset, "runs": runs},
                  data_checksums={res.dataset: res.records[0].run.config["data_checksum"]})


def save(res: DatasetResults, profile: str, fig, name: str) -> None:
    stem = figures_dir(profile) / f"{name}_{res.dataset}"
    for path in plots.save_figure(fig, stem):
        res.files.append(path)
        _sidecar(res, profile, path)


def standard_figures(res: DatasetResults, profile: str) -> list:
    """Accuracy vs cost, exit distribution, gate weights over training, per-exit accuracy."""
    figs = []
    histories = {(r.method, r.seed): r.run.history for r in res.records if r.method in GATE_METHODS}
    for name, fig in (
        ("accuracy_vs_cost", plots.accuracy_vs_cost([r.metrics for r in res.records])),
        ("exit_distribution", plots.exit_distribution(res.table, "paper_tau")),
        ("gate_weights", plots.per_exit_over_epochs(histories, "mean_weight", "mean loss weight")),
        ("per_exit_accuracy", plots.per_exit_accuracy(res.table)),
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

