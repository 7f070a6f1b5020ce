"""Calibration per exit (cgt.evaluation.calibration): temperature scaling on generated data with a known answer,
and failure prediction on hand-made cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cgt.evaluation.calibration import exit_calibration, failure_auroc, fit_temperature
from cgt.evaluation.metrics import expected_calibration_error


def sampled(n: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(z) and logits reported as scale · z: the right temperature is `scale`."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 5, generator=g) * 2
    y = torch.multinomial(z.softmax(-1), 1, generator=g).squeeze(1)
    return z * scale, y


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_fitted_temperature_recovers_the_known_scale(scale):
    logits, y = sampled(20_000, scale, seed=0)
    assert fit_temperature(logits, y) == pytest.approx(scale, rel=0.05)


def test_scaling_fixes_an_overconfident_exit():
    val, y_val = sampled(5_000, 3.0, seed=1)
    test, y_test = sampled(5_000, 3.0, seed=2)
    (row,) = exit_calibration({"val": val[None], "y_val": y_val, "test": test[None], "y_test": y_test})
    assert row["temperature"] == pytest.approx(3.0, rel=0.1)
    assert row["ece_scaled"] < 0.5 * row["ece"]
    assert row["ece"] == pytest.approx(expected_calibration_error(test, y_test))
    assert row["failure_auroc_scaled"] == pytest.approx(failure_auroc(test / row["temperature"], y_test))
    assert 0.5 < row["failure_auroc"] <= 1 and 0.5 < row["failure_auroc_scaled"] <= 1


def test_failure_auroc_by_hand():
    """Three samples, y = 0: confidences 0.9 (right), 0.6 (wrong), 0.5 (right). Ranking by 1 − conf puts
    the wrong one between the right ones: of the 2 (wrong, right) pairs, 1 is ordered correctly → 0.5."""
    def row(p0: float, p1: float) -> list[float]:
        rest = (1 - p0 - p1) / 3
        return [math.log(p0), math.log(p1), *([math.log(rest)] * 3)]

    logits = torch.tensor([row(0.9, 0.04), row(0.2, 0.6), row(0.5, 0.3)])
    y = torch.tensor([0, 0, 0])
    assert failure_auroc(logits, y) == pytest.approx(0.5)
    assert failure_auroc(logits[[0, 1]], y[[0, 1]]) == pytest.approx(1.0)  # the wrong one is the least confident
    assert np.isnan(failure_auroc(logits[[0, 2]], y[[0, 2]]))  # never wrong: undefined
