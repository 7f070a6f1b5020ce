"""Gradient interference between exits, measured: the paper's premise is that in joint training the deep
exits' gradients dominate the shared blocks and conflict with the shallow exits'. This module measures
it on one batch (training logs it every N steps when asked: TrainConfig.log_gradients_every).

Exit e (0-based) depends on blocks 0..e only, so each comparison uses only the blocks both sides reach
(zeros elsewhere would bias cosines towards 0 and norm shares towards the deep exits). With g_e the
gradient of exit e's weighted loss  mean_i w_e(i)·CE_e(i):
  * cosine[e][k] = cos(g_e, g_k) on blocks 0..min(e, k), the blocks both reach: negative values are
    conflicting directions;
  * norm_share[e] = ‖g_e‖ / Σ_k ‖g_k‖ on block 0, the one block every exit reaches: how much of the pull
    on the shared representation each exit has; norm_share_per_block[b][e] the same on block b, over the
    exits that reach it (None for an exit that does not).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .models import EarlyExitNet


def gradient_interference(model: EarlyExitNet, exit_logits: torch.Tensor, targets: torch.Tensor,
                          weights: torch.Tensor, label_smoothing: float = 0.0) -> dict[str, list]:
    """{"cosine": E×E (None where an exit's gradient is zero on the blocks compared), "norm_share": E,
    "norm_share_per_block": E blocks × E} for one batch; leaves the parameters' .grad untouched
    (torch.autograd.grad, graph retained for the training step)."""
    num_exits, batch, classes = exit_logits.shape
    blocks = [[p for p in block.parameters() if p.requires_grad] for block in model.blocks[:num_exits]]
    ce = F.cross_entropy(exit_logits.float().reshape(-1, classes), targets.repeat(num_exits), reduction="none",
                         label_smoothing=label_smoothing).view(num_exits, batch)
    losses = (weights.detach().T * ce).mean(dim=1)  # (E,): each exit's term of the training loss
    # per_block[e][b]: exit e's gradient on block b, flattened (b ≤ e: the blocks it reaches)
    per_block = []
    for e in range(num_exits):
        reached = [p for block in blocks[:e + 1] for p in block]
        grads = iter(torch.autograd.grad(losses[e], reached, retain_graph=True, allow_unused=True))
        per_block.append([torch.cat([_dense(next(grads), p) for p in block]) for block in blocks[:e + 1]])
    tiny = torch.finfo(torch.float64).tiny
    cosine = [[None] * num_exits for _ in range(num_exits)]
    for e in range(num_exits):
        for k in range(num_exits):
            shared = min(e, k) + 1
            a, b = torch.cat(per_block[e][:shared]), torch.cat(per_block[k][:shared])
            if a.norm() > 0 and b.norm() > 0:
                cosine[e][k] = float(a @ b / (a.norm() * b.norm()).clamp_min(tiny))
    shares = []
    for b in range(num_exits):
        norms = {e: float(per_block[e][b].norm()) for e in range(b, num_exits)}
        total = max(sum(norms.values()), tiny)
        shares.append([norms[e] / total if e in norms else None for e in range(num_exits)])
    return {"cosine": cosine, "norm_share": shares[0], "norm_share_per_block": shares}


def _dense(grad: torch.Tensor | None, param: torch.Tensor) -> torch.Tensor:
    """A parameter's gradient, flattened (zeros for a parameter the loss does not use, e.g. frozen BN)."""
    return (grad if grad is not None else torch.zeros_like(param)).flatten().double()  # float64: cos(g, g) = 1
