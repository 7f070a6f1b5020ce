"""How well each exit's confidence can be trusted: temperature scaling, calibration error, and how well
the confidence predicts the exit's own mistakes.

Per exit, from a run's cached logits (nothing is retrained):
  * temperature T fitted on the validation split by minimising the negative log-likelihood of
    softmax(z / T) (one scalar per exit, Guo et al., ICML 2017);
  * ECE of the max-softmax confidence on test, before and after scaling by T;
  * failure prediction: the AUROC of (1 − confidence) for "this exit's prediction is wrong", on test,
    before and after scaling. Temperature scaling keeps each sample's predicted class but not the order
    of max-softmax confidences across samples (each depends on the whole logit vector), so it can move
    this AUROC either way. It measures what an exit decision can rely on (Kubaty et al. 2025: lower ECE
    does not imply better exit decisions).

    rows = exit_calibration(run.logits)   # one dict per exit
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from .metrics import expected_calibration_error

T_BOUNDS = (0.05, 20.0)
"""Range the fitted temperature is kept in (a degenerate validation set cannot send it to 0 or ∞)."""


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, steps: int = 200) -> float:
    """The T > 0 minimising the mean NLL of softmax(logits / T) on (logits, y): 1-D, convex in log T,
    solved by bounded golden-section search on log T."""
    logits, y = logits.double(), y.long()

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits / np.exp(log_t), y))

    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    golden = (np.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(steps):
        if hi - lo < 1e-6:
            break
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


def failure_auroc(logits: torch.Tensor, y: torch.Tensor) -> float:
    """AUROC of (1 − max softmax) as a score for "the prediction is wrong"; NaN when the exit is never
    (or always) wrong on these samples, where the AUROC is undefined."""
    p = logits.float().softmax(-1)
    conf, pred = p.max(-1)
    wrong = (pred != y).numpy()
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, (1.0 - conf).numpy()))


def exit_calibration(logits: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    """Per exit of a run's cached logits ({"val", "test", "y_val", "y_test"}, logits (E, N, K)): the
    fitted T, and on test the ECE and the failure-prediction AUROC before and after scaling."""
    out = []
    for e in range(logits["val"].shape[0]):
        t = fit_temperature(logits["val"][e], logits["y_val"])
        test, y = logits["test"][e], logits["y_test"]
        out.append({"exit": e + 1, "temperature": t, "ece": expected_calibration_error(test, y),
                    "ece_scaled": expected_calibration_error(test / t, y), "failure_auroc": failure_auroc(test, y),
                    "failure_auroc_scaled": failure_auroc(test / t, y)})
    return out
