"""Exit plans: which exits a deployed pass keeps. An exit that does not pay for itself is left out.

On these small networks an exit costs time even when it takes few samples. Its head runs, the policy
scores it, and at batch size 1 it is one more session call. The samples it would take go on to the next
exit it keeps. A plan is the tuple of 0-based exits kept, ascending, always ending with the last exit.
On Fashion-MNIST at τ = 0.9, exit 2 takes about 12 % of samples. Keeping exits 1 and 3 only, with
blocks 2 and 3 run as one segment, saves a call, a head and a decision for the samples that go on, and
costs block 3 for those exit 2 would have taken: at batch 1 on the machine of the committed benchmark the
two nearly cancel (1.27× against 1.26× over the plain network), so whether a plan pays is a question for
each machine's time model.

A plan changes which exit answers some samples, so it is chosen on validation (`choose_plan`): the fastest
plan by the time model whose validation accuracy is at least the all-exit plan's. Nothing about a plan is
chosen on test. Evaluated from cached logits (`plan_exits`), a plan gives the decisions of its deployed pass
(cgt.deployment.exported, `load(..., exits=...)`), up to float rounding of a score on its threshold.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..cost import ExitCosts
from ..inference import exits_from_logits
from .chooser import TIE_MARGIN
from .timecost import ExitTimes

Plan = tuple[int, ...]


def all_plans(num_exits: int) -> list[Plan]:
    """Every plan of a num_exits-exit network, the all-exit plan first and the plain network (the last exit
    alone) last."""
    early = range(num_exits - 1)
    return [(*kept, num_exits - 1) for k in range(num_exits - 1, -1, -1) for kept in itertools.combinations(early, k)]


def plan_name(plan: Sequence[int]) -> str:
    """1-based, as the exits are named in the results: (0, 2) → '1+3'."""
    return "+".join(str(e + 1) for e in plan)


def check_plan(exits: Sequence[int] | str, num_exits: int) -> Plan:
    """A plan from 1-based exit numbers ((1, 3) or '1+3') → 0-based (0, 2); an error names the valid plans."""
    valid = [plan_name(p) for p in all_plans(num_exits)]
    try:
        numbers = [int(e) for e in (exits.split("+") if isinstance(exits, str) else exits)]
    except (TypeError, ValueError):
        numbers = None
    plan = tuple(e - 1 for e in numbers) if numbers else ()
    if plan not in all_plans(num_exits):
        raise ValueError(f"unknown exit plan {exits!r} for a {num_exits}-exit network: give the 1-based exits kept, "
                         f"ascending and ending with the last; valid choices: {valid}")
    return plan


def segment_ranges(plan: Sequence[int]) -> list[tuple[int, int]]:
    """Per exit kept, the blocks its segment runs (first, last; 0-based, inclusive): a plan's segments."""
    starts = [0, *(e + 1 for e in plan[:-1])]
    return list(zip(starts, plan))


def plan_thresholds(thresholds: Sequence[float], plan: Sequence[int]) -> list[float]:
    """The thresholds of the early exits a plan keeps (one per kept exit but the last)."""
    return [float(thresholds[e]) for e in plan[:-1]]


def plan_exits(exit_logits: torch.Tensor, thresholds: Sequence[float], plan: Sequence[int],
               policy: str = "max_softmax") -> tuple[torch.Tensor, torch.Tensor]:
    """Decisions from cached logits (E, N, K) when only the plan's exits decide → (predictions (N,), exit
    index (N,), 0-based in the whole network's numbering)."""
    preds, kept_index = exits_from_logits(exit_logits[list(plan)], plan_thresholds(thresholds, plan), policy)
    return preds, torch.as_tensor(plan)[kept_index]


def plan_costs(costs: ExitCosts, plan: Sequence[int]) -> ExitCosts:
    """FLOPs of the plan's pass, per exit kept: its segment's blocks and its own head (a left-out exit's head
    is never run)."""
    return ExitCosts(tuple(sum(costs.block_flops[a:b + 1]) for a, b in segment_ranges(plan)),
                     tuple(costs.head_flops[e] for e in plan))


def plain_network_times(full_s: float, engine: str = "", batch_size: int = 1, threads: int = 1) -> ExitTimes:
    """The time model of the plan that keeps the last exit only: the plain network, one segment."""
    return ExitTimes((full_s,), full_s, engine, batch_size, threads)


def choose_plan(val_logits: torch.Tensor, y_val: torch.Tensor, thresholds: Sequence[float],
                times: Mapping[Plan, ExitTimes], policy: str = "max_softmax",
                margin: float = TIE_MARGIN) -> tuple[Plan, list[dict]]:
    """The plan to deploy at these thresholds, chosen on validation: of the plans in `times` whose validation
    accuracy is at least the all-exit plan's, the one with the lowest predicted time (`times[plan]`, its time
    model: one segment per exit kept) — if it is predicted `margin` faster than the all-exit plan, else the
    all-exit plan. Returns it and, per plan, what the choice saw."""
    every = all_plans(val_logits.shape[0])[0]
    if every not in times:
        raise ValueError(f"the all-exit plan {plan_name(every)} needs a time model: it is what a plan is compared with")
    table = []
    for plan, model in times.items():
        preds, exit_index = plan_exits(val_logits, thresholds, plan, policy)
        kept_fractions = np.bincount(exit_index.numpy(), minlength=val_logits.shape[0])[list(plan)] / len(exit_index)
        table.append({"plan": list(plan), "name": plan_name(plan),
                      "val_accuracy": float((preds == y_val).float().mean()),
                      "val_exit_fractions": kept_fractions.tolist(),
                      "predicted_us": 1e6 * model.predicted_time(kept_fractions)})
    by_plan = {tuple(row["plan"]): row for row in table}
    floor = by_plan[every]["val_accuracy"]
    eligible = [row for row in table if row["val_accuracy"] >= floor]
    fastest = min(eligible, key=lambda row: row["predicted_us"])
    chosen = tuple(fastest["plan"]) if fastest["predicted_us"] < (1.0 - margin) * by_plan[every]["predicted_us"] else every
    for row in table:
        row["eligible"], row["chosen"] = row in eligible, tuple(row["plan"]) == chosen
    return chosen, table
