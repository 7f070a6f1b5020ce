"""A learned exit rule beside the max-softmax threshold: per early exit, a logistic model on features
the exit has at hand scores "exiting here is right"; a sample leaves at the first exit whose score
reaches that exit's threshold τ_e (the last exit always accepts), exactly like max-softmax.

Features of sample i at exit e (0-based, e < E − 1), from exit e's logits and the predictions of the
exits before it — all of which the real early-exit pass has computed by the time it decides at e:

    max_prob         max_k p_k
    margin           top-1 minus top-2 probability
    entropy          H(p) / log K ∈ [0, 1]
    agrees_previous  1 if exit e's argmax equals exit e − 1's (0 at the first exit: nothing before it)
    agreeing_earlier how many of the exits 0 … e − 1 predict exit e's class (0 … e)

    score_e(x) = sigmoid(w_e · features_e(x) + b_e) ∈ [0, 1],   leave if score_e ≥ τ_e.

The coefficients act on the raw features (any standardisation used while fitting is folded in), so
the rule is this file and a few numbers per exit: `LearnedPolicy.arrays()` gives them as plain arrays,
what an exported model must carry. Fitting lives upstairs (cgt.evaluation.learned_policy), on
validation logits only.

"One policy interface": everywhere an exit policy is taken (cgt.inference, cgt.evaluation.thresholds and risk),
it is either a policy name of cgt.policy ("max_softmax", "entropy") or a `LearnedPolicy`; the
functions at the bottom of this file dispatch between them, so every caller decides through one rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from .policy import POLICIES, accepts, always_exit, check_policy, normalized_entropy, scores

FEATURES = ("max_prob", "margin", "entropy", "agrees_previous", "agreeing_earlier")
TARGETS = ("correct", "agrees_with_last")
"""What "exiting here is right" means when fitting: the exit's prediction is correct (default), or it
equals the last exit's prediction (exiting changes nothing against running the full network)."""


def exit_features(logits: torch.Tensor, earlier_preds: torch.Tensor) -> torch.Tensor:
    """One exit's logits (N, K) and the argmax predictions of the exits before it (e, N) → (N, 5)
    float64 features, in the order of FEATURES."""
    if logits.ndim != 2 or logits.shape[-1] < 2:
        raise ValueError(f"exit logits must be (samples, classes ≥ 2); got shape {tuple(logits.shape)}")
    if earlier_preds.ndim != 2 or earlier_preds.shape[1] != logits.shape[0]:
        raise ValueError(f"earlier predictions must be (earlier exits, {logits.shape[0]} samples); "
                         f"got shape {tuple(earlier_preds.shape)}")
    p = logits.float().softmax(-1)
    top2 = p.topk(2, dim=-1).values
    pred = logits.argmax(-1)  # the prediction the exit hands out (as cgt.inference takes it)
    agree = earlier_preds == pred[None]                                        # (e, N)
    previous = agree[-1] if len(agree) else torch.zeros_like(pred, dtype=torch.bool)
    return torch.stack([top2[:, 0], top2[:, 0] - top2[:, 1], normalized_entropy(p),
                        previous.float(), agree.sum(0).float()], dim=-1).double()


@dataclass(frozen=True)
class LearnedPolicy:
    """Per-early-exit logistic scores on FEATURES; the thresholds τ_e are kept apart, as for max-softmax."""

    coef: np.ndarray
    """(E − 1, len(FEATURES)) weights on the raw features, one row per early exit."""
    intercept: np.ndarray
    """(E − 1,) bias per early exit."""
    target: str = "correct"
    """What the scores were fitted to predict (see TARGETS)."""
    classes_seen: tuple[int, ...] = ()
    """The classes present in the fitting (validation) labels: the features ignore class identity, so
    a class missing there still gets scored; this says which classes the fit never saw."""

    def __post_init__(self):
        coef, intercept = np.asarray(self.coef, np.float64), np.asarray(self.intercept, np.float64)
        if coef.ndim != 2 or coef.shape[1] != len(FEATURES) or intercept.shape != (coef.shape[0],) or not len(coef):
            raise ValueError(f"a learned policy needs coef (E − 1, {len(FEATURES)}) and intercept (E − 1,) with "
                             f"E ≥ 2; got {coef.shape} and {intercept.shape}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; valid choices: {list(TARGETS)}")
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", intercept)

    @property
    def num_exits(self) -> int:
        return self.coef.shape[0] + 1

    def check_num_exits(self, num_exits: int) -> None:
        if num_exits != self.num_exits:
            raise ValueError(f"the learned exit policy was fitted for a {self.num_exits}-exit model; these "
                             f"features come from a {num_exits}-exit model")

    def score_exit(self, e: int, logits: torch.Tensor, earlier_preds: torch.Tensor) -> torch.Tensor:
        """Exit e's score (N,) float64 from its logits (N, K) and the earlier exits' predictions (e, N)."""
        if not 0 <= e < self.num_exits - 1:
            raise ValueError(f"exit index {e} has no learned score; valid: 0 … {self.num_exits - 2} (the last "
                             f"exit always accepts)")
        if earlier_preds.shape[0] != e:
            raise ValueError(f"exit {e} needs the predictions of {e} earlier exits; got {earlier_preds.shape[0]}")
        features = exit_features(logits, earlier_preds)
        z = features @ torch.from_numpy(self.coef[e]).to(features.device) + float(self.intercept[e])
        return torch.sigmoid(z)

    def scores(self, exit_logits: torch.Tensor) -> torch.Tensor:
        """Cached logits (E, N, K) → (E − 1, N) scores of every early exit (each from its own logits and
        the argmax of the exits before it, as the real pass sees them)."""
        self.check_num_exits(exit_logits.shape[0])
        preds = exit_logits.argmax(-1)
        return torch.stack([self.score_exit(e, exit_logits[e], preds[:e]) for e in range(self.num_exits - 1)])

    def arrays(self) -> dict[str, np.ndarray | list[str]]:
        """What an exported model must carry besides its thresholds: feature names, (E − 1, F) weights,
        (E − 1,) biases on the raw features (score = sigmoid(features @ coef[e] + intercept[e]))."""
        return {"features": list(FEATURES), "coef": self.coef.copy(), "intercept": self.intercept.copy()}

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                "target": self.target, "classes_seen": list(self.classes_seen)}

    @classmethod
    def from_dict(cls, d: dict) -> "LearnedPolicy":
        if list(d["features"]) != list(FEATURES):
            raise ValueError(f"policy features {d['features']} differ from this version's {list(FEATURES)}")
        return cls(np.array(d["coef"]), np.array(d["intercept"]), d["target"], tuple(d["classes_seen"]))


# ---------------------------------------------------------------- one interface for both kinds of policy
ExitPolicy = Union[str, LearnedPolicy]
"""A policy name of cgt.policy, or a learned policy."""


def check_exit_policy(policy: ExitPolicy, num_exits: int) -> None:
    """Refuse an unknown name, or a learned policy fitted for another number of exits, before any work."""
    if isinstance(policy, LearnedPolicy):
        policy.check_num_exits(num_exits)
    elif isinstance(policy, str):
        check_policy(policy)
    else:
        raise ValueError(f"an exit policy is a name in {list(POLICIES)} or a LearnedPolicy; got {policy!r}")


def direction(policy: ExitPolicy) -> str:
    """The name whose threshold direction the policy follows (learned scores leave when ≥ τ, as max-softmax)."""
    return "max_softmax" if isinstance(policy, LearnedPolicy) else policy


def early_exit_scores(exit_logits: torch.Tensor, policy: ExitPolicy) -> torch.Tensor:
    """Cached logits (E, N, K) → (E − 1, N) score of each early exit under the policy."""
    check_exit_policy(policy, exit_logits.shape[0])
    if isinstance(policy, LearnedPolicy):
        return policy.scores(exit_logits)
    return scores(exit_logits[:-1], policy)


def exit_accepts(policy: ExitPolicy, e: int, logits: torch.Tensor, earlier_preds: torch.Tensor,
                 threshold: float) -> torch.Tensor:
    """Does exit e take each sample? From its logits (N, K) and the earlier exits' predictions (e, N)."""
    if isinstance(policy, LearnedPolicy):
        return policy.score_exit(e, logits, earlier_preds.to(logits.device)) >= threshold
    return accepts(logits, threshold, policy)


def always_exit_threshold(policy: ExitPolicy) -> float:
    """The threshold every sample passes (everything leaves at the first exit)."""
    return always_exit(direction(policy))
