"""Timing on a shared machine: repeated calls, and several candidates timed in turn so their ratios compare."""
from __future__ import annotations

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
                      warmup: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per sample of each run over n samples in chunks of batch_size; runs[name](start, stop)
    processes samples start..stop − 1. Returns (the estimate per run, `estimates`; (repeats, runs) each
    round's seconds per sample, for the spread). The calls are `interleaved_chunk_times`'."""
    t = interleaved_chunk_times(runs, n, batch_size, repeats, warmup, seed)
    return estimates(t, n), per_round(t, n)


def interleaved_chunk_times(runs: dict[str, Callable[[int, int], object]], n: int, batch_size: int, repeats: int,
                            warmup: int = 1, seed: int = 0) -> np.ndarray:
    """Seconds of every call, (repeats, runs, chunks): each round calls every run on every chunk of n samples
    (batch_size per chunk), the runs in turn, so a load spike on a shared machine hits the runs of a round alike.
    The order of the runs is drawn afresh each round: a run's time can depend on the one before it (whose
    sessions, thread pools and weights it finds in the machine), and no run should always follow the same one."""
    chunks = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    fns = list(runs.values())
    for fn in fns:
        for _ in range(warmup):
            for start, stop in chunks:
                fn(start, stop)
    t = np.empty((repeats, len(fns), len(chunks)))
    clock, rng = time.perf_counter, np.random.default_rng(seed)
    for r in range(repeats):
        for j in rng.permutation(len(fns)):
            fn, row = fns[j], t[r, j]
            for k, (start, stop) in enumerate(chunks):
                t0 = clock()
                fn(start, stop)
                row[k] = clock() - t0
    return t


def estimates(t: np.ndarray, n: int) -> np.ndarray:
    """Seconds per sample of each run from call times (repeats, runs, chunks): each chunk's median over the
    rounds, summed, over n — robust to the preemptions that land on a few calls."""
    return np.median(t, axis=0).sum(axis=1) / n


def per_round(t: np.ndarray, n: int) -> np.ndarray:
    """(repeats, runs): each round's seconds per sample of each run, from call times (repeats, runs, chunks)."""
    return t.sum(axis=2) / n


def bootstrap_estimates(t: np.ndarray, n: int, replicates: int = 200, seed: int = 0) -> np.ndarray:
    """(replicates, runs): `estimates` recomputed on rounds drawn with replacement, the same rounds for every
    run, so a ratio of two runs' replicates is paired by round (the runs of a round met the same machine)."""
    rounds = np.random.default_rng(seed).integers(0, len(t), (replicates, len(t)))
    return np.stack([estimates(t[idx], n) for idx in rounds])
