"""Exit plans (cgt.deployment.plans): which exits a deployed pass keeps, decided from cached logits exactly as
the exported pass decides, costed per kept segment, and chosen on validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cgt.cost import ExitCosts
from cgt.deployment import exported as deploy
from cgt.deployment import plans
from cgt.deployment.timecost import ExitTimes
from cgt.policy import scores
from cgt.train import predict_logits

pytestmark = pytest.mark.usefixtures("one_thread")


def test_plans_are_every_subset_of_early_exits_ending_with_the_last():
    assert plans.all_plans(3) == [(0, 1, 2), (0, 2), (1, 2), (2,)]
    assert plans.all_plans(1) == [(0,)]
    assert plans.plan_name((0, 2)) == "1+3"
    assert plans.check_plan("1+3", 3) == (0, 2) == plans.check_plan((1, 3), 3)
    assert plans.segment_ranges((0, 2)) == [(0, 0), (1, 2)]
    assert plans.segment_ranges((1, 2)) == [(0, 1), (2, 2)]
    assert plans.segment_ranges((2,)) == [(0, 2)]
    assert plans.plan_thresholds([0.8, 0.7], (1, 2)) == [pytest.approx(0.7)]


@pytest.mark.parametrize("bad", ["1+2", "3+1", "", "a+3", (0, 2), (1, 3, 3), "1+3+4"])
def test_a_plan_that_is_not_one_is_refused_naming_the_valid_ones(bad):
    with pytest.raises(ValueError, match=r"valid choices: \['1\+2\+3', '1\+3', '2\+3', '3'\]"):
        plans.check_plan(bad, 3)


def test_plan_exits_leave_out_the_exits_not_kept():
    """Hand-checked: 3 exits, 3 samples, max-softmax τ = 0.8 at both early exits."""
    confident, unsure = [4.0, 0.0], [0.0, 0.0]  # max-softmax 0.98 and 0.5
    logits = torch.tensor([[confident, unsure, unsure],          # exit 1 takes sample 0
                           [[0.0, 4.0], [0.0, 4.0], unsure],      # exit 2 would take samples 0 and 1 (class 1)
                           [[4.0, 0.0], [4.0, 0.0], [4.0, 0.0]]])  # exit 3: class 0 for all
    preds, exits = plans.plan_exits(logits, [0.8, 0.8], (0, 1, 2))
    assert exits.tolist() == [0, 1, 2] and preds.tolist() == [0, 1, 0]
    preds, exits = plans.plan_exits(logits, [0.8, 0.8], (0, 2))  # exit 2 left out: sample 1 goes on to exit 3
    assert exits.tolist() == [0, 2, 2] and preds.tolist() == [0, 0, 0]
    preds, exits = plans.plan_exits(logits, [0.8, 0.8], (1, 2))  # exit 1 left out: exit 2 takes samples 0 and 1
    assert exits.tolist() == [1, 1, 2] and preds.tolist() == [1, 1, 0]
    preds, exits = plans.plan_exits(logits, [0.8, 0.8], (2,))
    assert exits.tolist() == [2, 2, 2]


def test_plan_costs_merge_blocks_and_drop_the_heads_left_out():
    costs = ExitCosts(block_flops=(100, 200, 300), head_flops=(10, 20, 30))
    merged = plans.plan_costs(costs, (0, 2))
    assert merged.block_flops == (100, 500) and merged.head_flops == (10, 30)
    assert merged.cumulative.tolist() == [110.0, 640.0]  # exit 2's head (20) is never run
    assert merged.full_network == costs.full_network == 630.0
    assert plans.plan_costs(costs, (2,)).cumulative.tolist() == [630.0]


def _val_set():
    """4 validation samples on 3 exits: exit 1 takes sample 0 (right), exit 2 takes sample 1 (right), exit 3
    is right on samples 1-3."""
    sure0, sure1, unsure = [4.0, 0.0], [0.0, 4.0], [0.0, 0.0]
    logits = torch.tensor([[sure0, unsure, unsure, unsure],
                           [sure0, sure1, unsure, unsure],
                           [sure1, sure1, sure1, sure1]])
    return logits, torch.tensor([0, 1, 1, 1])


def _times(segment_us, full_us=50.0):
    return ExitTimes(tuple(1e-6 * t for t in segment_us), 1e-6 * full_us)


def test_choose_plan_takes_the_fastest_plan_at_least_as_accurate_on_validation():
    logits, y = _val_set()
    times = {(0, 1, 2): _times([10, 20, 30]), (0, 2): _times([10, 35]), (2,): plans.plain_network_times(50e-6)}
    chosen, table = plans.choose_plan(logits, y, [0.8, 0.8], times)
    rows = {r["name"]: r for r in table}
    # all exits: sample 0 at exit 1 (10 µs), sample 1 at exit 2 (30), samples 2-3 at exit 3 (60): 40 µs, all right
    assert rows["1+2+3"]["predicted_us"] == pytest.approx(40.0) and rows["1+2+3"]["val_accuracy"] == 1.0
    # exit 2 left out: sample 0 at exit 1 (10 µs), the rest at exit 3 (45): 36.25 µs, all right
    assert rows["1+3"]["predicted_us"] == pytest.approx(36.25) and rows["1+3"]["val_exit_fractions"] == [0.25, 0.75]
    # the plain network: 50 µs, and wrong on sample 0
    assert rows["3"]["val_accuracy"] == 0.75 and not rows["3"]["eligible"]
    assert chosen == (0, 2) and rows["1+3"]["chosen"]


def test_choose_plan_keeps_every_exit_unless_a_plan_is_clearly_faster_and_as_accurate():
    logits, y = _val_set()
    close = {(0, 1, 2): _times([10, 20, 30]), (0, 2): _times([10, 39.5])}  # 39.625 against 40 µs: within the margin
    assert plans.choose_plan(logits, y, [0.8, 0.8], close)[0] == (0, 1, 2)
    wrong_at_3 = logits.clone()
    wrong_at_3[2, 1] = torch.tensor([4.0, 0.0])  # exit 3 wrong on sample 1, which exit 2 gets right
    fast = {(0, 1, 2): _times([10, 20, 30]), (0, 2): _times([10, 5])}
    chosen, table = plans.choose_plan(wrong_at_3, y, [0.8, 0.8], fast)
    assert chosen == (0, 1, 2) and not {r["name"]: r for r in table}["1+3"]["eligible"]
    with pytest.raises(ValueError, match="all-exit plan 1\\+2\\+3 needs a time model"):
        plans.choose_plan(logits, y, [0.8, 0.8], {(0, 2): _times([10, 35])})


@pytest.fixture(scope="module")
def exported_cnn(fashion_mnist_run, tmp_path_factory):
    run, data = fashion_mnist_run
    folder = deploy.export_model(run.model, data.input_shape, tmp_path_factory.mktemp("onnx"),
                                 {"spread": [0.6, 0.8]}, data.class_names)
    return {"model": run.model, "x": data.x["test"], "folder": folder}


def test_an_export_holds_a_merged_segment_for_every_span_of_blocks(exported_cnn):
    manifest = deploy.verify(exported_cnn["folder"])
    assert [s["blocks"] for s in manifest["merged_segments"]] == [[1, 2], [1, 3], [2, 3]]
    for s in manifest["merged_segments"]:
        assert s["file"] in manifest["files"]


@pytest.mark.parametrize("exits", ["1+3", "2+3", "3", "1+2+3"])
@pytest.mark.parametrize("choose", ["segments", "graph"])
@pytest.mark.parametrize("batch_size", [1, 64])
def test_an_exported_plan_decides_as_its_cached_logits_do(exported_cnn, exits, choose, batch_size):
    """Every pass of a plan gives plan_exits' decisions on the PyTorch logits (samples within 1e-4 of a
    threshold, where float rounding could decide, left out and counted), one sample per call too."""
    model = deploy.load(exported_cnn["folder"], point="spread", choose=choose, exits=exits)
    x = exported_cnn["x"]
    logits = predict_logits(exported_cnn["model"], x)
    ref_preds, ref_exits = plans.plan_exits(logits, model.thresholds, plans.check_plan(exits, 3))
    clear = ((scores(logits[:-1], "max_softmax") - torch.tensor(model.thresholds)[:, None]).abs() > 1e-4).all(0).numpy()
    assert clear.mean() > 0.95
    preds, exit_index = model.predict(x.numpy(), batch_size=batch_size)
    np.testing.assert_array_equal(exit_index[clear], ref_exits.numpy()[clear])
    np.testing.assert_array_equal(preds[clear], ref_preds.numpy()[clear])
    assert set(exit_index.tolist()) <= {e - 1 for e in map(int, exits.split("+"))}
    assert model.description.startswith("" if exits == "1+2+3" else f"exits {exits} kept; {choose} pass")
    i = int(np.flatnonzero(clear)[0])
    one = model.predict(x[i:i + 1].numpy())
    assert (one[0][0], one[1][0]) == (ref_preds[i], ref_exits[i])

