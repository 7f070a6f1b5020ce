"""Deployment: a finished run exported to ONNX, and early exit with ONNX Runtime.

    python -m cgt export --run runs/paper/indian_pines/soft_cgt/seed0-<key> [--out DIR] [--latency-budget-us 30 40]
    model = cgt.deployment.exported.load(DIR, digest="<printed by export>")   # every file verified
    predictions, exit_index = model.predict(x)     # x: (N, C, H, W) float32; batch 1 or batched
    model = cgt.deployment.exported.load(DIR, exits="1+3")   # an exit plan: exit 2 left out
    print(model.description)                       # which pass it runs, per batch size, and why

An export folder holds (graphs written by cgt.deployment.onnx_graphs, BatchNorm folded):
  early_exit.onnx   the whole early-exit pass in one graph: thresholds in, predictions and exit
                    indices out (no Python between the exits)
  segment<e>.onnx   exit segment e alone: block e and head e, features after block e − 1 in; features
                    after block e, the logits of exit e, the policy's score and the predicted class out;
                    for other runtimes, for reading every exit's logits, and for the per-segment pass
  segment<a>-<b>.onnx  blocks a..b and head b as one segment (outputs as segment<b>.onnx): the per-segment
                    pass of an exit plan that leaves out exits a..b − 1 (cgt.deployment.plans)
  full.onnx         the plain network (every block, the last head; logits and predicted class out): the
                    latency reference
  calibration.npz   validation inputs the loader times the passes on (optional)
  latency.json      the time models measured at export (every exit plan's), the accuracy-vs-latency curve, and
                    per operating point the exit plan chosen on validation (optional)
  manifest.json     the policy, every operating point's thresholds (fitted on validation), class names,
                    shapes, the sha256 of every other file, and its own checksum; optionally a learned
                    exit policy (cgt.learned_policy): its per-exit coefficients and its learned_budget_* points
A sample runs segment e + 1 only if exit e did not take it, exactly as
cgt.inference.early_exit_forward does in PyTorch; the decision is cgt.policy's rule, or for a learned
point the learned score of cgt.learned_policy (computed in Python from the segment's logits and the
earlier exits' predictions — the one-graph pass scores max-softmax or entropy inside the graph, so a
learned point runs by segments, or by the plain network when that is faster).

Verification: `load` refuses an export whose manifest does not match its own checksum or any file its
recorded sha256; the sha256 of manifest.json is therefore a digest of the whole export
(`export_digest`), printed by `python -m cgt export` and pinned by `load(DIR, digest=...)`.

Which pass: `load` times the three passes (one graph, segments, plain network) on the calibration
samples at batch size 1 and in batches and runs, per batch size, the fastest (cgt.deployment.chooser;
ties go to the plain network, so it is never slower than running no early exit at all). Allowed more
than one thread, it times each pass on one thread too and may run it there: at batch size 1 a call on
these networks takes microseconds, and waking a second thread costs about as much as it saves.
"""
from __future__ import annotations

import functools
import itertools
import json
import operator
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..fileio import save_npz_atomic, sha256_bytes, sha256_file, write_bytes_atomic, write_json_atomic
from ..inference import fuse_for_inference
from ..learned_policy import LearnedPolicy
from ..models import EarlyExitNet
from ..policy import check_policy, check_thresholds, passes
from . import chooser, plans
from .onnx_graphs import OPSET, ExportError, early_exit_graph, segment_graph

FORMAT = "cgt-early-exit-onnx/5"
"""/3: every file hashed, the manifest's own checksum, score outputs, calibration; /4: a learned exit policy
(a /3 reader would take a learned point's thresholds for max-softmax ones, so the format says it changed);
/5: merged segments for exit plans (a /4 export has none, so `load(..., exits=...)` could not run on it)."""
MANIFEST = "manifest.json"
CALIBRATION = "calibration.npz"
LATENCY = "latency.json"
CALIBRATION_SAMPLES = 256
"""Validation inputs stored for the loader's timing of the passes (enough for a stable exit mix, small on disk)."""


# ---------------------------------------------------------------- reading what an export or run holds
def read_json_named(path: str | Path, remedy: str) -> Any:
    """JSON from `path`; a missing or unparsable file raises ExportError naming it and what to do."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path} does not exist: {remedy}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path} is not valid JSON ({e}): {remedy}") from None


def _manifest_checksum(manifest: dict) -> str:
    """sha256 of the manifest's content without its own checksum, independent of layout and key order."""
    content = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return sha256_bytes(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())


def export_digest(folder: str | Path) -> str:
    """One digest for the whole export: the sha256 of manifest.json, which records the sha256 of every
    other file and is itself checked against its own checksum at load."""
    return sha256_file(Path(folder) / MANIFEST)


def verify(folder: str | Path, digest: str | None = None) -> dict[str, Any]:
    """The manifest of an export whose every file is what the export wrote; else ExportError naming the file."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: export a run first (`python -m cgt export`)")
    again = "export the run again (`python -m cgt export --run <run folder>`)"
    if digest is not None and export_digest(folder) != digest:
        raise ExportError(f"{path}: the export's digest is {export_digest(folder)}, pinned {digest}: this is not the "
                          f"export that was made (changed, or another one); {again}")
    manifest = read_json_named(path, f"the export is damaged; {again}")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ExportError(f"{path} has format {found!r}; expected {FORMAT!r} ({again})")
    if manifest.get("manifest_sha256") != _manifest_checksum(manifest):
        raise ExportError(f"{path} does not match its own checksum (recorded {manifest.get('manifest_sha256')}, "
                          f"content {_manifest_checksum(manifest)}): it was edited or damaged; refusing to load; {again}")
    for name, recorded in manifest["files"].items():
        actual = sha256_file(folder / name) if (folder / name).exists() else "missing"
        if actual != recorded:
            raise ExportError(f"{folder / name} does not match the manifest (sha256 {actual}, recorded {recorded}): "
                              f"refusing to load a changed or incomplete export; {again}")
    return manifest


# ---------------------------------------------------------------- export
def export_model(model: EarlyExitNet, input_shape: tuple[int, ...], out_dir: str | Path,
                 thresholds: dict[str, list[float]], class_names: list[str], policy: str = "max_softmax",
                 source: dict[str, Any] | None = None, calibration_inputs: np.ndarray | torch.Tensor | None = None,
                 latency: dict[str, Any] | None = None, learned: LearnedPolicy | None = None,
                 learned_points: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write the graphs, calibration.npz (the first CALIBRATION_SAMPLES of `calibration_inputs`, if given),
    latency.json (if given) and manifest.json with every file's sha256 and its own; returns out_dir.
    learned, learned_points: a learned exit policy and its operating points {name: {"thresholds", "budget",
    "objective_met"}} (cgt.evaluation.learned_policy.learned_operating_points), carried in the manifest."""
    check_policy(policy)
    for name, taus in thresholds.items():
        check_thresholds(taus, model.num_exits)
    learned_points = learned_points or {}
    if (learned is None) != (not learned_points):
        raise ExportError("a learned exit policy is exported with its operating points (learned_points), and "
                          "learned points with their policy: give both or neither")
    if learned is not None:
        learned.check_num_exits(model.num_exits)
        clash = sorted(set(learned_points) & set(thresholds))
        if clash:
            raise ExportError(f"learned points {clash} have the names of threshold points; name them apart")
        for point in learned_points.values():
            check_thresholds(point["thresholds"], model.num_exits)
    out_dir = Path(out_dir)
    fused = fuse_for_inference(model).cpu().eval()  # Conv2d + BatchNorm2d folded
    sample = torch.zeros(1, *input_shape)
    segments, inputs = [], [sample]  # inputs[e]: what block e takes, for one sample
    for e, (block, head) in enumerate(zip(fused.blocks, fused.heads)):
        path = out_dir / f"segment{e + 1}.onnx"
        write_bytes_atomic(path, segment_graph(block, head, sample, policy).SerializeToString())
        with torch.no_grad():
            next_sample = block(sample)
        segments.append({"file": path.name, "input_shape": list(sample.shape[1:]),
                         "features_shape": list(next_sample.shape[1:])})
        sample = next_sample
        inputs.append(sample)
    # Blocks first..last and head `last` as one graph, for exit plans that leave out the exits between
    # (cgt.deployment.plans): every span of more than one block (the whole network too: the plan keeping the
    # last exit alone, with the score and class outputs full.onnx lacks).
    merged = []
    for first, last in itertools.combinations(range(model.num_exits), 2):
        path = out_dir / f"segment{first + 1}-{last + 1}.onnx"
        graph = segment_graph(nn.Sequential(*fused.blocks[first:last + 1]), fused.heads[last], inputs[first], policy)
        write_bytes_atomic(path, graph.SerializeToString())
        merged.append({"file": path.name, "blocks": [first + 1, last + 1], "input_shape": list(inputs[first].shape[1:]),
                       "features_shape": list(inputs[last + 1].shape[1:])})
    # The plain network without early exits (every block, the last head): the reference for latency.
    graphs = {"full_network": ("full.onnx", segment_graph(nn.Sequential(*fused.blocks), fused.heads[-1],
                                                           torch.zeros(1, *input_shape), features_out=False,
                                                           prediction=True)),  # no score: it decides nothing
              "early_exit": ("early_exit.onnx", early_exit_graph(fused, input_shape, policy))}
    for file, graph in graphs.values():
        write_bytes_atomic(out_dir / file, graph.SerializeToString())
    files = [s["file"] for s in segments + merged] + [file for file, _ in graphs.values()]
    if calibration_inputs is not None:
        x = np.ascontiguousarray(np.asarray(calibration_inputs, np.float32)[:CALIBRATION_SAMPLES])
        if x.shape[1:] != tuple(input_shape) or len(x) == 0:
            raise ExportError(f"calibration inputs of shape {x.shape} do not fit the input shape {tuple(input_shape)}")
        save_npz_atomic(out_dir / CALIBRATION, x=x)
        files.append(CALIBRATION)
    if latency is not None:
        write_json_atomic(out_dir / LATENCY, latency)
        files.append(LATENCY)
    learned_record = None if learned is None else learned.to_dict() | {
        "points": {name: {k: v for k, v in point.items() if k != "thresholds"} for name, point in learned_points.items()}}
    thresholds = thresholds | {name: point["thresholds"] for name, point in learned_points.items()}
    manifest = {"format": FORMAT, "opset": OPSET, "policy": policy, "thresholds": thresholds,
                "learned_policy": learned_record,
                "class_names": class_names, "input_shape": list(input_shape), "num_exits": model.num_exits,
                "segments": segments, "merged_segments": merged, **{key: {"file": file} for key, (file, _) in graphs.items()},
                "calibration": CALIBRATION if calibration_inputs is not None else None,
                "files": {name: sha256_file(out_dir / name) for name in files}, "source": source or {}}
    write_json_atomic(out_dir / MANIFEST, manifest | {"manifest_sha256": _manifest_checksum(manifest)})
    return out_dir


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, latency_budgets_us=(),
               threads: int = 1, learned_budgets=()) -> tuple[Path, str]:
    """Export a finished run of a built-in dataset (the network rebuilt from its recorded preparation
    parameters, thresholds from its metrics.json, calibration samples from its validation split);
    default output folder: <run_dir>/onnx. With latency budgets (µs per sample), the time model is
    measured here (batch 1, `threads`) and `val_latency_<µs>` points fitted on validation are added; every
    exit plan's time model is measured too, and latency.json records per operating point the plan chosen on
    validation (`plan_choice`; run it with `load(..., exits=...)`).
    With learned budgets (relative cost, e.g. 0.4), the learned exit policy is fitted on the run's
    validation logits and carried with its `learned_budget_<pct>` points, picked on validation.
    Returns the folder and the export's digest (also recorded in <run_dir>/exports.json)."""
    from ..cost import exit_costs
    from ..data import BUILTIN, DataConfig
    from ..data import load as load_data
    from ..data.base import COMMON_FIELDS
    from ..experiments.paths import prepared_dir
    from ..experiments.provenance import device_description, project_relative
    from ..runs import is_complete, load_run
    from .timecost import latency_curve, latency_points

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if not is_complete(run_dir):
        raise ExportError(f"{run_dir} is not a finished run: complete.json is missing or an artifact no longer "
                          f"matches its recorded hash; finish it with `python -m cgt train` first")
    if not (run_dir / "metrics.json").exists():
        raise ExportError(f"{run_dir} has no metrics.json (the fitted thresholds): evaluate it first, e.g. with "
                          f"`python -m cgt train` on the same settings (a finished run is loaded, not retrained)")
    retrain = "train the run again (`python -m cgt train` with its settings; a damaged run is retrained)"
    config = read_json_named(run_dir / "config.json", retrain)
    metrics = read_json_named(run_dir / "metrics.json", "delete it and evaluate the run again (`python -m cgt train` "
                                                        "with its settings: a finished run is evaluated, not retrained)")
    params = {k: v for k, v in config["data_params"].items() if k not in ("prep_version", "source_sha256")}
    if params.get("dataset") not in BUILTIN:
        raise ExportError(f"{run_dir} was trained on {params.get('dataset')!r}, not a built-in dataset: export it "
                          f"from Python with cgt.deployment.exported.export_model(model, input_shape, ...)")
    data = load_data(DataConfig(**{k: v for k, v in params.items() if k in COMMON_FIELDS},
                                cache_dir=str(prepared_dir()),
                                options={k: v for k, v in params.items() if k not in COMMON_FIELDS}))
    try:
        run = load_run(run_dir, data.default_model)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:  # what torch.load raises on a damaged file
        raise ExportError(f"{run_dir}: model.pt or logits.pt cannot be read ({type(e).__name__}): {retrain}") from None
    thresholds = {name: point["thresholds"] for name, point in metrics["operating_points"].items()}
    policy = metrics.get("policy", "max_softmax")
    source = {"run": project_relative(run_dir), "dataset": config["dataset"], "method": config["method"],
              "seed": config["train"]["seed"], "data_checksum": config["data_checksum"]}
    x_val = data.x["val"]
    latency = None
    if latency_budgets_us:  # fitted on validation; the curve scores them on test, beside their FLOPs
        plan_times = measure_onnx_plan_times(run.model, data.input_shape, x_val[:1], threads=threads)
        times = plan_times[plans.all_plans(run.model.num_exits)[0]]
        lg = run.logits
        points = latency_points(lg["val"], lg["y_val"], times, latency_budgets_us, policy)
        thresholds |= {name: point["thresholds"] for name, point in points.items()}
        machine = f"{device_description('cpu')}; ONNX Runtime at {threads} thread(s)"
        latency = {"points": points, "curve": latency_curve(lg["val"], lg["y_val"], lg["test"], lg["y_test"], times,
                                                            exit_costs(run.model, data.input_shape), latency_budgets_us,
                                                            machine, policy),
                   "plans": {name: plan_choice(lg["val"], lg["y_val"], taus, plan_times, policy)
                             for name, taus in thresholds.items()}}
    learned, learned_points = None, None
    if learned_budgets:
        from ..evaluation.learned_policy import learned_operating_points

        learned, learned_points = learned_operating_points(run.logits["val"], run.logits["y_val"],
                                                           exit_costs(run.model, data.input_shape), learned_budgets)
    out = export_model(run.model, data.input_shape, out_dir or run_dir / "onnx", thresholds, data.class_names,
                       policy, source, calibration_inputs=x_val, latency=latency, learned=learned,
                       learned_points=learned_points)
    digest = export_digest(out)
    record_path = run_dir / "exports.json"
    records = read_json_named(record_path, "delete it (it only lists past exports)") if record_path.exists() else {}
    write_json_atomic(record_path, records | {project_relative(out): {"digest": digest, "format": FORMAT}})
    return out, digest


def plan_choice(val_logits: torch.Tensor, y_val: torch.Tensor, thresholds, times: dict, policy: str) -> dict:
    """latency.json's record of the exit plan chosen on validation for one operating point
    (cgt.deployment.plans.choose_plan): its name, for `load(..., exits=...)`, and what the choice saw."""
    chosen, table = plans.choose_plan(val_logits, y_val, thresholds, times, policy)
    return {"chosen": plans.plan_name(chosen), "table": table}


def measure_onnx_plan_times(model: EarlyExitNet, input_shape: tuple[int, ...], x: torch.Tensor | np.ndarray,
                            threads: int = 1, calls: int = 2000) -> dict[tuple[int, ...], Any]:
    """{exit plan: its time model} (cgt.deployment.plans; ExitTimes, one segment per exit kept) of the
    per-segment ONNX Runtime pass at batch size len(x) on this machine: reaching each kept exit timed as the
    plan's segments called back to back, and the plain network (median of `calls`, through the bound
    single-sample paths when len(x) is 1). The all-exit plan's is the time model of every exit; the plan
    keeping the last exit alone is the plain network. Exported to a temporary folder, loaded with `threads`."""
    import tempfile

    from .timecost import measure_exit_times
    from .timing import time_repeats

    x = np.ascontiguousarray(np.asarray(x, np.float32))
    every, *partial, plain = plans.all_plans(model.num_exits)
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        export_model(model, tuple(input_shape), folder, {"t": [1.0] * (model.num_exits - 1)},
                     [], calibration_inputs=None)
        for plan in (every, *partial):
            onnx_model = load(folder, point="t", threads=threads, choose="segments", exits=plans.plan_name(plan))
            out[plan] = measure_exit_times(segment_calls(onnx_model.plan_sessions),
                                           lambda h, m=onnx_model: m.predict_full(h, batch_size=len(h)), x,
                                           lambda fn: float(np.median(time_repeats(fn, calls if len(x) == 1 else 10))),
                                           "onnx_segments", threads)
    full_s = out[every].full_s
    return out | {plain: plans.plain_network_times(full_s, "onnx_segments", len(x), threads)}


# ---------------------------------------------------------------- ONNX Runtime early exit
class _Bound:
    """One session with its inputs and outputs bound once to preallocated arrays (IOBinding): a call
    copies nothing in or out and builds no dict, no list, no OrtValue; outputs are read from the arrays."""

    def __init__(self, session, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]):
        self.inputs, self.outputs = inputs, outputs
        binding = session.io_binding()
        for kind, arrays in (("input", inputs), ("output", outputs)):
            for name, array in arrays.items():
                bind = binding.bind_input if kind == "input" else binding.bind_output
                bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
        self.binding = binding
        self.run = _bound_run(session, binding)  # a call: one C++ method, no arguments built
        # ONNX Runtime holds raw pointers into these arrays: they must live as long as the call does, even
        # when only `run` is kept.
        self.run.arrays = (inputs, outputs)


def _bound_run(session, binding) -> functools.partial:
    """session.run_with_iobinding(binding) as one C++ call. The Python wrapper checks WebGPU graph capture
    on every call (a call into C++ and a few lookups): about 0.5 µs of a 20 µs single-sample call on the
    CPU, measured. The wrapper's own C++ method is called directly where this onnxruntime has it (the pinned
    version does; tests/test_deploy.py checks both give the same outputs), the public method otherwise."""
    c_session, c_binding = getattr(session, "_sess", None), getattr(binding, "_iobinding", None)
    if hasattr(c_session, "run_with_iobinding") and c_binding is not None:
        return functools.partial(c_session.run_with_iobinding, c_binding, None)
    return functools.partial(session.run_with_iobinding, binding)


def segment_calls(sessions: list) -> list:
    """Per segment session, h → (features after it, logits): at batch size 1 a bound call (the sample copied
    into the bound input), else session.run."""
    def fn(session):
        bound = None

        def call(h: np.ndarray):
            nonlocal bound
            if len(h) != 1:
                return session.run(["features_out", "logits"], {"features": h})
            if bound is None:
                bound = _Bound(session, {"features": np.zeros_like(h)}, _session_outputs(session, 1))
            bound.inputs["features"][...] = h
            bound.run()
            return bound.outputs["features_out"], bound.outputs["logits"]
        return call
    return [fn(session) for session in sessions]


def session_options(n_threads: int | None):
    """ONNX Runtime options of every session `load` makes: n_threads intra-op threads (None: its default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Several sessions run one after another: idle thread pools must sleep, not spin, or each
    # session's spinning workers take the cores the next one needs. (One process-wide pool shared by
    # the sessions would be faster at batch 1 and 2 threads: 37 against 60 µs per Fashion-MNIST sample
    # by segments, measured. But once ONNX Runtime 1.31 has made that pool it refuses any session with
    # a pool of its own in the process: the one-thread sessions here, and every other user's.)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if n_threads is not None:
        options.intra_op_num_threads = n_threads
        options.inter_op_num_threads = 1
    return options


def _session_outputs(session, batch: int) -> dict[str, np.ndarray]:
    """Preallocated output arrays of a session for `batch` samples (the free dimension set)."""
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
    return {o.name: np.zeros([batch if isinstance(d, str) or d is None else d for d in o.shape], types[o.type])
            for o in session.get_outputs()}


@dataclass
class OnnxEarlyExit:
    """Early exit with ONNX Runtime: segment e + 1 runs only on the samples no earlier exit took."""

    early_exit_session: Any
    """The whole early-exit pass as one graph (early_exit.onnx)."""
    sessions: list
    """One session per exit segment (segment<e>.onnx)."""
    full_session: Any
    """The plain network (every block, the last head): the reference a speed-up is measured against."""
    manifest: dict[str, Any]
    thresholds: list[float]
    """The per-exit thresholds in use (E − 1 values)."""
    threads: int | None = None
    """Intra-op threads of every session (None: ONNX Runtime's default)."""
    calibration: dict[int, dict[str, float]] = field(default_factory=dict)
    """{batch size: {pass: seconds per sample}} measured at load (or given); empty when not calibrated."""
    forced: str | None = None
    """A pass named at load ('graph', 'segments', 'full') instead of the calibrated choice."""
    learned: LearnedPolicy | None = None
    """The learned exit policy when the point in use is one of its points: exits decide on its score, computed
    in Python from each segment's logits (the one-graph pass cannot run it)."""
    one_thread: "OnnxEarlyExit | None" = None
    """The same export on one-thread sessions, loaded beside these when more than one thread is allowed and
    the pass is calibrated: the thread count is a ceiling, and a tiny network called one sample at a time can
    run faster with no thread pool to wake per call. Its passes are calibrated as '<pass>@1' (cgt.deployment.chooser)."""
    plan: tuple[int, ...] = ()
    """The exits kept (0-based, cgt.deployment.plans; empty: every exit). A left-out exit takes no sample."""
    plan_sessions: list = field(default_factory=list)
    """One session per exit kept: its segment, blocks merged where exits are left out (default: `sessions`)."""

    def __post_init__(self):
        self.plan = tuple(self.plan) or tuple(range(len(self.sessions)))
        self.plan_sessions = self.plan_sessions or list(self.sessions)
        self._plan_taus = np.asarray(plans.plan_thresholds(self.thresholds, self.plan), np.float32)
        # The one-graph pass runs every exit's head; an exit the plan leaves out gets a threshold no score
        # passes (scores lie in [0, 1]), so its decisions are the plan's.
        never = 2.0 if self.policy == "max_softmax" else -1.0
        self._graph_taus = np.asarray([t if e in self.plan else never for e, t in enumerate(self.thresholds)],
                                      np.float32)
        self._bound_segments = self._bound_full = self._bound_graph = None
        self._dispatch: dict[int, Any] = {}  # batch size → the pass `predict` runs (cleared when calibrated)
        self._one_sample: Any = None  # what `predict` runs on a single sample (cleared when calibrated)
        self._single: dict[str, Any] = {}  # pass → its single-sample function (`_single_sample`), made on first use

    @property
    def policy(self) -> str:
        return self.manifest["policy"]

    # ------------------------------------------------ which pass
    @property
    def chosen(self) -> dict[int, str]:
        """{calibrated batch size: pass run at it}."""
        if self.forced:
            return {b: self.forced for b in self.calibration} or {1: self.forced}
        return chooser.choices(self.calibration) if self.calibration else {1: "full"}

    @property
    def description(self) -> str:
        """One line: which exits it keeps (when not all), which pass `predict` runs, per batch size, and why."""
        kept = "" if len(self.plan) == len(self.sessions) else f"exits {plans.plan_name(self.plan)} kept; "
        if self.forced:
            return f"{kept}{self.forced} pass at every batch size (named at load)"
        if not self.calibration:
            return (f"{kept}full pass at every batch size: not calibrated (no calibration samples in the export; pass "
                    "calibration_inputs= to load, or choose= a pass)")
        return (f"{kept}fastest measured pass, ties to the plain network: "
                f"{chooser.describe(self.calibration, self.threads)}")

    def pass_for(self, batch_size: int) -> str:
        """The pass `predict` runs for batches of this size ('segments@1': on the one-thread sessions)."""
        if self.forced:
            return self.forced
        if not self.calibration:
            return "full"
        return chooser.choose_pass(self.calibration[chooser.nearest_batch_size(self.calibration, batch_size)])

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(predictions (N,), 0-based exit index (N,)) for inputs x (N, *input_shape) by the chosen pass
        (`pass_for`, `description`). The plain network's pass gives every sample the last exit."""
        if len(x) == 1 and self.learned is None:
            # a serving loop's call, predict(x[None]): the chosen pass's single-sample function, decided once
            # (an attribute read and a length are all `predict` adds to it: cgt.deployment.bench's onnx_chosen row)
            return (self._one_sample or self._one_sample_for())(x)
        size = batch_size if len(x) >= batch_size else max(1, len(x))
        run = self._dispatch.get(size) or self._dispatch_for(size)  # decided once per batch size
        return run(x, batch_size)

    def _lane_and_pass(self, size: int) -> tuple["OnnxEarlyExit", str]:
        """(the sessions, this model's or its one-thread ones, and the pass) that `predict` runs at this batch size."""
        key = self.pass_for(size)
        return (self.one_thread if key.endswith(chooser.ONE_THREAD) else self), chooser.base_pass(key)

    def _dispatch_for(self, size: int):
        lane, name = self._lane_and_pass(size)
        run = {"full": lane._predict_full_with_exits, "graph": lane.predict_graph, "segments": lane.predict_segments}[name]
        self._dispatch[size] = run
        return run

    def _one_sample_for(self):
        lane, name = self._lane_and_pass(1)
        self._one_sample = lane._single_sample(name)
        return self._one_sample

    def _use_calibration(self, table: dict[int, dict[str, float]]) -> None:
        """Keep a calibration table; the passes `predict` runs are decided again from it."""
        self.calibration, self._dispatch, self._one_sample = table, {}, None

    def _predict_full_with_exits(self, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        if batch_size == 1:
            return self._full_one_at_a_time(x, with_exits=True)
        return self._with_last_exit(self.predict_full(x, batch_size))

    def _with_last_exit(self, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(preds, every sample's exit index: the last), what the plain network's pass returns."""
        exits = np.empty(len(preds), np.int64)
        exits.fill(len(self.sessions) - 1)  # 0.25 µs against np.full's 0.65 µs, on a path of ~20 µs
        return preds, exits

    # ------------------------------------------------ the three passes
    def predict_graph(self, x: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """The early-exit pass by early_exit.onnx, batch_size samples per call."""
        if self.learned is not None:
            raise ExportError("the one-graph pass scores max-softmax or entropy inside the graph; a learned point "
                              "runs by segments (predict_segments) or the plain network")
        if len(x) == 1:
            return self._single_sample("graph")(x)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if batch_size == 1:
            bound = self._bound_graph or self._bind_graph()
            preds, exits = np.empty(len(x), np.int64), np.empty(len(x), np.int64)
            features, out_pred, out_exit = bound.inputs["features"], bound.outputs["predictions"], bound.outputs["exit_index"]
            for i in range(len(x)):
                features[0] = x[i]
                bound.run()
                preds[i], exits[i] = out_pred[0], out_exit[0]
            return preds, exits
        run = self.early_exit_session.run
        parts = [run(None, {"features": x[i:i + batch_size], "thresholds": self._graph_taus})
                 for i in range(0, len(x), batch_size)]
        if not parts:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def predict_segments(self, x: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """The early-exit pass with one session call per segment of the plan and the exit decisions in Python."""
        if len(x) == 1 and self.learned is None:
            return self._single_sample("segments")(x)
        if batch_size == 1 and self.learned is None:
            return self._segments_one_at_a_time(x)
        x = np.ascontiguousarray(x, dtype=np.float32)
        preds, exits = np.empty(len(x), np.int64), np.empty(len(x), np.int64)
        if self.learned is not None:
            return self._predict_segments_learned(x, batch_size, preds, exits)
        last, policy = len(self.plan) - 1, self.policy
        for start in range(0, len(x), batch_size):
            h = x[start:start + batch_size]
            pending = np.arange(start, start + len(h))
            for k, session in enumerate(self.plan_sessions):
                h, score, prediction = session.run(["features_out", "score", "prediction"], {"features": h})
                done = np.ones(len(h), bool) if k == last else passes(score, self._plan_taus[k], policy)
                preds[pending[done]] = prediction[done]
                exits[pending[done]] = self.plan[k]
                if done.all():
                    break
                h, pending = h[~done], pending[~done]
        return preds, exits

    def _predict_segments_learned(self, x: np.ndarray, batch_size: int, preds: np.ndarray,
                                  exits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """predict_segments under the learned policy: exit e decides with cgt.learned_policy's score (the very
        function evaluation uses on cached logits) from its logits and the earlier exits' predictions."""
        last, learned = len(self.sessions) - 1, self.learned
        for start in range(0, len(x), batch_size):
            h = x[start:start + batch_size]
            pending, earlier = np.arange(start, start + len(h)), np.empty((0, len(h)), np.int64)
            for e, session in enumerate(self.sessions):
                h, logits, prediction = session.run(["features_out", "logits", "prediction"], {"features": h})
                if e == last:
                    done = np.ones(len(h), bool)
                else:
                    score = learned.score_exit(e, torch.from_numpy(logits), torch.from_numpy(earlier))
                    done = (score >= float(self._plan_taus[e])).numpy()  # every exit kept: a learned point has no plan
                preds[pending[done]] = prediction[done]
                exits[pending[done]] = e
                if done.all():
                    break
                earlier = np.concatenate([earlier, prediction[None]])[:, ~done]
                h, pending = h[~done], pending[~done]
        return preds, exits

    def _segments_one_at_a_time(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, exit indices) of x, one sample at a time: bound sessions (segment e's input array
        is segment e − 1's output array), one float32 compared with τ per exit (the score computed in the
        graph), no array built between the calls, no Python call per sample but the sessions'."""
        first_input, calls, accepts = self._bound_segments or self._bind_segments()
        preds, exits = np.empty(len(x), np.int64), np.empty(len(x), np.int64)
        for i in range(len(x)):
            first_input[0] = x[i]  # copied (and cast to float32) into segment 1's bound input
            for run, score, prediction, tau, e in calls:
                run()
                if accepts(score[0], tau):  # the last exit's τ takes every sample
                    preds[i], exits[i] = prediction[0], e
                    break
            else:  # only a NaN score fails the last exit's comparison
                raise ValueError(f"sample {i}: no exit took it (exit score {score[0]}); are its inputs finite?")
        return preds, exits

    def predict_full(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Predictions of the plain network, no early exit."""
        if len(x) == 1:
            return self._single_sample("plain")(x)
        if batch_size == 1:
            return self._full_one_at_a_time(x)
        x = np.ascontiguousarray(x, dtype=np.float32)
        parts = [self.full_session.run(["prediction"], {"features": x[i:i + batch_size]})[0]
                 for i in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def _full_one_at_a_time(self, x: np.ndarray, with_exits: bool = False):
        """The plain network's predictions (and, `with_exits`, every sample's exit index: the last), one
        bound call per sample: the assignment into the bound input casts to float32 as it copies (no
        converted copy of x is made first)."""
        features, run, prediction = self._bound_full or self._bind_full()
        preds = np.empty(len(x), np.int64)
        for i in range(len(x)):
            features[0] = x[i]
            run()
            preds[i] = prediction[0]
        return self._with_last_exit(preds) if with_exits else preds

    # ------------------------------------------------ one sample per call
    def _single_sample(self, name: str):
        """The function that runs pass `name` on one sample, x (1, *input_shape) → (prediction (1,), exit
        index (1,)) as new arrays ('plain': the prediction only, for predict_full). A serving loop calls
        predict(x[None]) per request: there a few Python calls and small arrays are a measurable part of a
        ~20 µs pass. So the sample is copied into the pass's bound input (cast to float32 on the way), its
        sessions called, the results copied out, and nothing else: no array made for the batch, no loop
        over samples, no other Python function. Made once per pass (the bindings on first use)."""
        one = self._single.get(name)
        if one is None:
            one = self._single[name] = self._make_single_sample(name)
        return one

    def _make_single_sample(self, name: str):
        exit_rows = [np.array([e], np.int64) for e in range(len(self.sessions))]
        if name in ("plain", "full"):
            features, run, prediction = self._bound_full or self._bind_full()
            last = exit_rows[-1]

            def plain(x):
                features[0] = x[0]
                run()
                return prediction.copy()

            def full(x):
                features[0] = x[0]
                run()
                return prediction.copy(), last.copy()
            return plain if name == "plain" else full
        if name == "graph":
            bound = self._bound_graph or self._bind_graph()
            features, run = bound.inputs["features"], bound.run
            predictions, exit_index = bound.outputs["predictions"], bound.outputs["exit_index"]

            def graph(x):
                features[0] = x[0]
                run()
                return predictions.copy(), exit_index.copy()
            return graph
        first_input, calls, accepts = self._bound_segments or self._bind_segments()

        def segments(x):
            first_input[0] = x[0]
            for run, score, prediction, tau, e in calls:
                run()
                if accepts(score[0], tau):  # the last exit's τ takes every sample
                    return prediction.copy(), exit_rows[e].copy()
            raise ValueError(f"no exit took the sample (exit score {score[0]}); are its inputs finite?")
        return segments

    def logits(self, x: np.ndarray) -> list[np.ndarray]:
        """Every exit's logits for x (all segments run): for checking against PyTorch."""
        h, out = np.ascontiguousarray(x, dtype=np.float32), []
        for session in self.sessions:
            h, logits = session.run(["features_out", "logits"], {"features": h})
            out.append(logits)
        return out

    def segment_fns(self) -> list:
        """Per segment, h → (features after it, logits): what the time model times (batch 1: bound calls)."""
        return segment_calls(self.sessions)

    # ------------------------------------------------ single-sample bindings, made on first use
    def _bind_segments(self):
        """The plan's segments bound one after another: segment k's bound input is segment k − 1's bound
        output, so features never leave their arrays. The last exit's τ is ±inf, so it takes every sample by
        the same comparison."""
        higher_leaves = self.policy == "max_softmax"  # cgt.policy.passes: score >= τ, entropy <= τ
        accepts = operator.ge if higher_leaves else operator.le
        features = first_input = np.zeros([1, *self.manifest["input_shape"]], np.float32)
        always = np.float32(-np.inf if higher_leaves else np.inf)
        calls, self._segment_bindings = [], []  # the bindings keep their arrays alive: ONNX Runtime writes into them
        for k, (e, session) in enumerate(zip(self.plan, self.plan_sessions)):
            outputs = _session_outputs(session, 1)
            tau = self._plan_taus[k] if k < len(self.plan) - 1 else always
            self._segment_bindings.append(_Bound(session, {"features": features}, outputs))
            calls.append((self._segment_bindings[-1].run, outputs["score"], outputs["prediction"], tau, e))
            features = outputs["features_out"]
        self._bound_segments = (first_input, tuple(calls), accepts)
        return self._bound_segments

    def _bind_full(self) -> tuple[np.ndarray, Any, np.ndarray]:
        """(bound input, run, bound prediction output) of the plain network for one sample."""
        s = self.full_session
        bound = _Bound(s, {"features": np.zeros([1, *self.manifest["input_shape"]], np.float32)}, _session_outputs(s, 1))
        self._bound_full = (bound.inputs["features"], bound.run, bound.outputs["prediction"])
        return self._bound_full

    def _bind_graph(self) -> _Bound:
        s = self.early_exit_session
        self._bound_graph = _Bound(s, {"features": np.zeros([1, *self.manifest["input_shape"]], np.float32),
                                       "thresholds": self._graph_taus}, _session_outputs(s, 1))
        return self._bound_graph

    # ------------------------------------------------ calibration
    def calibrate(self, x: np.ndarray, batch_sizes=(1, CALIBRATION_SAMPLES), repeats: int = 7,
                  single_samples: int = 64) -> dict:
        """Time the three passes on x at each batch size (batch 1: the first `single_samples` samples one
        at a time; larger: one batch), and on the one-thread sessions too when they are loaded ('<pass>@1'),
        interleaved over `repeats` rounds after a warm-up, and keep the table the choice is made from;
        returns it ({batch size: {pass: seconds per sample}})."""
        from .timing import interleaved_times

        x = np.ascontiguousarray(x, dtype=np.float32)
        table = {}
        for batch_size in sorted({min(b, len(x)) for b in batch_sizes}):
            xs = x[:single_samples] if batch_size == 1 else x[:batch_size]
            runs = {}
            for lane, suffix in ((self, ""), (self.one_thread, chooser.ONE_THREAD)):
                if lane is None:
                    continue
                runs |= {"full" + suffix: lambda a, b, m=lane: m.predict_full(xs[a:b], batch_size),
                         "graph" + suffix: lambda a, b, m=lane: m.predict_graph(xs[a:b], batch_size),
                         "segments" + suffix: lambda a, b, m=lane: m.predict_segments(xs[a:b], batch_size)}
                if self.learned is not None:  # the one-graph pass cannot run a learned point
                    del runs["graph" + suffix]
            estimate, _ = interleaved_times(runs, len(xs), batch_size, repeats)
            table[batch_size] = {p: float(t) for p, t in zip(runs, estimate)}
        self._use_calibration(table)
        return table


def _default_threads() -> int | None:
    """OMP_NUM_THREADS when set (ONNX Runtime does not read it itself), else ONNX Runtime's default."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def load(folder: str | Path, point: str = "paper_tau", threads: int | None = None, digest: str | None = None,
         choose: str = "auto", calibration_inputs: np.ndarray | None = None,
         calibration: dict[int, dict[str, float]] | None = None,
         exits: str | tuple[int, ...] | None = None) -> OnnxEarlyExit:
    """Load an export (every file verified, see `verify`; `digest` pins the whole export), with the
    thresholds of `point`. choose='auto' runs, per batch size, the fastest pass timed on the export's
    calibration samples (or `calibration_inputs`; a `calibration` table given is used as is); or name a
    pass: 'graph', 'segments' or 'full'. threads: intra-op threads (default: OMP_NUM_THREADS if set); a
    ceiling under choose='auto', which also loads one-thread sessions and may run a pass on them.
    A learned_budget_* point decides with the export's learned exit policy (by segments or the plain network).
    exits: an exit plan, the 1-based exits kept ('1+3' or (1, 3); cgt.deployment.plans; default every exit):
    the exits left out take no sample, and the per-segment pass runs their blocks merged into the next kept
    exit's segment. It changes which exit answers some samples: choose it on validation (`plans.choose_plan`)."""
    import onnxruntime as ort

    if choose not in ("auto", *chooser.PASSES):
        raise ValueError(f"unknown pass {choose!r}; valid choices: {['auto', *chooser.PASSES]}")
    folder = Path(folder)
    manifest = verify(folder, digest)
    if point not in manifest["thresholds"]:
        raise ValueError(f"unknown operating point {point!r}; valid choices: {sorted(manifest['thresholds'])}")
    threads = threads if threads is not None else _default_threads()

    def session(file: str, n_threads: int | None = threads):
        return ort.InferenceSession(str(folder / file), session_options(n_threads), providers=["CPUExecutionProvider"])

    learned_record = manifest.get("learned_policy") or {}
    learned = None
    if point in learned_record.get("points", {}):
        if choose == "graph":
            raise ValueError(f"point {point!r} is the learned exit policy's; the one-graph pass cannot run it; "
                             f"valid choices: {['auto', 'segments', 'full']}")
        learned = LearnedPolicy.from_dict(learned_record)
        learned.check_num_exits(manifest["num_exits"])
    taus = check_thresholds(manifest["thresholds"][point], manifest["num_exits"]).tolist()
    plan = plans.check_plan(exits, manifest["num_exits"]) if exits is not None else tuple(range(manifest["num_exits"]))
    if learned is not None and len(plan) < manifest["num_exits"]:
        raise ValueError(f"point {point!r} is the learned exit policy's, which scores every exit; it takes no exit "
                         f"plan (exits={exits!r}); valid choices: exits=None")
    merged = {(seg["blocks"][0] - 1, seg["blocks"][1] - 1): seg["file"] for seg in manifest["merged_segments"]}

    def sessions(n_threads: int | None) -> tuple:
        per_exit = [session(seg["file"], n_threads) for seg in manifest["segments"]]
        return (session(manifest["early_exit"]["file"], n_threads), per_exit,
                session(manifest["full_network"]["file"], n_threads),
                [per_exit[a] if a == b else session(merged[a, b], n_threads) for a, b in plans.segment_ranges(plan)])

    def early_exit_model(n_threads: int | None, **kwargs) -> OnnxEarlyExit:
        graph, per_exit, full, plan_sessions = sessions(n_threads)
        return OnnxEarlyExit(graph, per_exit, full, manifest, taus, n_threads, learned=learned, plan=plan,
                             plan_sessions=plan_sessions, **kwargs)

    one_thread = None
    if choose == "auto" and threads != 1 and (threads or os.cpu_count() or 1) > 1:
        one_thread = early_exit_model(1)
    model = early_exit_model(threads, forced=None if choose == "auto" else choose, one_thread=one_thread)
    if choose == "auto":
        if calibration is not None:
            for times in calibration.values():
                chooser.check_times(times)
                if one_thread is None and any(k.endswith(chooser.ONE_THREAD) for k in times):
                    raise ValueError(f"calibration names one-thread passes ({sorted(times)}) but this load has "
                                     f"no one-thread sessions (threads=1); valid names: {list(chooser.PASSES)}")
            # a learned point has no one-graph pass: its time in a given table cannot be chosen
            model._use_calibration({int(b): {p: t for p, t in times.items()
                                             if not (learned and chooser.base_pass(p) == "graph")}
                                    for b, times in calibration.items()})
        else:
            if calibration_inputs is None and manifest.get("calibration"):
                calibration_inputs = _read_npz(folder / manifest["calibration"])["x"]
            if calibration_inputs is not None:
                model.calibrate(calibration_inputs)
    return model


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ExportError(f"{path} cannot be read ({type(e).__name__}: {e}): export the run again") from None
