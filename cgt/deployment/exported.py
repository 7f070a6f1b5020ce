"""Deployment: a finished run exported to ONNX, and early exit with ONNX Runtime.

    python -m cgt export --run runs/paper/indian_pines/soft_cgt/seed0-<key> --format onnx [--out DIR]
    model = cgt.deployment.exported.load(DIR)                   # checksums verified
    predictions, exit_index = model.predict(x)     # x: (N, C, H, W) float32; batch 1 or batched

An export folder holds (graphs written by cgt.deployment.onnx_graphs, BatchNorm folded):
  early_exit.onnx   the whole early-exit pass in one graph: thresholds in, predictions and exit
                    indices out; what `predict` runs (no Python between the exits)
  segment<e>.onnx   exit segment e alone: block e and head e, features after block e − 1 in, features
                    after block e and the logits of exit e out; for other runtimes, for reading every
                    exit's logits, and for `predict_segments` (the same pass driven from Python)
  full.onnx         the plain network (every block, the last head): the latency reference
  manifest.json     the policy, every operating point's thresholds from the run's metrics (fitted on
                    validation), class names, shapes and the sha256 of every graph
A sample runs segment e + 1 only if exit e did not take it, exactly as
cgt.inference.early_exit_forward does in PyTorch; the decision is cgt.policy's rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..fileio import read_json, sha256_file, write_bytes_atomic, write_json_atomic
from ..inference import fuse_for_inference
from ..models import EarlyExitNet
from ..policy import accepts, accepts_row, check_policy, check_thresholds
from .onnx_graphs import OPSET, ExportError, early_exit_graph, segment_graph

FORMAT = "cgt-early-exit-onnx/2"  # /2: early_exit.onnx added
MANIFEST = "manifest.json"


# ---------------------------------------------------------------- export
def export_model(model: EarlyExitNet, input_shape: tuple[int, ...], out_dir: str | Path,
                 thresholds: dict[str, list[float]], class_names: list[str], policy: str = "max_softmax",
                 source: dict[str, Any] | None = None) -> Path:
    """Write segment<e>.onnx for every exit and manifest.json (with every graph's sha256); returns out_dir."""
    check_policy(policy)
    for name, taus in thresholds.items():
        check_thresholds(taus, model.num_exits)
    out_dir = Path(out_dir)
    fused = fuse_for_inference(model).cpu().eval()  # Conv2d + BatchNorm2d folded
    sample = torch.zeros(1, *input_shape)
    segments = []
    for e, (block, head) in enumerate(zip(fused.blocks, fused.heads)):
        onnx_model = segment_graph(block, head, sample)
        path = out_dir / f"segment{e + 1}.onnx"
        write_bytes_atomic(path, onnx_model.SerializeToString())
        with torch.no_grad():
            next_sample = block(sample)
        segments.append({"file": path.name, "sha256": sha256_file(path), "input_shape": list(sample.shape[1:]),
                         "features_shape": list(next_sample.shape[1:])})
        sample = next_sample
    # The plain network without early exits (every block, the last head): the reference for latency.
    graphs = {"full_network": ("full.onnx", segment_graph(nn.Sequential(*fused.blocks), fused.heads[-1],
                                                           torch.zeros(1, *input_shape))),
              "early_exit": ("early_exit.onnx", early_exit_graph(fused, input_shape, policy))}
    for file, graph in graphs.values():
        write_bytes_atomic(out_dir / file, graph.SerializeToString())
    write_json_atomic(out_dir / MANIFEST, {
        "format": FORMAT, "opset": OPSET, "policy": policy, "thresholds": thresholds, "class_names": class_names,
        "input_shape": list(input_shape), "num_exits": model.num_exits, "segments": segments,
        **{key: {"file": file, "sha256": sha256_file(out_dir / file)} for key, (file, _) in graphs.items()},
        "source": source or {}})
    return out_dir


def export_run(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Export a finished run of a built-in dataset (the network rebuilt from its recorded preparation
    parameters, thresholds from its metrics.json); default output folder: <run_dir>/onnx."""
    from ..data import BUILTIN, DataConfig, load
    from ..data.base import COMMON_FIELDS
    from ..experiments.paths import prepared_dir
    from ..experiments.provenance import project_relative
    from ..runs import is_complete, load_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if not is_complete(run_dir):
        raise ExportError(f"{run_dir} is not a finished run: complete.json is missing or an artifact no longer "
                          f"matches its recorded hash; finish it with `python -m cgt train` first")
    if not (run_dir / "metrics.json").exists():
        raise ExportError(f"{run_dir} has no metrics.json (the fitted thresholds): evaluate it first, e.g. with "
                          f"`python -m cgt train` on the same settings (a finished run is loaded, not retrained)")
    config = read_json(run_dir / "config.json")
    params = {k: v for k, v in config["data_params"].items() if k not in ("prep_version", "source_sha256")}
    if params.get("dataset") not in BUILTIN:
        raise ExportError(f"{run_dir} was trained on {params.get('dataset')!r}, not a built-in dataset: export it "
                          f"from Python with cgt.deployment.exported.export_model(model, input_shape, ...)")
    data = load(DataConfig(**{k: v for k, v in params.items() if k in COMMON_FIELDS}, cache_dir=str(prepared_dir()),
                           options={k: v for k, v in params.items() if k not in COMMON_FIELDS}))
    run = load_run(run_dir, data.default_model)
    metrics = read_json(run_dir / "metrics.json")
    thresholds = {name: point["thresholds"] for name, point in metrics["operating_points"].items()}
    source = {"run": project_relative(run_dir), "dataset": config["dataset"], "method": config["method"],
              "seed": config["train"]["seed"], "data_checksum": config["data_checksum"]}
    return export_model(run.model, data.input_shape, out_dir or run_dir / "onnx", thresholds, data.class_names,
                        metrics.get("policy", "max_softmax"), source)


# ---------------------------------------------------------------- ONNX Runtime early exit
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

    def __post_init__(self):
        self._threshold_array = np.asarray(self.thresholds, np.float32)

    @property
    def policy(self) -> str:
        return self.manifest["policy"]

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(predictions (N,), 0-based exit index (N,)) for inputs x (N, *input_shape).

        Batches run early_exit.onnx (one call, no Python between the exits); single samples run the
        segments one call at a time and stop at the exit that takes them, because at batch size 1 the
        one graph still pays a microsecond or two for every operator of the segments it skips on an
        empty batch (`python -m cgt bench` measures both).
        """
        return (self.predict_segments if batch_size == 1 else self.predict_graph)(x, batch_size)

    def predict_graph(self, x: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """`predict` by early_exit.onnx, batch_size samples per call."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        run = self.early_exit_session.run
        parts = [run(None, {"features": x[i:i + batch_size], "thresholds": self._threshold_array})
                 for i in range(0, len(x), batch_size)]
        if not parts:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def predict_segments(self, x: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """`predict` with one session call per exit segment and the exit decisions in Python."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if batch_size == 1:
            pairs = [self._predict_one(x[i:i + 1]) for i in range(len(x))]
            return (np.array([p for p, _ in pairs], np.int64).reshape(-1),
                    np.array([e for _, e in pairs], np.int64).reshape(-1))
        preds, exits = np.empty(len(x), np.int64), np.empty(len(x), np.int64)
        last = len(self.sessions) - 1
        for start in range(0, len(x), batch_size):
            h = x[start:start + batch_size]
            pending = np.arange(start, start + len(h))
            for e, session in enumerate(self.sessions):
                h, logits = session.run(None, {"features": h})
                done = (np.ones(len(h), bool) if e == last
                        else accepts(torch.from_numpy(logits), self.thresholds[e], self.policy).numpy())
                preds[pending[done]] = logits[done].argmax(-1)
                exits[pending[done]] = e
                if done.all():
                    break
                h, pending = h[~done], pending[~done]
        return preds, exits

    def _predict_one(self, x: np.ndarray) -> tuple[int, int]:
        """(prediction, exit index) of one sample (1, *input_shape): the rule on K plain floats, no
        array operations between the session calls."""
        h, last = x, len(self.sessions) - 1
        for e, session in enumerate(self.sessions):
            h, logits = session.run(None, {"features": h})
            row = logits[0].tolist()
            if e == last or accepts_row(row, self.thresholds[e], self.policy):
                return max(range(len(row)), key=row.__getitem__), e
        raise AssertionError("unreachable: the last exit takes every sample")

    def predict_full(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Predictions of the plain network, no early exit."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.concatenate([self.full_session.run(["logits"], {"features": x[i:i + batch_size]})[0].argmax(-1)
                               for i in range(0, len(x), batch_size)])

    def logits(self, x: np.ndarray) -> list[np.ndarray]:
        """Every exit's logits for x (all segments run): for checking against PyTorch."""
        h, out = np.ascontiguousarray(x, dtype=np.float32), []
        for session in self.sessions:
            h, logits = session.run(None, {"features": h})
            out.append(logits)
        return out


def load(folder: str | Path, point: str = "paper_tau", threads: int | None = None) -> OnnxEarlyExit:
    """Load an export (refused if a graph does not match its recorded sha256), thresholds of `point`."""
    import onnxruntime as ort

    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        raise FileNotFoundError(f"{folder / MANIFEST} does not exist: export a run first (`python -m cgt export`)")
    manifest = read_json(folder / MANIFEST)
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{folder / MANIFEST} has format {manifest.get('format')!r}; expected {FORMAT!r} "
                          f"(export the run again)")
    if point not in manifest["thresholds"]:
        raise ValueError(f"unknown operating point {point!r}; valid choices: {sorted(manifest['thresholds'])}")
    graphs = [*manifest["segments"], manifest["full_network"], manifest["early_exit"]]
    for graph in graphs:
        actual = sha256_file(folder / graph["file"]) if (folder / graph["file"]).exists() else "missing"
        if actual != graph["sha256"]:
            raise ExportError(f"{folder / graph['file']} does not match the manifest (sha256 {actual}, recorded "
                              f"{graph['sha256']}): refusing to load a changed or incomplete export; export again")
    options = ort.SessionOptions()
    # Several sessions run one after another: idle thread pools must sleep, not spin, or each
    # session's spinning workers take the cores the next one needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1

    def session(file: str):
        return ort.InferenceSession(str(folder / file), options, providers=["CPUExecutionProvider"])

    taus = check_thresholds(manifest["thresholds"][point], manifest["num_exits"]).tolist()
    return OnnxEarlyExit(session(manifest["early_exit"]["file"]), [session(seg["file"]) for seg in manifest["segments"]],
                         session(manifest["full_network"]["file"]), manifest, taus)
