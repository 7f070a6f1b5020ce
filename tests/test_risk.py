"""Risk-controlled thresholds (cgt.evaluation.risk): the rules on hand-made losses, the p-value against its formula,
bad input, and the guarantees checked empirically on the stored logits of a real trained network."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from cgt.evaluation.risk import (
    DELTA,
    conservative_first,
    crc_threshold,
    gap_losses,
    hoeffding_bentkus_p,
    ltt_threshold,
    min_calibration_size,
    risk_controlled_threshold,
)


def test_crc_takes_the_last_candidate_whose_adjusted_risk_fits():
    """n = 9 samples, 4 candidates (conservative first). Monotone losses per candidate: 0, 0, 1, 3 of 9
    wrong → adjusted risk 9/10·r + 1/10 = 0.1, 0.1, 0.2, 0.4. ε = 0.25 → index 2; ε = 0.15 → index 1."""
    losses = np.zeros((9, 4))
    losses[0, 2:] = 1
    losses[[1, 2], 3] = 1
    assert crc_threshold(losses, 0.25) == 2 and crc_threshold(losses, 0.15) == 1
    # a loss that is not monotone is made so: sample 3, wrong at candidate 1 only, counts at 1, 2 and 3
    losses[3, 1] = 1
    assert crc_threshold(losses, 0.25) == 1  # candidate 2 now has 2/9 wrong → 0.3


def test_hoeffding_bentkus_p_value_by_its_formula():
    n, eps, r = 200, 0.05, 0.02
    h = r * math.log(r / eps) + (1 - r) * math.log((1 - r) / (1 - eps))
    expected = min(math.exp(-n * h), math.e * binom.cdf(math.ceil(n * r), n, eps))
    assert hoeffding_bentkus_p(r, n, eps) == pytest.approx(expected)
    assert hoeffding_bentkus_p(0.0, n, eps) == pytest.approx(min((1 - eps) ** n, math.e * (1 - eps) ** n))
    assert hoeffding_bentkus_p(0.2, n, eps) == pytest.approx(1.0)  # an empirical risk above ε proves nothing


def test_ltt_stops_at_the_first_candidate_it_cannot_certify():
    n = 400
    losses = np.zeros((n, 4))
    losses[:4, 1] = 1          # 1 % — certified at ε = 5 %
    losses[:30, 2] = 1         # 7.5 % — not certified: testing stops here
    assert ltt_threshold(losses, 0.05) == 1  # candidate 3 (0 %) is never reached


@pytest.mark.parametrize("call, match", [
    (lambda: min_calibration_size("crc", 0.0), r"eps=0.0 must be in the open interval \(0, 1\)"),
    (lambda: min_calibration_size("ltt", 0.05, delta=1.0), r"delta=1.0 must be in the open interval"),
    (lambda: min_calibration_size("split", 0.05), r"unknown risk-control method 'split'; valid choices: \['crc', 'ltt'\]"),
    (lambda: crc_threshold(np.zeros((50, 3)), 0.01), r"50 samples is too small for CRC at eps=0.01: it needs at least 99"),
    (lambda: ltt_threshold(np.zeros((100, 3)), 0.01), r"100 samples is too small for LTT at eps=0.01, delta=0.1: "
                                                      r"it needs at least 230"),
])
def test_bad_levels_and_small_calibration_sets_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.fixture(scope="module")
def pool(fashion_mnist_run):
    """Stored logits of a real trained network on 600 real images (its validation and test splits
    together): the population the calibration sets are drawn from."""
    run, data = fashion_mnist_run
    import torch

    logits = torch.cat([run.logits["val"], run.logits["test"]], dim=1)
    y = torch.cat([run.logits["y_val"], run.logits["y_test"]])
    grid = conservative_first("max_softmax")
    return gap_losses(logits, y, grid), logits, y


@pytest.mark.parametrize("method", ["crc", "ltt"])
def test_the_guarantee_holds_over_many_calibration_draws(pool, method):
    """300 calibration sets of 250 samples drawn i.i.d. from the 600-sample population; the risk of each
    chosen threshold is its exact population risk. CRC: the mean risk ≤ ε (up to Monte-Carlo noise);
    LTT: the fraction of draws with risk > ε ≤ δ (up to binomial noise). A naive rule (the most
    aggressive threshold whose calibration risk is ≤ ε) breaks the LTT bound: the check has power."""
    losses, _, _ = pool
    eps, draws, n = 0.05, 300, 250
    rng = np.random.default_rng(0)
    population_risk = losses.mean(axis=0)
    assert population_risk.max() > 2 * eps  # aggressive thresholds do cost accuracy: something to control
    chosen_risk, naive_risk, chosen_index = [], [], []
    for _ in range(draws):
        sample = losses[rng.integers(0, len(losses), n)]
        j = crc_threshold(sample, eps) if method == "crc" else ltt_threshold(sample, eps)
        chosen_index.append(j)
        chosen_risk.append(population_risk[j])
        fits = np.flatnonzero(sample.mean(axis=0) <= eps)
        naive_risk.append(population_risk[fits.max()])
    chosen_risk = np.array(chosen_risk)
    assert np.mean(chosen_index) > 5  # it does exit early, not only "never"
    if method == "crc":
        assert chosen_risk.mean() <= eps + 2 * chosen_risk.std() / math.sqrt(draws)
    else:
        assert (chosen_risk > eps).mean() <= DELTA + 2 * math.sqrt(DELTA * (1 - DELTA) / draws)
        assert (np.array(naive_risk) > eps).mean() > (chosen_risk > eps).mean()


def test_the_threshold_from_logits_is_a_candidate(pool):
    _, logits, y = pool
    tau = risk_controlled_threshold(logits, y, "crc", 0.05)
    assert tau in conservative_first("max_softmax").tolist()
    with pytest.raises(ValueError, match="needs at least 230"):
        risk_controlled_threshold(logits[:, :100], y[:100], "ltt", 0.01)


def test_vectorised_losses_equal_the_exit_rule_threshold_by_threshold(pool):
    """gap_losses (all thresholds at once) against cgt.inference.exits_from_logits, one threshold at a time."""
    from cgt.inference import exits_from_logits

    losses, logits, y = pool
    grid = conservative_first("max_softmax")
    full_right = logits[-1].argmax(-1) == y
    for j in (0, 10, 50, len(grid) - 1):
        preds, _ = exits_from_logits(logits, float(grid[j]))
        np.testing.assert_array_equal(losses[:, j], ((preds != y) & full_right).numpy().astype(float))
    entropy = gap_losses(logits, y, [0.3], "entropy")[:, 0]
    preds, _ = exits_from_logits(logits, 0.3, "entropy")
    np.testing.assert_array_equal(entropy, ((preds != y) & full_right).numpy().astype(float))
