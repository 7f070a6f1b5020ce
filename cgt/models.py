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

    def forward(self, x: torch.Tensor, detach_early_heads: bool = False) -> torch.Tensor:
        """(B, ...) → (E, B, K). With `detach_early_heads`, heads 1..E-1 see detached features:
        they learn, but no gradient from them reaches the backbone (used by `last_exit`)."""
        logits = []
        h = x
        for e, (block, head) in enumerate(zip(self.blocks, self.heads)):
            h = block(h)
            early = e < self.num_exits - 1
            logits.append(head(h.detach() if (detach_early_heads and early) else h))
        return torch.stack(logits)


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


BUILDERS = {"fashion_mnist": fashion_mnist_cnn, "indian_pines": indian_pines_cnn}


def build_model(dataset: str, input_shape: Sequence[int], num_classes: int) -> EarlyExitNet:
    """The paper model of `dataset`, sized for `input_shape` (C, H, W)."""
    if dataset not in BUILDERS:
        raise ValueError(f"no model builder for dataset {dataset!r}; valid choices: {sorted(BUILDERS)}")
    return BUILDERS[dataset](num_classes=num_classes, in_channels=input_shape[0])
