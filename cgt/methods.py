"""The methods compared: each a named exit-weighting strategy (cgt.losses) with its options.

The order of METHODS is the order of every table, legend and colour: baselines first, then the
paper's two methods. A new method is one line here (and, for a new rule, a Strategy in losses.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .losses import resolve_options


@dataclass(frozen=True)
class Method:
    name: str
    strategy: str
    """The exit-weighting strategy (a key of cgt.losses.STRATEGIES)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Options that differ from the strategy's defaults."""
    role: str = "baseline"
    """'baseline', 'cgt' for the paper's methods, or 'library' for a method kept for users but left out of
    the comparison (its reason in `note`)."""
    note: str = ""
    """Why a 'library' method is not compared."""


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("last_exit", "last_exit"),
    Method("joint_uniform", "joint_uniform"),
    Method("joint_depth", "joint_depth"),
    Method("joint_annealed", "joint_annealed"),
    Method("joint_balanced", "joint_balanced"),
    Method("mixed", "mixed"),
    Method("branchy_gate", "branchy_gate"),
    Method("grad_equilibrium", "grad_equilibrium", role="library",
           note="under AdamW (every method's optimiser here) it equals joint_uniform up to Adam's ε: gradient "
                "equilibrium only rescales each block's gradient by a constant (tests/test_losses.py proves it "
                "on one step); Li et al. trained it with SGD"),
    Method("self_distill", "self_distill"),
    Method("hard_cgt", "hard_cgt", role="cgt"),
    Method("soft_cgt", "soft_cgt", role="cgt"),                                  # authors' sigmoid residual, k = 1
    Method("soft_cgt_linear", "soft_cgt", {"residual": "linear"}, role="cgt"),   # r = 1 − s, the plain residual
]}
BASELINES = [m.name for m in METHODS.values() if m.role == "baseline"]
CGT_METHODS = [m.name for m in METHODS.values() if m.role == "cgt"]
COMPARED = BASELINES + CGT_METHODS
"""What the pipeline trains and every table compares (the 'library' methods are left out)."""
JOINT_BASELINES = ["joint_uniform", "joint_depth", "joint_annealed"]
"""The fixed-weight joint training the paper's claim is made against."""


def method_spec(method: str, **extra_options: Any) -> tuple[str, dict[str, Any]]:
    """(strategy, options) of a method, with `extra_options` on top of its own."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid choices: {list(METHODS)}")
    m = METHODS[method]
    return m.strategy, m.options | extra_options


def check_methods(methods: list[str], options: dict[str, dict[str, Any]] | None = None,
                  num_exits: int | None = None) -> None:
    """Fail on an unknown method or a bad strategy option before any work starts (λ's length is
    checked once `num_exits` is known, i.e. once the model exists)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid choices: {list(METHODS)}")
    for m in methods:
        strategy, opts = method_spec(m, **(options or {}).get(m, {}))
        resolve_options(strategy, num_exits, **opts)


def display_order(methods) -> list[str]:
    """Unique methods in the order of METHODS; names not in it (your own) last, as given."""
    methods = list(dict.fromkeys(methods))
    order = list(METHODS)
    return sorted(methods, key=lambda m: order.index(m) if m in order else len(order))
