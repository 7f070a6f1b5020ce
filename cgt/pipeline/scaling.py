"""How the runner scales over a machine's cores: one fixed list of training runs, trained from scratch
with 1, 2, 4 … local worker processes at 1 thread each; wall time and speed-up over 1 worker. And the
whole pipeline of a profile from nothing, serially and with N workers.

    python -m cgt scaling --workers 1 2 --out figures/runner_scaling.json
    python -m cgt scaling --pipeline quick --workers 2 --out figures/pipeline_workers_quick.json
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

from ..experiments.train_evaluate import load_dataset
from ..train import CPU_TRAINING_THREADS
from .runner import RunRequest, train_all

METHODS = ["joint_uniform", "joint_annealed", "hard_cgt", "soft_cgt"]


@contextmanager
def fresh_runs_folder() -> Iterator[str]:
    """$CGT_RUNS_DIR pointed at an empty temporary folder for the duration (nothing cached, nothing left)."""
    saved = os.environ.get("CGT_RUNS_DIR")
    with tempfile.TemporaryDirectory() as folder:
        os.environ["CGT_RUNS_DIR"] = folder
        try:
            yield folder
        finally:
            if saved is None:
                os.environ.pop("CGT_RUNS_DIR", None)
            else:
                os.environ["CGT_RUNS_DIR"] = saved


def runner_scaling(worker_counts: list[int], runs: int, epochs: int) -> dict:
    """One fixed list of Indian Pines runs (quick profile, `epochs` epochs, on the CPU), trained from
    scratch with each number of worker processes at 1 thread each: wall time and speed-up over 1 worker."""
    requests = [RunRequest("indian_pines", "quick", METHODS[i % len(METHODS)], i // len(METHODS),
                           train_overrides={"epochs": epochs}, device="cpu") for i in range(runs)]
    load_dataset("indian_pines", "quick")  # the preparation cache, filled before any timing
    rows = []
    for n in worker_counts:
        with fresh_runs_folder():
            t0 = time.perf_counter()
            trained = train_all(requests, workers=n, log=lambda _: None)  # 1 thread per run (cgt.train)
            wall = time.perf_counter() - t0
        rows.append({"workers": n, "runs": len(trained), "wall_s": round(wall, 2),
                     "mean_run_s": round(statistics.mean(t["seconds"] for t in trained), 2)})
    for row in rows:
        row["speedup_vs_1_worker"] = round(rows[0]["wall_s"] / row["wall_s"], 2)
    return {"dataset": "indian_pines", "profile": "quick", "epochs": epochs, "threads_per_run": 1, "rows": rows}


def measure(worker_counts: list[int], out: str, runs: int = 16, epochs: int = 5) -> dict:
    """Run `runner_scaling` and write it, with the machine and the code's commit, to `out` (JSON)."""
    from ..fileio import write_json_atomic
    from .runner import check_workers

    for n in worker_counts:
        check_workers(n)
    if runs < 1 or epochs < 1:
        raise ValueError(f"runs={runs} and epochs={epochs} must be ≥ 1")
    record = {**this_machine(), **runner_scaling(worker_counts, runs, epochs)}
    write_json_atomic(out, record)
    return record


def pipeline_comparison(profile: str, workers: int, out: str, datasets: list[str] | None = None) -> dict:
    """The whole pipeline of `profile` from nothing (fresh runs folder, the data already prepared), once
    serially and once with `workers` local worker processes: wall times and their ratio, written to `out`."""
    from ..experiments.profiles import get_profile
    from ..fileio import write_json_atomic
    from .notebooks import plan, run_pipeline
    from .runner import check_workers, distinct_runs, planned_runs

    check_workers(workers)
    if get_profile(profile).publishes:
        raise ValueError(f"profile {profile!r} writes the committed figures/ and paper/ folders; compare a profile "
                         f"that does not (smoke, quick)")
    steps = plan(profile, datasets)
    distinct_runs(planned_runs([(s.notebook, s.parameters) for s in steps]))  # prepares every dataset first
    rows = []
    for n in (1, workers):
        with fresh_runs_folder():
            t0 = time.perf_counter()
            run_pipeline(profile, datasets, workers=n, log=lambda line: print(f"[{n} worker(s)] {line}", flush=True))
            rows.append({"workers": n, "wall_s": round(time.perf_counter() - t0, 1)})
    # the thread rule the comparison ran under: what the results page explains the speed-up with
    record = {**this_machine(), "profile": profile, "datasets": datasets or "all", "rows": rows,
              "speedup": round(rows[0]["wall_s"] / rows[1]["wall_s"], 2), "threads_per_cpu_run": CPU_TRAINING_THREADS}
    write_json_atomic(out, record)
    return record


def this_machine() -> dict:
    """When, at which commit and on what CPU a measurement was taken (the head of every artifact here)."""
    from datetime import datetime, timezone

    from ..experiments.provenance import device_description, git_state

    return {"measured": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git": git_state(),
            "device": device_description("cpu"), "cpu_cores": len(os.sched_getaffinity(0))}
