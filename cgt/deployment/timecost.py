"""Cost in time, not FLOPs: a per-exit time model measured on this machine, and thresholds fitted to it.

On small networks FLOPs are a poor yardstick: per-call and per-operator overhead make a cheap first
exit cost a third of the network's time (figures/bench_components.json). The time model is what a
sample leaving at exit e actually paid on one engine, batch size and thread count:

    time(e) = Σ_{k ≤ e} segment_k        segment_k: block k and head k, per sample (measured as the
                                          time of segments 1..k back to back less that of 1..k − 1)
    time(fractions) = Σ_e fraction_e · time(e)
    predicted speed-up = full network's measured time / time(fractions)

`ExitTimes.relative` has the meaning of `cgt.cost.ExitCosts.relative` (cumulative cost of each exit
over the plain network's), so cgt.evaluation.thresholds fits thresholds to a time budget unchanged:
`latency_points` gives the `val_latency_<µs>` operating points (fitted on validation, never on test)
and `latency_curve` the accuracy-vs-latency curve beside accuracy-vs-FLOPs.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..cost import ExitCosts, average_cost
from ..evaluation.thresholds import candidates, pick
from ..inference import exits_from_logits


@dataclass(frozen=True)
class ExitTimes:
    """Measured seconds per sample of one engine at one batch size and thread count."""

    segment_s: tuple[float, ...]
    """Per exit e: block e and head e (one segment), seconds per sample."""
    full_s: float
    """The plain network (every block, the last head only), seconds per sample."""
    engine: str = ""
    """What was timed, e.g. 'onnx_segments' or 'torch'."""
    batch_size: int = 1
    threads: int = 1

    def __post_init__(self):
        if not self.segment_s or min(self.segment_s) < 0 or self.full_s <= 0:
            raise ValueError(f"need one non-negative time per segment and a positive full-network time; got "
                             f"segments {list(self.segment_s)}, full {self.full_s}")

    @property
    def cumulative(self) -> np.ndarray:
        """(E,) seconds per sample of a sample leaving at exit e: every segment up to e."""
        return np.cumsum(np.asarray(self.segment_s, np.float64))

    @property
    def relative(self) -> np.ndarray:
        """(E,) cumulative time of each exit over the plain network's (what threshold fitting reads)."""
        return self.cumulative / self.full_s

    def predicted_time(self, exit_fractions: Sequence[float] | np.ndarray) -> float:
        """Seconds per sample of the early-exit pass when these fractions of samples leave at each exit."""
        fractions = np.asarray(exit_fractions, np.float64)
        if fractions.shape != (len(self.segment_s),):
            raise ValueError(f"need one exit fraction per exit ({len(self.segment_s)}), got shape {fractions.shape}")
        return float(fractions @ self.cumulative)

    def predicted_speedup(self, exit_fractions: Sequence[float] | np.ndarray) -> float:
        """The plain network's time over the early-exit pass's predicted time."""
        return self.full_s / self.predicted_time(exit_fractions)

    def all_exits_speedup(self) -> float:
        """Every segment run, then the exit chosen afterwards (how the authors time it)."""
        return self.full_s / float(self.cumulative[-1])

    def to_dict(self) -> dict:
        return asdict(self) | {"segment_us": [1e6 * s for s in self.segment_s], "full_us": 1e6 * self.full_s}

    @classmethod
    def from_dict(cls, record: dict) -> "ExitTimes":
        """The time model `to_dict` wrote (e.g. a bench.json record's time_model entry)."""
        return cls(tuple(record["segment_s"]), record["full_s"], record.get("engine", ""),
                   record.get("batch_size", 1), record.get("threads", 1))


def prefix_runs(segments: Sequence[Callable], x) -> list[Callable[[int, int], None]]:
    """Per exit e, run(start, stop): segments 1..e called back to back on samples start..stop − 1 of x, as
    the early-exit pass calls them to reach exit e. segments[e](h) → (features after block e, logits of
    exit e). Every prefix runs on all the samples given (not only those that would reach it): times are
    per sample, as the model assumes they scale with the count."""
    def prefix(last: int) -> Callable[[int, int], None]:
        def run(start: int, stop: int) -> None:
            h = x[start:stop]
            for segment in segments[:last + 1]:
                h = segment(h)[0]
        return run
    return [prefix(e) for e in range(len(segments))]


def exit_times_from_prefixes(prefix_s: Sequence[float], full_s: float, engine: str = "", batch_size: int = 1,
                             threads: int = 1) -> ExitTimes:
    """The time model from measured seconds per sample of reaching each exit (`prefix_runs`) and of the
    plain network. segment_s[e] is the difference of consecutive prefix times; a prefix measured faster
    than a shorter one counts as the shorter one's time, so no segment is negative."""
    cumulative = np.maximum.accumulate(np.asarray(prefix_s, np.float64))
    segment_s = np.diff(cumulative, prepend=0.0)
    return ExitTimes(tuple(float(t) for t in segment_s), float(full_s), engine, batch_size, threads)


def measure_exit_times(segments: Sequence[Callable], full: Callable, x, time_fn: Callable[[Callable], float],
                       engine: str = "", threads: int = 1) -> ExitTimes:
    """Time reaching each exit, and the full network, on x.

    segments[e](h) → (features after block e, logits of exit e); full(x) → anything. time_fn(fn) gives
    the seconds of one call fn() (e.g. a median of repeats). Reaching exit e is timed as segments 1..e
    called back to back (`prefix_runs`), as the early-exit pass calls them: with more than one thread
    every session has its own thread pool, and moving from one session to the next wakes it, which a
    segment timed alone, call after call, never pays. (cgt.deployment.bench times the prefixes in the
    same interleaved rounds as the passes they predict instead, `exit_times_from_prefixes`.)
    """
    n = len(x)
    prefix_s = [time_fn(lambda run=run: run(0, n)) / n for run in prefix_runs(segments, x)]
    return exit_times_from_prefixes(prefix_s, time_fn(lambda: full(x)) / n, engine, n, threads)


def latency_point_name(budget_us: float) -> str:
    return f"val_latency_{budget_us:.10g}"  # 30 → val_latency_30, 12.5 → val_latency_12.5


def latency_points(val_logits: torch.Tensor, y_val: torch.Tensor, times: ExitTimes, budgets_us: Sequence[float],
                   policy: str = "max_softmax") -> dict[str, dict]:
    """Per budget in µs per sample: the most accurate per-exit thresholds whose predicted time on
    validation is within the budget (cgt.evaluation.thresholds' budget objective, time in place of
    FLOPs), whether the budget was reachable, and the time it predicts."""
    bad = [b for b in budgets_us if not b > 0]
    if bad:
        raise ValueError(f"latency budgets must be positive µs per sample; got {bad}")
    fitted = candidates(val_logits, y_val, times, policy)
    points = {}
    for budget in budgets_us:
        taus, met = pick(fitted, "budget", budget=1e-6 * budget / times.full_s)
        _, exit_index = exits_from_logits(val_logits, [float(t) for t in taus], policy)
        fractions = np.bincount(exit_index.numpy(), minlength=len(times.segment_s)) / len(exit_index)
        points[latency_point_name(budget)] = {
            "thresholds": [float(t) for t in taus], "budget_us": float(budget), "met": bool(met),
            "val_predicted_us": 1e6 * times.predicted_time(fractions),
            "how": f"fitted on validation: most accurate at a predicted {budget:g} us per sample or less "
                   f"({times.engine}, batch {times.batch_size}, {times.threads} thread(s))"
                   + ("" if met else " (unreachable: all leave at exit 1)")}
    return points


def _scored(test_logits: torch.Tensor, y_test: torch.Tensor, thresholds, times: ExitTimes, costs: ExitCosts,
            policy: str) -> tuple[float, float, float]:
    """(test accuracy, predicted µs per sample, relative FLOPs) of these thresholds on test."""
    preds, exit_index = exits_from_logits(test_logits, [float(t) for t in thresholds], policy)
    fractions = np.bincount(exit_index.numpy(), minlength=len(times.segment_s)) / len(exit_index)
    return (float((preds == y_test).float().mean()), 1e6 * times.predicted_time(fractions),
            average_cost(fractions, costs) / costs.full_network)


def latency_curve(val_logits: torch.Tensor, y_val: torch.Tensor, test_logits: torch.Tensor, y_test: torch.Tensor,
                  times: ExitTimes, costs: ExitCosts, budgets_us: Sequence[float], device: str,
                  policy: str = "max_softmax") -> dict:
    """Accuracy against predicted latency (and, beside it, against FLOPs) of the validation-fitted
    time-budget points, scored on test: the data of an accuracy-vs-latency figure, with the machine."""
    curve = {"device": device, "time_model": times.to_dict(), "budget_us": [], "thresholds": [], "budget_met": [],
             "test_accuracy": [], "test_predicted_us": [], "test_relative_flops": []}
    for point in latency_points(val_logits, y_val, times, budgets_us, policy).values():
        accuracy, us, flops = _scored(test_logits, y_test, point["thresholds"], times, costs, policy)
        curve["budget_us"].append(point["budget_us"])
        curve["thresholds"].append(point["thresholds"])
        curve["budget_met"].append(point["met"])
        curve["test_accuracy"].append(accuracy)
        curve["test_predicted_us"].append(us)
        curve["test_relative_flops"].append(flops)
    return curve


RELATIVE_BUDGETS = tuple(np.round(np.arange(0.3, 1.51, 0.1), 2).tolist())
"""Budgets of `budget_curves`, relative to the plain network (its time, or its FLOPs)."""


def budget_curves(val_logits: torch.Tensor, y_val: torch.Tensor, test_logits: torch.Tensor, y_test: torch.Tensor,
                  times: ExitTimes, costs: ExitCosts, device: str, relative_budgets: Sequence[float] = RELATIVE_BUDGETS,
                  policy: str = "max_softmax") -> dict:
    """Thresholds fitted on validation to each budget twice, in time (`latency_curve`: µs per sample, the
    plain network's time × the relative budget) and in FLOPs (the plain network's FLOPs × the same), each
    scored on test by both yardsticks: what fitting to FLOPs costs in latency, and in accuracy at a latency."""
    budgets_us = [1e6 * times.full_s * r for r in relative_budgets]
    fitted = candidates(val_logits, y_val, costs, policy)
    flops = {"relative_budget": [], "thresholds": [], "budget_met": [], "test_accuracy": [], "test_predicted_us": [],
             "test_relative_flops": []}
    for r in relative_budgets:
        taus, met = pick(fitted, "budget", budget=r)
        accuracy, us, relative = _scored(test_logits, y_test, taus, times, costs, policy)
        for key, value in zip(flops, (r, [float(t) for t in taus], bool(met), accuracy, us, relative)):
            flops[key].append(value)
    last_exit_accuracy = float((test_logits[-1].argmax(-1) == y_test).float().mean())
    return {"device": device, "policy": policy, "relative_budgets": list(relative_budgets),
            "plain_network": {"test_accuracy": last_exit_accuracy, "us": 1e6 * times.full_s},
            "time_fitted": latency_curve(val_logits, y_val, test_logits, y_test, times, costs, budgets_us, device,
                                         policy),
            "flops_fitted": flops}
