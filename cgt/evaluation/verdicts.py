"""The one rule every reported comparison follows: paired by seed, Student-t intervals, margins fixed
in advance, and "inconclusive" when the data cannot tell.

For a CGT variant against a baseline, each seed gives a paired difference (same seed = same
initialisation and data order): Δcost = relative cost (CGT − baseline), Δquality = accuracy or
macro-F1 in points (CGT − baseline). With n paired seeds and t the Student-t quantile with n − 1
degrees of freedom, the intervals are mean ± t · s / √n (s: sample SD). The categories:

  supported            Δcost 95 % CI entirely below 0  and  Δquality 95 % CI lower bound above 0
  cheaper, non-inferior  Δcost 95 % CI entirely below 0  and  Δquality 90 % CI lower bound above −δ
                       (a TOST-style one-sided non-inferiority test at level 0.05)
  contradicted         Δquality 95 % CI upper bound below −δ, or Δcost 95 % CI entirely above 0
  inconclusive         everything else
  insufficient seeds   fewer than 2 paired seeds: no interval, never a verdict

At matched cost (operating points fitted to one cost budget) cost is held equal by construction, so
the category uses quality alone: "more accurate" (95 % CI above 0), "non-inferior" (90 % lower bound
above −δ), "contradicted" (95 % upper bound below −δ), else "inconclusive".

δ = 0.5 points was fixed before any run was looked at. Tables made with this rule are exploratory:
they state how many comparisons they hold and give Holm-adjusted p-values (two-sided paired t-test
of Δquality = 0) over all of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

MARGIN = 0.5
"""δ, the non-inferiority margin, in points of accuracy or macro-F1 (fixed in advance)."""
SUPPORTED = "supported"
NON_INFERIOR = "cheaper, non-inferior"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
INSUFFICIENT = "insufficient seeds"
MORE_ACCURATE = "more accurate at matched cost"
NON_INFERIOR_MATCHED = "non-inferior at matched cost"


@dataclass(frozen=True)
class Interval:
    """Mean of paired differences with its Student-t confidence interval."""

    n: int
    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def t_interval(differences, confidence: float = 0.95) -> Interval:
    """Two-sided Student-t interval of the mean of paired differences (needs n ≥ 2)."""
    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 paired differences; got {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * d.std(ddof=1) / np.sqrt(n)
    return Interval(n, float(d.mean()), float(d.mean() - half), float(d.mean() + half))


def paired_p_value(differences) -> float:
    """Two-sided p-value of the paired t-test 'mean difference = 0' (1.0 when every difference is 0)."""
    d = np.asarray(differences, dtype=np.float64)
    if np.all(d == 0):
        return 1.0
    if d.std(ddof=1) == 0:  # identical non-zero differences: the mean is certainly not 0
        return 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def holm(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down; monotone; capped at 1), in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted


def verdict(cost_differences, quality_differences, margin: float = MARGIN) -> str:
    """The category of one comparison (CGT − baseline, paired by seed): cost relative, quality in points."""
    if len(quality_differences) < 2 or len(cost_differences) < 2:
        return INSUFFICIENT
    cost = t_interval(cost_differences, 0.95)
    quality95 = t_interval(quality_differences, 0.95)
    quality90 = t_interval(quality_differences, 0.90)
    cheaper = cost.high < 0
    if cheaper and quality95.low > 0:
        return SUPPORTED
    if cheaper and quality90.low > -margin:
        return NON_INFERIOR
    if quality95.high < -margin or cost.low > 0:
        return CONTRADICTED
    return INCONCLUSIVE


def matched_cost_verdict(quality_differences, margin: float = MARGIN) -> str:
    """The category of a comparison at matched cost (quality alone decides)."""
    if len(quality_differences) < 2:
        return INSUFFICIENT
    quality95 = t_interval(quality_differences, 0.95)
    if quality95.low > 0:
        return MORE_ACCURATE
    if t_interval(quality_differences, 0.90).low > -margin:
        return NON_INFERIOR_MATCHED
    if quality95.high < -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def sign_pattern(differences, better: str = "higher") -> str:
    """How many seeds favour CGT, e.g. '4/5' (higher quality, or lower cost with better='lower')."""
    d = np.asarray(differences, dtype=np.float64)
    wins = int((d > 0).sum() if better == "higher" else (d < 0).sum())
    return f"{wins}/{len(d)}"
