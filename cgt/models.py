"""Early-exit networks: an ordered list of backbone blocks, one exit head after each block.

    x ─ block1 ─┬─ block2 ─┬─ block3 ─ head3 → logits of exit 3 (the full network)
                └ head1    └ head2

`forward` returns every exit's logits stacked as (exits, batch, classes), shallow → deep.
Early-exit inference (cgt.inference) calls `blocks[e]` and `heads[e]` one at a time instead.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class EarlyExitNet(nn.Module):
    def __init__(self, blocks: Sequence[nn.Module], heads: Sequence[nn.Module]):
        super().__init__()
        if len(blocks) != len(heads) or not blocks:
            raise ValueError(f"need one head per block, got {len(blocks)} blocks and {len(heads)} heads")
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(heads)

    @property
    def num_exits(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor, detach_early_heads: bool = False, gradient_equilibrium: bool = False) -> torch.Tensor:
        """(B, ...) → (E, B, K). With `detach_early_heads`, heads 1..E-1 see detached features:
        they learn, but no gradient from them reaches the backbone (used by `last_exit`).

        With `gradient_equilibrium` (Li et al., ICCV 2019, as in their code): after block e (0-based)
        of E, the gradient from head e is scaled by 1 / (E − e) and the gradient from the later
        blocks by (E − e − 1) / (E − e); the forward values are unchanged."""
        logits = []
        h = x
        for e, (block, head) in enumerate(zip(self.blocks, self.heads)):
            h = block(h)
            early = e < self.num_exits - 1
            if gradient_equilibrium:
                h = scale_gradient(h, 1.0 / (self.num_exits - e))
            logits.append(head(h.detach() if (detach_early_heads and early) else h))
            if gradient_equilibrium:
                h = scale_gradient(h, float(self.num_exits - e - 1))
        return torch.stack(logits)


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x in the forward pass; the gradient flowing back through it multiplied by `scale`."""
    return _ScaleGradient.apply(x, scale)


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def pooled_head(channels: int, num_classes: int, pool: int) -> nn.Module:
    """A light exit: average-pool to pool×pool, then one linear layer."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Linear(channels * pool * pool, num_classes))


def fashion_mnist_cnn(num_classes: int = 10, widths: Sequence[int] = (16, 32, 64), in_channels: int = 1) -> EarlyExitNet:
    """Three conv stages on 28×28 images; exits after 14×14, 7×7 and 3×3 feature maps.

    Heads pool to a small grid and keep its layout (a 1×1 pool of a few channels loses too much
    for clothing shapes): exit 1 sees 16×4×4 features, exit 2 32×3×3, exit 3 64×3×3.
    """
    w1, w2, w3 = widths
    blocks = [
        nn.Sequential(*conv_bn_relu(in_channels, w1), nn.MaxPool2d(2)),            # (w1, 14, 14)
        nn.Sequential(*conv_bn_relu(w1, w2), nn.MaxPool2d(2)),                     # (w2, 7, 7)
        nn.Sequential(*conv_bn_relu(w2, w3), nn.MaxPool2d(2)),                     # (w3, 3, 3)
    ]
    heads = [pooled_head(w1, num_classes, 4), pooled_head(w2, num_classes, 3), pooled_head(w3, num_classes, 3)]
    return EarlyExitNet(blocks, heads)


def indian_pines_cnn(num_classes: int = 16, in_channels: int = 30, widths: Sequence[int] = (32, 64, 128)) -> EarlyExitNet:
    """Spectral–spatial CNN on (C, p, p) patches.

    Block 1 mixes spectra per pixel (1×1 conv) and looks at 3×3 neighbourhoods; blocks 2–3 widen
    the spatial context. Every head pools globally: the centre pixel's class is a property of the
    neighbourhood, not of a position in it.
    """
    w1, w2, w3 = widths
    blocks = [
        nn.Sequential(*conv_bn_relu(in_channels, w1, kernel=1), *conv_bn_relu(w1, w1)),
        nn.Sequential(*conv_bn_relu(w1, w2), nn.MaxPool2d(2)),
        nn.Sequential(*conv_bn_relu(w2, w3)),
    ]
    heads = [pooled_head(w, num_classes, 1) for w in (w1, w2, w3)]
    return EarlyExitNet(blocks, heads)


def generic_cnn(input_shape: Sequence[int], num_classes: int, width: int = 32, depth: int = 3) -> EarlyExitNet:
    """For images of your own: `depth` stages of conv3×3-BN-ReLU-maxpool(2), channels doubling from
    `width`; each exit pools to 2×2 (1×1 once the map is that small) + linear."""
    c, h, w = input_shape
    if min(h, w) < 2 ** depth:
        raise ValueError(f"image shape (C, H, W) = {tuple(input_shape)} is too small for the generic CNN with "
                         f"depth={depth}: it halves H and W {depth} times, so H and W must be >= {2 ** depth}. "
                         f"Use a smaller depth, flatten to tabular (N, F), or pass your own model")
    blocks, heads, c_in = [], [], c
    for stage in range(depth):
        c_out = width * 2 ** stage
        blocks.append(nn.Sequential(*conv_bn_relu(c_in, c_out), nn.MaxPool2d(2)))
        size = min(h, w) // 2 ** (stage + 1)
        heads.append(pooled_head(c_out, num_classes, 2 if size >= 2 else 1))
        c_in = c_out
    return EarlyExitNet(blocks, heads)


def generic_mlp(input_shape: Sequence[int], num_classes: int, width: int = 128, depth: int = 3) -> EarlyExitNet:
    """For tabular data (N, F): `depth` blocks of Linear-BatchNorm-ReLU, a linear exit after each."""
    (features,) = input_shape
    blocks, heads, d_in = [], [], features
    for _ in range(depth):
        blocks.append(nn.Sequential(nn.Linear(d_in, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)))
        heads.append(nn.Linear(width, num_classes))
        d_in = width
    return EarlyExitNet(blocks, heads)


def generic_model(input_shape: Sequence[int], num_classes: int, **options: int) -> EarlyExitNet:
    """A generic early-exit network chosen from the input shape — a CNN for (C, H, W) images, an MLP
    for (F,) features — with `options` (width, depth) passed to it. (The paper datasets have their
    own networks above; each dataset's record in cgt.data names its default.)"""
    unknown = sorted(set(options) - {"width", "depth"})
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; valid options: ['depth', 'width']")
    if any(int(v) < 1 for v in options.values()):
        raise ValueError(f"model options {options} must be positive integers")
    if len(input_shape) == 3:
        return generic_cnn(input_shape, num_classes, **options)
    if len(input_shape) == 1:
        return generic_mlp(input_shape, num_classes, **options)
    raise ValueError(f"no generic early-exit network for inputs of shape {tuple(input_shape)}; "
                     f"expected (C, H, W) images or (F,) features")
