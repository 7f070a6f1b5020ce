"""Deployment: a finished run exported as one ONNX graph per exit segment, and early exit with ONNX Runtime.

    python -m cgt export --run runs/paper/indian_pines/soft_cgt/seed0-<key> --format onnx [--out DIR]
    model = cgt.deploy.load(DIR)                   # checksums verified
    predictions, exit_index = model.predict(x)     # x: (N, C, H, W) float32; batch 1 or batched

Segment e holds block e (BatchNorm folded into the convolution or linear layer before it) and head e:
it maps the features after block e − 1 (the input for e = 1) to the features after block e and the
logits of exit e. A sample runs segment e + 1 only if exit e did not take it, exactly as
cgt.inference.early_exit_forward does in PyTorch; the decision is cgt.policy's rule.

The graphs are written from the network's modules by a small converter (`segment_graph`) rather
than by torch.onnx: the exits pool adaptively to grids that do not divide the feature maps (7×7 → 3×3),
which the TorchScript exporter refuses; here that pooling is a fixed averaging matrix (a MatMul).
Converted module types: Conv2d, Linear, BatchNorm (folded), ReLU, MaxPool2d, AdaptiveAvgPool2d,
Flatten, Identity, Sequential; anything else is refused by name.

manifest.json records the policy, every operating point's thresholds from the run's metrics
(fitted on validation), class names, shapes and the sha256 of every graph; full.onnx is the plain
network (every block, the last head), the reference latency benchmarks measure against.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .fileio import read_json, sha256_file, write_bytes_atomic, write_json_atomic
from .inference import fuse_for_inference
from .models import EarlyExitNet
from .policy import accepts, accepts_row, check_policy, check_thresholds

FORMAT = "cgt-early-exit-onnx/1"
OPSET = 17
IR_VERSION = 8  # the ONNX file format version for opset 17; newer onnx writers default to one ONNX Runtime may not read
MANIFEST = "manifest.json"


class ExportError(ValueError):
    """The network or run cannot be exported (names what is missing or unsupported)."""


# ---------------------------------------------------------------- torch modules → ONNX nodes
class _Graph:
    """Nodes and initialisers of one segment, with fresh tensor names."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.name(prefix)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op.lower())
        self.nodes.append(self.helper.make_node(op, inputs, [out], **attrs))
        return out


def _adaptive_pool_matrix(h: int, w: int, oh: int, ow: int) -> np.ndarray:
    """(h·w, oh·ow) matrix M with x.reshape(h·w) @ M = adaptive_avg_pool2d(x, (oh, ow)).reshape(oh·ow):
    PyTorch's bins, rows [⌊i·h/oh⌋, ⌈(i+1)·h/oh⌉) and the same for columns."""
    m = np.zeros((h * w, oh * ow), np.float32)
    for i in range(oh):
        r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        for j in range(ow):
            c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
            for r in range(r0, r1):
                m[r * w + c0:r * w + c1, i * ow + j] = 1.0 / ((r1 - r0) * (c1 - c0))
    return m


def _fold_linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """Linear followed by BatchNorm1d (eval) as one Linear."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = copy.deepcopy(linear)
    bias = linear.bias if linear.bias is not None else torch.zeros_like(bn.running_mean)
    fused.weight = nn.Parameter(linear.weight * scale[:, None])
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
    return fused


def _flatten(module: nn.Module) -> list[nn.Module]:
    """The leaf modules of nested Sequentials, BatchNorm1d folded into the Linear before it."""
    leaves = []
    for m in (module if isinstance(module, nn.Sequential) else [module]):
        if isinstance(m, nn.Sequential):
            leaves += _flatten(m)
        elif isinstance(m, nn.BatchNorm1d) and leaves and isinstance(leaves[-1], nn.Linear):
            leaves[-1] = _fold_linear_bn(leaves[-1], m)
        else:
            leaves.append(m)
    return leaves


@torch.no_grad()
def _emit(g: _Graph, module: nn.Module, x: str, sample: torch.Tensor) -> tuple[str, torch.Tensor]:
    """Append `module` applied to tensor `x` (whose value on one sample is `sample`); returns the output
    tensor's name and value (the value gives the static spatial sizes the pooling matrices need)."""
    for m in _flatten(module):
        if isinstance(m, nn.Identity):
            continue
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise ExportError(f"Conv2d with padding={m.padding!r}, padding_mode={m.padding_mode!r} is not supported")
            inputs = [x, g.const(m.weight.numpy())] + ([g.const(m.bias.numpy(), "b")] if m.bias is not None else [])
            x = g.node("Conv", inputs, kernel_shape=list(m.kernel_size), strides=list(m.stride),
                       pads=[*m.padding, *m.padding], dilations=list(m.dilation), group=m.groups)
        elif isinstance(m, nn.Linear):
            inputs = [x, g.const(m.weight.numpy())] + ([g.const(m.bias.numpy(), "b")] if m.bias is not None else [])
            x = g.node("Gemm", inputs, transB=1)
        elif isinstance(m, nn.ReLU):
            x = g.node("Relu", [x])
        elif isinstance(m, nn.MaxPool2d):
            k, s, p = (v if isinstance(v, tuple) else (v, v) for v in (m.kernel_size, m.stride, m.padding))
            if m.dilation not in (1, (1, 1)) or m.ceil_mode:
                raise ExportError("MaxPool2d with dilation or ceil_mode is not supported")
            x = g.node("MaxPool", [x], kernel_shape=list(k), strides=list(s), pads=[*p, *p])
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            (c, h, w), out = sample.shape[1:], m.output_size
            oh, ow = (out, out) if isinstance(out, int) else out
            if (oh, ow) == (1, 1):
                x = g.node("GlobalAveragePool", [x])
            else:
                flat = g.node("Reshape", [x, g.const(np.array([0, c, h * w], np.int64), "shape")])
                pooled = g.node("MatMul", [flat, g.const(_adaptive_pool_matrix(h, w, oh, ow), "pool")])
                x = g.node("Reshape", [pooled, g.const(np.array([0, c, oh, ow], np.int64), "shape")])
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ExportError(f"Flatten({m.start_dim}, {m.end_dim}) is not supported (only Flatten(1, -1))")
            x = g.node("Flatten", [x], axis=1)
        else:
            raise ExportError(f"no ONNX conversion for {type(m).__name__}; supported: Conv2d, Linear, BatchNorm "
                              f"(after a conv or linear layer), ReLU, MaxPool2d, AdaptiveAvgPool2d, Flatten, Identity")
        sample = m(sample)
    return x, sample


def segment_graph(block: nn.Module, head: nn.Module, sample: torch.Tensor):
    """The ONNX model of one segment: features in → (features after the block, logits of the head)."""
    from onnx import TensorProto, checker, helper

    g = _Graph()
    features, after = _emit(g, block, "features", sample)
    logits, out = _emit(g, head, features, after)
    g.nodes.append(helper.make_node("Identity", [features], ["features_out"]))
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))

    def io(name: str, value: torch.Tensor):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *value.shape[1:]])

    graph = helper.make_graph(g.nodes, "segment", [io("features", sample)], [io("features_out", after), io("logits", out)],
                              g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cgt",
                              ir_version=IR_VERSION)
    checker.check_model(model)
    return model


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
    full = segment_graph(nn.Sequential(*fused.blocks), fused.heads[-1], torch.zeros(1, *input_shape))
    write_bytes_atomic(out_dir / "full.onnx", full.SerializeToString())
    write_json_atomic(out_dir / MANIFEST, {
        "format": FORMAT, "opset": OPSET, "policy": policy, "thresholds": thresholds, "class_names": class_names,
        "input_shape": list(input_shape), "num_exits": model.num_exits, "segments": segments,
        "full_network": {"file": "full.onnx", "sha256": sha256_file(out_dir / "full.onnx")}, "source": source or {}})
    return out_dir


def export_run(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Export a finished run of a built-in dataset (the network rebuilt from its recorded preparation
    parameters, thresholds from its metrics.json); default output folder: <run_dir>/onnx."""
    from .data import BUILTIN, DataConfig, load
    from .data.base import COMMON_FIELDS
    from .paths import prepared_dir
    from .provenance import project_relative
    from .runs import is_complete, load_run

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
                          f"from Python with cgt.deploy.export_model(model, input_shape, ...)")
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

    sessions: list
    """One ONNX Runtime session per exit segment."""
    full_session: Any
    """The plain network (every block, the last head): the reference a speed-up is measured against."""
    manifest: dict[str, Any]
    thresholds: list[float]
    """The per-exit thresholds in use (E − 1 values)."""

    @property
    def policy(self) -> str:
        return self.manifest["policy"]

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(predictions (N,), 0-based exit index (N,)) for inputs x (N, *input_shape)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        preds, exits = np.empty(len(x), np.int64), np.empty(len(x), np.int64)
        last = len(self.sessions) - 1
        for start in range(0, len(x), batch_size):
            h = x[start:start + batch_size]
            pending = np.arange(start, start + len(h))
            for e, session in enumerate(self.sessions):
                h, logits = session.run(None, {"features": h})
                if e == last:
                    done = np.ones(len(h), bool)
                elif len(h) == 1:  # the latency setting: the rule on K plain floats, no tensor ops
                    done = np.array([accepts_row(logits[0].tolist(), self.thresholds[e], self.policy)])
                else:
                    done = accepts(torch.from_numpy(logits), self.thresholds[e], self.policy).numpy()
                preds[pending[done]] = logits[done].argmax(-1)
                exits[pending[done]] = e
                if done.all():
                    break
                h, pending = h[~done], pending[~done]
        return preds, exits

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
        raise ExportError(f"{folder / MANIFEST} has format {manifest.get('format')!r}; expected {FORMAT!r}")
    if point not in manifest["thresholds"]:
        raise ValueError(f"unknown operating point {point!r}; valid choices: {sorted(manifest['thresholds'])}")
    for seg in [*manifest["segments"], manifest["full_network"]]:
        actual = sha256_file(folder / seg["file"]) if (folder / seg["file"]).exists() else "missing"
        if actual != seg["sha256"]:
            raise ExportError(f"{folder / seg['file']} does not match the manifest (sha256 {actual}, recorded "
                              f"{seg['sha256']}): refusing to load a changed or incomplete export; export again")
    options = ort.SessionOptions()
    # Several sessions run one after another: idle thread pools must sleep, not spin, or each
    # session's spinning workers take the cores the next segment needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    def session(file: str):
        return ort.InferenceSession(str(folder / file), options, providers=["CPUExecutionProvider"])

    taus = check_thresholds(manifest["thresholds"][point], manifest["num_exits"]).tolist()
    return OnnxEarlyExit([session(seg["file"]) for seg in manifest["segments"]],
                         session(manifest["full_network"]["file"]), manifest, taus)
