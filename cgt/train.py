"""Train one early-exit network with one exit-weighting strategy: seeded, resumable, cached.

    run = train_run(data, "hard_cgt", TrainConfig(epochs=8, seed=0), runs_root="runs/paper")

The run's folder, identity and completeness are cgt.runs'; this module is the loop. A finished run
is loaded instead of retrained; a killed run resumes from its last epoch checkpoint and ends with the
same weights as an uninterrupted one (the shuffle depends only on seed and epoch, the RNG state is
checkpointed).

One result per run key: on the CPU a run trains with one intra-op thread (CPU_TRAINING_THREADS),
whoever schedules it — a notebook, the CLI, a local worker or a Dask worker — because the reduction
order of the convolutions, and so the floats, depend on the thread count. Parallelism comes from
training runs side by side (cgt.pipeline.runner). One training per run key: a process that asks for
a run another process is training waits for it (cgt.runs.run_lock), then loads the finished run, or
resumes from its checkpoint if that process died.

Notices that change what a run does (training again after a failed artifact check, resuming, ignoring
an unreadable checkpoint, waiting for another process) go to stderr, even when progress is off.
"""
from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import distributed
from .augment import augment_batch, check_augment
from .data import PreparedData
from .fileio import atomic_path, sha256_file, write_json_atomic
from .interference import gradient_interference
from .losses import STRATEGIES, early_head_fit_loss, exit_weights, inverse_frequency, lambdas_at, weighted_exit_loss
from .models import EarlyExitNet
from .notices import notice
from .runs import ARTIFACTS, TrainedRun, is_complete, load_run, run_dir, run_identity, run_lock

CPU_TRAINING_THREADS = 1
"""Intra-op threads of every training run on the CPU (see the module docstring: one run key, one result)."""

_log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """How one early-exit network is trained."""

    epochs: int = 10
    """Passes over the training set."""
    batch_size: int = 128
    """Samples per optimiser step."""
    lr: float = 2e-3
    """AdamW peak learning rate (cosine-annealed to 0 over the epochs)."""
    weight_decay: float = 1e-4
    """AdamW decoupled weight decay."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing (the authors use 0.1 on CIFAR-100; 0 keeps confidences honest
    for the max-softmax exit policy)."""
    seed: int = 0
    """Seeds model initialisation and the per-epoch shuffling."""
    optimizer: str = "adamw"
    """'adamw', or 'sgd' (momentum 0.9) as in most CIFAR/ImageNet early-exit code."""
    device: str = "auto"
    """'auto' (CUDA when present, else CPU), 'cpu' or 'cuda[:N]'."""
    precision: str = "fp32"
    """'fp32', or 'bf16' autocast (CUDA only; off for the paper profile so numbers stay comparable)."""
    eval_batch_size: int = 2048
    """Batch size for validation/test logits (no gradients, so larger is fine)."""
    log_gradients_every: int = 0
    """Every this many optimiser steps, measure gradient interference between the exits on the batch
    (cgt.interference: E extra backward passes) into the history; 0: off (not under torchrun)."""
    augment: dict[str, Any] = field(default_factory=dict)
    """Training-batch augmentation (cgt.augment.KNOBS: flip, rot90, noise_std), drawn per batch on the device
    from a generator keyed by (seed, epoch, step); {}: off."""

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if int(self.log_gradients_every) < 0:
            raise ValueError(f"log_gradients_every={self.log_gradients_every} must be >= 0 (0: off)")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr={self.lr} must be > 0 and weight_decay={self.weight_decay} >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ValueError(f"device={self.device!r}; valid choices: 'auto', 'cpu', 'cuda', 'cuda:N'")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer={self.optimizer!r}; valid choices: ['adamw', 'sgd']")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision={self.precision!r}; valid choices: ['fp32', 'bf16']")
        check_augment(self.augment)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use 'auto' or 'cpu'")
    return torch.device(device)


@dataclass
class TrainState:
    """What one epoch changes, and what the checkpoint after it holds."""

    model: EarlyExitNet
    """The unwrapped network (evaluation and saving use it)."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    history: list[dict[str, Any]]
    epoch: int = 0
    """Epochs finished."""

    def checkpoint(self, identity: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng_state": torch.get_rng_state(),
                "history": self.history, "epoch": self.epoch, "config": identity}

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng_state"])
        self.history, self.epoch = ckpt["history"], ckpt["epoch"]


@dataclass(frozen=True)
class EpochSetup:
    """What stays fixed across the epochs of one run."""

    cfg: TrainConfig
    strategy: str
    options: dict[str, Any]
    """The strategy's resolved options."""
    ctx: distributed.DistContext = distributed.DistContext()
    progress_label: str | None = None
    """Shown on a per-batch progress bar; None: no bar."""
    class_weights: torch.Tensor | None = None
    """(K,) per-class multipliers of every sample's weights (class-balanced strategies); None: all 1."""


def new_state(model: EarlyExitNet, cfg: TrainConfig) -> TrainState:
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return TrainState(model, optimizer, scheduler, history=[])


def train_run(data: PreparedData, method: str, cfg: TrainConfig, runs_root: str | Path = "runs",
              options: dict[str, Any] | None = None, model_fn: Callable[[], EarlyExitNet] | None = None,
              progress: bool = True, force: bool = False) -> TrainedRun:
    """Train (or load the finished run of) `method` on `data` with `cfg`.

    model_fn builds the network (default: the dataset's default model); it is called after seeding.
    """
    device, ctx = _training_device(cfg)
    build = model_fn or data.default_model
    # --- seeding: the one place randomness is fixed (initialisation; shuffling is keyed per epoch)
    torch.manual_seed(cfg.seed)
    model = build()
    identity = run_identity(data, method, cfg, model, options)
    folder = run_dir(identity, runs_root)
    if is_complete(folder) and not force:
        return load_run(folder, build)
    if ctx.enabled:  # one torchrun job trains the run: its ranks synchronise through barriers, not the lock
        return _train_in(folder, data, method, cfg, identity, model, device, ctx, progress, force)
    with run_lock(folder, on_wait=lambda: notice(f"{folder}: another process is training this run; waiting for it")):
        if is_complete(folder) and not force:  # trained by the process we waited for
            return load_run(folder, build)
        return _train_in(folder, data, method, cfg, identity, model, device, ctx, progress, force)


@contextmanager
def training_threads(device: torch.device) -> Iterator[None]:
    """CPU_TRAINING_THREADS intra-op threads while a run trains on the CPU; the caller's setting afterwards.
    (Inter-op threads do not change the floats, and torch allows setting them only once per process.)"""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(CPU_TRAINING_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_in(folder: Path, data: PreparedData, method: str, cfg: TrainConfig, identity: dict[str, Any],
              model: EarlyExitNet, device: torch.device, ctx: distributed.DistContext, progress: bool,
              force: bool) -> TrainedRun:
    """Train `model` into `folder` (resuming from its checkpoint), write the artifacts, return the run."""
    if (folder / "complete.json").exists() and not force and ctx.is_main:
        notice(f"{folder}: an artifact no longer matches the hash recorded when the run finished; training it again")
    if ctx.is_main:  # one writer: rank 0 (the only process without torchrun)
        _open_run_dir(folder, identity, force)
    distributed.barrier(ctx)
    with training_threads(device):
        return _train_loop(folder, data, method, cfg, identity, model, device, ctx, progress)


def _train_loop(folder: Path, data: PreparedData, method: str, cfg: TrainConfig, identity: dict[str, Any],
                model: EarlyExitNet, device: torch.device, ctx: distributed.DistContext,
                progress: bool) -> TrainedRun:
    state = new_state(model.to(device), cfg)
    _resume(state, folder / "checkpoint.pt", device, ctx.is_main)
    x_train, y_train = data.x["train"].to(device), data.y["train"].to(device)
    if x_train.ndim == 4:
        # Image batches in channels-last layout: oneDNN's convolutions and max-pooling run without
        # layout conversions (the Fashion-MNIST CNN's training step: 1.36× faster measured on 2 CPU cores).
        model.to(memory_format=torch.channels_last)
        x_train = x_train.contiguous(memory_format=torch.channels_last)
    # DDP averages gradients across processes; the unwrapped state.model serves evaluation and saving.
    trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if ctx.enabled else model
    class_weights = inverse_frequency(data.y["train"], data.num_classes).to(device) \
        if STRATEGIES[identity["strategy"]].class_balanced else None
    for epoch in range(state.epoch, cfg.epochs):
        t0 = time.perf_counter()
        label = f"{method} s{cfg.seed} ep {epoch + 1}/{cfg.epochs}" if progress and ctx.is_main else None
        stats = train_epoch(trained, state, EpochSetup(cfg, identity["strategy"], identity["options"], ctx, label,
                                                       class_weights), x_train, y_train)
        state.scheduler.step()
        stats["val_acc"] = _per_exit_accuracy(predict_logits(model, data.x["val"], cfg.eval_batch_size, device),
                                              data.y["val"])
        stats["epoch"] = epoch + 1
        stats["epoch_time_s"] = time.perf_counter() - t0
        state.history.append(stats)
        state.epoch = epoch + 1
        if label is not None and not _terminal():  # off a terminal one line per epoch, not a bar, to the log:
            # `cgt train` shows it; a notebook (no handler) shows only run_methods' one summary line per run
            _log.info(f"{label}: loss {stats['loss']:.4f}, val acc per exit "
                      f"{' / '.join(f'{a:.3f}' for a in stats['val_acc'])} ({stats['epoch_time_s']:.0f} s)")
        if ctx.is_main:
            with atomic_path(folder / "checkpoint.pt") as tmp:
                torch.save(state.checkpoint(identity), tmp)

    logits = {"val": predict_logits(model, data.x["val"], cfg.eval_batch_size, device),
              "test": predict_logits(model, data.x["test"], cfg.eval_batch_size, device),
              "y_val": data.y["val"].clone(), "y_test": data.y["test"].clone()}
    if ctx.is_main:
        _write_artifacts(folder, state, logits)
    distributed.barrier(ctx)
    model.eval()
    return TrainedRun(folder, identity, state.history, model, logits, cached=False)


def _training_device(cfg: TrainConfig) -> tuple[torch.device, distributed.DistContext]:
    """The device this process trains on, and its place in a torchrun job (if any)."""
    device = resolve_device(cfg.device)
    if cfg.precision == "bf16" and device.type != "cuda":
        raise ValueError(f"precision='bf16' is autocast for CUDA; this run is on {device}. Use precision='fp32'")
    ctx = distributed.init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    return device, ctx


def _open_run_dir(folder: Path, identity: dict[str, Any], force: bool) -> None:
    """Create the run's folder with its config.json (a forced rerun first drops every artifact)."""
    if force:
        for name in (*ARTIFACTS, "complete.json", "checkpoint.pt"):
            (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "config.json", identity)


def _resume(state: TrainState, ckpt_path: Path, device: torch.device, tell: bool) -> None:
    """Continue from the last epoch checkpoint, if there is a readable one (`tell`: say so on stderr)."""
    if not ckpt_path.exists():
        return
    try:
        state.restore(torch.load(ckpt_path, map_location=device, weights_only=False))
        if tell:
            notice(f"resuming {ckpt_path.parent} after epoch {state.epoch}")
    except Exception as exc:  # unreadable checkpoint: start over rather than trust it
        if tell:
            notice(f"ignoring unreadable checkpoint {ckpt_path} ({exc}); training this run from its first epoch")


def _write_artifacts(folder: Path, state: TrainState, logits: dict[str, torch.Tensor]) -> None:
    """History, weights and logits (each atomic), then complete.json with their hashes — written
    last, so a run killed before it is never taken for finished."""
    write_json_atomic(folder / "history.json", state.history)
    with atomic_path(folder / "model.pt") as tmp:
        torch.save(state.model.state_dict(), tmp)
    with atomic_path(folder / "logits.pt") as tmp:
        torch.save(logits, tmp)
    write_json_atomic(folder / "complete.json", {"sha256": {n: sha256_file(folder / n) for n in ARTIFACTS}})
    (folder / "checkpoint.pt").unlink(missing_ok=True)  # the finished artifacts supersede it


def train_epoch(model: torch.nn.Module, state: TrainState, setup: EpochSetup, x: torch.Tensor,
                y: torch.Tensor) -> dict[str, Any]:
    """One pass over (x, y) in the (seed, epoch) order; `model` is state.model or its DDP wrapper.
    Returns the epoch's statistics over the whole data (all processes)."""
    cfg, ctx, epoch = setup.cfg, setup.ctx, state.epoch
    num_exits = state.model.num_exits
    spec = STRATEGIES[setup.strategy]
    detach_early_heads = spec.detach_early_heads
    progress_frac = epoch / max(1, cfg.epochs - 1)
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
    steps_per_epoch = -(-n // cfg.batch_size)
    gradients = []  # gradient interference, every cfg.log_gradients_every steps (not under torchrun)
    for step, start in enumerate(tqdm(range(0, n, cfg.batch_size), desc=setup.progress_label, leave=False,
                                      mininterval=2, disable=setup.progress_label is None or not _terminal())):
        idx = distributed.local_rows(order[start:start + cfg.batch_size], ctx)
        xb, yb = augment_batch(x[idx], cfg.augment, cfg.seed, epoch, step), y[idx]
        with autocast:
            logits = model(xb, detach_early_heads=detach_early_heads,
                           gradient_equilibrium=spec.gradient_equilibrium)  # (E, B, K)
            w = exit_weights(logits, yb, setup.strategy, progress=progress_frac, **setup.options)  # (B, E)
            if setup.class_weights is not None:
                w = w * setup.class_weights[yb][:, None]
            loss = weighted_exit_loss(logits.float(), yb, w, cfg.label_smoothing)
            if detach_early_heads:
                loss = loss + early_head_fit_loss(logits.float(), yb, cfg.label_smoothing)
            extra = spec.extra(logits.float(), yb, setup.options)
            if extra is not None:
                loss = loss + extra
        global_step = epoch * steps_per_epoch + step
        if cfg.log_gradients_every and not ctx.enabled and global_step % cfg.log_gradients_every == 0:
            gradients.append({"step": global_step, **gradient_interference(state.model, logits, yb, w,
                                                                             cfg.label_smoothing)})
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        with torch.no_grad():  # accumulate on device; one host sync per epoch
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(-1) == yb).sum(dim=1)
            weight_sum += w.sum(dim=0)
            seen += len(idx)
    for t in (loss_sum, correct, weight_sum, seen):  # history describes the whole data, not one shard
        distributed.all_reduce_sum(t, ctx)
    n = seen.item()
    lam = lambdas_at(setup.options, num_exits, progress_frac)
    return {"loss": (loss_sum / n).item(), "train_acc": (correct / n).tolist(),
            "mean_weight": (weight_sum / n).tolist(), "lambdas": lam.tolist(),
            **({"gradients": gradients} if gradients else {})}


@torch.no_grad()
def predict_logits(model: EarlyExitNet, x: torch.Tensor, batch_size: int = 2048,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """All exits' logits for `x`, (E, N, K), on the CPU (full forward pass; for cached evaluation)."""
    model.eval()
    device = device or next(model.parameters()).device
    out = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out, dim=1)


def _terminal() -> bool:
    """Whether progress goes to a terminal: only there do progress bars redraw in place (in a log file
    or a notebook's output every update would add a line)."""
    return sys.stdout.isatty()


def _per_exit_accuracy(logits: torch.Tensor, y: torch.Tensor) -> list[float]:
    return (logits.argmax(-1) == y).float().mean(dim=1).tolist()
