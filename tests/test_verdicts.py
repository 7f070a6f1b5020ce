"""The verdict rule (cgt.evaluation.verdicts) on hand-computed paired data: every category reachable, intervals
and Holm's adjustment checked against values worked out by hand and against scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cgt.evaluation import verdicts as v

CHEAPER = [-0.10, -0.11, -0.09, -0.10, -0.10]      # relative cost, CGT − baseline, 5 seeds
COSTLIER = [0.10, 0.11, 0.09, 0.10, 0.10]
NOISY_COST = [-0.10, 0.10, -0.05, 0.05, 0.00]
BETTER = [1.0, 1.2, 0.8, 1.1, 0.9]                 # points
TIED = [0.1, -0.1, 0.0, 0.05, -0.05]
WORSE = [-1.0, -1.2, -0.8, -1.1, -0.9]
NOISY = [1.0, -1.0, 0.5, -0.5, 0.0]


def test_t_quantiles_match_the_tables_and_scipy():
    """95 % two-sided t quantiles: 4.303 (n = 3) and 2.776 (n = 5), as in any t table."""
    for n, table_value in ((3, 4.303), (5, 2.776)):
        d = np.arange(n, dtype=float)  # sample SD: sqrt(n(n+1)/12)
        interval = v.t_interval(d, 0.95)
        half = (interval.high - interval.low) / 2
        quantile = half * math.sqrt(n) / d.std(ddof=1)
        assert quantile == pytest.approx(table_value, abs=5e-4)
        assert quantile == pytest.approx(stats.t.ppf(0.975, n - 1), rel=1e-12)


def test_interval_by_hand():
    """d = (1, 2, 3): mean 2, s = 1, 95 % half-width 4.3027 / √3 = 2.4841."""
    interval = v.t_interval([1.0, 2.0, 3.0])
    assert (interval.n, interval.mean) == (3, 2.0)
    assert interval.low == pytest.approx(2 - 2.48414, abs=1e-4)
    assert interval.high == pytest.approx(2 + 2.48414, abs=1e-4)
    assert str(interval) == "+2.00 [-0.48, +4.48]"


def test_holm_on_a_known_example():
    """p = (0.01, 0.04, 0.03, 0.005): sorted × (4, 3, 2, 1), running max → (0.03, 0.06, 0.06, 0.02)."""
    np.testing.assert_allclose(v.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(v.holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1


@pytest.mark.parametrize("cost, quality, expected", [
    (CHEAPER, BETTER, v.SUPPORTED),
    (CHEAPER, TIED, v.NON_INFERIOR),
    (CHEAPER, WORSE, v.CONTRADICTED),
    (COSTLIER, BETTER, v.CONTRADICTED),
    (NOISY_COST, NOISY, v.INCONCLUSIVE),
    (CHEAPER, NOISY, v.INCONCLUSIVE),   # 90 % lower bound −0.95: non-inferiority not shown
    (CHEAPER[:1], BETTER[:1], v.INSUFFICIENT),
])
def test_every_category_is_reached(cost, quality, expected):
    assert v.verdict(cost, quality) == expected


@pytest.mark.parametrize("quality, expected", [
    (BETTER, v.MORE_ACCURATE), (TIED, v.NON_INFERIOR_MATCHED), (WORSE, v.CONTRADICTED),
    ([2.0, -3.0, 1.0, -2.0, 0.5], v.INCONCLUSIVE), ([1.0], v.INSUFFICIENT),
])
def test_matched_cost_categories(quality, expected):
    assert v.matched_cost_verdict(quality) == expected


def test_margin_decides_non_inferiority():
    """Mean −0.3 with a tight interval: non-inferior at δ = 0.5; at δ = 0.1 the whole 95 % interval
    lies below −δ, so the same data contradict the claim."""
    quality = [-0.3, -0.31, -0.29, -0.3, -0.3]
    assert v.verdict(CHEAPER, quality, margin=0.5) == v.NON_INFERIOR
    assert v.verdict(CHEAPER, quality, margin=0.1) == v.CONTRADICTED


def test_p_values_and_sign_pattern():
    assert v.paired_p_value([0.0, 0.0, 0.0]) == 1.0
    assert v.paired_p_value([1.0, 1.0, 1.0]) == 0.0
    assert v.paired_p_value(NOISY) == pytest.approx(stats.ttest_1samp(NOISY, 0.0).pvalue)
    assert v.sign_pattern(BETTER) == "5/5" and v.sign_pattern(NOISY) == "2/5"
    assert v.sign_pattern(CHEAPER, better="lower") == "5/5"


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2 paired differences; got 1"):
        v.t_interval([1.0])
    with pytest.raises(ValueError, match=r"confidence=1.5 must be in \(0, 1\)"):
        v.t_interval([1.0, 2.0], 1.5)
