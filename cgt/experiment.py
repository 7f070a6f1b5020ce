"""What a training notebook does, as one call: train methods × seeds (cached), evaluate each run.

    records = run_methods("fashion_mnist", "quick", ["joint_uniform", "hard_cgt"])
    metrics_table([r.metrics for r in records])
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import torch

from . import distributed
from .config import METHODS, TrainConfig, get_profile, method_spec, profile_configs
from .cost import ExitCosts, exit_costs
from .custom_data import is_custom
from .data import PreparedData, check_dataset, load
from .evaluate import EvalConfig, evaluate_run
from .losses import exit_weights, resolve_options
from .models import EarlyExitNet, build_model
from .paths import data_dir as default_data_dir, prepared_dir, runs_dir
from .provenance import write_sidecar
from .train import RunResult, is_complete, resolve_device, run_config, run_dir_for, train_run


@dataclass
class RunRecord:
    method: str
    seed: int
    run: RunResult
    metrics: dict
    costs: ExitCosts


PAPER_NUM_EXITS = 3  # both paper models; a network of your own may have another number


def check_names(methods: list[str], dataset: str | None = None, profile: str | None = None,
                options: dict[str, dict[str, Any]] | None = None, num_exits: int = PAPER_NUM_EXITS) -> None:
    """Fail on a bad name or strategy option before any work starts."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid choices: {list(METHODS)}")
    for m in methods:
        strategy, opts = method_spec(m, **(options or {}).get(m, {}))
        resolve_options(strategy, num_exits, **opts)
    if dataset is not None:
        check_dataset(dataset)
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
                train_overrides: dict[str, Any] | None = None, force: bool = False,
                require_finished: bool = False, model_options: dict[str, int] | None = None,
                model_fn: Callable[[PreparedData], EarlyExitNet] | None = None) -> list[RunRecord]:
    """Train every (method, seed) of `profile` on `dataset` — skipping finished runs — and evaluate.

    options: per-method extra strategy options, e.g. {"hard_cgt": {"tau_train": 0.8}}.
    require_finished: only load finished runs (the figures notebook); a missing run is an error.
    model_options: width/depth of the generic network used for datasets of your own.
    model_fn: builds your own early-exit network from the prepared data (instead of the default).
    """
    custom_model = model_fn is not None or is_custom(dataset)
    check_names(methods, None if custom_model else dataset, profile, None if custom_model else options)
    seeds = get_profile(profile).seeds if seeds is None else seeds
    data, data_params, base_cfg = prepare(dataset, profile, data_dir)
    build = (lambda: model_fn(data)) if model_fn else (
        lambda: build_model(data.name, data.input_shape, data.num_classes, **(model_options or {})))
    # A shape the builder cannot handle, or options that do not fit its exits, fail here, before training.
    check_names(methods, options=options, num_exits=build().num_exits)
    records = []
    for method in methods:
        for seed in seeds:
            cfg = TrainConfig(**(vars(base_cfg) | (train_overrides or {}) | {"seed": seed, "device": device}))
            t0 = time.perf_counter()
            if require_finished and not is_finished(data, method, cfg, profile, build, (options or {}).get(method), data_params):
                raise FileNotFoundError(f"no finished {method} run (seed {seed}) for {dataset} in profile {profile!r} "
                                        f"under {runs_dir(profile)}: run notebooks 01-03 (or `python -m cgt paper "
                                        f"--profile {profile}`) first")
            run = train_run(data, method, cfg, runs_root=runs_dir(profile), options=(options or {}).get(method),
                            data_params=data_params, model_fn=build, progress=progress, force=force)
            if not distributed.context().is_main:
                continue  # under torchrun, rank 0 alone evaluates and writes
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


def is_finished(data: PreparedData, method: str, cfg: TrainConfig, profile: str, build: Callable[[], EarlyExitNet],
                options: dict[str, Any] | None = None, data_params: dict[str, Any] | None = None) -> bool:
    """Whether the run `run_methods` would produce already exists, complete and intact."""
    config = run_config(data, method, cfg, build(), options, data_params)
    return is_complete(run_dir_for(config, runs_dir(profile)))


def explain_gates(model, x, y, method: str, progress: float = 1.0, class_names: list[str] | None = None,
                  **options: Any) -> pd.DataFrame:
    """One row per sample of a real batch: each exit's prediction and confidence, and the weight
    the strategy gives each exit's loss — the gate at work, readable."""
    strategy, opts = method_spec(method, **options)
    model.eval()
    with torch.no_grad():
        logits = model(x)                                                    # (E, B, K)
    weights = exit_weights(logits, y, strategy, progress=progress, **opts)   # (B, E)
    probs = logits.softmax(-1)
    conf, pred = probs.max(-1)
    true_p = probs.gather(-1, y[None, :, None].expand(logits.shape[0], -1, 1)).squeeze(-1)
    name = (lambda k: class_names[k]) if class_names else (lambda k: k)
    rows = []
    for i in range(len(y)):
        row = {"label": name(int(y[i]))}
        for e in range(logits.shape[0]):
            row[f"exit{e + 1} pred"] = name(int(pred[e, i]))
            row[f"exit{e + 1} conf"] = round(float(conf[e, i]), 3)
            row[f"exit{e + 1} p(true)"] = round(float(true_p[e, i]), 3)
        for e in range(logits.shape[0]):
            row[f"w{e + 1}"] = round(float(weights[i, e]), 3)
        rows.append(row)
    return pd.DataFrame(rows)
