"""What a training notebook does, as one call: train methods × seeds (cached), evaluate each run.

    runs = run_methods("fashion_mnist", "quick", ["joint_uniform", "hard_cgt"])
    metrics_table([r.metrics for r in runs])

`load_finished` is the same for a reader of results (the figures notebook, the benchmark): it only
loads finished runs, and a missing one is an error that says how to make it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

from .. import distributed
from ..cost import ExitCosts, exit_costs
from ..data import BUILTIN, PreparedData, load, resolve
from ..evaluation.evaluate import EvalConfig, common_target_point, evaluate_run
from ..methods import JOINT_BASELINES, check_methods
from ..models import EarlyExitNet
from ..runs import TrainedRun, is_complete, load_run, run_dir, run_identity
from ..train import TrainConfig, resolve_device, train_run
from .paths import data_dir as default_data_dir
from .paths import prepared_dir, runs_dir
from .profiles import data_config, get_profile, train_config
from .provenance import write_sidecar

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


SPLITS = ("random", "spatial")
"""How a dataset's labelled samples are split: `random` (the dataset's own split — for Indian Pines the
paper's stratified per-pixel one, drawn once with the profile's data seed), or `spatial` (Indian Pines:
disjoint regions with a guard band, drawn anew for each training seed: split seed = training seed)."""


def check_split(split: str, dataset: str) -> None:
    """Refuse an unknown split, or `spatial` for a dataset without a spatial layout, before any work."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {list(SPLITS)}")
    if split == "spatial" and "split" not in resolve(dataset).option_names():
        spatial = [name for name in BUILTIN if "split" in BUILTIN[name].option_names()]
        raise ValueError(f"split='spatial' needs a dataset with a spatial layout ({spatial}); {dataset!r} has "
                         f"only its own split: use split='random'")


def load_dataset(dataset: str, profile: str, data_dir: str | None = None, split: str = "random",
                 split_seed: int | None = None, **data_overrides: Any) -> PreparedData:
    """The dataset as `profile` prepares it (from the preparation cache when it exists); with
    split='spatial', the spatial split drawn with `split_seed` (default: the profile's data seed)."""
    check_split(split, dataset)
    if split == "spatial":
        data_overrides = data_overrides | {"split": "spatial"} | ({} if split_seed is None else {"seed": split_seed})
    cfg = data_config(profile, dataset, str(data_dir or default_data_dir()), **data_overrides)
    cfg.cache_dir = str(prepared_dir())
    return load(cfg)


@dataclass
class _Plan:
    data: dict[int, PreparedData]
    """seed → the data that seed trains on (the same object for every seed, unless split='spatial')."""
    base_cfg: TrainConfig
    model: ModelChoice
    seeds: list[int]

    def build(self, seed: int) -> EarlyExitNet:
        data = self.data[seed]
        return self.model(data) if callable(self.model) else data.default_model(**(self.model or {}))


def _plan(dataset: str, profile: str, methods: list[str], seeds: list[int] | None,
          options: dict[str, dict[str, Any]] | None, model: ModelChoice, data_dir: str | None,
          train_overrides: dict[str, Any] | None = None, split: str = "random",
          data_overrides: dict[str, Any] | None = None) -> _Plan:
    """Check every name and option, then load the data; fails before any training."""
    check_methods(methods, options)
    check_split(split, dataset)
    seeds = get_profile(profile).seeds if seeds is None else seeds
    base_cfg = train_config(profile, dataset, **(train_overrides or {}))
    extra = data_overrides or {}
    if split == "spatial":
        data = {seed: load_dataset(dataset, profile, data_dir, split, split_seed=seed, **extra) for seed in seeds}
    else:
        shared = load_dataset(dataset, profile, data_dir, **extra)
        data = {seed: shared for seed in seeds}
    plan = _Plan(data, base_cfg, model, seeds)
    # A shape the builder cannot handle, or options that do not fit its exits, fail here, before training.
    for seed in seeds[:1]:
        check_methods(methods, options, num_exits=plan.build(seed).num_exits)
    return plan


def _seed_config(plan: _Plan, seed: int, device: str) -> TrainConfig:
    return TrainConfig(**(vars(plan.base_cfg) | {"seed": seed, "device": device}))


def run_methods(dataset: str, profile: str, methods: list[str], seeds: list[int] | None = None, *,
                split: str = "random", options: dict[str, dict[str, Any]] | None = None, model: ModelChoice = None,
                data_dir: str | None = None, device: str = "auto", train_overrides: dict[str, Any] | None = None,
                data_overrides: dict[str, Any] | None = None,
                eval_cfg: EvalConfig = EvalConfig(), force: bool = False, progress: bool = True) -> list[EvaluatedRun]:
    """Train every (method, seed) of `profile` on `dataset` — skipping finished runs — and evaluate.

    split: "random" or "spatial" (see SPLITS); the run cache key includes it, through the data.
    options: per-method extra strategy options, e.g. {"hard_cgt": {"tau_train": 0.8}}.
    train_overrides: TrainConfig values replacing the profile's (e.g. {"epochs": 2}).
    data_overrides: DataConfig values or dataset options replacing the profile's (e.g. {"patch_size": 7});
    they are part of the data, hence of the run key.
    """
    plan = _plan(dataset, profile, methods, seeds, options, model, data_dir, train_overrides, split, data_overrides)
    out = []
    for method in methods:
        for seed in plan.seeds:
            t0 = time.perf_counter()
            run = _train(plan, method, seed, options, profile, device, progress, force)
            if distributed.context().is_main:  # under torchrun, rank 0 alone evaluates and writes
                out.append(_evaluate(plan.data[seed], method, seed, run, eval_cfg, device, t0, progress))
    return out


def train_methods(dataset: str, profile: str, methods: list[str], seeds: list[int] | None = None, *,
                  split: str = "random", options: dict[str, dict[str, Any]] | None = None, model: ModelChoice = None,
                  data_dir: str | None = None, device: str = "auto", train_overrides: dict[str, Any] | None = None,
                  data_overrides: dict[str, Any] | None = None,
                  force: bool = False, progress: bool = False) -> list[TrainedRun]:
    """`run_methods` without the evaluation: trains (or finds) the runs — what a cgt.pipeline.runner worker does."""
    plan = _plan(dataset, profile, methods, seeds, options, model, data_dir, train_overrides, split, data_overrides)
    return [_train(plan, method, seed, options, profile, device, progress, force)
            for method in methods for seed in plan.seeds]


def _train(plan: _Plan, method: str, seed: int, options: dict[str, dict[str, Any]] | None, profile: str,
           device: str, progress: bool, force: bool) -> TrainedRun:
    return train_run(plan.data[seed], method, _seed_config(plan, seed, device), runs_root=runs_dir(profile),
                     options=(options or {}).get(method), model_fn=lambda: plan.build(seed),
                     progress=progress, force=force)


def run_paths(dataset: str, profile: str, methods: list[str], seeds: list[int] | None = None, *,
              split: str = "random", options: dict[str, dict[str, Any]] | None = None, model: ModelChoice = None,
              data_dir: str | None = None, train_overrides: dict[str, Any] | None = None,
              data_overrides: dict[str, Any] | None = None) -> dict[tuple[str, int], Path]:
    """(method, seed) → the folder `run_methods` trains that run in (finished or not); trains nothing."""
    plan = _plan(dataset, profile, methods, seeds, options, model, data_dir, train_overrides, split, data_overrides)
    return {(method, seed): _run_path(plan, method, seed, options, profile) for method in methods for seed in plan.seeds}


def _run_path(plan: _Plan, method: str, seed: int, options: dict[str, dict[str, Any]] | None, profile: str) -> Path:
    identity = run_identity(plan.data[seed], method, _seed_config(plan, seed, "cpu"), plan.build(seed),
                            (options or {}).get(method))
    return run_dir(identity, runs_dir(profile))


def load_finished(dataset: str, profile: str, methods: list[str], seeds: list[int] | None = None, *,
                  split: str = "random", options: dict[str, dict[str, Any]] | None = None, model: ModelChoice = None,
                  data_dir: str | None = None, eval_cfg: EvalConfig = EvalConfig(),
                  train_overrides: dict[str, Any] | None = None,
                  data_overrides: dict[str, Any] | None = None) -> list[EvaluatedRun]:
    """The finished runs `run_methods` would produce, evaluated; trains nothing (a missing run is an error)."""
    plan = _plan(dataset, profile, methods, seeds, options, model, data_dir, train_overrides, split, data_overrides)
    out = []
    for method in methods:
        for seed in plan.seeds:
            t0 = time.perf_counter()
            path = _run_path(plan, method, seed, options, profile)
            if not is_complete(path):
                raise FileNotFoundError(f"no finished {method} run (seed {seed}, split {split!r}) for {dataset} in "
                                        f"profile {profile!r} under {runs_dir(profile)}: run notebooks 01-03 (or "
                                        f"`python -m cgt paper --profile {profile}`) first")
            out.append(_evaluate(plan.data[seed], method, seed, load_run(path, lambda: plan.build(seed)), eval_cfg,
                                 "cpu", t0, False))
    return out


def _evaluate(data: PreparedData, method: str, seed: int, run: TrainedRun, eval_cfg: EvalConfig, device: str,
              t0: float, progress: bool) -> EvaluatedRun:
    costs = exit_costs(run.model.cpu(), data.input_shape)
    metrics = evaluate_run(run, costs, data.num_classes, eval_cfg)
    wall = time.perf_counter() - t0
    write_sidecar(run.run_dir / "metrics.json", params={"run": run.config, "eval": vars(eval_cfg)},
                  seed=seed, data_checksums={data.name: data.checksum},
                  device=resolve_device(device), wall_time_s=wall)
    if progress:
        status = "cached" if run.cached else f"trained in {wall:.0f} s"
        tp = metrics["operating_points"]
        print(f"{data.name} {method} seed {seed}: {status}; last-exit acc {tp['last_exit']['test']['accuracy']:.4f}, "
              f"at tau 0.9 acc {tp['paper_tau']['test']['accuracy']:.4f} "
              f"cost {tp['paper_tau']['test']['avg_cost_relative']:.3f} [run {_relative_run(run)}]")
    return EvaluatedRun(method, seed, run, metrics, costs)


def _relative_run(run: TrainedRun) -> str:
    """The run's folder relative to its profile's runs folder (how cgt.pipeline.stepcache finds what a notebook read)."""
    return "/".join(run.run_dir.parts[-3:])  # <dataset>/<method>/seed<k>-<key>


COMMON_TARGET = "val_common_target"


def add_common_target(runs: list[EvaluatedRun], reference: list[str] = JOINT_BASELINES,
                      eval_cfg: EvalConfig = EvalConfig()) -> dict[int, float]:
    """Give every run the operating point `val_common_target`: per seed, one validation-accuracy target
    for all methods — the best last-exit validation accuracy among the `reference` methods of that seed
    (the fixed-weight joint baselines), minus `eval_cfg.tolerance` — and each method's cheapest per-exit
    τ reaching it on validation. Seeds without a reference run get no such point. Returns seed → target.
    (Added to the in-memory metrics only: a run's metrics.json holds what depends on that run alone.)"""
    targets = {}
    for seed in sorted({r.seed for r in runs}):
        refs = [r for r in runs if r.seed == seed and r.method in reference]
        if not refs:
            continue
        targets[seed] = max(r.metrics["operating_points"]["last_exit"]["val"]["accuracy"] for r in refs) \
            - eval_cfg.tolerance
        for r in runs:
            if r.seed == seed:
                num_classes = r.run.logits["val"].shape[-1]
                r.metrics["operating_points"][COMMON_TARGET] = common_target_point(
                    r.run, r.costs, num_classes, targets[seed], eval_cfg)
    return targets
