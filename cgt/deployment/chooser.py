"""Which pass to run: the fastest measured one, and never one slower than the plain network.

Three passes give a prediction for a batch: the whole early-exit pass in one graph ('graph'), one
call per exit segment with the decisions in Python ('segments'), and the plain network without
early exit ('full'). Which is fastest depends on the batch size, the thread count and the machine
(per-call overhead against compute), so the loader times them on calibration samples and picks,
per batch size, the fastest, with ties going to the plain network: an early-exit pass is chosen only
if it was measured at least `TIE_MARGIN` faster. Running the plain network means no early exit:
every sample takes the last exit's prediction, the most accurate and here also the fastest.
"""
from __future__ import annotations

import math

PASSES = ("full", "graph", "segments")
EARLY_EXIT_PASSES = ("graph", "segments")
TIE_MARGIN = 0.03
"""An early-exit pass must be measured this much faster (relative) than the plain network to be chosen:
within timing noise of each other they tie, and ties go to the plain network."""


def check_times(times: dict[str, float]) -> None:
    """A calibration row: a positive time for the plain network and for at least one early-exit pass (a
    learned exit policy has no one-graph pass), and no other names."""
    bad = {p: t for p, t in times.items() if not t > 0}
    if "full" not in times or not set(times) & set(EARLY_EXIT_PASSES) or bad or set(times) - set(PASSES):
        raise ValueError(f"a calibration row needs positive times for 'full' and for at least one of "
                         f"{list(EARLY_EXIT_PASSES)} (names from {list(PASSES)}); got {times}")


def choose_pass(times: dict[str, float], margin: float = TIE_MARGIN) -> str:
    """The pass to run given its measured seconds per sample {pass: s} at one batch size and thread count."""
    check_times(times)
    fastest = min((p for p in EARLY_EXIT_PASSES if p in times), key=times.__getitem__)
    return fastest if times[fastest] < (1.0 - margin) * times["full"] else "full"


def nearest_batch_size(table: dict[int, dict[str, float]], batch_size: int) -> int:
    """The calibrated batch size closest to `batch_size` on a log scale (1 is kept apart from batches:
    single samples take per-call paths that batches never do)."""
    if not table:
        raise ValueError("empty calibration table")
    if batch_size in table:
        return batch_size
    sizes = sorted(table)
    batched = [b for b in sizes if b > 1] if batch_size > 1 else sizes
    return min(batched or sizes, key=lambda b: abs(math.log2(b) - math.log2(batch_size)))


def choices(table: dict[int, dict[str, float]], margin: float = TIE_MARGIN) -> dict[int, str]:
    """{batch size: pass} for a calibration table {batch size: {pass: seconds per sample}}."""
    return {b: choose_pass(times, margin) for b, times in sorted(table.items())}


def describe(table: dict[int, dict[str, float]], threads: int | None, margin: float = TIE_MARGIN) -> str:
    """One line: per calibrated batch size, the chosen pass and its measured speed-up over the plain network."""
    parts = []
    for b, chosen in choices(table, margin).items():
        times = table[b]
        parts.append(f"batch {b}: {chosen} ({1e6 * times[chosen]:.1f} us/sample, {times['full'] / times[chosen]:.2f}x "
                     f"the plain network)")
    return f"{threads or 'default'} thread(s); " + "; ".join(parts)
