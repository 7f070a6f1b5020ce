"""What a training notebook does, as one call: train methods × seeds (cached), evaluate each run.

    records = run_methods("fashion_mnist", "quick", ["joint_uniform", "hard_cgt"])
    metrics_table([r.metrics for r in records])
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .config import DATASETS, METHODS, get_profile, profile_configs, TrainConfig
from .cost import ExitCosts, exit_costs
from .data import PreparedData, load
from .evaluate import EvalConfig, evaluate_run
from .models import build_model
from .paths import data_dir as default_data_dir, prepared_dir, runs_dir
from .provenance import write_sidecar
from .train import RunResult, resolve_device, train_run


@dataclass
class RunRecord:
    method: str
    seed: int
    run: RunResult
    metrics: dict
    costs: ExitCosts


def check_names(methods: list[str], dataset: str | None = None, profile: str | None = None) -> None:
    """Fail on a bad name before any work starts."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid choices: {list(METHODS)}")
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid choices: {DATASETS}")
    if profile is not None:
        get_profile(profile)


def prepare(dataset: str, profile: str, data_dir: str | None = None, **data_overrides: Any
            ) -> tuple[PreparedData, dict, TrainConfig]:
    """Load the dataset as the profile prepares it; returns (data, data params, train config)."""
    data_cfg, train_cfg = profile_configs(profile, dataset, str(data_dir or default_data_dir()), **data_overrides)
    data_cfg.cache_dir = str(prepared_dir())
    return load(data_cfg), data_cfg.preparation_params(), train_cfg


def run_methods(dataset: str, profile: str, methods: list[str], seeds: list[int] | None = None,
                options: dict[str, dict[str, Any]] | None = None, data_dir: str | None = None,
                device: str = "auto", eval_cfg: EvalConfig = EvalConfig(), progress: bool = True,
                train_overrides: dict[str, Any] | None = None, force: bool = False) -> list[RunRecord]:
    """Train every (method, seed) of `profile` on `dataset` — skipping finished runs — and evaluate.

    options: per-method extra strategy options, e.g. {"hard_cgt": {"tau_train": 0.8}}.
    """
    check_names(methods, dataset, profile)
    seeds = get_profile(profile).seeds if seeds is None else seeds
    data, data_params, base_cfg = prepare(dataset, profile, data_dir)
    records = []
    for method in methods:
        for seed in seeds:
            cfg = TrainConfig(**(vars(base_cfg) | (train_overrides or {}) | {"seed": seed, "device": device}))
            t0 = time.perf_counter()
            run = train_run(data, method, cfg, runs_root=runs_dir(profile), options=(options or {}).get(method),
                            data_params=data_params, progress=progress, force=force)
            costs = exit_costs(run.model.cpu(), data.input_shape)
            metrics = evaluate_run(run, costs, data.num_classes, eval_cfg)
            wall = time.perf_counter() - t0
            write_sidecar(run.run_dir / "metrics.json", params={"run": run.config, "eval": vars(eval_cfg)},
                          seed=seed, data_checksums={dataset: data.checksum},
                          device=resolve_device(device), wall_time_s=wall)
            status = "cached" if run.cached else f"trained in {wall:.0f} s"
            if progress:
                tp = metrics["operating_points"]
                print(f"{dataset} {method} seed {seed}: {status}; last-exit acc {tp['last_exit']['test']['accuracy']:.4f}, "
                      f"at tau 0.9 acc {tp['paper_tau']['test']['accuracy']:.4f} "
                      f"cost {tp['paper_tau']['test']['avg_cost_relative']:.3f}")
            records.append(RunRecord(method, seed, run, metrics, costs))
    return records
