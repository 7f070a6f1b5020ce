"""Early-exit inference (cgt.inference), per-exit cost (cgt.cost) and threshold fitting (cgt.evaluation.thresholds).

The key check: the real early-exit forward pass, which runs deeper blocks only on undecided
samples, takes exactly the decisions that the fast simulation from cached logits takes — on a
network trained on real Fashion-MNIST data, batched and one sample at a time.
"""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from torch import nn

from cgt.cost import ExitCosts, average_cost, exit_costs
from cgt.evaluation.thresholds import candidates, evaluate_settings, fit_operating_point, pick, sweep_global
from cgt.inference import early_exit_forward, exits_from_logits
from cgt.models import EarlyExitNet
from cgt.policy import scores as exit_scores
from cgt.train import predict_logits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(fashion_mnist_run):
    """A Fashion-MNIST early-exit CNN trained for 2 epochs on 2000 images; its val inputs and logits."""
    run, data = fashion_mnist_run
    x, y = data.x["val"], data.y["val"]
    return {"model": run.model, "x": x, "y": y, "logits": predict_logits(run.model, x), "data": data,
            "costs": exit_costs(run.model, data.input_shape)}


# Settings chosen so that every exit gets samples (asserted); the authors' τ = 0.9 is added as is.
SPREAD = [("max_softmax", 0.5), ("max_softmax", 0.6), ("max_softmax", [0.6, 0.8]), ("max_softmax", [0.4, 0.6]),
          ("entropy", 0.5), ("entropy", [0.6, 0.4])]
PAPER = [("max_softmax", 0.9), ("max_softmax", [0.7, 0.95]), ("entropy", 0.1)]


def test_equivalence_thresholds_reach_every_exit(trained):
    """Precondition of the equivalence test: each SPREAD setting sends samples out of every exit, and
    no sample's score lies within 1e-6 of a threshold (so float noise cannot decide)."""
    for policy, taus in SPREAD:
        _, exits = exits_from_logits(trained["logits"], taus, policy)
        assert (torch.bincount(exits, minlength=3) > 0).all(), (policy, taus, torch.bincount(exits, minlength=3))
    for policy, taus in SPREAD + PAPER:
        scores = exit_scores(trained["logits"][:-1], policy)
        for e, tau in enumerate([taus] * 2 if isinstance(taus, float) else taus):
            assert (scores[e] - tau).abs().min() > 1e-6


@pytest.mark.parametrize("policy, taus", SPREAD + PAPER)
@pytest.mark.parametrize("batch_size", [1, 64])
def test_early_exit_forward_equals_simulation_from_logits(trained, policy, taus, batch_size):
    """early_exit_forward (really skipping blocks) = exits_from_logits on full-forward logits: same predictions and exits."""
    model, x = trained["model"], trained["x"]
    want_preds, want_exits = exits_from_logits(predict_logits(model, x), taus, policy)
    out = early_exit_forward(model, x, taus, policy, batch_size=batch_size)
    assert torch.equal(out.exit_index, want_exits)
    assert torch.equal(out.predictions, want_preds)
    # and the prediction taken is the one of the exit the sample left by
    assert torch.equal(out.predictions, trained["logits"].argmax(-1)[want_exits, torch.arange(len(x))])


def count_rows(model: EarlyExitNet) -> tuple[list[int], list]:
    seen = [0, 0, 0]
    handles = [model.blocks[e].register_forward_hook(
        lambda mod, inp, out, e=e: seen.__setitem__(e, seen[e] + inp[0].shape[0])) for e in range(3)]
    return seen, handles


@pytest.mark.parametrize("batch_size", [1, 64, 1000])
def test_deeper_blocks_run_only_on_undecided_samples(trained, batch_size):
    """Block 2 sees exactly the samples exit 1 did not accept, block 3 those exits 1–2 did not accept."""
    model, x = trained["model"], trained["x"]
    seen, handles = count_rows(model)
    try:
        out = early_exit_forward(model, x, [0.6, 0.8], "max_softmax", batch_size=batch_size)
    finally:
        for h in handles:
            h.remove()
    n = len(x)
    assert seen == [n, int((out.exit_index >= 1).sum()), int((out.exit_index >= 2).sum())]
    assert seen[1] < n and seen[2] < seen[1]  # something was really skipped at each stage


# ---------------------------------------------------------------- cost
def hand_net() -> EarlyExitNet:
    blocks = [nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.Conv2d(2, 4, 3, padding=1, bias=False),
              nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.ReLU())]
    heads = [nn.Sequential(nn.Flatten(), nn.Linear(32, 3)), nn.Sequential(nn.Flatten(), nn.Linear(64, 3)),
             nn.Sequential(nn.Flatten(), nn.Linear(64, 3))]
    return EarlyExitNet(blocks, heads)


def test_exit_costs_match_the_analytic_count():
    """FLOPs per sample on a 1×4×4 input: conv 2·Cin·Cout·k²·H·W, linear 2·in·out; cumulative, full network, relative."""
    costs = exit_costs(hand_net(), (1, 4, 4))
    blocks = (2 * 1 * 2 * 3 * 3 * 4 * 4,   # 576
              2 * 2 * 4 * 3 * 3 * 4 * 4,   # 2304
              2 * 4 * 4 * 1 * 1 * 4 * 4)   # 512 (ReLU not counted)
    heads = (2 * 32 * 3, 2 * 64 * 3, 2 * 64 * 3)  # 192, 384, 384
    assert costs.block_flops == blocks and costs.head_flops == heads
    cumulative = [576 + 192, 576 + 192 + 2304 + 384, 576 + 192 + 2304 + 384 + 512 + 384]  # every earlier head too
    assert costs.cumulative.tolist() == cumulative == [768, 3456, 4352]
    assert costs.full_network == 576 + 2304 + 512 + 384 == 3776  # all blocks, last head only
    np.testing.assert_allclose(costs.relative, np.array(cumulative) / 3776)
    assert 1.0 < costs.relative[-1] < 1.2  # running every exit costs the early heads on top
    assert average_cost([0.5, 0.25, 0.25], costs) == pytest.approx(0.5 * 768 + 0.25 * 3456 + 0.25 * 4352)
    assert average_cost([0.0, 0.0, 1.0], costs) == 4352
    d = costs.to_dict()
    assert d["full_network_flops"] == 3776 and d["cumulative_flops"] == cumulative


def test_exit_costs_keep_the_training_mode():
    """Counting FLOPs leaves a model in training mode in training mode (and uses batch size 1)."""
    net = hand_net().train()
    assert exit_costs(net, (1, 4, 4)).block_flops[0] == 576 and net.training


@pytest.mark.parametrize("fractions", [[0.5, 0.5], [0.25, 0.25, 0.25, 0.25], [[0.5, 0.25, 0.25]]])
def test_average_cost_needs_one_fraction_per_exit(fractions):
    """average_cost rejects fractions that are not one per exit, saying how many are needed."""
    with pytest.raises(ValueError, match=r"one exit fraction per exit \(3\)"):
        average_cost(fractions, ExitCosts((1, 2, 3), (1, 1, 1)))


# ---------------------------------------------------------------- thresholds
@pytest.mark.parametrize("policy", ["max_softmax", "entropy"])
def test_evaluate_settings_agrees_with_exits_from_logits(trained, policy):
    """For random per-exit settings, the vectorised evaluation gives exits_from_logits' accuracy, exit fractions and cost."""
    logits, y, costs = trained["logits"], trained["y"], trained["costs"]
    settings = np.random.default_rng(0).uniform(0, 1, size=(40, 2)).astype(np.float32)
    ev = evaluate_settings(logits, y, costs, settings, policy, chunk=16)  # several chunks
    assert ev.accuracy.shape == (40,) and ev.exit_fractions.shape == (40, 3)
    for s, taus in enumerate(settings):
        preds, exits = exits_from_logits(logits, taus.tolist(), policy)
        fractions = np.bincount(exits.numpy(), minlength=3) / len(y)
        assert ev.accuracy[s] == pytest.approx((preds == y).float().mean().item(), abs=1e-6)
        np.testing.assert_allclose(ev.exit_fractions[s], fractions, atol=1e-12)
        assert ev.relative_cost[s] == pytest.approx(average_cost(fractions, costs) / costs.full_network)


def test_sweep_global_ends_and_monotone_cost(trained):
    """Global sweep: τ=0 exits everything at exit 1, τ=1 ≈ running all exits; cost never falls as τ rises."""
    logits, y, costs = trained["logits"], trained["y"], trained["costs"]
    sw = sweep_global(logits, y, costs)
    taus = sw.thresholds[:, 0]
    assert taus[0] == 0.0 and taus[-1] == 1.0 and (np.diff(taus) > 0).all()
    np.testing.assert_allclose(sw.exit_fractions[0], [1.0, 0.0, 0.0])
    assert sw.relative_cost[0] == pytest.approx(costs.relative[0])
    assert sw.accuracy[0] == pytest.approx((logits[0].argmax(-1) == y).float().mean().item())
    assert sw.exit_fractions[-1][2] > 0.95
    assert sw.relative_cost[-1] == pytest.approx(costs.relative[-1], abs=0.05 * costs.relative[-1])
    assert (np.diff(sw.relative_cost) >= -1e-12).all()  # each sample's exit can only move deeper
    # entropy (leave if H/ln K ≤ τ): a higher τ lets more samples out early, so cost never rises
    se = sweep_global(logits, y, costs, policy="entropy")
    assert (np.diff(se.relative_cost) <= 1e-12).all()


def test_fit_operating_point_tolerance_and_budget(trained):
    """Fitted on validation only: 'tolerance' stays within 0.5 points of the last exit's val accuracy at lower cost;
    'budget' stays within its relative cost."""
    logits, y, costs = trained["logits"], trained["y"], trained["costs"]
    last_acc = (logits[-1].argmax(-1) == y).float().mean().item()

    def val_point(taus):
        preds, exits = exits_from_logits(logits, [float(t) for t in taus])
        fractions = np.bincount(exits.numpy(), minlength=3) / len(y)
        return (preds == y).float().mean().item(), average_cost(fractions, costs) / costs.full_network

    taus = fit_operating_point(logits, y, costs, "tolerance", tolerance=0.005)
    assert taus.shape == (2,) and ((0 <= taus) & (taus <= 1)).all()
    acc, cost = val_point(taus)
    assert acc >= last_acc - 0.005 - 1e-9
    assert cost < costs.relative[-1]  # cheaper than running every exit
    for budget in (0.5, 0.8):
        taus = fit_operating_point(logits, y, costs, "budget", budget=budget)
        acc_b, cost_b = val_point(taus)
        assert cost_b <= budget + 1e-9
        assert acc_b >= val_point([0.0, 0.0])[0]  # at least as good as leaving everything at exit 1
    # a budget below exit 1's own cost cannot be met: everything leaves at exit 1
    assert fit_operating_point(logits, y, costs, "budget", budget=costs.relative[0] / 2).tolist() == [0.0, 0.0]


def test_fit_operating_point_never_sees_test_data():
    """fit_operating_point's signature takes validation logits and labels only: no test split can be passed."""
    params = inspect.signature(fit_operating_point).parameters
    assert list(params)[:3] == ["val_logits", "y_val", "costs"]
    assert not any("test" in name for name in params)


@pytest.mark.parametrize("kwargs, match", [
    ({"objective": "fastest"}, r"unknown objective 'fastest'; valid choices"),
    ({"objective": "tolerance", "tolerance": -0.1}, r"tolerance=-0.1 must be in \[0, 1\)"),
    ({"objective": "budget", "budget": 0.0}, r"budget=0.0 > 0"),
])
def test_fit_operating_point_bad_input(trained, kwargs, match):
    """Unknown objective, negative tolerance, non-positive budget: ValueError naming them."""
    with pytest.raises(ValueError, match=match):
        fit_operating_point(trained["logits"], trained["y"], trained["costs"], **kwargs)


# ---------------------------------------------------------------- bad input
BAD = [
    ((1.5, "max_softmax"), r"thresholds \[1.5, 1.5\] are outside \[0, 1\]"),  # a global τ applies to both
    ((-0.1, "entropy"), r"thresholds \[-0.1, -0.1\] are outside \[0, 1\]"),
    (([0.5, 1.01], "entropy"), r"thresholds \[1.01\] are outside \[0, 1\]"),
    ((math.nan, "max_softmax"), r"thresholds \[nan, nan\] are outside"),
    (([0.5, math.nan], "max_softmax"), r"thresholds \[nan\] are outside"),
    (([0.5], "max_softmax"), r"got 1 per-exit thresholds \[0.5\]; a 3-exit model needs 2"),
    (([0.5, 0.6, 0.7], "max_softmax"), r"got 3 per-exit thresholds .*needs 2 \(the last exit always accepts\)"),
    ((0.5, "margin"), r"unknown exit policy 'margin'; valid choices: \['max_softmax', 'entropy'\]"),
]


@pytest.mark.parametrize("args, match", BAD)
def test_bad_thresholds_and_policy_raise_before_any_work(trained, args, match):
    """Out-of-range, NaN or wrong-length thresholds and unknown policies raise ValueError; no block has run."""
    taus, policy = args
    model = trained["model"]
    seen, handles = count_rows(model)
    try:
        with pytest.raises(ValueError, match=match):
            early_exit_forward(model, trained["x"], taus, policy)
    finally:
        for h in handles:
            h.remove()
    assert seen == [0, 0, 0]
    with pytest.raises(ValueError, match=match):
        exits_from_logits(trained["logits"], taus, policy)


@pytest.mark.parametrize("tau", [np.float32(0.5), torch.tensor(0.5)], ids=["np.float32", "0-d tensor"])
def test_numpy_and_tensor_scalar_thresholds_are_a_global_tau(tau):
    """A numpy float32 or 0-d tensor threshold acts as the same global τ as the Python float."""
    logits = torch.randn(3, 20, 4, generator=torch.Generator().manual_seed(0)) * 2
    want = exits_from_logits(logits, 0.5)
    got = exits_from_logits(logits, tau)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("shape", [(300, 10), (3, 2, 300, 10), (10,)])
def test_logits_must_be_three_dimensional(shape):
    """exits_from_logits rejects logits that are not (exits, samples, classes), naming the shape."""
    with pytest.raises(ValueError, match=r"must be \(exits, samples, classes\); got shape " + re_shape(shape)):
        exits_from_logits(torch.zeros(shape), 0.5)


def re_shape(shape: tuple) -> str:
    return r"\(" + r", ".join(str(s) for s in shape) + (r",\)" if len(shape) == 1 else r"\)")


def test_exits_from_logits_by_hand():
    """A 3-exit, 3-sample hand case: first exit whose max p ≥ τ, last exit always accepts."""
    big = 10.0
    logits = torch.tensor([
        [[big, 0, 0], [0, 0, 0], [0, 0, 0]],     # exit 1: only sample 0 confident (class 0)
        [[0, 0, 0], [0, big, 0], [0, 0, 0]],     # exit 2: sample 1 confident (class 1)
        [[0, 0, big], [0, 0, big], [0, big, 0]],  # exit 3
    ])
    preds, exits = exits_from_logits(logits, 0.9)
    assert exits.tolist() == [0, 1, 2] and preds.tolist() == [0, 1, 1]
    preds, exits = exits_from_logits(logits, [1.0, 0.9])  # exit 1 closed (p < 1): sample 0 goes on to exit 3
    assert exits.tolist() == [2, 1, 2] and preds.tolist() == [2, 1, 1]
    preds, exits = exits_from_logits(logits, 0.2, "entropy")  # low entropy = confident
    assert exits.tolist() == [0, 1, 2]


def test_folding_batchnorm_keeps_the_function_and_removes_the_batchnorms(trained):
    """fuse_for_inference: same logits (eval mode) with no BatchNorm left; the original is untouched."""
    from cgt.inference import fuse_for_inference

    model = trained["model"].eval()
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(predict_logits(fused, trained["x"]), trained["logits"], rtol=1e-4, atol=1e-4)


def test_latency_protocol_records_hang_together(trained):
    """One record per (engine, batch size, threads) with the fields the README reads; each engine's
    speed-up is against the full network of the same engine, and ratio = measured / predicted."""
    from cgt.deployment.bench import (
        ENGINES,
        FULL_ENGINES,
        ONE_THREAD_FULL,
        PLAN_ENGINE,
        latency_records,
        predicted_speedups,
        target_check,
    )
    from cgt.deployment.plans import plan_costs

    costs = trained["costs"]  # folding BatchNorm changes no counted FLOP
    records = latency_records(trained["model"], trained["x"][:64], tau=0.9, dataset="toy", batch_sizes=(1, 32),
                              threads=(1, 2), repeats=3, single_samples=8, val_logits=trained["logits"],
                              y_val=trained["y"])
    # every engine at each batch size and thread count, at 2 threads the plain network on one thread too, and
    # the per-segment passes of the two exit plans that leave an exit out (1+3, 2+3)
    assert len(records) == (len(ENGINES) + 2) * 2 * 2 + 2
    assert {(r["threads"], r["batch_size"]) for r in records if r["engine"] == ONE_THREAD_FULL} == {(2, 1), (2, 32)}
    for threads, batch_size in {(r["threads"], r["batch_size"]) for r in records}:
        rows = {r["engine"]: r for r in records if (r["threads"], r["batch_size"]) == (threads, batch_size)}
        best_full = min(rows[e]["median_us_per_sample"] for e in FULL_ENGINES if e in rows)
        for r in rows.values():  # over the fastest plain network at this thread count or fewer
            assert r["speedup_over_best_full"] == pytest.approx(best_full / r["median_us_per_sample"])
    for r in records:
        assert {"dataset", "engine", "batch_size", "threads", "predicted_speedup", "measured_speedup",
                "ratio", "median_us_per_sample", "iqr_us_per_sample"} <= set(r)
        assert r["ratio"] == pytest.approx(r["measured_speedup"] / r["predicted_speedup"])
        assert sum(r["exit_fractions"]) == pytest.approx(1.0) and r["iqr_us_per_sample"] >= 0
        if r["engine"].endswith("_full"):
            assert r["measured_speedup"] == 1.0 and r["predicted_speedup"] == 1.0
        # the time model is timed in the same rounds as the rows: its plain network is the row's own median,
        # and a pass's predicted time is the exit-fraction-weighted time of reaching each exit
        rows = {x["engine"]: x for x in records if (x["threads"], x["batch_size"]) == (r["threads"], r["batch_size"])}
        model = r["time_model"]
        for name, full in (("torch", "torch_full"), ("onnx", "onnx_full"), ("onnx_1_thread", ONE_THREAD_FULL)):
            assert (name in model) == (full in rows)
            if name in model:
                assert 1e6 * model[name]["full_s"] == pytest.approx(rows[full]["median_us_per_sample"])
        if r["engine"] == "onnx_early_exit_segments":
            onnx = model["onnx"]
            assert r["time_predicted_speedup"] == pytest.approx(
                onnx["full_s"] / np.dot(r["exit_fractions"], np.cumsum(onnx["segment_s"])))
            assert r["time_ratio"] == pytest.approx(r["measured_speedup"] / r["time_predicted_speedup"])
            # the prediction redrawn with each bootstrap replicate's rounds spans the point prediction
            predicted = np.asarray(r["bootstrap_time_predicted_speedup"])
            assert len(predicted) == 200 and predicted.min() <= r["time_predicted_speedup"] * (1 + 1e-3)
            assert predicted.max() >= r["time_predicted_speedup"] * (1 - 1e-3)
        replicates = np.asarray(r["bootstrap_us_per_sample"])  # each row's estimate on rounds drawn again
        assert len(replicates) == 200 and replicates.min() > 0
        if r["engine"].startswith(PLAN_ENGINE):  # a plan's own exit mix, FLOPs and time model
            plan = tuple(int(e) - 1 for e in r["plan"].split("+"))
            left_out = [e for e in range(3) if e not in plan]
            assert all(r["exit_fractions"][e] == 0 for e in left_out)
            kept = np.asarray(r["exit_fractions"])[list(plan)]
            lane = model[r["engine"]]  # one segment per exit kept, timed in the same rounds; full: onnx_full's
            assert len(lane["segment_s"]) == len(plan) and lane["full_s"] == model["onnx"]["full_s"]
            assert r["time_predicted_speedup"] == pytest.approx(lane["full_s"] / np.dot(kept, np.cumsum(lane["segment_s"])))
            merged = plan_costs(costs, plan)
            assert r["predicted_speedup"] == pytest.approx(merged.full_network / average_cost(kept, merged))
    for threads, batch_size in {(r["threads"], r["batch_size"]) for r in records}:
        rows = {r["engine"]: r for r in records if (r["threads"], r["batch_size"]) == (threads, batch_size)}
        lines = {r["val_plan"]["name"]: r for r in rows.values() if "val_plan" in r}  # the choice made on validation
        assert set(lines) == {"1+2+3", "1+3", "2+3", "3"} and lines["3"]["engine"] == "onnx_full"
        assert lines["1+2+3"]["engine"] == "onnx_early_exit_segments"
        assert sum(r["val_plan"]["chosen"] for r in lines.values()) == 1
    early = next(r for r in records if r["engine"] == "torch_early_exit" and r["batch_size"] == 32)
    assert early["predicted_speedup"] == pytest.approx(costs.full_network / average_cost(early["exit_fractions"], costs))
    # computing every exit and then selecting costs all blocks and all heads: never a predicted gain
    assert predicted_speedups(costs, np.array([0, 0]))["torch_all_exits_then_select"] < 1.0
    checks = target_check(records)
    assert {(c["dataset"], c["batch_size"]) for c in checks} == {("toy", 1)}  # 32 is not a target batch size


def test_where_the_time_goes_is_consistent_with_its_own_times(trained):
    """The ONNX Runtime breakdown: the time-predicted speed-up is the full network's time over the
    exit-fraction-weighted cumulative segment times; the FLOPs-predicted one matches the latency records'."""
    from cgt.deployment.bench import where_time_goes

    (b,) = where_time_goes(trained["model"], trained["x"][:32], tau=0.9, batch_sizes=(32,), repeats=3)
    cumulative = np.cumsum(b["segment_us"])
    assert b["cumulative_time_share"] == pytest.approx((cumulative / b["full_us"]).tolist())
    assert b["time_predicted_speedup"] == pytest.approx(b["full_us"] / np.dot(b["exit_fractions"], cumulative))
    costs = trained["costs"]
    assert b["flops_predicted_speedup"] == pytest.approx(costs.full_network / average_cost(b["exit_fractions"], costs))
    assert b["cumulative_flops_share"] == pytest.approx(costs.relative.tolist()) and sum(b["exit_fractions"]) == pytest.approx(1)
    # the segments that decide nothing, timed in the same rounds: the ceiling of any exit decision
    undecided = np.cumsum(b["undecided_segment_us"])
    assert len(undecided) == 3 and min(b["undecided_segment_us"]) >= 0
    assert b["undecided_time_predicted_speedup"] == pytest.approx(b["full_us"] / np.dot(b["exit_fractions"], undecided))


def test_target_objective_picks_the_cheapest_setting_reaching_a_shared_target(trained):
    """objective='target': validation accuracy ≥ the target, and no cheaper candidate reaches it; an
    unreachable target returns the most accurate setting and says it was not met."""
    logits, y, costs = trained["logits"], trained["y"], trained["costs"]
    c = candidates(logits, y, costs)
    target = c.last_exit_accuracy - 0.01
    taus, met = pick(c, "target", target=target)
    chosen = int(np.flatnonzero((c.settings == taus).all(axis=1))[0])
    assert met and c.val.accuracy[chosen] >= target
    reaching = c.val.accuracy >= target
    assert c.val.relative_cost[chosen] == c.val.relative_cost[reaching].min()
    taus, met = pick(c, "target", target=1.0)
    assert not met and c.val.accuracy[(c.settings == taus).all(axis=1)].max() == c.val.accuracy.max()
    with pytest.raises(ValueError, match=r"needs a target accuracy in \[0, 1\]; got None"):
        pick(c, "target")
