"""Exit-weighting strategies: who learns from which sample at which exit.

Every method of the paper (HardCGT, SoftCGT) and every baseline is a *strategy*: a rule that
gives each sample i a weight w_e(i) at each exit e. One loss applies them all:

    L = Σ_e mean_i [ w_e(i) · CE(logits_e(i), y_i) ]

Weights are computed under `torch.no_grad()`: gates decide how much each exit learns from a
sample; they are never trained through.

    w = exit_weights(exit_logits, targets, "hard_cgt", progress=epoch / (epochs - 1), tau_train=0.5)
    loss = weighted_exit_loss(exit_logits, targets, w)
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .policy import normalized_entropy

Tensor = torch.Tensor


# ---------------------------------------------------------------- λ schedules
def default_lambda_schedule(num_exits: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(start, end) of the authors' λ annealing, shallow-heavy → deep-heavy.

    The authors' 4-exit schedule is (1.0, 0.7, 0.4, 0.1) → (0.2, 0.5, 0.8, 1.0). For other exit
    counts we keep its end points and space the exits evenly: 3 exits give
    (1.0, 0.55, 0.1) → (0.2, 0.6, 1.0).
    """
    if num_exits == 4:
        return (1.0, 0.7, 0.4, 0.1), (0.2, 0.5, 0.8, 1.0)
    if num_exits == 1:
        return (1.0,), (1.0,)
    start = tuple(round(1.0 - 0.9 * e / (num_exits - 1), 6) for e in range(num_exits))
    end = tuple(round(0.2 + 0.8 * e / (num_exits - 1), 6) for e in range(num_exits))
    return start, end


def resolve_lambdas(lambdas: Any, num_exits: int, progress: float) -> Tensor:
    """λ for this point of training. `lambdas` is 'annealed' (authors' schedule), a sequence of
    E floats (fixed), or a pair (start, end) of such sequences (linear in `progress` ∈ [0, 1])."""
    if isinstance(lambdas, str):
        start, end = default_lambda_schedule(num_exits)
    elif len(lambdas) == 2 and all(isinstance(v, (list, tuple)) for v in lambdas):
        start, end = lambdas
    else:
        start = end = lambdas
    start_t = torch.tensor(start, dtype=torch.float32)
    end_t = torch.tensor(end, dtype=torch.float32)
    return start_t + (end_t - start_t) * float(progress)


def lambdas_at(options: dict[str, Any], num_exits: int, progress: float) -> Tensor:
    """λ of a strategy's resolved `options` at `progress`: its schedule, or the last exit alone while
    progress < last_only_until (the first phase of `mixed`)."""
    if float(progress) < float(options.get("last_only_until", 0.0)):
        return torch.tensor([0.0] * (num_exits - 1) + [1.0])
    return resolve_lambdas(options["lambdas"], num_exits, progress)


def inverse_frequency(labels: Tensor, num_classes: int) -> Tensor:
    """(K,) class weights N / (K_present · n_c): a training set's mean sample weight is 1, each class
    present carries the same total weight, and a class absent from training weighs 0."""
    counts = torch.bincount(labels.flatten().cpu(), minlength=num_classes).float()
    present = counts > 0
    weights = torch.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


@functools.lru_cache(maxsize=256)
def _lambdas_on_device(lambdas: Any, last_only_until: float, num_exits: int, progress: float, device: str) -> Tensor:
    """λ already on the training device: one host→device copy per epoch, not one per step."""
    return lambdas_at({"lambdas": lambdas, "last_only_until": last_only_until}, num_exits, progress).to(device)


def _check_lambdas(lambdas: Any, num_exits: int) -> None:
    if isinstance(lambdas, str):
        if lambdas != "annealed":
            raise ValueError(f"lambdas={lambdas!r}: valid choices are 'annealed', a list of {num_exits} "
                             f"floats, or a pair [start, end] of such lists")
        return
    seqs = lambdas if (len(lambdas) == 2 and all(isinstance(v, (list, tuple)) for v in lambdas)) else [lambdas]
    for seq in seqs:
        if len(seq) != num_exits:
            raise ValueError(f"lambdas {list(seq)} has length {len(seq)}; the model has {num_exits} exits")
        if any(float(v) < 0 for v in seq) or sum(float(v) for v in seq) <= 0:
            raise ValueError(f"lambdas {list(seq)} must be non-negative and not all zero")


# ---------------------------------------------------------------- gates (each returns (B, E))
def _eligibility(success: Tensor) -> Tensor:
    """elig_1 = 1, elig_e = Π_{k<e} (1 − success_k): an exit learns only what earlier exits failed."""
    fail = 1.0 - success
    ones = torch.ones_like(fail[:, :1])
    return torch.cat([ones, torch.cumprod(fail[:, :-1], dim=1)], dim=1)


def _probs(exit_logits: Tensor) -> Tensor:
    """(E, B, K) logits → (B, E, K) probabilities."""
    return exit_logits.float().softmax(-1).transpose(0, 1)


def hard_cgt_gate(exit_logits: Tensor, targets: Tensor, tau_train: float) -> Tensor:
    """HardCGT: exit e 'succeeds' on a sample if it is correct *and* confident (max p ≥ τ)."""
    p = _probs(exit_logits)
    conf, pred = p.max(-1)
    success = ((pred == targets[:, None]) & (conf >= tau_train)).float()
    return _eligibility(success)


def soft_residual(true_class_prob: Tensor, residual: str, tau_train: float, sigmoid_scale: float) -> Tensor:
    """How much of a sample's weight an exit passes on, from its true-class probability s:

    sigmoid: r = clamp(1 − sigmoid((s − τ)·k), 0, 1)  (authors' code; with k = 1 it spans ≈ 0.48–0.71)
    linear:  r = 1 − s
    """
    s = true_class_prob
    if residual == "sigmoid":
        return (1.0 - torch.sigmoid((s - tau_train) * sigmoid_scale)).clamp(0.0, 1.0)
    return 1.0 - s


def soft_cgt_gate(exit_logits: Tensor, targets: Tensor, tau_train: float, residual: str,
                  sigmoid_scale: float) -> Tensor:
    """SoftCGT: each exit passes on the residual r_e (`soft_residual`) of its true-class probability s_e."""
    p = _probs(exit_logits)
    s = p.gather(-1, targets[:, None, None].expand(-1, p.shape[1], 1)).squeeze(-1)  # (B, E)
    r = soft_residual(s, residual, tau_train, sigmoid_scale)
    ones = torch.ones_like(r[:, :1])
    return torch.cat([ones, torch.cumprod(r[:, :-1], dim=1)], dim=1)


def branchy_gate(exit_logits: Tensor, targets: Tensor, entropy_threshold: float) -> Tensor:
    """BranchyNet-style: a sample leaves training at the first exit whose normalised entropy
    (H / log K, in [0, 1]) is below the threshold — confidence only, correctness not checked."""
    return _eligibility((normalized_entropy(_probs(exit_logits)) < entropy_threshold).float())


def no_gate(exit_logits: Tensor, targets: Tensor) -> Tensor:
    return exit_logits.new_ones(exit_logits.shape[1], exit_logits.shape[0])


# ---------------------------------------------------------------- terms beside the weighted CE
def self_distillation_loss(exit_logits: Tensor, targets: Tensor, temperature: float, distill_weight: float) -> Tensor:
    """Self-distillation (Zhang et al., "Be Your Own Teacher", ICCV 2019): the last exit, detached,
    teaches every earlier exit through softened probabilities,

        distill_weight · mean_{e < E} T² · KL(softmax(z_E / T) ‖ softmax(z_e / T)),

    KL averaged over the batch; T² keeps its gradients on the scale of the cross-entropy's."""
    if exit_logits.shape[0] < 2:
        return exit_logits.new_zeros(())
    teacher = F.log_softmax(exit_logits[-1].detach() / temperature, dim=-1)
    kl = [F.kl_div(F.log_softmax(student / temperature, dim=-1), teacher, log_target=True, reduction="batchmean")
          for student in exit_logits[:-1]]
    return distill_weight * temperature ** 2 * torch.stack(kl).mean()


# ---------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    gate: Callable[..., Tensor]
    defaults: dict[str, Any] = field(default_factory=dict)
    """Every option the strategy accepts, with its default."""
    gate_options: tuple[str, ...] = ()
    """Which options are passed to `gate`."""
    detach_early_heads: bool = False
    """True for last_exit: early heads learn on detached features (backbone = plain network)."""
    gradient_equilibrium: bool = False
    """True for grad_equilibrium: the network rescales gradients at each block's output
    (cgt.models.EarlyExitNet.forward)."""
    extra_loss: Callable[..., Tensor] | None = None
    """A term added to the weighted cross-entropy: extra_loss(exit_logits, targets, **extra options)."""
    extra_options: tuple[str, ...] = ()
    """Which options are passed to `extra_loss`."""
    class_balanced: bool = False
    """True for joint_balanced: each sample's weights are multiplied by its class's inverse training
    frequency (`inverse_frequency`), so rare classes pull as hard as common ones."""

    def extra(self, exit_logits: Tensor, targets: Tensor, options: dict[str, Any]) -> Tensor | None:
        """The extra term for these logits, or None when the strategy has none."""
        if self.extra_loss is None:
            return None
        return self.extra_loss(exit_logits, targets, **{k: options[k] for k in self.extra_options})


STRATEGIES: dict[str, Strategy] = {s.name: s for s in [
    Strategy("last_exit", "the plain network: only the last exit trains the backbone; earlier heads are fitted "
             "on its detached features in the same run", no_gate, {"lambdas": "last"}, detach_early_heads=True),
    Strategy("joint_uniform", "fixed equal weights on every exit (MSDNet)", no_gate,
             {"lambdas": "uniform", "normalize": True}),
    Strategy("joint_depth", "fixed depth-increasing weights, λ_e ∝ e (PABEE/GPF)", no_gate,
             {"lambdas": "depth", "normalize": True}),
    Strategy("joint_annealed", "the authors' λ schedule with no gate: isolates what gating adds", no_gate,
             {"lambdas": "annealed", "normalize": True}),
    Strategy("joint_balanced", "fixed equal weights, each sample weighted by its class's inverse training "
             "frequency: tests whether a gain in macro-F1 is just class reweighting", no_gate,
             {"lambdas": "uniform", "normalize": True}, class_balanced=True),
    Strategy("mixed", "the backbone and last exit trained alone for the first part of training, then every "
             "exit jointly with equal weights (Kubaty et al. 2024's 'mixed' regime)", no_gate,
             {"lambdas": "uniform", "normalize": True, "last_only_until": 0.5}),
    Strategy("branchy_gate", "BranchyNet-style train-time gate: deeper losses dropped once an earlier exit's "
             "entropy is below a threshold", branchy_gate,
             {"entropy_threshold": 0.3, "eps_leak": 0.0, "lambdas": "uniform", "normalize": True},
             gate_options=("entropy_threshold",)),
    Strategy("grad_equilibrium", "fixed equal weights, and each block's output gradient rescaled so that no exit's "
             "gradient dominates the shared blocks (gradient equilibrium, Li et al., ICCV 2019). Unrolled, it "
             "scales block e's gradient by the constant 1/(E − e): a per-block learning rate under SGD, a no-op "
             "under AdamW (scale-invariant per parameter) — Li et al. trained with SGD", no_gate,
             {"lambdas": "uniform", "normalize": True}, gradient_equilibrium=True),
    Strategy("self_distill", "fixed equal weights plus the detached last exit teaching every earlier exit by "
             "softened KL (self-distillation, Zhang et al., ICCV 2019)", no_gate,
             {"lambdas": "uniform", "normalize": True, "temperature": 3.0, "distill_weight": 0.3},
             extra_loss=self_distillation_loss, extra_options=("temperature", "distill_weight")),
    Strategy("hard_cgt", "HardCGT: a deeper exit learns a sample only if every earlier exit was wrong or "
             "unconfident (binary gate)", hard_cgt_gate,
             {"tau_train": 0.5, "eps_leak": 1e-3, "lambdas": "annealed", "normalize": True},
             gate_options=("tau_train",)),
    Strategy("soft_cgt", "SoftCGT: a deeper exit learns a sample in proportion to the earlier exits' residual "
             "(1 − true-class confidence)", soft_cgt_gate,
             {"tau_train": 0.9, "eps_leak": 1e-3, "lambdas": "annealed", "normalize": True,
              "residual": "sigmoid", "sigmoid_scale": 1.0},
             gate_options=("tau_train", "residual", "sigmoid_scale")),
]}

RESIDUALS = ("sigmoid", "linear")


def _named_lambdas(name: str, num_exits: int) -> list[float]:
    return {"last": [0.0] * (num_exits - 1) + [1.0],
            "uniform": [1.0] * num_exits,
            "depth": [float(e + 1) for e in range(num_exits)]}[name]


def resolve_options(strategy: str, num_exits: int | None, **options: Any) -> dict[str, Any]:
    """Defaults filled in and every value checked; raises ValueError naming what is wrong."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid choices: {sorted(STRATEGIES)}")
    spec = STRATEGIES[strategy]
    unknown = sorted(set(options) - set(spec.defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for strategy {strategy!r}; valid options: {sorted(spec.defaults)}")
    opts = spec.defaults | options
    lam = opts["lambdas"]
    if num_exits is not None:  # None: before the model exists, check everything but λ's length
        if isinstance(lam, str) and lam in ("last", "uniform", "depth"):
            opts["lambdas"] = _named_lambdas(lam, num_exits)
        _check_lambdas(opts["lambdas"], num_exits)
    for name in ("tau_train", "entropy_threshold"):
        if name in opts and not 0.0 < float(opts[name]) < 1.0:
            raise ValueError(f"{name}={opts[name]} must be in the open interval (0, 1)")
    if "eps_leak" in opts and float(opts["eps_leak"]) < 0:
        raise ValueError(f"eps_leak={opts['eps_leak']} must be >= 0")
    if "residual" in opts and opts["residual"] not in RESIDUALS:
        raise ValueError(f"residual={opts['residual']!r}; valid choices: {list(RESIDUALS)}")
    if "sigmoid_scale" in opts and float(opts["sigmoid_scale"]) <= 0:
        raise ValueError(f"sigmoid_scale={opts['sigmoid_scale']} must be > 0")
    if "temperature" in opts and float(opts["temperature"]) <= 0:
        raise ValueError(f"temperature={opts['temperature']} must be > 0")
    if "distill_weight" in opts and float(opts["distill_weight"]) < 0:
        raise ValueError(f"distill_weight={opts['distill_weight']} must be >= 0")
    if "last_only_until" in opts and not 0.0 <= float(opts["last_only_until"]) < 1.0:
        raise ValueError(f"last_only_until={opts['last_only_until']} must be in [0, 1): the fraction of training "
                         f"during which only the last exit trains")
    if "normalize" in opts and not isinstance(opts["normalize"], bool):
        raise ValueError(f"normalize={opts['normalize']!r} must be True or False")
    return opts


def exit_weights(exit_logits: Tensor | Sequence[Tensor], targets: Tensor, strategy: str,
                 progress: float = 0.0, **options: Any) -> Tensor:
    """Per-sample, per-exit loss weights, (B, E), without gradient.

    exit_logits: (E, B, K) or a list of E (B, K) tensors, shallow → deep.
    progress: fraction of training done, in [0, 1] (drives annealed λ).
    """
    if not 0.0 <= float(progress) <= 1.0:
        raise ValueError(f"progress={progress} must be in [0, 1] (the fraction of training done); "
                         f"outside it the annealed λ would be extrapolated, possibly negative")
    if not isinstance(exit_logits, Tensor):
        exit_logits = torch.stack(list(exit_logits))
    num_exits = exit_logits.shape[0]
    opts = resolve_options(strategy, num_exits, **options)
    spec = STRATEGIES[strategy]
    with torch.no_grad():
        logits = exit_logits.detach()
        elig = spec.gate(logits, targets, **{k: opts[k] for k in spec.gate_options})
        lam = _lambdas_on_device(_hashable(opts["lambdas"]), float(opts.get("last_only_until", 0.0)), num_exits,
                                 float(progress), str(elig.device))
        w = lam[None, :] * elig + float(opts.get("eps_leak", 0.0))
        if opts.get("normalize", False):
            # A row can be all zero (λ_1 = 0, ε = 0 and exit 1 succeeded): no exit learns from
            # that sample. Keep it zero rather than dividing by zero into NaN.
            w = w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    return w


def weighted_exit_loss(exit_logits: Tensor, targets: Tensor, weights: Tensor,
                       label_smoothing: float = 0.0) -> Tensor:
    """Σ_e mean_i [w_e(i) · CE_e(i)] for logits (E, B, K), targets (B,), weights (B, E)."""
    num_exits, batch, classes = exit_logits.shape
    ce = F.cross_entropy(exit_logits.reshape(-1, classes), targets.repeat(num_exits), reduction="none",
                         label_smoothing=label_smoothing).view(num_exits, batch)  # (E, B)
    return (weights.detach().T * ce).mean(dim=1).sum()


def early_head_fit_loss(exit_logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """For last_exit: plain CE on each early exit. Its logits come from detached features, so this
    trains those heads only; the backbone stays exactly the plain network."""
    early = exit_logits[:-1]
    if early.shape[0] == 0:
        return exit_logits.new_zeros(())
    return F.cross_entropy(early.reshape(-1, early.shape[-1]), targets.repeat(early.shape[0]),
                           label_smoothing=label_smoothing) * early.shape[0]
