"""What a training notebook does, as one call: train methods × seeds (cached), evaluate each run.

    runs = run_methods("fashion_mnist", "quick", ["joint_uniform", "hard_cgt"])
    metrics_table([r.metrics for r in runs])

`load_finished` is the same for a reader of results (the figures notebook, the benchmark): it only
loads finished runs, and a missing one is an error that says how to make it.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from .. import distributed
from ..cost import ExitCosts, exit_costs
from ..data import BUILTIN, PreparedData, load, resolve
from ..evaluation.evaluate import EvalConfig, common_target_point, evaluate_run
from ..fileio import read_json, sha256_bytes, sha256_file, write_json_atomic
from ..methods import BASELINES, JOINT_BASELINES, check_methods
from ..models import EarlyExitNet
from ..runs import TrainedRun, is_complete, load_run, run_dir, run_identity
from ..train import TrainConfig, resolve_device, train_run
from .paths import data_dir as default_data_dir
from .paths import prepared_dir, runs_dir
from .profiles import data_config, get_profile, train_config
from .provenance import package_version, write_sidecar
from .recipe_choice import profile_recipe

NOTEBOOK_METHODS = {
    "01_baselines": BASELINES,
    "02_hard_cgt": ["joint_uniform", "joint_annealed", "hard_cgt"],
    "03_soft_cgt": ["joint_uniform", "joint_annealed", "soft_cgt", "soft_cgt_linear"],
}
"""What each training notebook trains (one home: the notebooks and the pipeline's runner read it). Each CGT
notebook trains its variants beside equal fixed weights and the same λ schedule without a gate."""

RUN_RECORD_ENV = "CGT_RUN_RECORD"
"""When set (the pipeline sets it for each notebook it executes), every run a notebook trains or loads
is appended to this JSON-lines file as {"run": <folder relative to the profile's runs folder>,
"cached": bool}: the structured record the pipeline's step cache reads — never the printed text."""

ModelChoice = Union[dict[str, int], Callable[[PreparedData], EarlyExitNet], None]
"""None: the dataset's default network; a dict: options of the generic network (width, depth) for
data of your own; a callable: builds your own network from the prepared data."""


@dataclass
class EvaluatedRun:
    """One (method, seed) of an experiment: the trained run and its metrics."""

    method: str
    seed: int
    run: TrainedRun
    metrics: dict
    costs: ExitCosts
    fold: int | None = None
    """The cross-validation fold it was trained and tested on (split='blocked'); None without folds."""
    train_counts: np.ndarray | None = None
    """(K,) training samples per class of the data this run trained on (rare-class analyses)."""


PROTOCOLS = ("random", "spatial", "blocked")
"""How a dataset's labelled samples are split (Indian Pines: cgt.data.indian_pines):
`random` — the dataset's own split; for Indian Pines the paper's stratified per-pixel one, drawn once
with the profile's data seed (leaking: kept for the comparison with the paper's numbers);
`spatial` — Indian Pines: each class cut once into disjoint regions with a guard band (the
extrapolation stress test), drawn anew for each training seed: split seed = training seed;
`blocked` — Indian Pines: spatially blocked K-fold cross-validation with guard bands (the primary
leak-free protocol), one dataset per fold; the tiles are dealt to folds anew for each training seed
(split seed = training seed), so (fold, seed) pairs every method with every other."""
FOLDED = ("blocked",)
"""Splits made of folds: their runs are (method, fold, seed); the others' are (method, seed)."""


def check_split(split: str, dataset: str, fold: int | None = None) -> None:
    """Refuse an unknown split, a spatial split for a dataset without a spatial layout, or a fold for a
    split without folds, before any work (the fold's range is the dataset options' to check)."""
    if split not in PROTOCOLS:
        raise ValueError(f"unknown split {split!r}; valid choices: {list(PROTOCOLS)}")
    if split != "random" and "split" not in resolve(dataset).option_names():
        spatial = [name for name in BUILTIN if "split" in BUILTIN[name].option_names()]
        raise ValueError(f"split={split!r} needs a dataset with a spatial layout ({spatial}); {dataset!r} has "
                         f"only its own split: use split='random'")
    if fold is not None and split not in FOLDED:
        raise ValueError(f"fold={fold}: split {split!r} has no folds; only {list(FOLDED)} has")


def load_dataset(dataset: str, profile: str, data_dir: str | None = None, split: str = "random",
                 split_seed: int | None = None, fold: int | None = None, recipe: bool = True,
                 **data_overrides: Any) -> PreparedData:
    """The dataset as `profile` prepares it (from the preparation cache when it exists); with
    split='spatial' or 'blocked', the split drawn with `split_seed` (default: the profile's data seed);
    with 'blocked', fold `fold` of it (default 0).
    data_dir: None for the project's data/raw (cgt.experiments.paths, whatever the working directory);
    a folder given here is verified on every load, even when its prepared arrays are cached.
    recipe: prepare it as the profile's chosen recipe says (e.g. its patch size; cgt.experiments.recipe_choice),
    under `data_overrides`; False for the recipe search itself, whose candidates say everything."""
    check_split(split, dataset, fold)
    given_dir = data_dir is not None
    if split != "random":
        data_overrides = data_overrides | {"split": split} | ({} if split_seed is None else {"seed": split_seed})
    if split in FOLDED:
        data_overrides = data_overrides | {"fold": 0 if fold is None else fold}
    data_dir = str(data_dir or default_data_dir())
    if recipe:  # the arguments are checked first (a bad fold is a bad fold, searched recipe or not)
        data_config(profile, dataset, data_dir, **data_overrides)
        data_overrides = profile_recipe(profile, dataset).data | data_overrides
    cfg = data_config(profile, dataset, data_dir, **data_overrides)
    cfg.cache_dir = str(prepared_dir())
    return load(cfg, verify_raw=given_dir)


def protocol_folds(dataset: str, profile: str, split: str, folds: list[int] | None = None,
                   **data_overrides: Any) -> list[int | None]:
    """The folds a run list covers: [None] for a split without folds (a list of folds is then an error);
    when `folds` is None, the profile's plan for the protocol (cgt.experiments.profiles.ProtocolPlan),
    whose None is every fold 0 … K−1; else `folds` (each checked)."""
    check_split(split, dataset)
    if split not in FOLDED:
        if folds is not None:
            raise ValueError(f"folds={folds}: split {split!r} has no folds; only {list(FOLDED)} has")
        return [None]
    folds = get_profile(profile).plan_for(resolve(dataset).name, split).folds if folds is None else folds
    if folds is None:
        cfg = data_config(profile, dataset, **(data_overrides | {"split": split, "fold": 0}))
        return list(range(resolve(dataset).resolve_options(cfg).folds))
    for f in folds:  # the range check, before any data is loaded
        data_config(profile, dataset, **(data_overrides | {"split": split, "fold": f}))
    return list(folds)


Cell = tuple[Union[int, None], int]
"""(fold, seed): one training seed on one fold (fold None for the splits without folds)."""


@dataclass
class _Plan:
    data: dict[Cell, PreparedData]
    """(fold, seed) → the data that cell trains on (one object for every seed of the random split)."""
    base_cfg: TrainConfig
    model: ModelChoice
    cells: list[Cell]
    """Every (fold, seed) to train, fold-major."""

    def build(self, cell: Cell) -> EarlyExitNet:
        data = self.data[cell]
        return self.model(data) if callable(self.model) else data.default_model(**(self.model or {}))


def _plan(dataset: str, profile: str, methods: list[str], seeds: list[int] | None,
          options: dict[str, dict[str, Any]] | None, model: ModelChoice, data_dir: str | None,
          train_overrides: dict[str, Any] | None = None, split: str = "random",
          folds: list[int] | None = None, data_overrides: dict[str, Any] | None = None,
          recipe: bool = True) -> _Plan:
    """Check every name and option, then load the data; fails before any training. With `recipe`, the
    profile's chosen recipe for the dataset lies under the given overrides (they win)."""
    check_methods(methods, options)
    fold_list = protocol_folds(dataset, profile, split, folds)  # a bad fold is reported before anything else
    if recipe:
        data_overrides, train_overrides = profile_recipe(profile, dataset).under(data_overrides, train_overrides)
    seeds = get_profile(profile).plan_for(resolve(dataset).name, split).seeds if seeds is None else seeds
    base_cfg = train_config(profile, dataset, **(train_overrides or {}))
    extra = data_overrides or {}  # e.g. a recipe's patch size (cgt.experiments.recipe)
    cells = [(fold, seed) for fold in fold_list for seed in seeds]
    if split == "random":
        shared = load_dataset(dataset, profile, data_dir, recipe=False, **extra)
        data = {cell: shared for cell in cells}
    else:
        data = {(fold, seed): load_dataset(dataset, profile, data_dir, split, split_seed=seed, fold=fold, recipe=False,
                                          **extra)
                for fold, seed in cells}
    plan = _Plan(data, base_cfg, model, cells)
    # A shape the builder cannot handle, or options that do not fit its exits, fail here, before training.
    for cell in cells[:1]:
        check_methods(methods, options, num_exits=plan.build(cell).num_exits)
    return plan


def _seed_config(plan: _Plan, seed: int, device: str) -> TrainConfig:
    return TrainConfig(**(vars(plan.base_cfg) | {"seed": seed, "device": device}))


def run_methods(dataset: str, profile: str, methods: list[str], seeds: list[int] | None = None, *,
                split: str = "random", folds: list[int] | None = None, options: dict[str, dict[str, Any]] | None = None, model: ModelChoice = None,
                data_dir: str | None = None, device: str = "auto", train_overrides: dict[str, Any] | None = None,
                data_overrides: dict[str, Any] | None = None, recipe: bool = True,
                eval_cfg: EvalConfig = EvalConfig(), force: bool = False, progress: bool = True) -> list[EvaluatedRun]:
    """Train every (method, seed) of `profile` on `dataset` — skipping finished runs — and evaluate.

    split: "random", "spatial" or "blocked" (see PROTOCOLS); the run cache key includes it, through the data.
    folds: the folds of a split with folds (None: all of them); must be None for the others.
    options: per-method extra strategy options, e.g. {"hard_cgt": {"tau_train": 0.8}}.
    train_overrides: TrainConfig values replacing the profile's (e.g. {"epochs": 2}).
    data_overrides: DataConfig values or dataset options replacing the profile's (e.g. {"patch_size": 7});
    they are part of the data, hence of the run key.
    recipe: train with the profile's chosen recipe for the dataset under these overrides (the default; the
    recipe search itself passes False).
    """
    plan = _plan(dataset, profile, methods, seeds, options, model, data_dir, train_overrides, split, folds,
                 data_overrides, recipe)
    out = []
    for method in methods:
        for cell in plan.cells:
            t0 = time.perf_counter()
            run = _train(plan, method, cell, options, profile, device, progress, force)
            if distributed.context().is_main:  # under torchrun, rank 0 alone evaluates and writes
                out.append(_evaluate(plan.data[cell], method, cell, run, eval_cfg, device, t0, progress))
    return out


def train_methods(dataset: str, profile: str, methods: list[str], seeds: list[int] | None = None, *,
                  split: str = "random", folds: list[int] | None = None, options: dict[str, dict[str, Any]] | None = None, model: ModelChoice = None,
                  data_dir: str | None = None, device: str = "auto", train_overrides: dict[str, Any] | None = None,
                  data_overrides: dict[str, Any] | None = None, recipe: bool = True,
                  force: bool = False, progress: bool = False) -> list[TrainedRun]:
    """`run_methods` without the evaluation: trains (or finds) the runs — what a cgt.pipeline.runner worker does."""
    plan = _plan(dataset, profile, methods, seeds, options, model, data_dir, train_overrides, split, folds,
                 data_overrides, recipe)
    return [_train(plan, method, cell, options, profile, device, progress, force)
            for method in methods for cell in plan.cells]


def _train(plan: _Plan, method: str, cell: Cell, options: dict[str, dict[str, Any]] | None, profile: str,
           device: str, progress: bool, force: bool) -> TrainedRun:
    return train_run(plan.data[cell], method, _seed_config(plan, cell[1], device), runs_root=runs_dir(profile),
                     options=(options or {}).get(method), model_fn=lambda: plan.build(cell),
                     progress=progress, force=force)


def run_paths(dataset: str, profile: str, methods: list[str], seeds: list[int] | None = None, *,
              split: str = "random", folds: list[int] | None = None, options: dict[str, dict[str, Any]] | None = None,
              model: ModelChoice = None, data_dir: str | None = None, train_overrides: dict[str, Any] | None = None,
              data_overrides: dict[str, Any] | None = None, recipe: bool = True) -> dict[tuple[str, int | None, int], Path]:
    """(method, fold, seed) → the folder `run_methods` trains that run in (finished or not); trains nothing."""
    plan = _plan(dataset, profile, methods, seeds, options, model, data_dir, train_overrides, split, folds,
                 data_overrides, recipe)
    return {(method, *cell): _run_path(plan, method, cell, options, profile) for method in methods for cell in plan.cells}


def _run_path(plan: _Plan, method: str, cell: Cell, options: dict[str, dict[str, Any]] | None, profile: str) -> Path:
    identity = run_identity(plan.data[cell], method, _seed_config(plan, cell[1], "cpu"), plan.build(cell),
                            (options or {}).get(method))
    return run_dir(identity, runs_dir(profile))


def load_finished(dataset: str, profile: str, methods: list[str], seeds: list[int] | None = None, *,
                  split: str = "random", folds: list[int] | None = None, options: dict[str, dict[str, Any]] | None = None,
                  model: ModelChoice = None, data_dir: str | None = None, eval_cfg: EvalConfig = EvalConfig(),
                  train_overrides: dict[str, Any] | None = None,
                  data_overrides: dict[str, Any] | None = None, recipe: bool = True) -> list[EvaluatedRun]:
    """The finished runs `run_methods` would produce, evaluated; trains nothing (a missing run is an error)."""
    plan = _plan(dataset, profile, methods, seeds, options, model, data_dir, train_overrides, split, folds,
                 data_overrides, recipe)
    out = []
    for method in methods:
        for cell in plan.cells:
            t0 = time.perf_counter()
            path = _run_path(plan, method, cell, options, profile)
            if not is_complete(path):
                where = f"seed {cell[1]}" + (f", fold {cell[0]}" if cell[0] is not None else "")
                raise FileNotFoundError(f"no finished {method} run ({where}, split {split!r}) for {dataset} in "
                                        f"profile {profile!r} under {runs_dir(profile)}: run notebooks 01-03 (or "
                                        f"`python -m cgt paper --profile {profile}`) first")
            out.append(_evaluate(plan.data[cell], method, cell, load_run(path, lambda: plan.build(cell)), eval_cfg,
                                 "cpu", t0, False))
    return out


EVALUATION_RECORD = "evaluation.json"
"""Beside a run's metrics.json: the key of what it was computed from and its sha256 (see `_cached_metrics`)."""


def _evaluation_key(run: TrainedRun, eval_cfg: EvalConfig) -> str:
    """What a run's metrics depend on: its artifacts (complete.json holds their hashes), the evaluation settings
    and the source of the whole cgt package (any code change evaluates again)."""
    return sha256_bytes(json.dumps([sha256_file(run.run_dir / "complete.json"), vars(eval_cfg), package_version()],
                                   sort_keys=True, default=str).encode())


def _cached_metrics(run_dir: Path, key: str) -> dict | None:
    """The run's metrics.json when it was computed from exactly these inputs and is intact; else None. Notebooks
    01–03, 04 and 06 read the same runs: each is evaluated once per code version, not once per notebook."""
    try:
        record = read_json(run_dir / EVALUATION_RECORD)
        if record.get("key") != key or record.get("metrics_sha256") != sha256_file(run_dir / "metrics.json"):
            return None
        return read_json(run_dir / "metrics.json")
    except (OSError, ValueError, AttributeError):  # missing, unreadable or not the record this writes
        return None


def _evaluate(data: PreparedData, method: str, cell: Cell, run: TrainedRun, eval_cfg: EvalConfig, device: str,
              t0: float, progress: bool) -> EvaluatedRun:
    fold, seed = cell
    costs = exit_costs(run.model.cpu(), data.input_shape)
    key = _evaluation_key(run, eval_cfg)
    metrics = _cached_metrics(run.run_dir, key)
    if metrics is None:
        metrics = evaluate_run(run, costs, data.num_classes, eval_cfg)  # writes metrics.json
        write_sidecar(run.run_dir / "metrics.json", params={"run": run.config, "eval": vars(eval_cfg)},
                      seed=seed, data_checksums={data.name: data.checksum},
                      device=resolve_device(device), wall_time_s=time.perf_counter() - t0)
        # last: a cache hit implies metrics.json and its provenance sidecar were both written
        write_json_atomic(run.run_dir / EVALUATION_RECORD,
                          {"key": key, "metrics_sha256": sha256_file(run.run_dir / "metrics.json")})
    metrics["run"]["run_dir"] = str(run.run_dir)  # where it is now, wherever it was evaluated
    wall = time.perf_counter() - t0
    _record_run(run)
    if progress:
        status = "cached" if run.cached else f"trained in {wall:.0f} s"
        tp = metrics["operating_points"]
        where = f"seed {seed}" + (f" fold {fold}" if fold is not None else "")
        print(f"{data.name} {method} {where}: {status}; last-exit acc {tp['full_network']['test']['accuracy']:.4f}, "
              f"at tau {eval_cfg.paper_tau} acc {tp['paper_tau']['test']['accuracy']:.4f} "
              f"cost {tp['paper_tau']['test']['avg_cost_relative']:.3f} [run {_relative_run(run)}]")
    return EvaluatedRun(method, seed, run, metrics, costs, fold, data.counts()["train"])


def _relative_run(run: TrainedRun) -> str:
    """The run's folder relative to its profile's runs folder."""
    return "/".join(run.run_dir.parts[-3:])  # <dataset>/<method>/seed<k>-<key>


def _record_run(run: TrainedRun) -> None:
    """Append the run to the pipeline's record of what this notebook read ($CGT_RUN_RECORD), if any.
    One short line appended per run: a kernel killed mid-write leaves at most a torn last line, which
    the reader refuses (the step then runs again)."""
    path = os.environ.get(RUN_RECORD_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"run": _relative_run(run), "cached": run.cached}) + "\n")


COMMON_TARGET = "val_common_target"


def add_common_target(runs: list[EvaluatedRun], reference: list[str] = JOINT_BASELINES,
                      eval_cfg: EvalConfig = EvalConfig()) -> dict[int, float]:
    """Give every run the operating point `val_common_target`: per seed (and fold), one validation-accuracy
    target for all methods — the best last-exit validation accuracy among the `reference` methods of that
    seed (the fixed-weight joint baselines), minus `eval_cfg.tolerance` — and each method's cheapest
    per-exit τ reaching it on validation. Cells without a reference run get no such point. Returns
    seed → target (without folds) or (fold, seed) → target (with them).
    (Added to the in-memory metrics only: a run's metrics.json holds what depends on that run alone.)"""
    def cell(r: EvaluatedRun):
        return r.seed if r.fold is None else (r.fold, r.seed)

    targets = {}
    for key in sorted({cell(r) for r in runs}):
        refs = [r for r in runs if cell(r) == key and r.method in reference]
        if not refs:
            continue
        targets[key] = max(r.metrics["operating_points"]["full_network"]["val"]["accuracy"] for r in refs) \
            - eval_cfg.tolerance
        for r in runs:
            if cell(r) == key:
                num_classes = r.run.logits["val"].shape[-1]
                r.metrics["operating_points"][COMMON_TARGET] = common_target_point(
                    r.run, r.costs, num_classes, targets[key], eval_cfg)
    return targets
