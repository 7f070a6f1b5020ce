"""Does a finished run come out the same when it is trained again? A few finished runs of a profile's
pipeline, drawn at random (seeded), are trained again from nothing in a temporary runs folder, as the
pipeline's runner trains them, and their weights and logits compared bit for bit with the finished ones.

    python -m cgt reproduce --profile paper --runs 2

One run key, one result: on the CPU every run trains with one thread however it is scheduled
(cgt.train), so a run trained on another day, by another process or on another worker count must be
identical. The record (runs/<profile>/reproduce.json) names each run, the tensors that differ (none,
when it reproduces) and the seconds it took; the command exits 1 when any run differs.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..experiments.paths import runs_dir
from ..fileio import write_json_atomic
from ..runs import is_complete
from . import runner
from .scaling import fresh_runs_folder, this_machine

ARTIFACTS = ("model.pt", "logits.pt")
"""The files whose tensors must be identical: the trained weights, and every exit's validation and test logits."""
RECORD = "reproduce.json"


def run_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """A run folder's weights and logits, one flat dict ('model.pt:<name>', 'logits.pt:<name>')."""
    return {f"{file}:{name}": tensor for file in ARTIFACTS
            for name, tensor in torch.load(run_dir / file, weights_only=True).items()}


def differing_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names whose tensors are not bit-identical (shape, dtype and every value), or that only one side has."""
    return sorted(set(a) ^ set(b)) + [name for name in sorted(set(a) & set(b))
                                      if a[name].dtype != b[name].dtype or not torch.equal(a[name], b[name])]


def finished_runs(profile: str) -> list[tuple[runner.RunRequest, Path]]:
    """The runs the profile's pipeline plans (cgt.pipeline.runner) that are finished in its runs folder."""
    from .notebooks import plan

    steps = plan(profile)
    planned = runner.distinct_runs(runner.planned_runs([(s.notebook, s.parameters) for s in steps]))
    return [(request, path) for request, path in planned if is_complete(path)]


def reproduce(profile: str, count: int = 2, draw_seed: int = 0,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `count` finished runs of `profile` again from nothing and compare them bit for bit; returns the
    record, also written to runs/<profile>/reproduce.json."""
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count={count!r}: the number of runs to train again must be an integer ≥ 1")
    finished = finished_runs(profile)
    if not finished:
        raise ValueError(f"profile {profile!r} has no finished planned run in {runs_dir(profile)}: run its pipeline "
                         f"first (`python -m cgt paper --profile {profile}`)")
    chosen = sorted(random.Random(draw_seed).sample(range(len(finished)), min(count, len(finished))))
    home = runs_dir(profile)
    rows = []
    for i in chosen:
        request, original = finished[i]
        with fresh_runs_folder():
            t0 = time.perf_counter()
            runner.train_all([request], workers=1, log=lambda _: None)
            seconds = time.perf_counter() - t0
            finished_tensors = run_tensors(original)
            differ = differing_tensors(finished_tensors, run_tensors(runs_dir(profile) / original.relative_to(home)))
        rows.append({"run": str(original.relative_to(home)), "request": request.label, "seconds": round(seconds, 1),
                     "tensors": len(finished_tensors), "differing": differ})
        log(f"{request.label}: " + ("identical" if not differ else f"{len(differ)} tensor(s) differ: {differ[:5]}")
            + f" ({seconds:.0f} s)")
    record = {**this_machine(), "profile": profile, "finished_runs": len(finished), "draw_seed": draw_seed,
              "rows": rows, "identical": all(not r["differing"] for r in rows)}
    write_json_atomic(home / RECORD, record)
    return record
