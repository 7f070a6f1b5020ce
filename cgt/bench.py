"""Does early exit pay off in wall-clock time, not only in FLOPs?

    python -m cgt bench [--profile quick] [--method soft_cgt] [--tau 0.9]

For each dataset's trained model (a finished run of the profile) this prints, in one run on this
machine: the FLOPs-predicted speed-up of the early-exit policy over the full network (backbone +
last head), the measured wall-clock speed-up of the real early-exit forward pass at batch size 1
and at a large batch, and measured / predicted. Ratios from one run are comparable on a noisy
machine; absolute times are not.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .cost import average_cost, exit_costs
from .data import BUILTIN
from .experiment import load_dataset, load_finished
from .inference import early_exit_forward, full_network_forward, fuse_for_inference
from .fileio import write_json_atomic
from .paths import figures_dir
from .policy import PAPER_TAU
from .provenance import device_description, write_sidecar


def _best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)  # the least disturbed run: the noise of a shared machine only adds time


@torch.inference_mode()
def component_latency(model, sample: torch.Tensor, calls: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per call of each block and each head at batch size 1: where the time goes.
    On a small model per-operator overhead makes these far from proportional to FLOPs."""
    def per_call(fn) -> float:
        for _ in range(50):
            fn()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t0) / calls

    blocks, heads, h = [], [], sample[:1]
    for block, head in zip(model.blocks, model.heads):
        blocks.append(per_call(lambda: block(h)))
        h = block(h)
        heads.append(per_call(lambda: head(h)))
    return np.array(blocks), np.array(heads)


def benchmark(model, x: torch.Tensor, tau: float, n_single: int = 1000, large_batch: int = 1024,
              repeats: int = 3) -> dict:
    """Both sides run the same deployment copy of the model (BatchNorm folded into the convs)."""
    model = fuse_for_inference(model)
    num_exits = model.num_exits
    costs = exit_costs(model, tuple(x.shape[1:]))
    exits = early_exit_forward(model, x, tau, batch_size=large_batch).exit_index
    fractions = np.bincount(exits.numpy(), minlength=num_exits) / len(x)
    predicted = costs.full_network / average_cost(fractions, costs)
    single = x[:n_single]
    fractions_single = np.bincount(exits[:n_single].numpy(), minlength=num_exits) / len(single)
    predicted_single = costs.full_network / average_cost(fractions_single, costs)

    block_s, head_s = component_latency(model, x)
    cumulative_s = np.cumsum(block_s + head_s)
    latency_predicted = (block_s.sum() + head_s[-1]) / float(fractions_single @ cumulative_s)
    full_1 = _best_time(lambda: full_network_forward(model, single, batch_size=1), repeats)
    early_1 = _best_time(lambda: early_exit_forward(model, single, tau, batch_size=1), repeats)
    full_b = _best_time(lambda: full_network_forward(model, x, batch_size=large_batch), repeats)
    early_b = _best_time(lambda: early_exit_forward(model, x, tau, batch_size=large_batch), repeats)
    return {"exit_fractions": fractions.tolist(), "predicted_speedup": predicted,
            "predicted_speedup_bs1_subset": predicted_single,
            "bs1_full_ms": 1e3 * full_1 / len(single), "bs1_early_ms": 1e3 * early_1 / len(single),
            "bs1_speedup": full_1 / early_1, "bs1_ratio": (full_1 / early_1) / predicted_single,
            "block_us": (1e6 * block_s).tolist(), "head_us": (1e6 * head_s).tolist(),
            "flops_share_exit1": costs.cumulative[0] / costs.full_network,
            "latency_predicted_speedup_bs1": latency_predicted,
            "large_batch": large_batch, "batch_full_s": full_b, "batch_early_s": early_b,
            "batch_speedup": full_b / early_b, "batch_ratio": (full_b / early_b) / predicted}


def run(profile: str = "quick", method: str = "soft_cgt", tau: float = PAPER_TAU, datasets=tuple(BUILTIN),
        n_single: int = 1000, repeats: int = 3) -> dict:
    t_start = time.perf_counter()
    print(f"device: {device_description('cpu')}; policy max_softmax, tau = {tau}; method {method} ({profile} profile)")
    results = {}
    for ds in datasets:
        data = load_dataset(ds, profile)
        rec = load_finished(ds, profile, [method], seeds=[0])[0]
        r = benchmark(rec.run.model.cpu(), data.x["test"], tau, n_single=n_single, repeats=repeats)
        results[ds] = r
        print(f"{ds}: exits {np.round(100 * np.array(r['exit_fractions']), 1).tolist()} %; "
              f"FLOPs-predicted speed-up {r['predicted_speedup']:.2f}x")
        print(f"  batch 1:    full {r['bs1_full_ms']:.3f} ms/sample, early exit {r['bs1_early_ms']:.3f} ms/sample -> "
              f"{r['bs1_speedup']:.2f}x measured, {100 * r['bs1_ratio']:.0f}% of predicted "
              f"({r['predicted_speedup_bs1_subset']:.2f}x on these {n_single} samples; target >= 80%)")
        print(f"  where the time goes at batch 1: blocks {np.round(r['block_us'], 1).tolist()} us, heads "
              f"{np.round(r['head_us'], 1).tolist()} us; a latency model from these predicts "
              f"{r['latency_predicted_speedup_bs1']:.2f}x (FLOPs: {r['predicted_speedup_bs1_subset']:.2f}x)")
        print(f"  batch {r['large_batch']}: full {r['batch_full_s']:.3f} s, early exit {r['batch_early_s']:.3f} s -> "
              f"{r['batch_speedup']:.2f}x measured, {100 * r['batch_ratio']:.0f}% of predicted (target >= 60%)")
    # The artifact behind any benchmark figure quoted elsewhere (committed with the paper profile's figures).
    out = figures_dir(profile) / "bench.json"
    write_json_atomic(out, results)
    write_sidecar(out, params={"profile": profile, "method": method, "tau": tau, "n_single": n_single,
                               "repeats": repeats}, device="cpu", seed=0, wall_time_s=time.perf_counter() - t_start)
    print(f"written: {out}")
    return results
