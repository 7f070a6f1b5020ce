"""Timing on a shared machine: repeated calls, and several candidates timed in turn so their ratios compare."""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np


def time_repeats(fn: Callable[[], object], repeats: int, warmup: int = 3) -> np.ndarray:
    """Seconds of each of `repeats` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def interleaved_times(runs: dict[str, Callable[[int, int], object]], n: int, batch_size: int, repeats: int,
                      warmup: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per sample of each run over n samples in chunks of batch_size; runs[name](start, stop)
    processes samples start..stop − 1. Each round calls every run on every chunk, the runs in turn
    (a load spike on a shared machine hits the runs of a round alike). Returns (the estimate per run:
    each chunk's median over the rounds, summed, over n — robust to the preemptions that land on a
    few calls; (repeats, runs) each round's seconds per sample, for the spread)."""
    chunks = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    fns = list(runs.values())
    for fn in fns:
        for _ in range(warmup):
            for start, stop in chunks:
                fn(start, stop)
    t = np.empty((repeats, len(fns), len(chunks)))
    clock = time.perf_counter
    for r in range(repeats):
        for i in range(len(fns)):  # each round starts one run later: no run always follows the same one
            j = (r + i) % len(fns)
            fn, row = fns[j], t[r, j]
            for k, (start, stop) in enumerate(chunks):
                t0 = clock()
                fn(start, stop)
                row[k] = clock() - t0
    return np.median(t, axis=0).sum(axis=1) / n, t.sum(axis=2) / n


def median_interval(values, confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval for the median of `values` (order statistics: the k-th smallest and
    k-th largest value, k the largest with P(Binomial(n, ½) < k) ≤ (1 − confidence) / 2); None when there
    are too few values for one (fewer than 6 at 95 %). For n = 30: the 10th and 21st of the sorted values."""
    v = np.sort(np.asarray(values, float))
    n, tail, cdf, k = len(v), (1.0 - confidence) / 2, 0.0, 0
    while k < n // 2:
        cdf += math.comb(n, k) / 2 ** n  # P(X ≤ k)
        if cdf > tail:
            break
        k += 1
    return (float(v[k - 1]), float(v[n - k])) if k else None
