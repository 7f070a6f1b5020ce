"""Torch early-exit networks → ONNX graphs, by a small converter of their modules.

Two kinds of graph, both with BatchNorm folded into the convolution or linear layer before it:
  * `segment_graph`: one exit segment, features in → (features after the block, logits of its head, and
    optionally the policy's score and the predicted class);
  * `early_exit_graph`: the whole early-exit pass in one graph. After each exit the policy's score is
    compared with that exit's threshold (a graph input, so one graph serves every operating point);
    the samples it takes are written out, the rest are compacted (Compress) and go on: one call per
    batch, no Python between the exits.
Exit heads (adaptive average pooling, flatten, linear) become one matrix product on the whole
feature map (`_fold_pool_into_linear`).

Why not torch.onnx: the exits pool adaptively to grids that do not divide the feature maps (7×7 → 3×3),
which the TorchScript exporter refuses; here that pooling is a fixed averaging matrix (a MatMul).
Converted module types: Conv2d, Linear, BatchNorm (folded), ReLU, MaxPool2d, AdaptiveAvgPool2d,
Flatten, Identity, Sequential; anything else is refused by name.
"""
from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import EarlyExitNet
from ..policy import check_policy

OPSET = 17
IR_VERSION = 8  # the ONNX file format version for opset 17; newer onnx writers default to one ONNX Runtime may not read


class ExportError(ValueError):
    """The network or run cannot be exported (names what is missing or unsupported)."""


# ---------------------------------------------------------------- torch modules → ONNX nodes
class _Graph:
    """Nodes and initialisers of one ONNX graph, with fresh tensor names."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self._names = itertools.count(1)

    def name(self, prefix: str) -> str:
        return f"{prefix}_{next(self._names)}"

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.name(prefix)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def rename(self, old: str, new: str) -> None:
        """Give tensor `old` the name `new` everywhere (a graph output named directly, not copied by an
        Identity node: at batch size 1 every operator costs a microsecond or two)."""
        for node in self.nodes:
            for names in (node.input, node.output):
                for i, name in enumerate(names):
                    if name == old:
                        names[i] = new

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
def _fold_pool_into_linear(leaves: list[nn.Module], sample: torch.Tensor) -> list[nn.Module]:
    """AdaptiveAvgPool2d → Flatten → Linear (an exit head) as Flatten → one Linear on the whole feature
    map: averaging is linear, so W·pool(x) = (W·P)·x. Same logits up to rounding, and two operators
    instead of five: at batch size 1 an exit's cost is mostly per-operator overhead."""
    out, i = [], 0
    while i < len(leaves):
        m = leaves[i]
        window = leaves[i:i + 3]
        if (len(window) == 3 and isinstance(m, nn.AdaptiveAvgPool2d) and isinstance(window[1], nn.Flatten)
                and (window[1].start_dim, window[1].end_dim) == (1, -1) and isinstance(window[2], nn.Linear)):
            (c, h, w), size = sample.shape[1:], m.output_size
            oh, ow = (size, size) if isinstance(size, int) else size
            pool = torch.from_numpy(_adaptive_pool_matrix(h, w, oh, ow))  # (h·w, oh·ow)
            linear = window[2]
            folded = nn.Linear(c * h * w, linear.out_features, bias=linear.bias is not None)
            weight = linear.weight.reshape(linear.out_features, c, oh * ow) @ pool.T  # (K, c, h·w)
            folded.weight = nn.Parameter(weight.reshape(linear.out_features, c * h * w))
            if linear.bias is not None:
                folded.bias = nn.Parameter(linear.bias.clone())
            out += [nn.Flatten(), folded]
            for step in window:
                sample = step(sample)
            i += 3
        else:
            out.append(m)
            sample = m(sample)
            i += 1
    return out


@torch.no_grad()
def _emit(g: _Graph, module: nn.Module, x: str, sample: torch.Tensor) -> tuple[str, torch.Tensor]:
    """Append `module` applied to tensor `x` (whose value on one sample is `sample`); returns the output
    tensor's name and value (the value gives the static spatial sizes the pooling matrices need)."""
    for m in _fold_pool_into_linear(_flatten(module), sample):
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


def _model(graph):
    from onnx import checker, helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cgt",
                              ir_version=IR_VERSION)
    checker.check_model(model)
    return model


def _batched(name: str, value: torch.Tensor, dtype: str = "FLOAT"):
    """The value info of a tensor with a free batch dimension and the sample's other dimensions."""
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, getattr(TensorProto, dtype), ["batch", *value.shape[1:]])


def segment_graph(block: nn.Module, head: nn.Module, sample: torch.Tensor, policy: str | None = None,
                  features_out: bool = True, prediction: bool | None = None):
    """The ONNX model of one segment: features in → features after the block ('features_out', unless
    `features_out` is False: the plain network has no use for them) and the head's 'logits'; with a
    policy also its 'score' (N,), and with `prediction` (default: when there is a policy) the class
    'prediction' (N,): the exit decision then needs no array operation in Python, only one float
    compared with τ (`cgt.policy.passes`)."""
    from onnx import TensorProto, helper

    g = _Graph()
    features, after = _emit(g, block, "features", sample)
    logits, out = _emit(g, head, features, after)
    outputs = []
    if features_out:
        if features == "features":  # a block of Identity only: the input itself goes out
            g.nodes.append(helper.make_node("Identity", [features], ["features_out"]))
        else:
            g.rename(features, "features_out")
        outputs.append(_batched("features_out", after))
    g.rename(logits, "logits")
    outputs.append(_batched("logits", out))
    if policy is not None:
        check_policy(policy)
        g.rename(_exit_score(g, "logits", policy), "score")
        outputs.append(helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]))
    if prediction if prediction is not None else policy is not None:
        g.rename(g.node("ArgMax", ["logits"], axis=1, keepdims=0), "prediction")
        outputs.append(helper.make_tensor_value_info("prediction", TensorProto.INT64, ["batch"]))
    graph = helper.make_graph(g.nodes, "segment", [_batched("features", sample)], outputs, g.initializers)
    return _model(graph)


def _exit_score(g: _Graph, logits: str, policy: str) -> str:
    """Float (n,): cgt.policy's score of these logits, in ONNX operators."""
    p = g.node("Softmax", [logits], axis=-1)
    if policy == "max_softmax":
        return g.node("ReduceMax", [p], axes=[-1], keepdims=0)
    # Normalised entropy H(p) / log K with log of p clamped at 1e-12, as cgt.policy.normalized_entropy.
    log_p = g.node("Log", [g.node("Clip", [p, g.const(np.array(1e-12, np.float32), "eps")])])
    neg_entropy = g.node("ReduceSum", [g.node("Mul", [p, log_p]), g.const(np.array([-1], np.int64), "axes")],
                         keepdims=0)
    k = g.node("Cast", [g.node("Gather", [g.node("Shape", [logits]), g.const(np.array(1, np.int64), "i")])], to=1)
    return g.node("Div", [g.node("Neg", [neg_entropy]), g.node("Log", [k])])


def _exit_decision(g: _Graph, logits: str, threshold: str, policy: str) -> str:
    """Bool (n,): does this exit take the sample? cgt.policy's rule, in ONNX operators."""
    score = _exit_score(g, logits, policy)
    return g.node("GreaterOrEqual" if policy == "max_softmax" else "LessOrEqual", [score, threshold])


@torch.no_grad()
def early_exit_graph(model: EarlyExitNet, input_shape: tuple[int, ...], policy: str = "max_softmax"):
    """The whole early-exit pass as one ONNX model.

    Inputs: features (N, *input_shape) float32, thresholds (E − 1,) float32.
    Outputs: predictions (N,) int64 and exit_index (N,) int64 (0-based), in input order.
    Segment e runs on the samples no earlier exit took (Compress); once none is left, the deeper
    segments run on an empty batch. (An If node could skip them, but ONNX Runtime does not use its
    blocked-layout convolution kernels inside If subgraphs, which cost more on batches than the skip
    saves; single samples are better served by the segment graphs, see cgt.deployment.exported.)
    """
    from onnx import TensorProto, helper

    check_policy(policy)
    int64 = TensorProto.INT64
    g = _Graph()
    batch = g.node("Shape", ["features"], start=0, end=1)
    positions = g.node("Range", [g.const(np.array(0, np.int64), "zero"),
                                 g.node("Squeeze", [batch, g.const(np.array([0], np.int64), "axes")]),
                                 g.const(np.array(1, np.int64), "one")])
    h, sample = "features", torch.zeros(1, *input_shape)
    taken = {"positions": [], "predictions": [], "exits": []}  # per exit, the samples it takes
    for e in range(model.num_exits):
        features, after = _emit(g, model.blocks[e], h, sample)
        logits, _ = _emit(g, model.heads[e], features, after)
        predictions = g.node("ArgMax", [logits], axis=1, keepdims=0)
        if e < model.num_exits - 1:
            threshold = g.node("Gather", ["thresholds", g.const(np.array(e, np.int64), "i")])
            done = _exit_decision(g, logits, threshold, policy)
            rest = g.node("Not", [done])
            leaving = g.node("Compress", [positions, done], axis=0)
            predictions = g.node("Compress", [predictions, done], axis=0)
            h, positions = (g.node("Compress", [t, rest], axis=0) for t in (features, positions))
        else:  # the last exit takes every sample still here
            leaving = positions
        taken["positions"].append(leaving)
        taken["predictions"].append(predictions)
        taken["exits"].append(g.node("Expand", [g.const(np.array([e], np.int64), "exit"), g.node("Shape", [leaving])]))
        sample = after
    order, predictions, exits = (g.node("Concat", parts, axis=0) for parts in taken.values())
    # Back to input order: each sample's result scattered to its position.
    zeros = g.node("ConstantOfShape", [batch], value=helper.make_tensor("zero", int64, [1], [0]))
    g.nodes.append(helper.make_node("ScatterElements", [zeros, order, predictions], ["predictions"], axis=0))
    g.nodes.append(helper.make_node("ScatterElements", [zeros, order, exits], ["exit_index"], axis=0))
    inputs = [_batched("features", torch.zeros(1, *input_shape)),
              helper.make_tensor_value_info("thresholds", TensorProto.FLOAT, [model.num_exits - 1])]
    outputs = [helper.make_tensor_value_info(name, int64, ["batch"]) for name in ("predictions", "exit_index")]
    return _model(helper.make_graph(g.nodes, "early_exit", inputs, outputs, g.initializers))
