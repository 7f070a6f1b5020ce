"""Does early exit pay off in wall-clock time, not only in FLOPs? A latency protocol.

    python -m cgt bench [--profile quick] [--method soft_cgt] [--tau 0.9] [--repeats 30]

For each dataset's trained model (seed 0 of a finished run of the profile), in one run on this
machine, at 1 thread and at all threads, at batch size 1 and 1,024, after a warm-up, the median and
interquartile range over `repeats` timings of:
  torch_full                  the plain network (every block, the last head) in eager PyTorch
  torch_all_exits_then_select every exit computed, then the policy applied (how the authors time it:
                              it cannot be faster than the plain network, whatever the exits decide)
  torch_early_exit            cgt.inference.early_exit_forward: deeper blocks only for undecided samples
  onnx_full                   the plain network as one ONNX Runtime graph (cgt.deployment.exported's full.onnx)
  onnx_early_exit_graph       the whole early-exit pass as one ONNX Runtime graph (early_exit.onnx)
  onnx_early_exit_segments    one ONNX Runtime call per exit segment, decisions in Python between them
                              (cgt.deployment.exported's `predict` takes this path for single samples, the graph for batches)
Each record gives the measured speed-up over the full network *in the same engine*, the
FLOPs-predicted one (from the exit decisions on the timed samples) and their ratio. Both PyTorch
sides run the deployment copy (BatchNorm folded). Ratios from one run are comparable on a noisy
machine; absolute times are not. Results: bench.json (a list of records) and bench_components.json
(where the time goes: each ONNX Runtime segment's time against its FLOPs, and eager PyTorch's
per-block and per-head times at batch size 1) in the profile's figures folder.
"""
from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from ..cost import ExitCosts, average_cost, exit_costs
from ..data import BUILTIN
from ..experiments.paths import figures_dir
from ..experiments.provenance import device_description, write_sidecar
from ..experiments.train_evaluate import load_dataset, load_finished
from ..fileio import read_json, sha256_bytes, write_json_atomic
from ..inference import early_exit_forward, exits_from_logits, full_network_forward, fuse_for_inference
from ..policy import PAPER_TAU

ENGINES = ("torch_full", "torch_all_exits_then_select", "torch_early_exit", "onnx_full", "onnx_early_exit_graph",
           "onnx_early_exit_segments")
TARGETS = {1: 0.85, 1024: 0.90}
"""Measured / FLOPs-predicted speed-up the best engine should reach, per batch size (issue targets)."""


def time_repeats(fn: Callable[[], object], repeats: int, warmup: int = 3) -> np.ndarray:
    """Seconds of each of `repeats` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def predicted_speedups(costs: ExitCosts, exit_index: np.ndarray) -> dict[str, float]:
    """FLOPs-predicted speed-up over the full network, per engine, for these exit decisions."""
    fractions = np.bincount(exit_index, minlength=len(costs.block_flops)) / len(exit_index)
    early = costs.full_network / average_cost(fractions, costs)
    all_exits = costs.full_network / float(sum(costs.block_flops) + sum(costs.head_flops))
    return {"torch_full": 1.0, "torch_all_exits_then_select": all_exits, "torch_early_exit": early,
            "onnx_full": 1.0, "onnx_early_exit_graph": early, "onnx_early_exit_segments": early}


@torch.inference_mode()
def _all_exits_then_select(model, x: torch.Tensor, tau: float, batch_size: int) -> torch.Tensor:
    preds = []
    for i in range(0, len(x), batch_size):
        preds.append(exits_from_logits(model(x[i:i + batch_size]), tau)[0])
    return torch.cat(preds)


def latency_records(model, x: torch.Tensor, tau: float, dataset: str = "", batch_sizes=(1, 1024),
                    threads=(1, None), repeats: int = 30, single_samples: int = 200) -> list[dict]:
    """The protocol on one model: a record per (engine, batch size, threads). Batch size 1 is timed
    over `single_samples` samples one at a time (time per sample); larger batches over one batch."""
    from . import exported

    model = fuse_for_inference(model).cpu().eval()
    costs = exit_costs(model, tuple(x.shape[1:]))
    all_threads = torch.get_num_threads()
    with torch.inference_mode():
        num_classes = int(model(x[:1]).shape[-1])
    records = []
    with tempfile.TemporaryDirectory() as folder:
        exported.export_model(model, tuple(x.shape[1:]), folder, {"bench": [tau] * (model.num_exits - 1)},
                            [str(k) for k in range(num_classes)])
        for n_threads in threads:
            n_threads = n_threads or all_threads
            torch.set_num_threads(n_threads)
            onnx_model = exported.load(folder, point="bench", threads=n_threads)
            for batch_size in batch_sizes:
                xs = x[:single_samples] if batch_size == 1 else x[:batch_size]
                xs_np = xs.numpy()
                exit_index = early_exit_forward(model, xs, tau, batch_size=max(batch_size, 2)).exit_index.numpy()
                predicted = predicted_speedups(costs, exit_index)
                runs = {
                    "torch_full": lambda: full_network_forward(model, xs, batch_size=batch_size),
                    "torch_all_exits_then_select": lambda: _all_exits_then_select(model, xs, tau, batch_size),
                    "torch_early_exit": lambda: early_exit_forward(model, xs, tau, batch_size=batch_size),
                    "onnx_full": lambda: onnx_model.predict_full(xs_np, batch_size=batch_size),
                    "onnx_early_exit_graph": lambda: onnx_model.predict_graph(xs_np, batch_size=batch_size),
                    "onnx_early_exit_segments": lambda: onnx_model.predict_segments(xs_np, batch_size=batch_size),
                }
                medians = {}
                for engine, fn in runs.items():
                    t = time_repeats(fn, repeats) / len(xs)  # seconds per sample
                    q1, median, q3 = np.percentile(t, [25, 50, 75])
                    medians[engine] = median
                    reference = medians["onnx_full" if engine.startswith("onnx") else "torch_full"]
                    measured = reference / median
                    records.append({"dataset": dataset, "engine": engine, "batch_size": batch_size,
                                    "threads": n_threads, "samples": len(xs), "repeats": repeats,
                                    "median_us_per_sample": 1e6 * median, "iqr_us_per_sample": 1e6 * (q3 - q1),
                                    "predicted_speedup": predicted[engine], "measured_speedup": measured,
                                    "ratio": measured / predicted[engine],
                                    "exit_fractions": (np.bincount(exit_index, minlength=model.num_exits)
                                                       / len(exit_index)).tolist()})
    torch.set_num_threads(all_threads)
    return records


def where_time_goes(model, x: torch.Tensor, tau: float, batch_sizes=(1, 1024), repeats: int = 30,
                    single_samples: int = 200) -> list[dict]:
    """`onnx_segment_breakdown` at one thread for each batch size (batch 1: the first sample timed, the
    exit fractions of the first `single_samples` samples, as in `latency_records`)."""
    from . import exported

    model = fuse_for_inference(model).cpu().eval()
    costs = exit_costs(model, tuple(x.shape[1:]))
    out = []
    with tempfile.TemporaryDirectory() as folder:
        exported.export_model(model, tuple(x.shape[1:]), folder, {"bench": [tau] * (model.num_exits - 1)}, [])
        onnx_model = exported.load(folder, point="bench", threads=1)
        for batch_size in batch_sizes:
            decided = x[:single_samples] if batch_size == 1 else x[:batch_size]
            exit_index = early_exit_forward(model, decided, tau, batch_size=max(batch_size, 2)).exit_index.numpy()
            fractions = np.bincount(exit_index, minlength=model.num_exits) / len(exit_index)
            out.append(onnx_segment_breakdown(onnx_model, x[:batch_size].numpy(), fractions, costs, repeats))
    return out


@torch.inference_mode()
def component_latency(model, sample: torch.Tensor, calls: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per call of each block and each head at batch size 1 in eager PyTorch: where the time goes.
    On a small model per-operator overhead makes these far from proportional to FLOPs."""
    def per_call(fn) -> float:
        return float(np.median(time_repeats(fn, calls, warmup=50)))

    blocks, heads, h = [], [], sample[:1]
    for block, head in zip(model.blocks, model.heads):
        blocks.append(per_call(lambda: block(h)))
        h = block(h)
        heads.append(per_call(lambda: head(h)))
    return np.array(blocks), np.array(heads)


def onnx_segment_breakdown(onnx_model, x: np.ndarray, exit_fractions: np.ndarray, costs: ExitCosts,
                           repeats: int = 30) -> dict:
    """Where ONNX Runtime's time goes at this batch size: each segment graph timed alone on x (µs per
    sample), its cumulative time as a share of the full network's next to its cumulative FLOPs share,
    and the speed-up those measured times predict for these exit fractions (no dispatch between the
    segments counted): if it is far below the FLOPs-predicted one, the FLOPs model is what fails
    (costs not proportional to FLOPs), not the early-exit machinery."""
    calls = repeats * (100 if len(x) == 1 else 1)  # a single-sample call takes microseconds

    def per_sample(session, h) -> float:
        return float(np.median(time_repeats(lambda: session.run(None, {"features": h}), calls))) / len(x)

    segment_s, h = [], np.ascontiguousarray(x, dtype=np.float32)
    for session in onnx_model.sessions:
        segment_s.append(per_sample(session, h))
        h = session.run(None, {"features": h})[0]
    full_s = per_sample(onnx_model.full_session, np.ascontiguousarray(x, dtype=np.float32))
    cumulative = np.cumsum(segment_s)
    return {"batch_size": len(x), "segment_us": (1e6 * np.array(segment_s)).tolist(), "full_us": 1e6 * full_s,
            "cumulative_time_share": (cumulative / full_s).tolist(), "cumulative_flops_share": costs.relative.tolist(),
            "exit_fractions": np.asarray(exit_fractions).tolist(),
            "time_predicted_speedup": full_s / float(np.dot(exit_fractions, cumulative)),
            "flops_predicted_speedup": costs.full_network / average_cost(exit_fractions, costs)}


def target_check(records: list[dict]) -> list[dict]:
    """Per (dataset, batch size): the best early-exit engine's ratio against the target, and whether
    any early-exit row is slower than its engine's full network."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in records):
        for batch_size, target in TARGETS.items():
            rows = [r for r in records if r["dataset"] == ds and r["batch_size"] == batch_size
                    and r["engine"].endswith("early_exit")]
            if not rows:
                continue
            best = max(rows, key=lambda r: r["ratio"])
            out.append({"dataset": ds, "batch_size": batch_size, "target_ratio": target, "best_engine": best["engine"],
                        "best_threads": best["threads"], "best_ratio": best["ratio"], "met": best["ratio"] >= target,
                        "early_exit_slower_anywhere": any(r["measured_speedup"] < 1.0 for r in rows)})
    return out


def inputs_key(run_dirs: dict, method: str, tau: float, repeats: int, single_samples: int) -> str:
    """What a benchmark result depends on: the package code, the timed runs (their complete.json), the
    settings and this machine. Equal keys: the recorded result stands and nothing is measured again."""
    from ..pipeline.stepcache import package_version, run_state

    runs = {ds: run_state(path) for ds, path in run_dirs.items()}
    return sha256_bytes(json.dumps([package_version(), runs, method, tau, repeats, single_samples,
                                    device_description("cpu")], sort_keys=True).encode())[:16]


def run(profile: str = "quick", method: str = "soft_cgt", tau: float = PAPER_TAU, datasets=tuple(BUILTIN),
        repeats: int = 30, single_samples: int = 200, force: bool = False) -> list[dict]:
    """The protocol on each dataset's model; skipped (the recorded records returned) when bench.json
    was measured with the same inputs (`inputs_key`), unless `force`."""
    out = figures_dir(profile) / "bench.json"
    timed = {ds: load_finished(ds, profile, [method], seeds=[0])[0].run for ds in datasets}  # loaded once
    key = inputs_key({ds: run.run_dir for ds, run in timed.items()}, method, tau, repeats, single_samples)
    sidecar = out.with_name(out.name + ".provenance.json")
    if not force and out.exists() and sidecar.exists() and read_json(sidecar)["params"].get("inputs") == key:
        print(f"{out}: measured with the same code, models, settings and machine (inputs {key}); not measured "
              f"again (--force to measure anyway)")
        return read_json(out)
    t_start = time.perf_counter()
    print(f"device: {device_description('cpu')}; policy max_softmax, tau = {tau}; method {method} ({profile} profile); "
          f"median [IQR] of {repeats} repeats after warm-up")
    records, components = [], {}
    for ds in datasets:
        data = load_dataset(ds, profile)
        model = timed[ds].model
        recs = latency_records(model, data.x["test"], tau, ds, repeats=repeats, single_samples=single_samples)
        records += recs
        block_s, head_s = component_latency(fuse_for_inference(model), data.x["test"])
        components[ds] = {"torch_block_us": (1e6 * block_s).tolist(), "torch_head_us": (1e6 * head_s).tolist(),
                          "flops_share": (exit_costs(model, data.input_shape).relative).tolist(),
                          "onnx_segments": where_time_goes(model, data.x["test"], tau, repeats=repeats,
                                                           single_samples=single_samples)}
        for b in components[ds]["onnx_segments"]:
            print(f"{ds:14s} onnx segments, batch {b['batch_size']:5d}: "
                  f"{' / '.join(f'{v:.1f}' for v in b['segment_us'])} us/sample (full {b['full_us']:.1f}); "
                  f"cumulative time share {' / '.join(f'{v:.2f}' for v in b['cumulative_time_share'])} vs FLOPs "
                  f"{' / '.join(f'{v:.2f}' for v in b['cumulative_flops_share'])}; speed-up predicted by these "
                  f"times {b['time_predicted_speedup']:.2f}x, by FLOPs {b['flops_predicted_speedup']:.2f}x")
        for r in recs:
            print(f"{ds:14s} {r['engine']:28s} batch {r['batch_size']:5d} threads {r['threads']}: "
                  f"{r['median_us_per_sample']:8.1f} us/sample [IQR {r['iqr_us_per_sample']:.1f}]  speed-up "
                  f"{r['measured_speedup']:.2f}x of predicted {r['predicted_speedup']:.2f}x ({100 * r['ratio']:.0f} %)")
    for t in target_check(records):
        print(f"{t['dataset']} batch {t['batch_size']}: best {t['best_engine']} ({t['best_threads']} threads) reaches "
              f"{100 * t['best_ratio']:.0f} % of the FLOPs prediction (target {100 * t['target_ratio']:.0f} %): "
              f"{'met' if t['met'] else 'not met'}")
    write_json_atomic(out, records)  # committed with the paper profile's figures
    write_json_atomic(out.with_name("bench_components.json"), components)
    for path in (out, out.with_name("bench_components.json")):
        write_sidecar(path, params={"profile": profile, "method": method, "tau": tau, "repeats": repeats,
                                    "single_samples": single_samples, "inputs": key}, device="cpu", seed=0,
                      wall_time_s=time.perf_counter() - t_start)
    print(f"written: {out}")
    return records
