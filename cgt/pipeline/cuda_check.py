"""The GPU path, exercised and timed on one machine: training epochs on CUDA (fp32 and bf16 autocast)
beside the same epoch on that machine's CPU cores; early-exit inference against the full network on
CUDA, and its agreement with evaluation from cached logits; and the local runner's scaling over the
machine's cores (N worker processes × 1 thread on one fixed list of runs). Writes one JSON artifact
that the README quotes.

    python -m cgt.pipeline.cuda_check --out figures/cuda_check.json
    python -m cgt.pipeline.cuda_check --device cpu --tiny --out /tmp/check.json   # a dry run of the script itself
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import datetime, timezone
from typing import Any, Callable

import torch

from ..experiments.profiles import train_config
from ..experiments.provenance import device_description, git_state
from ..experiments.train_evaluate import load_dataset
from ..fileio import write_json_atomic
from ..inference import early_exit_forward, exits_from_logits
from ..policy import PAPER_TAU
from ..train import TrainConfig, predict_logits, train_run
from .scaling import fresh_runs_folder, runner_scaling

TAU = PAPER_TAU
METHOD = "soft_cgt"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()  # warm-up (kernels, allocator)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def training(device: str, precisions: list[str], epochs: int, max_train: int | None) -> tuple[list[dict], Any, Any]:
    """Fashion-MNIST (the paper profile's training settings), SoftCGT, seed 0: per-epoch seconds and
    final validation accuracy per exit, for each (device, precision); also the model trained on `device`."""
    overrides = {"max_train": max_train, "max_eval": 2000} if max_train else {}
    data = load_dataset("fashion_mnist", "paper", **overrides)
    rows, model = [], None
    for where, precision in [(device, p) for p in precisions] + [("cpu", "fp32")]:
        cfg = TrainConfig(**(vars(train_config("paper", "fashion_mnist")) |
                             {"epochs": epochs if where != "cpu" else 1, "device": where, "precision": precision}))
        with fresh_runs_folder() as folder:
            run = train_run(data, METHOD, cfg, runs_root=folder, progress=False)
        rows.append({"device": where, "threads": torch.get_num_threads() if where == "cpu" else None,
                     "precision": precision, "train_samples": len(data.y["train"]),
                     "epoch_seconds": [round(h["epoch_time_s"], 3) for h in run.history],
                     "val_acc_per_exit": [round(a, 4) for a in run.history[-1]["val_acc"]]})
        if where == device and precision == "fp32":
            model = run.model
    return rows, model, data


def inference(model, data, device: str, repeats: int) -> dict:
    """Early exit on `device` against the full network, and the agreement of its decisions with those
    computed from the full network's per-exit logits (what every table is evaluated from)."""
    dev = torch.device(device)
    model = model.to(dev).eval()
    x = data.x["test"].to(dev)
    cached = predict_logits(model, x, 2048, dev)
    preds_cached, exits_cached = exits_from_logits(cached, TAU)
    live = early_exit_forward(model, x, TAU, batch_size=1024)
    out = {"tau": TAU, "test_samples": len(x),
           "prediction_disagreements": int((live.predictions != preds_cached).sum()),
           "exit_disagreements": int((live.exit_index != exits_cached).sum()),
           "exit_fractions": [round(float((live.exit_index == e).float().mean()), 4) for e in range(model.num_exits)],
           "batches": []}
    with torch.inference_mode():
        for batch in (1024, 1):
            n = len(x) if batch > 1 else 200
            xb = x[:n]
            full = _median_seconds(lambda: [model(xb[i:i + batch]) for i in range(0, n, batch)], dev, repeats)
            early = _median_seconds(lambda: early_exit_forward(model, xb, TAU, batch_size=batch), dev, repeats)
            out["batches"].append({"batch": batch, "samples": n, "full_us_per_sample": round(1e6 * full / n, 2),
                                   "early_exit_us_per_sample": round(1e6 * early / n, 2),
                                   "speedup": round(full / early, 3)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgt.pipeline.cuda_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda", help="cuda (the check) | cpu (a dry run of the script)")
    p.add_argument("--tiny", action="store_true", help="small sizes: checks the script, measures nothing")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts of the scaling part")
    p.add_argument("--commit", default=None, help="the code's commit, where the copy measured has no .git")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here; use --device cpu for a dry run")
    cores = len(os.sched_getaffinity(0))
    workers = args.workers or sorted({1, 2, 4, 8, cores} & set(range(1, cores + 1)))
    t0 = time.perf_counter()
    record: dict[str, Any] = {"measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "git": {"commit": args.commit, "dirty": None} if args.commit else git_state(), "torch": torch.__version__, "cpu_cores": cores,
                              "device": device_description(torch.device(args.device)), "tiny": args.tiny}
    precisions = ["fp32", "bf16"] if args.device.startswith("cuda") else ["fp32"]
    rows, model, data = training(args.device, precisions, epochs=1 if args.tiny else 2,
                                 max_train=1000 if args.tiny else None)
    record["training"] = rows
    print("training:", rows, flush=True)
    record["inference"] = inference(model, data, args.device, repeats=3 if args.tiny else 20)
    print("inference:", record["inference"], flush=True)
    record["runner_scaling"] = runner_scaling(workers, runs=4 if args.tiny else 16, epochs=1 if args.tiny else 5)
    print("runner scaling:", record["runner_scaling"], flush=True)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(args.out, record)
    print(f"{args.out} written in {record['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
