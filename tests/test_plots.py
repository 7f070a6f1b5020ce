"""Figures that stand alone (cgt.reporting.plots): dataset and split in the title, class names in the
class key, a caption that says only what the figure shows, a titled heatmap with a colour key."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cgt.reporting import plots


def test_label_figure_puts_dataset_and_split_before_the_title():
    fig, _ = plt.subplots()
    plots.label_figure(fig, "Indian Pines, spatial split")
    assert fig._suptitle.get_text() == "Indian Pines, spatial split"
    fig.suptitle("test images")
    plots.label_figure(fig, "Fashion-MNIST, random split")
    assert fig._suptitle.get_text() == "Fashion-MNIST, random split: test images"
    plt.close(fig)


def test_exit_depth_map_key_names_the_classes():
    fig = plots.pixel_maps((2, 3), np.array([0, 1, 4]), np.array([0, 2, 1]), np.array([0, 1, 2]),
                           ["Alfalfa", "Corn", "Oats"], 3)
    class_key = fig.axes[2]  # the two maps, then their colour bars
    assert [t.get_text() for t in class_key.get_yticklabels()] == ["Alfalfa", "Corn", "Oats"]
    plt.close(fig)


def test_exit_examples_caption_mentions_red_only_when_a_wrong_prediction_is_shown():
    images, labels = np.zeros((4, 1, 4, 4)), np.array([0, 1, 0, 1])
    exits = np.array([0, 0, 1, 1])
    fig = plots.examples_per_exit(images, exits, labels.copy(), labels, ["a", "b"], 2, per_exit=2)
    assert "all 4 predicted correctly" in fig._suptitle.get_text() and "red:" not in fig._suptitle.get_text()
    wrong = labels.copy()
    wrong[2] = 1
    fig2 = plots.examples_per_exit(images, exits, wrong, labels, ["a", "b"], 2, per_exit=2)
    assert "red: wrong, 1 of 4" in fig2._suptitle.get_text()
    assert [ax.title.get_color() for ax in fig2.axes].count("red") == 1
    plt.close(fig), plt.close(fig2)


def test_ablation_heatmap_has_a_title_and_a_colour_key():
    means = pd.DataFrame({"acc @0.9": [90.0, 80.0], "cost @0.9": [0.5, 0.4]}, index=["a", "b"])
    fig = plots.config_heatmap(means)
    assert fig.axes[0].get_title().startswith("ablation grid")
    assert fig.axes[1].get_ylabel() == "rank in column (1 = best)"
    plt.close(fig)


def _metrics(method: str, val_acc: float, test_acc: float) -> dict:
    point = {"val": {"accuracy": val_acc, "avg_cost_relative": 0.5}, "test": {"accuracy": test_acc, "avg_cost_relative": 0.5}}
    return {"run": {"method": method}, "operating_points": {"p": point},
            "sweep": {"test_accuracy": [0.5, test_acc], "test_relative_cost": [0.3, 1.0]},
            "per_exit": {"test": {"accuracy": [0.5, test_acc]}}, "costs": {"relative_cost": [0.3, 1.0]}}


def test_accuracy_cost_curves_emphasise_cgt_and_the_joint_baseline_best_on_validation():
    """joint_depth is best on validation, joint_uniform on test: validation decides, test never does."""
    runs = [_metrics("joint_uniform", 0.80, 0.95), _metrics("joint_depth", 0.90, 0.85),
            _metrics("last_exit", 0.99, 0.99), _metrics("hard_cgt", 0.70, 0.70)]
    by_method = {m["run"]["method"]: [m] for m in runs}
    assert plots.emphasised(by_method, "p") == {"hard_cgt", "joint_depth"}
    fig = plots.accuracy_vs_cost(runs, point="p")
    alphas = {line.get_label(): line.get_alpha() for line in fig.axes[0].get_lines()}
    assert alphas == {"joint_uniform": 0.35, "joint_depth": 1.0, "last_exit": 0.35, "hard_cgt": 1.0}
    legend = fig.axes[0].get_legend()
    assert legend.get_bbox_to_anchor().x0 > fig.axes[0].get_window_extent().x1 - 1  # outside the axes
    plt.close(fig)


def test_notebook_views_name_dataset_and_split_from_the_runs():
    from types import SimpleNamespace

    from cgt.reporting.views import figure_context

    run = lambda params: SimpleNamespace(run=SimpleNamespace(config={"data_params": params}))
    assert figure_context([run({"dataset": "indian_pines", "split": "spatial"})]) == "indian_pines, spatial split"
    assert figure_context([run({"dataset": "fashion_mnist"})]) == "fashion_mnist, random split"
