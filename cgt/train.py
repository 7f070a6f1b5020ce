"""Train one early-exit network with one exit-weighting strategy: seeded, resumable, cached.

A run lives in its own folder, named by the hash of everything that produced it:

    runs/<dataset>/<method>/seed<k>-<key>/
        config.json      resolved data + training + strategy config, data checksum, code version
        checkpoint.pt    after every epoch (atomic): model, optimiser, scheduler, RNG, history
        history.json     per epoch: loss, per-exit train/val accuracy, mean gate weight, λ, time
        model.pt         final weights
        logits.pt        per-exit logits (E, N, K) and labels on val and test
        complete.json    written last, with the sha256 of each artifact above

A run is finished only if complete.json exists and every artifact still matches its hash; a
killed run resumes from its last checkpoint and ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import distributed
from .config import TrainConfig, method_spec
from .data import PreparedData
from .fileio import atomic_path, read_json, sha256_file, stable_hash, write_json_atomic
from .losses import (STRATEGIES, early_head_fit_loss, exit_weights, resolve_lambdas, resolve_options,
                     weighted_exit_loss)
from .models import EarlyExitNet, build_model

ARTIFACTS = ("config.json", "history.json", "model.pt", "logits.pt")
# Modules whose code changes what a training run produces: part of every run's cache key.
TRAINING_MODULES = ("data.py", "custom_data.py", "splits.py", "models.py", "losses.py", "train.py", "config.py",
                    "distributed.py")


def code_version() -> str:
    """Hash of the training-relevant package source: editing it invalidates cached runs."""
    h = hashlib.sha256()
    for name in TRAINING_MODULES:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:12]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use 'auto' or 'cpu'")
    return torch.device(device)


@dataclass
class RunResult:
    run_dir: Path
    config: dict[str, Any]
    history: list[dict[str, Any]]
    model: EarlyExitNet
    logits: dict[str, torch.Tensor]
    """'val' / 'test' → (E, N, K) logits; 'y_val' / 'y_test' → labels."""
    cached: bool


def run_config(data: PreparedData, method: str, cfg: TrainConfig, model: EarlyExitNet,
               options: dict[str, Any] | None = None, data_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The resolved, JSON-able description of a run; its hash names the run folder."""
    cfg.validate()
    strategy, opts = method_spec(method, **(options or {}))
    resolved = resolve_options(strategy, model.num_exits, **opts)
    train = asdict(cfg)
    train.pop("device")  # where it ran does not change what it computes (up to float rounding)
    train.pop("eval_batch_size")
    world_size = distributed.context().world_size
    if world_size > 1:  # per-process BatchNorm statistics make it a different computation
        train["world_size"] = world_size
    return {"dataset": data.name, "method": method, "strategy": strategy, "options": resolved,
            "train": train, "data_checksum": data.checksum, "data_params": data_params or {},
            "model": {"num_exits": model.num_exits, "architecture_sha256": stable_hash(str(model), 64)},
            "code_version": code_version()}


def run_dir_for(config: dict[str, Any], runs_root: str | Path) -> Path:
    key = stable_hash(config)
    return Path(runs_root) / config["dataset"] / config["method"] / f"seed{config['train']['seed']}-{key}"


def is_complete(run_dir: Path) -> bool:
    """True only if every artifact exists and matches the hash recorded when the run finished."""
    marker = run_dir / "complete.json"
    if not marker.exists():
        return False
    try:
        recorded = read_json(marker)["sha256"]
        return all((run_dir / name).exists() and sha256_file(run_dir / name) == recorded[name] for name in ARTIFACTS)
    except Exception:
        return False


def train_run(data: PreparedData, method: str, cfg: TrainConfig, runs_root: str | Path = "runs",
              options: dict[str, Any] | None = None, data_params: dict[str, Any] | None = None,
              model_fn: Callable[[], EarlyExitNet] | None = None, progress: bool = True,
              force: bool = False) -> RunResult:
    """Train (or load the finished run of) `method` on `data` with `cfg`.

    model_fn builds the network (default: the dataset's paper model); it is called after seeding.
    """
    device = resolve_device(cfg.device)
    if cfg.precision == "bf16" and device.type != "cuda":
        raise ValueError(f"precision='bf16' is autocast for CUDA; this run is on {device}. Use precision='fp32'")
    ctx = distributed.init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    build = model_fn or (lambda: build_model(data.name, data.input_shape, data.num_classes))
    # --- seeding: the one place randomness is fixed (initialisation; shuffling is keyed per epoch)
    torch.manual_seed(cfg.seed)
    model = build()
    config = run_config(data, method, cfg, model, options, data_params)
    run_dir = run_dir_for(config, runs_root)

    if is_complete(run_dir) and not force:
        return load_run(run_dir, build)
    if ctx.is_main:  # one writer: rank 0 (the only process without torchrun)
        if force:
            for name in (*ARTIFACTS, "complete.json", "checkpoint.pt"):
                (run_dir / name).unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", config)
    distributed.barrier(ctx)

    model = model.to(device)
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    history: list[dict[str, Any]] = []
    start_epoch = 0

    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        try:
            ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["rng_state"])
            history, start_epoch = ckpt["history"], ckpt["epoch"]
            if progress:
                print(f"resuming {run_dir} after epoch {start_epoch}")
        except Exception as exc:  # unreadable checkpoint: start over rather than trust it
            print(f"ignoring unreadable checkpoint {ckpt_path}: {exc}")

    x_train, y_train = data.x["train"].to(device), data.y["train"].to(device)
    spec = STRATEGIES[config["strategy"]]
    # DDP averages gradients across processes; the unwrapped `model` serves evaluation and saving.
    trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if ctx.enabled else model
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        progress_frac = epoch / max(1, cfg.epochs - 1)
        stats = _train_epoch(trained, model.num_exits, optimizer, x_train, y_train, cfg, config,
                             spec.detach_early_heads, progress_frac, epoch, ctx,
                             desc=f"{method} s{cfg.seed} ep {epoch + 1}/{cfg.epochs}", progress=progress and ctx.is_main)
        scheduler.step()
        val_logits = predict_logits(model, data.x["val"], cfg.eval_batch_size, device)
        stats["val_acc"] = _per_exit_accuracy(val_logits, data.y["val"])
        stats["epoch"] = epoch + 1
        stats["epoch_time_s"] = time.perf_counter() - t0
        history.append(stats)
        if ctx.is_main:
            with atomic_path(ckpt_path) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "rng_state": torch.get_rng_state(),
                            "history": history, "epoch": epoch + 1, "config": config}, tmp)

    logits = {"val": predict_logits(model, data.x["val"], cfg.eval_batch_size, device),
              "test": predict_logits(model, data.x["test"], cfg.eval_batch_size, device),
              "y_val": data.y["val"].clone(), "y_test": data.y["test"].clone()}
    if ctx.is_main:
        write_json_atomic(run_dir / "history.json", history)
        with atomic_path(run_dir / "model.pt") as tmp:
            torch.save(model.state_dict(), tmp)
        with atomic_path(run_dir / "logits.pt") as tmp:
            torch.save(logits, tmp)
        write_json_atomic(run_dir / "complete.json", {"sha256": {n: sha256_file(run_dir / n) for n in ARTIFACTS}})
        ckpt_path.unlink(missing_ok=True)  # the finished artifacts supersede it
    distributed.barrier(ctx)
    model.eval()
    return RunResult(run_dir, config, history, model, logits, cached=False)


def _train_epoch(model: torch.nn.Module, num_exits: int, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor, cfg: TrainConfig, config: dict[str, Any], detach_early_heads: bool,
                 progress_frac: float, epoch: int, ctx: distributed.DistContext, desc: str,
                 progress: bool) -> dict[str, Any]:
    model.train()
    n = len(x)
    # The shuffle depends only on (seed, epoch): a resumed run sees exactly the same batches, and
    # every DDP process the same global batches (each then takes its own rows of them).
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)).to(x.device)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros(num_exits, device=x.device)
    weight_sum = torch.zeros(num_exits, device=x.device)
    seen = torch.zeros((), device=x.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    for start in tqdm(range(0, n, cfg.batch_size), desc=desc, disable=not progress, leave=False, mininterval=2):
        idx = distributed.local_rows(order[start:start + cfg.batch_size], ctx)
        xb, yb = x[idx], y[idx]
        with autocast:
            logits = model(xb, detach_early_heads=detach_early_heads)  # (E, B, K)
            w = exit_weights(logits, yb, config["strategy"], progress=progress_frac, **config["options"])  # (B, E)
            loss = weighted_exit_loss(logits.float(), yb, w, cfg.label_smoothing)
            if detach_early_heads:
                loss = loss + early_head_fit_loss(logits.float(), yb, cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # accumulate on device; one host sync per epoch
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(-1) == yb).sum(dim=1)
            weight_sum += w.sum(dim=0)
            seen += len(idx)
    for t in (loss_sum, correct, weight_sum, seen):  # history describes the whole data, not one shard
        distributed.all_reduce_sum(t, ctx)
    n = seen.item()
    lam = resolve_lambdas(config["options"]["lambdas"], num_exits, progress_frac)
    return {"loss": (loss_sum / n).item(), "train_acc": (correct / n).tolist(),
            "mean_weight": (weight_sum / n).tolist(), "lambdas": lam.tolist()}


@torch.no_grad()
def predict_logits(model: EarlyExitNet, x: torch.Tensor, batch_size: int = 2048,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """All exits' logits for `x`, (E, N, K), on the CPU (full forward pass; for cached evaluation)."""
    model.eval()
    device = device or next(model.parameters()).device
    out = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out, dim=1)


def _per_exit_accuracy(logits: torch.Tensor, y: torch.Tensor) -> list[float]:
    return (logits.argmax(-1) == y).float().mean(dim=1).tolist()


def load_run(run_dir: str | Path, build: Callable[[], EarlyExitNet]) -> RunResult:
    """Load a finished run's artifacts (raises if the run is not complete)."""
    run_dir = Path(run_dir)
    if not is_complete(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a finished run (complete.json missing or an artifact changed)")
    model = build()
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    logits = torch.load(run_dir / "logits.pt", map_location="cpu", weights_only=True)
    return RunResult(run_dir, read_json(run_dir / "config.json"), read_json(run_dir / "history.json"),
                     model, logits, cached=True)
