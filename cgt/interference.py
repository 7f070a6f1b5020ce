"""Gradient interference between exits, measured: the paper's premise is that in joint training the deep
exits' gradients dominate the shared blocks and conflict with the shallow exits'. This module measures
it on one batch (training logs it every N steps when asked: TrainConfig.log_gradients_every).

On the shared parameters (every block before the last one: all exits but the last depend on them),
with g_e the gradient of exit e's weighted loss  mean_i w_e(i)·CE_e(i):
  * cosine[e][k] = cos(g_e, g_k): negative values are conflicting directions;
  * norm_share[e] = ‖g_e‖ / Σ_k ‖g_k‖: how much of the pull on the shared blocks each exit has.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .models import EarlyExitNet


def gradient_interference(model: EarlyExitNet, exit_logits: torch.Tensor, targets: torch.Tensor,
                          weights: torch.Tensor, label_smoothing: float = 0.0) -> dict[str, list]:
    """{"cosine": E×E (None where an exit's gradient is zero), "norm_share": E} for one batch; leaves
    the parameters' .grad untouched (torch.autograd.grad, graph retained for the training step)."""
    shared = [p for block in model.blocks[:-1] for p in block.parameters() if p.requires_grad]
    num_exits, batch, classes = exit_logits.shape
    ce = F.cross_entropy(exit_logits.float().reshape(-1, classes), targets.repeat(num_exits), reduction="none",
                         label_smoothing=label_smoothing).view(num_exits, batch)
    losses = (weights.detach().T * ce).mean(dim=1)  # (E,): each exit's term of the training loss
    flat = []
    for e in range(num_exits):
        grads = torch.autograd.grad(losses[e], shared, retain_graph=True, allow_unused=True)
        flat.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, shared)]))
    g = torch.stack(flat)  # (E, P)
    norms = g.norm(dim=1)
    cosine = (g @ g.T) / (norms[:, None] * norms[None, :]).clamp_min(torch.finfo(g.dtype).tiny)
    zero = norms == 0
    return {"cosine": [[None if zero[e] or zero[k] else float(cosine[e, k]) for k in range(num_exits)]
                       for e in range(num_exits)],
            "norm_share": (norms / norms.sum().clamp_min(torch.finfo(g.dtype).tiny)).tolist()}
