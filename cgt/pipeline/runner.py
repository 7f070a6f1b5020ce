"""Training runs as tasks: the runs a pipeline needs are planned first, then trained by workers —
local processes on one machine, or a Dask cluster when one machine is not enough.

    requests = planned_runs([("01_baselines", {"profile": "quick", "dataset": "indian_pines"})])
    train_all(requests, workers=2)                          # 2 processes, one run each at a time
    train_all(requests, scheduler="tcp://10.0.0.5:8786")   # a running Dask cluster

A worker writes each finished run where the notebooks look for it (the run cache, cgt.runs), so the
notebooks executed afterwards find every planned run and train nothing. Requests that name the same
run are trained once; finished runs are not trained at all. A run whose worker dies is queued again
and continues from its last epoch checkpoint.

Threads. A run's floats depend on the number of intra-op threads it trains with (the reduction order
of the convolutions), so every CPU run trains with one (cgt.train.CPU_TRAINING_THREADS) however it is
scheduled: a worker's results are bit-identical to a serial run's, and parallelism comes from workers.
Two workers (or submitters) asking for the same run train it once: the second waits on the run's
lock (cgt.runs.run_lock) and then finds it finished.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..data import display_name
from ..experiments.train_evaluate import NOTEBOOK_METHODS
from ..runs import ARTIFACTS, is_complete
from ..train import CPU_TRAINING_THREADS, resolve_device

WORKER_ROOT = os.environ.get("CGT_ROOT")
"""A worker's own CGT_ROOT (its mount of a shared project), as it was when the worker started — not
the value an earlier task set (Place.enter)."""
MAX_ATTEMPTS = 3
"""Times a run is started before the runner gives up on it (a worker dying each time is not chance)."""
CONNECT_TIMEOUT_S = 10

# What the pipeline's notebooks train at their default parameters. tests/test_pipeline.py runs the smoke
# pipeline with --workers 2 and checks that, after this plan was trained, no notebook trains a run of it.


class RunnerError(RuntimeError):
    pass


@dataclass(frozen=True)
class RunRequest:
    """One training run, as `cgt.experiments.train_evaluate.run_methods` would train it."""

    dataset: str
    profile: str
    method: str
    seed: int
    split: str = "random"
    options: dict[str, Any] | None = None
    """Strategy options of `method` on top of its own (cgt.methods)."""
    train_overrides: dict[str, Any] | None = None
    data_dir: str | None = None
    device: str = "auto"
    """Where it trains (not part of the run's key: cgt.runs.run_identity)."""
    fold: int | None = None
    """The fold of a split with folds (blocked); None for the others."""
    data_overrides: dict[str, Any] | None = None
    """Data options on top of the profile's (a recipe-search candidate's patch size)."""
    recipe: bool = True
    """Train with the profile's chosen recipe (False: a recipe-search run, whose candidate says everything)."""

    @property
    def label(self) -> str:
        extras = [f"split {self.split}" + (f" fold {self.fold}" if self.fold is not None else "")] \
            if self.split != "random" else []
        extras += [json.dumps(x, sort_keys=True) for x in (self.options, self.data_overrides, self.train_overrides) if x]
        return f"{display_name(self.dataset)} {self.method} seed {self.seed}" + (f" ({'; '.join(extras)})" if extras else "")

    def group(self) -> str:
        """Requests that share data and options: planned with one data load."""
        return json.dumps([self.dataset, self.profile, self.split, self.options, self.train_overrides, self.data_dir,
                           self.data_overrides, self.recipe], sort_keys=True, default=str)


def step_requests(notebook: str, parameters: dict[str, Any]) -> list[RunRequest]:
    """The runs one pipeline step trains at its notebook's default parameters ([] for steps that train
    nothing), except notebook 06's label-smoothing runs: which ones depends on its grid's results
    (`recipe_check_requests` plans them once the grid is trained)."""
    from ..data import resolve
    from ..experiments import ablations
    from ..experiments.profiles import get_profile
    from ..experiments.train_evaluate import protocol_folds

    profile, dataset, split = parameters["profile"], parameters.get("dataset"), parameters.get("split", "random")
    if notebook in NOTEBOOK_METHODS:
        seeds = get_profile(profile).plan_for(resolve(dataset).name, split).seeds
        folds = protocol_folds(dataset, profile, split, parameters.get("folds"))
        return [RunRequest(dataset, profile, m, s, split, fold=f)
                for m in NOTEBOOK_METHODS[notebook] for f in folds for s in seeds]
    seeds = get_profile(profile).seeds
    if notebook == "06_ablations":
        grid_seeds, folds, configs = _ablation_plan(parameters)
        grid = _config_requests(parameters, [ablations.REFERENCE, *configs], grid_seeds, folds)
        logged_folds = ablations.interference_folds(split, parameters.get("folds")) or [None]
        logged = [RunRequest(dataset, profile, m, s, split, fold=f,
                             train_overrides={"log_gradients_every": ablations.LOG_GRADIENTS_EVERY})
                  for m in ablations.INTERFERENCE_METHODS for f in logged_folds
                  for s in seeds[:ablations.INTERFERENCE_SEEDS]]
        return grid + logged
    return []


def recipe_check_requests(notebook: str, parameters: dict[str, Any]) -> list[RunRequest]:
    """Notebook 06's label-smoothing runs at these parameters: the best configuration of each method of its
    grid, chosen on validation, and the reference, each with label smoothing (cgt.experiments.ablations.
    recipe_check, as the notebook calls it). Reads the grid's runs, so call it once they are trained: they
    are evaluated here from their cached logits (the notebook then finds their metrics cached). [] for
    other notebooks."""
    from ..experiments import ablations

    if notebook != "06_ablations":
        return []
    seeds, folds, configs = _ablation_plan(parameters)
    results = ablations.run_grid(parameters["dataset"], parameters["profile"], configs, seeds,
                                 split=parameters.get("split", "random"), folds=parameters.get("folds"), progress=False)
    _, smoothed = ablations.recipe_check(results, configs, parameters.get("label_smoothing", ablations.LABEL_SMOOTHING))
    return _config_requests(parameters, smoothed, seeds, folds)


def _ablation_plan(parameters: dict[str, Any]) -> tuple[list[int], list, list]:
    """Notebook 06's (grid seeds, folds, grid configurations) at these parameters, as the notebook resolves them."""
    from ..experiments import ablations
    from ..experiments.profiles import get_profile
    from ..experiments.train_evaluate import protocol_folds

    profile, dataset, split = parameters["profile"], parameters["dataset"], parameters.get("split", "random")
    return (ablations.grid_seeds(get_profile(profile).seeds, split),
            protocol_folds(dataset, profile, split, parameters.get("folds")),
            ablations.GRIDS[ablations.DEFAULT_GRID.get(dataset, "reduced")])


def _config_requests(parameters: dict[str, Any], configs: list, seeds: list[int], folds: list) -> list[RunRequest]:
    """One request per configuration × fold × seed of notebook 06 at these parameters."""
    profile, dataset, split = parameters["profile"], parameters["dataset"], parameters.get("split", "random")
    return [RunRequest(dataset, profile, c.method, s, split, c.options or None, c.train or None, fold=f)
            for c in configs for f in folds for s in seeds]


def search_requests(profile: str, dataset: str) -> list[RunRequest]:
    """The runs of the profile's declared recipe search for `dataset` (cgt.experiments.recipe), trained
    before every other run of that dataset: those are planned with the recipe it chooses."""
    from ..experiments.recipe import profile_search_plan

    return [RunRequest(r.dataset, r.profile, r.method, r.seed, r.split, train_overrides=r.train_overrides or None,
                       fold=r.fold, data_overrides=r.data_overrides or None, recipe=False)
            for r in profile_search_plan(profile, dataset)]


def planned_runs(steps: list[tuple[str, dict[str, Any]]]) -> list[RunRequest]:
    """Every run the steps (notebook name, papermill parameters) train, in step order."""
    return [r for notebook, parameters in steps for r in step_requests(notebook, parameters)]


def distinct_runs(requests: list[RunRequest]) -> list[tuple[RunRequest, Path]]:
    """One request per run folder (two requests naming the same run train it once), with the folder it
    trains into. Loads each dataset once per group, which also fills the preparation cache: workers
    only read it."""
    from ..experiments.train_evaluate import run_paths

    groups: dict[str, list[RunRequest]] = {}
    for r in requests:
        groups.setdefault(r.group(), []).append(r)
    out, seen = [], set()
    for members in groups.values():
        first = members[0]
        folds = sorted({r.fold for r in members if r.fold is not None}) or None
        paths = run_paths(first.dataset, first.profile, sorted({r.method for r in members}),
                          sorted({r.seed for r in members}), split=first.split, folds=folds,
                          options={r.method: r.options for r in members if r.options},
                          data_dir=first.data_dir, train_overrides=first.train_overrides,
                          data_overrides=first.data_overrides, recipe=first.recipe)
        for r in members:
            path = paths[(r.method, r.fold, r.seed)]
            if path not in seen:
                out.append((r, path))
                seen.add(path)
    return out


# ---------------------------------------------------------------- what a worker executes
@dataclass(frozen=True)
class Place:
    """Where the submitting process keeps the project and its runs; a worker on another machine must
    see both at the same paths (a shared filesystem), or have CGT_ROOT set to its own mount point."""

    root: str
    runs: str | None
    """$CGT_RUNS_DIR of the submitting process (None: <root>/runs)."""

    @classmethod
    def here(cls) -> "Place":
        from ..experiments.paths import project_root

        runs = os.environ.get("CGT_RUNS_DIR")
        return cls(str(project_root().resolve()), str(Path(runs).resolve()) if runs else None)

    def enter(self) -> None:
        """Make this worker process read and write where the submitting process does."""
        if WORKER_ROOT:  # the worker's own mount of the project wins
            os.environ["CGT_ROOT"] = WORKER_ROOT
        elif not Path(self.root).is_dir():
            raise RunnerError(f"the project folder {self.root} does not exist on this worker: share it at the "
                              f"same path, or start the worker with CGT_ROOT set to where it is mounted")
        else:
            os.environ["CGT_ROOT"] = self.root
        if self.runs:
            os.environ["CGT_RUNS_DIR"] = self.runs
        else:
            os.environ.pop("CGT_RUNS_DIR", None)


def train_request(request: RunRequest, place: Place) -> dict[str, Any]:
    """Train one run in this process (a local worker or a Dask worker); returns where it went."""
    from ..experiments.train_evaluate import train_methods

    _refuse_threaded_dask_worker()
    place.enter()
    t0 = time.perf_counter()
    (run,) = train_methods(request.dataset, request.profile, [request.method], [request.seed], split=request.split,
                           folds=None if request.fold is None else [request.fold],
                           options={request.method: request.options} if request.options else None,
                           data_dir=request.data_dir, device=request.device, train_overrides=request.train_overrides,
                           data_overrides=request.data_overrides, recipe=request.recipe)
    return {"run": str(run.run_dir), "cached": run.cached, "seconds": time.perf_counter() - t0,
            "threads": CPU_TRAINING_THREADS if resolve_device(request.device).type == "cpu" else None}


def _refuse_threaded_dask_worker() -> None:
    """Runs in one process share torch's global RNG and thread setting: a Dask worker must run one task
    at a time (`--nthreads 1`), or concurrent runs would not be reproducible."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not inside a Dask worker
        return
    nthreads = getattr(worker, "nthreads", None) or getattr(getattr(worker, "state", None), "nthreads", 1)
    if nthreads > 1:
        raise RunnerError(f"Dask worker {worker.address} runs {nthreads} tasks at once; start workers with "
                          f"`--nthreads 1` (and --nworkers for several per machine): runs in one process share "
                          f"torch's random generator and thread setting")


# ---------------------------------------------------------------- engines
def check_workers(workers: int) -> None:
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: the number of local worker processes must be an integer ≥ 1 "
                         f"(1 trains in the pipeline's own process; this machine has {available_cores()} cores)")


def available_cores() -> int:
    """The cores this process may use (its CPU affinity), the natural number of local workers."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S):
    """A Dask client on a running scheduler, with at least one worker; a clear error within `timeout_s` otherwise."""
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise RunnerError("--scheduler needs Dask distributed: pip install distributed") from exc
    try:
        client = Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise RunnerError(f"could not reach a Dask scheduler at {address!r} within {timeout_s:g} s ({exc}); start one "
                          f"with `dask scheduler` and give its address (tcp://HOST:8786)") from None
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except (TimeoutError, OSError):
        client.close()
        raise RunnerError(f"the Dask scheduler at {address!r} has no workers after {timeout_s:g} s; start some with "
                          f"`dask worker {address} --nworkers N --nthreads 1`") from None
    return client


def _local(todo: list[tuple[RunRequest, Path]], workers: int, place: Place,
           log: Callable[[str], None]) -> Iterator[tuple[RunRequest, dict[str, Any]]]:
    """Local worker processes; a dead worker breaks the pool, so the unfinished runs go to a new one."""
    attempts: Counter[Path] = Counter()
    pending = list(todo)
    context = multiprocessing.get_context("spawn")  # fork would copy the parent's torch thread pools
    while pending:
        started = time.time()
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(train_request, r, place): (r, path) for r, path in pending}
            pending = []
            for future in as_completed(futures):
                request, path = futures[future]
                try:
                    yield request, future.result()
                except BrokenProcessPool:
                    pending.append((request, path))
                except Exception as exc:  # a run's own error: stop now, not after every queued run
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise RunnerError(f"{request.label} failed: {type(exc).__name__}: {exc} (the runs already "
                                      f"training finish first; queued ones were cancelled)") from exc
        for request, path in pending:  # a run counts as attempted once training opened its folder
            config = path / "config.json"
            if config.exists() and config.stat().st_mtime >= started:
                attempts[path] += 1
            if attempts[path] >= MAX_ATTEMPTS:
                raise RunnerError(f"{request.label}: its worker died in each of {MAX_ATTEMPTS} attempts; giving "
                                  f"up (a run that runs out of memory kills its worker)")
        if pending:
            labels = [r.label for r, _ in pending]
            log(f"a worker died; {len(pending)} unfinished run(s) queued again (each continues from its last "
                f"epoch checkpoint): {', '.join(labels[:3])}{' …' if len(labels) > 3 else ''}")


def _dask(todo: list[tuple[RunRequest, Path]], client, place: Place) -> Iterator[tuple[RunRequest, dict[str, Any]]]:
    """A Dask cluster; the scheduler itself re-queues the task of a worker that dies (up to its
    `allowed-failures`), and the run continues from its checkpoint on the shared runs folder."""
    from distributed import as_completed as dask_completed

    futures = {client.submit(train_request, r, place, pure=False,
                             key=f"cgt-train-{path.parent.name}-{path.name}"): r for r, path in todo}
    for future in dask_completed(futures, loop=client.loop):
        yield futures[future], future.result()


def _clear(path: Path) -> None:
    """--force: drop a run's artifacts and checkpoint here, before any worker starts, so that a worker
    (and a re-queued attempt) only ever resumes. The same files cgt.train drops on a forced run."""
    for name in (*ARTIFACTS, "complete.json", "checkpoint.pt"):
        (path / name).unlink(missing_ok=True)


def _same_run(record: dict[str, Any], path: Path) -> None:
    """A worker whose cgt differs from the submitter's keys its runs differently (the code version is in
    the key): it would train into another folder, and the notebooks would then train everything again."""
    if Path(record["run"]).parts[-3:] != path.parts[-3:]:
        raise RunnerError(f"a worker trained into {record['run']} where {path} was planned: the worker's cgt code "
                          f"differs from this one's; run workers from the same project (shared folder, same commit)")


def train_all(requests: list[RunRequest], workers: int = 1, scheduler: str | None = None,
              force: bool = False, log: Callable[[str], None] = print,
              client=None) -> list[dict[str, Any]]:
    """Train every unfinished run of `requests`: on `workers` local processes, or on the Dask cluster at
    `scheduler` (or an already connected `client`). Returns one record per trained run."""
    check_workers(workers)
    own_client = scheduler is not None and client is None
    if own_client:
        client = connect(scheduler)  # before any work: an unreachable cluster starts nothing
    try:
        runs = distinct_runs(requests)
        todo = [(r, path) for r, path in runs if force or not is_complete(path)]
        engine = (f"Dask cluster at {client.scheduler.address}" if client is not None
                  else f"{workers} local worker process(es)")
        log(f"{len(todo)} run(s) to train ({len(runs) - len(todo)} already finished) on {engine}, "
            f"{CPU_TRAINING_THREADS} thread(s) per CPU run")
        if not todo:
            return []
        if force:
            for _, path in todo:
                _clear(path)
        place = Place.here()
        results = (_dask(todo, client, place) if client is not None
                   else _local(todo, workers, place, log))
        planned = {id(r): path for r, path in todo}
        return list(_with_progress(results, len(todo), log, _journal(requests), planned))
    finally:
        if own_client:
            client.close()


def _journal(requests: list[RunRequest]) -> Path:
    """runs/<profile>/runner_journal.jsonl: one line per run a worker trained — where, in how many
    seconds, with how many intra-op threads."""
    from ..experiments.paths import runs_dir

    folder = runs_dir(requests[0].profile)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "runner_journal.jsonl"


def _with_progress(results: Iterator[tuple[RunRequest, dict[str, Any]]], total: int, log: Callable[[str], None],
                   journal: Path, planned: dict[int, Path]) -> Iterator[dict[str, Any]]:
    """A progress bar over runs (done / total, ETA) on a terminal; one plain line per run otherwise."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    bar = tqdm(total=total, desc="training runs", unit="run") if sys.stderr.isatty() else None
    for done, (request, record) in enumerate(results, 1):
        _same_run(record, planned[id(request)])
        record = {"request": request.label, **record}
        with open(journal, "a") as f:  # one short line per append: a killed runner leaves whole lines
            f.write(json.dumps(record) + "\n")
        if bar is not None:
            bar.update()
        else:
            elapsed = time.perf_counter() - t0
            eta = elapsed / done * (total - done)
            log(f"[{done}/{total} runs] {request.label}: {'found finished' if record['cached'] else 'trained'} in "
                f"{record['seconds']:.0f} s ({_minutes(elapsed)} elapsed, ETA {_minutes(eta)})")
        yield record
    if bar is not None:
        bar.close()


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
