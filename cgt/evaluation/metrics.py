"""The paper's metrics and the early-exit diagnostics, per run.

Classification metrics come from scikit-learn. Early-exit metrics: exit distribution, average
cost, per-exit accuracy, oracle accuracy (some exit is right), overthinking (an earlier exit was
right but the prediction taken is wrong), expected calibration error per exit.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score, precision_recall_fscore_support

from ..cost import ExitCosts, average_cost


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Overall accuracy; macro and weighted F1 / precision / recall; average accuracy (mean
    per-class recall, the hyperspectral 'AA'); Cohen's κ; F1 of each class."""
    # Macro averages run over a fixed label set: the classes present in this test split (a spatial
    # split can leave a class out). Not the union of true and predicted labels (scikit-learn's
    # default): that set depends on the method's predictions, so two methods paired on the same
    # samples could be averaged over different classes. A prediction of an absent class still
    # counts — as a miss of the true class.
    labels = np.unique(y_true)
    if max(labels.max(initial=0), np.max(y_pred, initial=0)) >= num_classes:
        raise ValueError(f"labels up to {max(labels.max(initial=0), np.max(y_pred, initial=0))} but "
                         f"num_classes={num_classes}")
    out = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out |= {f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)}
    present = np.unique(y_true)  # AA over the classes that occur (a class absent from test has no recall)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected here
        warnings.simplefilter("ignore", UserWarning)
        out["average_accuracy"] = float(balanced_accuracy_score(y_true, y_pred)) if len(present) > 1 else out["accuracy"]
    out["kappa"] = float(cohen_kappa_score(y_true, y_pred, labels=np.union1d(y_true, y_pred)))
    # Per class: what the macro average hides (rare Indian Pines classes). None where the class has
    # no test sample (its recall, hence its F1, is undefined).
    _, _, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=np.arange(num_classes), average=None,
                                                        zero_division=0)
    out["f1_per_class"] = [float(f) if n > 0 else None for f, n in zip(f1, support)]
    return out


def expected_calibration_error(logits: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """ECE of max-softmax confidence, equal-width bins: Σ_b |acc_b − conf_b| · n_b / N."""
    p = logits.float().softmax(-1)
    conf, pred = p.max(-1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].mean() - conf[in_bin].mean()).abs()
    return float(ece)


def early_exit_metrics(exit_logits: torch.Tensor, y: torch.Tensor, preds: torch.Tensor, exit_index: torch.Tensor,
                       costs: ExitCosts, num_classes: int) -> dict:
    """Everything reported for one operating point on one split."""
    num_exits = exit_logits.shape[0]
    correct = exit_logits.argmax(-1) == y                                  # (E, N)
    fractions = np.bincount(exit_index.numpy(), minlength=num_exits) / len(y)
    # correct somewhere strictly before exit e  → (E, N)
    correct_before = torch.cat([torch.zeros_like(correct[:1]), correct.cummax(dim=0).values[:-1]])
    earlier_right = correct_before.gather(0, exit_index[None]).squeeze(0)
    wrong = preds != y
    out = classification_metrics(y.numpy(), preds.numpy(), num_classes)
    out |= {
        "exit_distribution": fractions.tolist(),
        "avg_cost_flops": average_cost(fractions, costs),
        "avg_cost_relative": average_cost(fractions, costs) / costs.full_network,
        "overthinking_policy": int((earlier_right & wrong).sum()),
        "overthinking_last_exit": int((correct[:-1].any(dim=0) & ~correct[-1]).sum()),
        "n_samples": int(len(y)),
    }
    return out


def per_exit_metrics(exit_logits: torch.Tensor, y: torch.Tensor) -> dict:
    correct = exit_logits.argmax(-1) == y
    return {"accuracy": correct.float().mean(dim=1).tolist(),
            "ece": [expected_calibration_error(l, y) for l in exit_logits],
            "oracle_accuracy": float(correct.any(dim=0).float().mean())}
