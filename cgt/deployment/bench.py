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
  onnx_early_exit_segments    one ONNX Runtime call per exit segment (bound to preallocated arrays at batch
                              size 1), the graph's exit score compared with τ in Python between them
  onnx_chosen                 cgt.deployment.exported's `predict`: the pass its loader chose (calibrated on the
                              timed samples; `chosen` marks that pass's own row)
  onnx_full_1_thread          (at more than one thread) the plain network on the loader's one-thread sessions: a
                              thread count is a ceiling, and the loader may run any pass on one thread
  onnx_plan_<exits>           the per-segment pass of each exit plan that leaves exits out (cgt.deployment.plans,
                              e.g. onnx_plan_1+3: blocks 2-3 one segment); the plan chosen on validation is marked
Each record gives the measured speed-up over the full network *in the same engine*, the
FLOPs-predicted one (from the exit decisions on the timed samples), the one predicted by the time
model (cgt.deployment.timecost: the measured time of reaching each exit, same engine, batch size, threads
and samples, timed in the same rounds as the passes it predicts), their ratios, and the speed-up over the
fastest full-network engine at its thread count or fewer.
The engines of a row are timed in turn, round after round, so a load spike hits them alike. Both PyTorch
sides run the deployment copy (BatchNorm folded). Ratios from one run are comparable on a noisy
machine; absolute times are not. Results: bench.json (a list of records) and bench_components.json
(where the time goes: each ONNX Runtime segment's time against its FLOPs, and eager PyTorch's
per-block and per-head times at batch size 1) in the profile's figures folder; beside them
latency_curves.json: thresholds fitted on validation to latency budgets (the batch-1, 1-thread time model
above) and to FLOPs budgets, each scored on test by both (drawn by cgt.reporting.paper_figures.save_latency_figures).
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
from . import chooser, plans
from .timecost import ExitTimes, budget_curves, exit_times_from_prefixes, prefix_runs
from .timing import bootstrap_estimates, estimates, interleaved_chunk_times, interleaved_times, per_round, time_repeats

ENGINES = ("torch_full", "torch_all_exits_then_select", "torch_early_exit", "onnx_full", "onnx_early_exit_graph",
           "onnx_early_exit_segments", "onnx_chosen")
ONE_THREAD_FULL = "onnx_full_1_thread"
"""An extra row at more than one thread: the plain network on the loader's one-thread sessions, timed in the same
rounds. A thread count is a ceiling, so it is a full-network engine the chosen pass must beat there too."""
PASS_ENGINES = {"full": "onnx_full", "graph": "onnx_early_exit_graph", "segments": "onnx_early_exit_segments",
                "full@1": ONE_THREAD_FULL}
"""The engine row of each pass cgt.deployment.exported.load can choose (its one-thread early-exit passes,
'graph@1' and 'segments@1', have no row of their own at more than one thread: `onnx_chosen` times them)."""
FULL_ENGINES = ("torch_full", "onnx_full", ONE_THREAD_FULL)
TARGETS = {1: 0.85, 1024: 0.90}
"""Measured / FLOPs-predicted speed-up the best engine should reach, per batch size (an earlier round's targets)."""
CHOSEN_VS_BEST_FULL = 1.0
"""The loader's chosen pass against the fastest full-network engine, in every row (issue 26)."""
TIME_RATIO_TARGET = 0.9
"""Measured / time-model-predicted speed-up of the best early-exit engine at batch size 1 (issue 26)."""
FASHION_TARGET = ("fashion_mnist", 1, 1, 1.4)
"""Dataset, batch size, threads and the speed-up over ONNX Runtime full that early exit should reach there."""


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


TIME_MODEL_FULL = {"torch": "torch_full", "onnx": "onnx_full", "onnx_1_thread": ONE_THREAD_FULL}
"""Each time model's plain-network time: the engine row it predicts speed-ups over (an exit plan's: onnx_full)."""
PLAN_ENGINE = "onnx_plan_"
"""Rows 'onnx_plan_<plan>' (e.g. onnx_plan_1+3): the per-segment pass of an exit plan that leaves exits out
(cgt.deployment.plans), at the row's thread count; each is also the name of its time model's lane."""


def time_model_runs(model, onnx_model, xs: torch.Tensor, xs_np: np.ndarray,
                    plan_models: dict | None = None) -> dict[str, list[Callable]]:
    """Per time model, run(start, stop) per exit reaching it on those timed samples (segments 1..e back to
    back, cgt.deployment.timecost.prefix_runs): eager PyTorch ('torch': block e then head e, in inference
    mode per call as the torch rows), ONNX Runtime's segments at the row's thread count ('onnx': bound
    single-sample calls at batch 1), the loader's one-thread sessions ('onnx_1_thread') when it has
    them, and each exit plan's segments ('onnx_plan_<plan>', from `plan_models` {engine: loaded plan}).
    `latency_records` times them in the same rounds as the passes they predict."""
    from .exported import segment_calls

    def torch_segment(e):
        def run(h):
            h = model.blocks[e](h)
            return h, model.heads[e](h)
        return run

    out = {"torch": [torch.inference_mode()(run)
                     for run in prefix_runs([torch_segment(e) for e in range(model.num_exits)], xs)]}
    for name, lane in (("onnx", onnx_model), ("onnx_1_thread", onnx_model.one_thread)):
        if lane is not None:
            out[name] = prefix_runs(lane.segment_fns(), xs_np)
    for engine, plan_model in (plan_models or {}).items():
        out[engine] = prefix_runs(segment_calls(plan_model.plan_sessions), xs_np)
    return out


def named_prefixes(lanes: dict[str, list[Callable]]) -> dict[str, Callable]:
    """Several lanes' prefix runs (`time_model_runs`, cgt.deployment.timecost.prefix_runs) as one dict for
    interleaved_times, keyed '<lane>:<exit>' (1-based)."""
    return {f"{name}:{e + 1}": run for name, runs in lanes.items() for e, run in enumerate(runs)}


def lane_times(medians: dict[str, float], name: str, num_exits: int, full_s: float, engine: str, batch_size: int,
               threads: int = 1) -> ExitTimes:
    """The time model of one lane of `named_prefixes` from an interleaved run's medians (seconds per sample)."""
    return exit_times_from_prefixes([medians[f"{name}:{e + 1}"] for e in range(num_exits)], full_s, engine,
                                    batch_size, threads)


def time_models_from(medians: dict[str, float], lanes: dict[str, list], batch_size: int,
                     threads: int) -> dict[str, ExitTimes]:
    """The time models of `time_model_runs`' lanes from one interleaved run's medians: each lane's prefixes
    and its engine's plain-network row (`TIME_MODEL_FULL`)."""
    return {name: lane_times(medians, name, len(runs), medians[TIME_MODEL_FULL.get(name, "onnx_full")],
                             "torch" if name == "torch" else "onnx_segments", batch_size,
                             1 if name == "onnx_1_thread" else threads)
            for name, runs in lanes.items()}


def time_predicted_speedups(times: dict[str, ExitTimes], fractions: np.ndarray) -> dict[str, float]:
    """Per engine, the speed-up the time model predicts over the same engine's full network (ONNX Runtime's
    one-thread passes over ONNX Runtime full at the row's thread count, keyed by the loader's pass names)."""
    torch_t, onnx_t = times["torch"], times["onnx"]
    out = {"torch_full": 1.0, "torch_all_exits_then_select": torch_t.all_exits_speedup(),
           "torch_early_exit": torch_t.predicted_speedup(fractions), "onnx_full": 1.0,
           "onnx_early_exit_graph": onnx_t.predicted_speedup(fractions),
           "onnx_early_exit_segments": onnx_t.predicted_speedup(fractions)}
    one = times.get("onnx_1_thread")
    if one is not None:
        early = onnx_t.full_s / one.predicted_time(fractions)
        out |= {ONE_THREAD_FULL: onnx_t.full_s / one.full_s, "graph@1": early, "segments@1": early}
    return out


def plan_fields(timed_logits: torch.Tensor, val_logits: torch.Tensor, y_val: torch.Tensor, taus: list[float],
                times: dict[str, ExitTimes], costs: ExitCosts, plan_models: dict) -> dict[str, dict]:
    """Per engine row of an exit plan, what its record adds: 'val_plan', the plan's line of the choice made on
    validation (cgt.deployment.plans.choose_plan, from each plan's time model of this row's rounds and its
    validation exit mix and accuracy); and for the 'onnx_plan_<plan>' rows (`plan_models` {engine: the loaded
    plan}) their own exit fractions on the timed samples, FLOPs-predicted and time-predicted speed-ups. The
    all-exit plan's row is onnx_early_exit_segments and the plain network's (the last exit alone) onnx_full."""
    num_exits = timed_logits.shape[0]
    every, *_, plain = plans.all_plans(num_exits)
    engines = {every: "onnx_early_exit_segments", plain: "onnx_full"} | {
        plan_model.plan: engine for engine, plan_model in plan_models.items()}
    onnx = times["onnx"]
    plan_times = {plan: times[engine] for plan, engine in engines.items() if engine.startswith(PLAN_ENGINE)} | {
        every: onnx, plain: plans.plain_network_times(onnx.full_s, onnx.engine, onnx.batch_size, onnx.threads)}
    _, table = plans.choose_plan(val_logits, y_val, taus, plan_times)
    out = {}
    for row in table:
        plan = tuple(row["plan"])
        engine, fields = engines[plan], {"val_plan": row}
        if engine.startswith(PLAN_ENGINE):
            _, exit_index = plans.plan_exits(timed_logits, taus, plan)
            fractions = np.bincount(exit_index.numpy(), minlength=num_exits) / len(exit_index)
            kept, plan_cost = fractions[list(plan)], plans.plan_costs(costs, plan)
            fields |= {"plan": row["name"], "exit_fractions": fractions.tolist(),
                       "predicted_speedup": plan_cost.full_network / average_cost(kept, plan_cost),
                       "time_predicted_speedup": plan_times[plan].predicted_speedup(kept)}
        out[engine] = fields
    return out


def latency_records(model, x: torch.Tensor, tau: float, dataset: str = "", batch_sizes=(1, 1024),
                    threads=(1, None), repeats: int = 30, single_samples: int = 200,
                    val_logits: torch.Tensor | None = None, y_val: torch.Tensor | None = None) -> list[dict]:
    """The protocol on one model: a record per (engine, batch size, threads). Batch size 1 is timed
    over `single_samples` samples one at a time (time per sample); larger batches over one batch.
    Each record has the FLOPs-predicted and the time-model-predicted speed-up and the measured one;
    `chosen` marks the pass cgt.deployment.exported.load picks (calibrated here, on the timed samples),
    and the row 'onnx_chosen' times `predict` itself, the pass a user gets. With the model's validation
    logits and labels, every exit plan that leaves exits out is timed too ('onnx_plan_<plan>': its
    per-segment pass), and the plan chosen on validation is marked (`plan_fields`)."""
    from . import exported

    model = fuse_for_inference(model).cpu().eval()
    costs = exit_costs(model, tuple(x.shape[1:]))
    all_threads = torch.get_num_threads()
    with torch.inference_mode():
        num_classes = int(model(x[:1])[-1].shape[-1])
    records = []
    with tempfile.TemporaryDirectory() as folder:
        exported.export_model(model, tuple(x.shape[1:]), folder, {"bench": [tau] * (model.num_exits - 1)},
                              [str(k) for k in range(num_classes)])
        for n_threads in threads:
            n_threads = n_threads or all_threads
            torch.set_num_threads(n_threads)
            onnx_model = exported.load(folder, point="bench", threads=n_threads)
            onnx_model.calibrate(x[:max(batch_sizes)].numpy(), batch_sizes)  # what the loader would choose
            plan_models = {} if val_logits is None else {
                PLAN_ENGINE + plans.plan_name(plan): exported.load(folder, point="bench", threads=n_threads,
                                                                   choose="segments", exits=plans.plan_name(plan))
                for plan in plans.all_plans(model.num_exits)[1:-1]}  # neither every exit nor the plain network
            for batch_size in batch_sizes:
                xs = x[:single_samples] if batch_size == 1 else x[:batch_size]
                xs_np = np.ascontiguousarray(xs.numpy())
                exit_index = early_exit_forward(model, xs, tau, batch_size=max(batch_size, 2)).exit_index.numpy()
                fractions = np.bincount(exit_index, minlength=model.num_exits) / len(exit_index)
                chosen_pass = onnx_model.pass_for(batch_size)
                predicted = predicted_speedups(costs, exit_index)
                predicted[ONE_THREAD_FULL] = 1.0
                predicted["onnx_chosen"] = (1.0 if chooser.base_pass(chosen_pass) == "full"
                                            else predicted["onnx_early_exit_segments"])
                runs = {
                    "torch_full": lambda a, b: full_network_forward(model, xs[a:b], batch_size=batch_size),
                    "torch_all_exits_then_select": lambda a, b: _all_exits_then_select(model, xs[a:b], tau, batch_size),
                    "torch_early_exit": lambda a, b: early_exit_forward(model, xs[a:b], tau, batch_size=batch_size),
                    "onnx_full": lambda a, b: onnx_model.predict_full(xs_np[a:b], batch_size=batch_size),
                    "onnx_early_exit_graph": lambda a, b: onnx_model.predict_graph(xs_np[a:b], batch_size=batch_size),
                    "onnx_early_exit_segments": lambda a, b: onnx_model.predict_segments(xs_np[a:b], batch_size=batch_size),
                    "onnx_chosen": lambda a, b: onnx_model.predict(xs_np[a:b], batch_size=batch_size),
                }
                if onnx_model.one_thread is not None:
                    one_thread = onnx_model.one_thread
                    runs[ONE_THREAD_FULL] = lambda a, b: one_thread.predict_full(xs_np[a:b], batch_size=batch_size)
                for engine, plan_model in plan_models.items():
                    runs[engine] = lambda a, b, m=plan_model: m.predict_segments(xs_np[a:b], batch_size=batch_size)
                lanes = time_model_runs(model, onnx_model, xs, xs_np, plan_models)
                prefixes = named_prefixes(lanes)
                calls = interleaved_chunk_times(runs | prefixes, len(xs), batch_size, repeats)
                estimate, t = estimates(calls, len(xs)), per_round(calls, len(xs))
                replicates = bootstrap_estimates(calls, len(xs))  # the same rounds drawn for every run: paired
                medians = dict(zip(runs | prefixes, estimate))
                times = time_models_from(medians, lanes, batch_size, n_threads)
                time_predicted = time_predicted_speedups(times, fractions)
                time_predicted["onnx_chosen"] = time_predicted[PASS_ENGINES.get(chosen_pass, chosen_pass)]
                extra = {}
                if plan_models:
                    with torch.inference_mode():
                        timed_logits = model(xs)
                    extra = plan_fields(timed_logits, val_logits, y_val, [tau] * (model.num_exits - 1), times, costs,
                                        plan_models)
                    for engine in plan_models:
                        predicted[engine] = extra[engine].pop("predicted_speedup")
                        time_predicted[engine] = extra[engine].pop("time_predicted_speedup")
                # the time model is measured too: its prediction redrawn with each replicate's rounds
                predicted_replicates = [time_predicted_speedups(time_models_from(dict(zip(runs | prefixes, r)), lanes,
                                                                                 batch_size, n_threads), fractions)
                                        for r in replicates]
                best_full = min(medians[e] for e in FULL_ENGINES if e in medians)  # at this thread count or fewer
                for j, engine in enumerate(runs):
                    q1, q3 = np.percentile(t[:, j], [25, 75])
                    median = medians[engine]
                    reference = medians["onnx_full" if engine.startswith("onnx") else "torch_full"]
                    measured = reference / median
                    records.append({"dataset": dataset, "engine": engine, "batch_size": batch_size,
                                    "threads": n_threads, "samples": len(xs), "repeats": repeats,
                                    "median_us_per_sample": 1e6 * median, "iqr_us_per_sample": 1e6 * (q3 - q1),
                                    "bootstrap_us_per_sample": np.round(1e6 * replicates[:, j], 2).tolist(),
                                    "predicted_speedup": predicted[engine], "measured_speedup": measured,
                                    "ratio": measured / predicted[engine],
                                    "time_predicted_speedup": time_predicted[engine],
                                    "time_ratio": measured / time_predicted[engine],
                                    **({"bootstrap_time_predicted_speedup":
                                        [round(p[engine], 4) for p in predicted_replicates]}
                                       if engine == "onnx_early_exit_segments" else {}),
                                    "speedup_over_best_full": best_full / median,
                                    "chosen": engine == PASS_ENGINES.get(chosen_pass),
                                    **({"chosen_pass": chosen_pass} if engine == "onnx_chosen" else {}),
                                    "time_model": {k: v.to_dict() for k, v in times.items()  # a plan's lane: its row's
                                                   if not k.startswith(PLAN_ENGINE) or k == engine},
                                    "exit_fractions": fractions.tolist()} | extra.get(engine, {}))
    torch.set_num_threads(all_threads)
    return records


def where_time_goes(model, x: torch.Tensor, tau: float, batch_sizes=(1, 1024), repeats: int = 30,
                    single_samples: int = 200) -> list[dict]:
    """`onnx_segment_breakdown` at one thread for each batch size, with the segments that decide nothing
    beside the exported ones (batch 1: the first `single_samples` samples one at a time, as in `latency_records`)."""
    from . import exported

    model = fuse_for_inference(model).cpu().eval()
    costs = exit_costs(model, tuple(x.shape[1:]))
    undecided = undecided_segments(model, tuple(x.shape[1:]))
    out = []
    with tempfile.TemporaryDirectory() as folder:
        exported.export_model(model, tuple(x.shape[1:]), folder, {"bench": [tau] * (model.num_exits - 1)}, [])
        onnx_model = exported.load(folder, point="bench", threads=1)
        for batch_size in batch_sizes:
            timed = x[:single_samples] if batch_size == 1 else x[:batch_size]
            exit_index = early_exit_forward(model, timed, tau, batch_size=max(batch_size, 2)).exit_index.numpy()
            fractions = np.bincount(exit_index, minlength=model.num_exits) / len(exit_index)
            out.append(onnx_segment_breakdown(onnx_model, timed.numpy(), fractions, costs, repeats, batch_size,
                                              undecided))
    return out


def undecided_segments(model, input_shape: tuple[int, ...]) -> list:
    """One-thread ONNX Runtime sessions of each block and its head with no exit decision in the graph (the
    features and logits out; no score, no class) of a fused model: what a segment costs before any decision."""
    import onnxruntime as ort

    from .exported import session_options
    from .onnx_graphs import segment_graph

    sample, sessions = torch.zeros(1, *input_shape), []
    for block, head in zip(model.blocks, model.heads):
        graph = segment_graph(block, head, sample)  # no policy: no score; no class
        sessions.append(ort.InferenceSession(graph.SerializeToString(), session_options(1),
                                             providers=["CPUExecutionProvider"]))
        with torch.no_grad():
            sample = block(sample)
    return sessions


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
                           repeats: int = 30, batch_size: int | None = None, undecided: list | None = None) -> dict:
    """Where ONNX Runtime's time goes at this batch size (default: x as one batch): each segment graph's
    time on x (µs per sample; reaching exit e timed as segments 1..e back to back, cgt.deployment.timecost),
    its cumulative time as a share of the full network's next to its cumulative FLOPs share, and the
    speed-up those measured times predict for these exit fractions (no dispatch between the segments
    counted): if it is far below the FLOPs-predicted one, the FLOPs model is what fails (costs not
    proportional to FLOPs), not the early-exit machinery. With `undecided` (`undecided_segments`), the same
    for segments that decide nothing, timed in the same rounds: the ceiling of any exit decision, even a
    free one. Every time is a median over `repeats` interleaved rounds."""
    from .exported import segment_calls

    x = np.ascontiguousarray(x, dtype=np.float32)
    batch_size = batch_size or len(x)
    lanes = {"decided": onnx_model.segment_fns()} | ({"undecided": segment_calls(undecided)} if undecided else {})
    runs = {"full": lambda a, b: onnx_model.predict_full(x[a:b], batch_size=batch_size)} | named_prefixes(
        {name: prefix_runs(segments, x) for name, segments in lanes.items()})
    estimate, _ = interleaved_times(runs, len(x), batch_size, repeats)
    medians = dict(zip(runs, estimate))
    times = {name: lane_times(medians, name, len(segments), medians["full"], "onnx_segments", batch_size)
             for name, segments in lanes.items()}
    decided = times["decided"]
    out = {"batch_size": batch_size, "segment_us": [1e6 * s for s in decided.segment_s], "full_us": 1e6 * decided.full_s,
           "cumulative_time_share": decided.relative.tolist(), "cumulative_flops_share": costs.relative.tolist(),
           "exit_fractions": np.asarray(exit_fractions).tolist(),
           "time_predicted_speedup": decided.predicted_speedup(exit_fractions),
           "flops_predicted_speedup": costs.full_network / average_cost(exit_fractions, costs)}
    if "undecided" in times:
        out |= {"undecided_segment_us": [1e6 * s for s in times["undecided"].segment_s],
                "undecided_time_predicted_speedup": times["undecided"].predicted_speedup(exit_fractions)}
    return out


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


def latency_targets(records: list[dict]) -> list[dict]:
    """Issue 26's targets, each row a check: the loader's chosen pass ≥ the fastest full-network engine
    in every (dataset, batch size, threads) row; at batch size 1 the per-segment ONNX Runtime pass (the
    one the time model describes) measures ≥ 90 % of its time-model prediction; Fashion-MNIST at batch 1
    and 1 thread, the chosen pass is ≥ 1.4× ONNX Runtime full. A value is a ratio of medians from one run
    and is met when ≥ its goal. Beside it, where the records hold bootstrap replicates (`latency_records`),
    a 95 % interval of the ratio, paired by round: `decided` is False when the interval holds the goal, so
    this run cannot tell met from not met."""
    out = []
    groups = dict.fromkeys((r["dataset"], r["batch_size"], r["threads"]) for r in records)
    for ds, batch_size, threads in groups:
        rows = {r["engine"]: r for r in records if (r["dataset"], r["batch_size"], r["threads"]) == (ds, batch_size, threads)}
        where = {"dataset": ds, "batch_size": batch_size, "threads": threads}
        if "onnx_chosen" in rows:
            chosen = rows["onnx_chosen"]
            best = min((rows[e] for e in FULL_ENGINES if e in rows), key=lambda r: r["median_us_per_sample"], default=None)
            out.append(where | {"target": "chosen pass / best full network", "engine": chosen.get("chosen_pass"),
                                "value": chosen["speedup_over_best_full"], "goal": CHOSEN_VS_BEST_FULL,
                                **_interval(best, chosen)})
            if (ds, batch_size, threads) == FASHION_TARGET[:3]:
                out.append(where | {"target": "chosen pass / ONNX Runtime full", "engine": chosen.get("chosen_pass"),
                                    "value": chosen["measured_speedup"], "goal": FASHION_TARGET[3],
                                    **_interval(rows.get("onnx_full"), chosen)})
                planned = next((r for r in rows.values() if r.get("val_plan", {}).get("chosen")), None)
                if planned is not None:  # the exits kept chosen on validation (cgt.deployment.plans), its segments pass
                    out.append(where | {"target": "exit plan chosen on validation / ONNX Runtime full",
                                        "engine": f"{planned['engine']} (exits {planned['val_plan']['name']})",
                                        "value": planned["measured_speedup"], "goal": FASHION_TARGET[3],
                                        **_interval(rows.get("onnx_full"), planned)})
        segments = rows.get("onnx_early_exit_segments")  # the pass the time model describes: a call per segment
        if batch_size == 1 and segments and "time_ratio" in segments:
            out.append(where | {"target": "measured / time-predicted", "engine": segments["engine"],
                                "value": segments["time_ratio"], "goal": TIME_RATIO_TARGET,
                                **_interval(rows.get("onnx_full"), segments, 1.0 / np.asarray(
                                    segments.get("bootstrap_time_predicted_speedup", segments["time_predicted_speedup"])))})
    for t in out:
        t["met"] = t["value"] >= t["goal"]
        if "interval" in t:
            t["decided"] = not t["interval"][0] <= t["goal"] <= t["interval"][1]
    return out


def _interval(reference: dict | None, row: dict, scale: float | np.ndarray = 1.0) -> dict:
    """{'interval': [2.5 %, 97.5 %]} of scale × reference's time / row's time over their bootstrap replicates
    (drawn on the same rounds: paired; `scale` per replicate too where it was measured, e.g. one over the time
    model's prediction from the same replicate's rounds); {} when the records hold no replicates."""
    if not reference or "bootstrap_us_per_sample" not in reference or "bootstrap_us_per_sample" not in row:
        return {}
    ratios = scale * np.asarray(reference["bootstrap_us_per_sample"]) / np.asarray(row["bootstrap_us_per_sample"])
    return {"interval": np.percentile(ratios, [2.5, 97.5]).tolist()}


def single_sample_overhead(onnx_model, x: np.ndarray, calls: int = 3000) -> list[dict]:
    """Per-call overhead at batch size 1, each step timed before and after in one interleaved run
    (median µs of `calls`): a session call with a feed dict and returned arrays (before) against a call
    bound once to preallocated arrays (IOBinding, after); the exit decision on the logits as Python
    floats (before) against the graph's own score compared with τ (after); and the whole
    single-sample early-exit pass, the unbound one (before) against `predict_segments` (after)."""
    from ..policy import accepts_row

    sample = np.ascontiguousarray(x[:1], dtype=np.float32)
    session = onnx_model.sessions[0]
    bound_segment = onnx_model.segment_fns()[0]
    logits = session.run(["logits"], {"features": sample})[0]
    score = session.run(["score"], {"features": sample})[0]
    tau, policy, last = onnx_model.thresholds[0], onnx_model.policy, len(onnx_model.sessions) - 1
    ge = policy == "max_softmax"

    def unbound_pass():  # the single-sample path before (one session.run per segment, decisions on lists)
        h = sample
        for e, s in enumerate(onnx_model.sessions):
            h, lg = s.run(["features_out", "logits"], {"features": h})
            row = lg[0].tolist()
            if e == last or accepts_row(row, onnx_model.thresholds[e], policy):
                return max(range(len(row)), key=row.__getitem__), e

    steps = {
        "segment 1 call": (lambda: session.run(None, {"features": sample}), lambda: bound_segment(sample)),
        "full network call": (lambda: onnx_model.full_session.run(None, {"features": sample}),
                              lambda: onnx_model.predict_full(sample, batch_size=1)),
        "exit decision": (lambda: accepts_row(logits[0].tolist(), tau, policy),
                          lambda: (score[0] >= tau) if ge else (score[0] <= tau)),
        "single-sample early-exit pass": (unbound_pass, lambda: onnx_model.predict_segments(sample, batch_size=1)),
    }
    out = []
    for step, (before, after) in steps.items():
        t, _ = interleaved_times({"before": lambda a, b: before(), "after": lambda a, b: after()}, 1, 1, calls, warmup=50)
        out.append({"step": step, "before_us": 1e6 * t[0], "after_us": 1e6 * t[1], "after_over_before": t[1] / t[0]})
    empty = _empty_call(sample)
    floor, _ = interleaved_times({"call": lambda a, b: empty()}, 1, 1, calls, warmup=50)
    out.append({"step": "one bound call of an empty graph (the floor per session call)", "before_us": 1e6 * floor[0],
                "after_us": 1e6 * floor[0], "after_over_before": 1.0})
    return out


def _empty_call(sample: np.ndarray) -> Callable[[], object]:
    """A bound call of a one-node graph (Identity) on a sample: what every session call costs before any compute."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from .exported import _Bound
    from .onnx_graphs import IR_VERSION, OPSET

    shape = list(sample.shape)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return _Bound(session, {"x": sample.copy()}, {"y": np.zeros_like(sample)}).run


def with_threads(n: int, fn: Callable[[], object]) -> object:
    """fn() with torch at n intra-op threads, the previous count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def overhead_of(model, x: torch.Tensor, calls: int = 3000) -> list[dict]:
    """`single_sample_overhead` of this model's export at the paper's τ, loaded with one thread."""
    from . import exported

    model = fuse_for_inference(model).cpu().eval()
    with tempfile.TemporaryDirectory() as folder:
        exported.export_model(model, tuple(x.shape[1:]), folder, {"t": [PAPER_TAU] * (model.num_exits - 1)}, [])
        return single_sample_overhead(exported.load(folder, point="t", threads=1, choose="segments"),
                                      x.numpy(), calls)


def latency_budget_curves(timed, records: list[dict], dataset: str) -> dict:
    """cgt.deployment.timecost.budget_curves of a timed run (an EvaluatedRun: its cached logits, its FLOPs)
    on the time model of ONNX Runtime's segments at batch 1 and 1 thread, as timed in `latency_records`'
    rounds: thresholds fitted on validation to a latency budget and to a FLOPs budget, scored on test."""
    row = next(r for r in records if (r["dataset"], r["engine"], r["batch_size"], r["threads"])
               == (dataset, "onnx_early_exit_segments", 1, 1))
    logits = timed.run.logits
    curves = budget_curves(logits["val"], logits["y_val"], logits["test"], logits["y_test"],
                           ExitTimes.from_dict(row["time_model"]["onnx"]), timed.costs, device_description("cpu"))
    return curves | {"split": timed.run.config["data_params"].get("split", "random"), "method": timed.method,
                     "seed": timed.seed}


def subset_suffix(datasets) -> str:
    """'' for every built-in dataset, else '_<dataset>...': what a partial run's file names carry."""
    return "" if set(datasets) == set(BUILTIN) else "_" + "_".join(datasets)


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
    subset = subset_suffix(datasets)  # a partial run never replaces bench.json
    out = figures_dir(profile) / f"bench{subset}.json"
    timed = {ds: load_finished(ds, profile, [method], seeds=[0])[0] for ds in datasets}  # loaded once
    key = inputs_key({ds: t.run.run_dir for ds, t in timed.items()}, method, tau, repeats, single_samples)
    sidecar = out.with_name(out.name + ".provenance.json")
    curves_path = out.with_name(f"latency_curves{subset}.json")
    if not force and out.exists() and curves_path.exists() and sidecar.exists() \
            and read_json(sidecar)["params"].get("inputs") == key:
        print(f"{out}: measured with the same code, models, settings and machine (inputs {key}); not measured "
              f"again (--force to measure anyway)")
        return read_json(out)
    t_start = time.perf_counter()
    print(f"device: {device_description('cpu')}; policy max_softmax, tau = {tau}; method {method} ({profile} profile); "
          f"median [IQR] of {repeats} repeats after warm-up")
    records, components = [], {}
    for ds in datasets:
        data = load_dataset(ds, profile)
        model = timed[ds].run.model
        logits = timed[ds].run.logits  # validation's, to choose the exit plan on
        recs = latency_records(model, data.x["test"], tau, ds, repeats=repeats, single_samples=single_samples,
                               val_logits=logits["val"], y_val=logits["y_val"])
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
        with_threads(1, lambda: components[ds].__setitem__("single_sample_overhead", overhead_of(model, data.x["test"])))
        for step in components[ds]["single_sample_overhead"]:
            print(f"{ds:14s} per-call overhead, batch 1, 1 thread, {step['step']:30s}: before {step['before_us']:6.1f} us, "
                  f"after {step['after_us']:6.1f} us ({step['after_over_before']:.2f}x the time)")
        for r in recs:
            print(f"{ds:14s} {r['engine']:28s} batch {r['batch_size']:5d} threads {r['threads']}: "
                  f"{r['median_us_per_sample']:8.1f} us/sample [IQR {r['iqr_us_per_sample']:.1f}]  measured "
                  f"{r['measured_speedup']:.2f}x; predicted by FLOPs {r['predicted_speedup']:.2f}x "
                  f"({100 * r['ratio']:.0f} %), by the time model {r['time_predicted_speedup']:.2f}x "
                  f"({100 * r['time_ratio']:.0f} %); over the best full network {r['speedup_over_best_full']:.2f}x"
                  + ("  <- chosen by load()" if r["chosen"] else "")
                  + (f"  <- exits {r['val_plan']['name']}, the plan chosen on validation"
                     if r.get("val_plan", {}).get("chosen") else "")
                  + (f"  (runs {r['chosen_pass']})" if "chosen_pass" in r else ""))
    for t in target_check(records):
        print(f"{t['dataset']} batch {t['batch_size']}: best {t['best_engine']} ({t['best_threads']} threads) reaches "
              f"{100 * t['best_ratio']:.0f} % of the FLOPs prediction (earlier target {100 * t['target_ratio']:.0f} %): "
              f"{'met' if t['met'] else 'not met'}")
    targets = latency_targets(records)
    for t in targets:
        print(f"target {t['target']:34s} {t['dataset']:14s} batch {t['batch_size']:5d} threads {t['threads']}: "
              f"{t['value']:.2f} ({t['engine']}), goal >= {t['goal']:.2f}: {'met' if t['met'] else 'NOT MET'}"
              + (f" [95 % {t['interval'][0]:.2f}-{t['interval'][1]:.2f}]"
                 + ("" if t["decided"] else ", this run cannot tell") if "interval" in t else ""))
    print(f"{sum(t['met'] for t in targets)} of {len(targets)} targets met")
    curves = {ds: latency_budget_curves(timed[ds], records, ds) for ds in datasets}
    for ds, c in curves.items():
        for fit in ("time_fitted", "flops_fitted"):
            f = c[fit]
            print(f"{ds:14s} thresholds {fit.replace('_', ' ')} on validation: test accuracy "
                  f"{' / '.join(f'{100 * a:.1f}' for a in f['test_accuracy'])} % at predicted "
                  f"{' / '.join(f'{u:.1f}' for u in f['test_predicted_us'])} us per sample")
    params = {"profile": profile, "method": method, "tau": tau, "repeats": repeats, "single_samples": single_samples,
              "inputs": key}
    write_json_atomic(out, records)  # committed with the paper profile's figures
    write_json_atomic(out.with_name(f"bench_components{subset}.json"), components)
    write_json_atomic(curves_path, curves)
    for path in (out, out.with_name(f"bench_components{subset}.json"), curves_path):
        write_sidecar(path, params=params, device="cpu", seed=0, wall_time_s=time.perf_counter() - t_start)
    print(f"written: {out}")
    return records
