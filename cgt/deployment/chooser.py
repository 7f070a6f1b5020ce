"""Which pass to run: the fastest measured one, and never one slower than the plain network.

Three passes give a prediction for a batch: the whole early-exit pass in one graph ('graph'), one
call per exit segment with the decisions in Python ('segments'), and the plain network without
early exit ('full'). Which is fastest depends on the batch size, the thread count and the machine
(per-call overhead against compute), so the loader times them on calibration samples and picks,
per batch size, the fastest, with ties going to the plain network: an early-exit pass is chosen only
if it was measured at least `TIE_MARGIN` faster. Running the plain network means no early exit:
every sample takes the last exit's prediction, the most accurate and here also the fastest.

A thread count given to the loader is a ceiling, not a floor: with more than one thread it also loads
the passes on one thread, named '<pass>@1' ('segments@1'), because a tiny network called one sample at
a time can run faster without a thread pool to wake on every call. The plain network the choice must
beat is then the faster of 'full' and 'full@1'.
"""
from __future__ import annotations

import math

PASSES = ("full", "graph", "segments")
EARLY_EXIT_PASSES = ("graph", "segments")
ONE_THREAD = "@1"
"""The suffix of a pass run on the loader's one-thread sessions ('full@1', 'graph@1', 'segments@1')."""
TIE_MARGIN = 0.03
"""An early-exit pass must be measured this much faster (relative) than the plain network to be chosen:
within timing noise of each other they tie, and ties go to the plain network."""


def base_pass(key: str) -> str:
    """The pass a calibration key names: 'segments@1' → 'segments'."""
    return key[:-len(ONE_THREAD)] if key.endswith(ONE_THREAD) else key


def valid_keys() -> list[str]:
    return [*PASSES, *(p + ONE_THREAD for p in PASSES)]


def check_times(times: dict[str, float]) -> None:
    """A calibration row: a positive time for the plain network and for at least one early-exit pass (a
    learned exit policy has no one-graph pass), and no other names."""
    bad = {p: t for p, t in times.items() if not t > 0}
    early = [k for k in times if base_pass(k) in EARLY_EXIT_PASSES]
    if "full" not in times or not early or bad or set(times) - set(valid_keys()):
        raise ValueError(f"a calibration row needs positive times for 'full' and for at least one of "
                         f"{list(EARLY_EXIT_PASSES)} (names from {valid_keys()}); got {times}")


def fastest_full(times: dict[str, float]) -> str:
    """The faster plain-network key of a row ('full' on a tie: the thread count asked for)."""
    return min((k for k in ("full", "full" + ONE_THREAD) if k in times), key=times.__getitem__)


def choose_pass(times: dict[str, float], margin: float = TIE_MARGIN) -> str:
    """The pass to run given its measured seconds per sample {pass: s} at one batch size and thread count."""
    check_times(times)
    full = fastest_full(times)
    fastest = min((k for k in times if base_pass(k) in EARLY_EXIT_PASSES), key=times.__getitem__)
    return fastest if times[fastest] < (1.0 - margin) * times[full] else full


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
    """One line: per calibrated batch size, the chosen pass and its measured speed-up over the fastest plain network."""
    parts = []
    for b, chosen in choices(table, margin).items():
        times = table[b]
        full = fastest_full(times)
        parts.append(f"batch {b}: {chosen} ({1e6 * times[chosen]:.1f} us/sample, {times[full] / times[chosen]:.2f}x "
                     f"the plain network{'' if full == 'full' else ' on 1 thread'})")
    return f"{threads or 'default'} thread(s); " + "; ".join(parts)
