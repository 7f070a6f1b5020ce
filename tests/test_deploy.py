"""Deployment (cgt.deployment.exported): the one-graph and per-segment ONNX Runtime passes take the same early-exit
decisions as the PyTorch pass on real data; exports are verified before use; bad input is refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cgt import cli
from cgt.deployment import chooser
from cgt.deployment import exported as deploy
from cgt.inference import early_exit_forward
from cgt.models import EarlyExitNet, generic_mlp
from cgt.policy import scores
from cgt.train import predict_logits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(fashion_mnist_run, tmp_path_factory):
    """A Fashion-MNIST early-exit CNN (2 epochs on 2,000 images) and its export."""
    run, data = fashion_mnist_run
    folder = deploy.export_model(run.model, data.input_shape, tmp_path_factory.mktemp("onnx"),
                                 {"spread": [0.6, 0.8], "paper_tau": [0.9, 0.9]}, data.class_names)
    return {"model": run.model, "x": data.x["test"], "folder": folder}


def test_segments_give_the_pytorch_logits(trained):
    """Every exit's logits from the ONNX segments equal the PyTorch network's within float tolerance."""
    ort_logits = deploy.load(trained["folder"]).logits(trained["x"].numpy())
    torch_logits = predict_logits(trained["model"], trained["x"])
    for e in range(3):
        np.testing.assert_allclose(ort_logits[e], torch_logits[e].numpy(), rtol=1e-4, atol=1e-4)
    full = deploy.load(trained["folder"]).predict_full(trained["x"].numpy(), batch_size=100)
    agree = full == torch_logits[-1].argmax(-1).numpy()
    assert agree.mean() > 0.99  # the plain network's predictions (ties within rounding may differ)


@pytest.mark.parametrize("path", ["predict_graph", "predict_segments"])
@pytest.mark.parametrize("point", ["spread", "paper_tau"])
@pytest.mark.parametrize("batch_size", [1, 64])
def test_onnx_runtime_early_exit_equals_the_pytorch_pass(trained, point, batch_size, path):
    """Same predictions and exit indices as cgt.inference.early_exit_forward, by the one-graph pass
    (early_exit.onnx; at batch 1 the deeper segments run on empty batches) and by the per-segment
    calls (samples within 1e-4 of a threshold, where float rounding could decide, are left out and counted)."""
    model = deploy.load(trained["folder"], point=point)
    x = trained["x"]
    preds, exits = getattr(model, path)(x.numpy(), batch_size=batch_size)
    ref = early_exit_forward(trained["model"], x, model.thresholds, batch_size=batch_size)
    s = scores(predict_logits(trained["model"], x)[:-1], "max_softmax")
    clear = ((s - torch.tensor(model.thresholds)[:, None]).abs() > 1e-4).all(dim=0).numpy()
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(exits[clear], ref.exit_index.numpy()[clear])
    np.testing.assert_array_equal(preds[clear], ref.predictions.numpy()[clear])
    assert len(set(exits.tolist())) > 1 or point == "paper_tau"


def test_entropy_policy_graph_takes_the_pytorch_decisions(trained, tmp_path):
    """The normalised-entropy rule inside early_exit.onnx decides as cgt.policy does."""
    x = trained["x"]
    s = scores(predict_logits(trained["model"], x)[:-1], "entropy")
    taus = [float(np.quantile(s[e].numpy(), 0.5)) for e in range(2)]  # half the samples leave at each exit
    folder = deploy.export_model(trained["model"], (1, 28, 28), tmp_path, {"median": taus}, [str(k) for k in range(10)],
                                 policy="entropy")
    model = deploy.load(folder, point="median")
    ref = early_exit_forward(trained["model"], x, taus, policy="entropy")
    clear = ((s - torch.tensor(taus)[:, None]).abs() > 1e-4).all(dim=0).numpy()
    for path in (model.predict_graph, model.predict_segments):
        preds, exits = path(x.numpy(), batch_size=64)
        np.testing.assert_array_equal(exits[clear], ref.exit_index.numpy()[clear])
        np.testing.assert_array_equal(preds[clear], ref.predictions.numpy()[clear])
    assert set(exits.tolist()) == {0, 1, 2}


def test_empty_input_gives_empty_output(trained):
    model = deploy.load(trained["folder"])
    for path in (model.predict, model.predict_graph, model.predict_segments, model.predict_full):
        for batch_size in (1, 64):
            out = path(np.zeros((0, 1, 28, 28), np.float32), batch_size=batch_size)
            assert all(part.shape == (0,) for part in (out if isinstance(out, tuple) else (out,)))


def test_manifest_records_policy_thresholds_and_checksums(trained):
    manifest = json.loads((trained["folder"] / "manifest.json").read_text())
    assert manifest["policy"] == "max_softmax" and manifest["thresholds"]["spread"] == [0.6, 0.8]
    assert [s["file"] for s in manifest["segments"]] == ["segment1.onnx", "segment2.onnx", "segment3.onnx"]
    assert manifest["early_exit"]["file"] == "early_exit.onnx" and manifest["full_network"]["file"] == "full.onnx"
    assert len(manifest["class_names"]) == 10 and manifest["input_shape"] == [1, 28, 28]


def test_a_changed_graph_is_refused(trained, tmp_path):
    import shutil

    copy = Path(shutil.copytree(trained["folder"], tmp_path / "copy"))
    data = bytearray((copy / "segment2.onnx").read_bytes())
    data[-5] ^= 0xFF
    (copy / "segment2.onnx").write_bytes(bytes(data))
    with pytest.raises(deploy.ExportError, match=r"segment2\.onnx does not match the manifest"):
        deploy.load(copy)
    (copy / "segment2.onnx").unlink()
    with pytest.raises(deploy.ExportError, match=r"sha256 missing"):
        deploy.load(copy)
    shutil.copy(trained["folder"] / "segment2.onnx", copy / "segment2.onnx")
    (copy / "early_exit.onnx").write_bytes(b"not a graph")
    with pytest.raises(deploy.ExportError, match=r"early_exit\.onnx does not match the manifest"):
        deploy.load(copy)


@pytest.fixture
def small_export(tmp_path):
    """A 3-exit MLP exported with Indian Pines-like class names and calibration samples."""
    torch.manual_seed(0)
    net = generic_mlp((12,), 3, width=16).eval()
    x = torch.randn(40, 12)
    folder = deploy.export_model(net, (12,), tmp_path / "export", {"paper_tau": [0.9, 0.9]},
                                 ["Alfalfa", "Corn-notill", "Corn-mintill"], calibration_inputs=x)
    return {"net": net, "x": x, "folder": folder}


def test_every_file_of_an_export_is_verified_with_one_digest(small_export, tmp_path):
    """manifest.json carries every other file's sha256 and its own checksum; its sha256 is the export's digest."""
    import shutil

    folder = small_export["folder"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"segment1.onnx", "segment2.onnx", "segment3.onnx", "segment1-2.onnx",
                                      "segment1-3.onnx", "segment2-3.onnx", "full.onnx", "early_exit.onnx",
                                      "calibration.npz"}
    digest = deploy.export_digest(folder)
    assert deploy.load(folder, digest=digest, choose="full").manifest["class_names"][0] == "Alfalfa"
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    assert deploy.export_digest(copy) == digest  # a faithful copy checks out against the digest of the original
    data = bytearray((copy / "calibration.npz").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "calibration.npz").write_bytes(bytes(data))
    with pytest.raises(deploy.ExportError, match=r"calibration\.npz does not match the manifest"):
        deploy.load(copy)


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace('0.9', '0.8', 1), r"manifest\.json does not match its own checksum"),
    (lambda text: text.replace('"Alfalfa"', '"Amfalfa"'), r"manifest\.json does not match its own checksum"),
    (lambda text: text[:len(text) // 2], r"manifest\.json is not valid JSON .*export the run again"),
    (lambda text: "[1, 2]", r"manifest\.json has format 'list'"),
])
def test_an_edited_or_damaged_manifest_is_refused_by_name(small_export, edit, message):
    """A flipped byte (threshold 0.9 → 0.8), a renamed class, a truncated or foreign manifest: refused, the file named."""
    path = small_export["folder"] / "manifest.json"
    text = path.read_text()
    assert "0.9" in text and '"Alfalfa"' in text
    path.write_text(edit(text))
    with pytest.raises(deploy.ExportError, match=message):
        deploy.load(small_export["folder"])


def test_a_wrong_pinned_digest_is_refused(small_export):
    with pytest.raises(deploy.ExportError, match=r"manifest\.json: the export's digest is [0-9a-f]{64}, pinned 0+: "
                                                  r"this is not the export that was made"):
        deploy.load(small_export["folder"], digest="0" * 64)


def test_a_damaged_calibration_file_is_named(tmp_path):
    """An NPZ that hashes as recorded but cannot be read (written so by a broken exporter) names its file."""
    (tmp_path / "calibration.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(deploy.ExportError, match=r"calibration\.npz cannot be read .*export the run again"):
        deploy._read_npz(tmp_path / "calibration.npz")


@pytest.mark.parametrize("choose", ["full", "graph", "segments", "auto"])
@pytest.mark.parametrize("batch_size", [1, 16])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_chosen_pass_predicts_as_its_reference(small_export, choose, batch_size, threads):
    """`predict` runs the chosen pass (at 2 threads, possibly on the one-thread sessions): the plain network
    gives the last exit's class to every sample; the early-exit passes give cgt.inference.early_exit_forward's
    predictions and exits."""
    model = deploy.load(small_export["folder"], choose=choose, threads=threads)
    x, net = small_export["x"], small_export["net"]
    chosen = model.pass_for(batch_size)
    assert chosen == choose or choose == "auto"
    assert model.description and (choose == "auto") == bool(model.calibration)  # calibrated on the stored samples
    assert (model.one_thread is not None) == (choose == "auto" and threads == 2)
    preds, exits = model.predict(x.numpy(), batch_size=batch_size)
    if chooser.base_pass(chosen) == "full":
        with torch.no_grad():
            want = net(x)[-1].argmax(-1).numpy()
        np.testing.assert_array_equal(preds, want)
        assert (exits == 2).all()
    else:
        ref = early_exit_forward(net, x, model.thresholds, batch_size=batch_size)
        np.testing.assert_array_equal(preds, ref.predictions.numpy())
        np.testing.assert_array_equal(exits, ref.exit_index.numpy())


def test_a_calibration_table_given_at_load_decides_the_pass(small_export):
    """Hand-made timings: segments fastest at batch 1, the graph in batches; a pass within the tie margin
    of the plain network is not taken."""
    table = {1: {"full": 40e-6, "graph": 45e-6, "segments": 30e-6}, 256: {"full": 20e-6, "graph": 19.8e-6, "segments": 25e-6}}
    model = deploy.load(small_export["folder"], calibration=table)
    assert model.chosen == {1: "segments", 256: "full"}
    assert model.pass_for(1) == "segments" and model.pass_for(64) == "full" and model.pass_for(4096) == "full"
    assert "batch 1: segments (30.0 us/sample, 1.33x the plain network)" in model.description
    with pytest.raises(ValueError, match="needs positive times for .full. and for at least one of"):
        deploy.load(small_export["folder"], calibration={1: {"full": 1e-6}})
    with pytest.raises(ValueError, match=r"unknown pass 'fast'; valid choices: \['auto', 'full', 'graph', 'segments'\]"):
        deploy.load(small_export["folder"], choose="fast")


def test_a_thread_count_is_a_ceiling_the_loader_may_run_below(small_export, monkeypatch):
    """Hand-made timings at 2 threads with the one-thread passes ('@1') beside them: the fastest pass on either
    is run, and the plain network it must beat is the faster of the two; a one-thread name without one-thread
    sessions (threads=1) is refused by name."""
    x = small_export["x"].numpy()
    table = {1: {"full": 40e-6, "graph": 45e-6, "segments": 35e-6, "full@1": 30e-6, "graph@1": 38e-6, "segments@1": 25e-6},
             256: {"full": 20e-6, "graph": 19.8e-6, "segments": 25e-6, "full@1": 39e-6, "graph@1": 40e-6, "segments@1": 41e-6}}
    model = deploy.load(small_export["folder"], threads=2, calibration=table)
    assert model.chosen == {1: "segments@1", 256: "full"}
    assert "batch 1: segments@1 (25.0 us/sample, 1.20x the plain network on 1 thread)" in model.description
    # within the tie margin of the one-thread plain network: that network runs, on one thread
    near = {1: {"full": 40e-6, "segments": 39e-6, "full@1": 30e-6, "segments@1": 29.5e-6}}
    model = deploy.load(small_export["folder"], threads=2, calibration=near)
    assert model.pass_for(1) == "full@1"
    calls = []
    monkeypatch.setattr(model.one_thread, "_predict_full_with_exits",
                        lambda xs, b: calls.append(len(xs)) or (np.zeros(len(xs), np.int64), np.full(len(xs), 2)))
    model.predict(x[:3], batch_size=1)
    assert calls == [3]  # the one-thread sessions ran it
    made = []
    monkeypatch.setattr(model.one_thread, "_make_single_sample", lambda name: made.append(name) or (lambda xs: "ran"))
    assert model.predict(x[:1]) == "ran" and made == ["full"]  # and a single sample too, by the same pass
    with pytest.raises(ValueError, match="no one-thread sessions .threads=1.; valid names"):
        deploy.load(small_export["folder"], threads=1, calibration=table)
    with pytest.raises(ValueError, match=r"names from \['full', 'graph', 'segments', 'full@1'"):
        deploy.load(small_export["folder"], threads=2, calibration={1: {"full": 1e-6, "segments@3": 1e-6}})


def test_bad_input_is_refused_by_name(trained, tmp_path):
    with pytest.raises(ValueError, match=r"unknown operating point 'nope'; valid choices: \['paper_tau', 'spread'\]"):
        deploy.load(trained["folder"], point="nope")
    with pytest.raises(FileNotFoundError, match="manifest.json does not exist"):
        deploy.load(tmp_path)
    net = EarlyExitNet([nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU())] * 2, [nn.Sequential(nn.Flatten(), nn.LazyLinear(3))] * 2)
    with pytest.raises(deploy.ExportError, match="no ONNX conversion for GELU"):
        deploy.export_model(net, (1, 8, 8), tmp_path / "x", {}, ["a", "b", "c"])


def test_mlp_with_batchnorm_exports_exactly(tmp_path):
    """The generic MLP (Linear-BatchNorm1d-ReLU blocks): BatchNorm folded into the linear layer."""
    torch.manual_seed(0)
    net = generic_mlp((12,), 4, width=16).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(50, 12)
    got = deploy.load(deploy.export_model(net, (12,), tmp_path, {"t": [0.5, 0.5]}, list("abcd")), point="t").logits(x.numpy())
    with torch.no_grad():
        want = net(x)
    for e in range(3):
        np.testing.assert_allclose(got[e], want[e].numpy(), rtol=1e-5, atol=1e-5)


def test_cli_export_refuses_a_missing_or_unfinished_run(tmp_path, capsys):
    assert cli.main(["export", "--run", str(tmp_path / "nowhere")]) == 2
    assert "run folder" in capsys.readouterr().err
    (tmp_path / "unfinished").mkdir()
    assert cli.main(["export", "--run", str(tmp_path / "unfinished")]) == 2
    assert "is not a finished run" in capsys.readouterr().err
    assert cli.main(["export", "--run", str(tmp_path / "unfinished"), "--learned-budget", "0.4", "0"]) == 2
    assert "--learned-budget takes relative costs in (0, 1]" in capsys.readouterr().err


def test_cli_exports_a_finished_run_with_its_fitted_thresholds(tmp_path, monkeypatch, capsys):
    """`python -m cgt export --run DIR` on a finished Indian Pines run: the manifest carries every operating
    point's validation-fitted thresholds, and ONNX Runtime reproduces the PyTorch decisions."""
    from cgt.experiments.train_evaluate import load_dataset, run_methods

    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path / "runs"))
    (record,) = run_methods("indian_pines", "smoke", ["hard_cgt"], progress=False)
    run_dir = record.run.run_dir
    assert cli.main(["export", "--run", str(run_dir), "--out", str(tmp_path / "onnx"), "--latency-budget-us", "1e6",
                     "--learned-budget", "0.5"]) == 0
    out = capsys.readouterr().out
    digest = deploy.export_digest(tmp_path / "onnx")
    assert "exported" in out and f"export digest: {digest}" in out
    assert json.loads((run_dir / "exports.json").read_text())[str((tmp_path / "onnx").resolve())]["digest"] == digest
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["source"]["method"] == "hard_cgt" and manifest["input_shape"] == [30, 11, 11]
    for point, values in record.metrics["operating_points"].items():
        assert manifest["thresholds"][point] == values["thresholds"]
    # a budget of one second per sample is met by the most accurate setting; its curve names the machine
    latency = json.loads((tmp_path / "onnx" / "latency.json").read_text())
    assert latency["points"]["val_latency_1000000"]["met"] and "val_latency_1000000" in manifest["thresholds"]
    assert latency["curve"]["device"].startswith("cpu") and len(latency["curve"]["test_accuracy"]) == 1
    # per operating point, every exit plan as validation saw it, and the one chosen: at least as accurate on
    # validation as every exit, and named where it leaves exits out
    assert set(latency["plans"]) == set(manifest["thresholds"]) - {"learned_budget_50"}
    for point, choice in latency["plans"].items():
        rows = {row["name"]: row for row in choice["table"]}
        assert set(rows) == {"1+2+3", "1+3", "2+3", "3"} and rows[choice["chosen"]]["chosen"]
        assert rows[choice["chosen"]]["val_accuracy"] >= rows["1+2+3"]["val_accuracy"]
        assert (f"  {point}: exits {choice['chosen']} (predicted" in out) == (choice["chosen"] != "1+2+3")
    kept = sum(choice["chosen"] == "1+2+3" for choice in latency["plans"].values())
    assert f"every exit kept at {kept} of {len(latency['plans'])} operating points" in out
    # the learned exit policy, fitted on the run's validation logits, rides along with its point
    assert manifest["learned_policy"]["points"]["learned_budget_50"]["budget"] == 0.5
    assert len(manifest["thresholds"]["learned_budget_50"]) == 2
    model = deploy.load(tmp_path / "onnx", point="val_tolerance", digest=digest, choose="segments")
    x = load_dataset("indian_pines", "smoke").x["test"]
    preds, exits = model.predict(x.numpy())
    ref = early_exit_forward(record.run.model, x, model.thresholds)
    agree = (exits == ref.exit_index.numpy()) & (preds == ref.predictions.numpy())
    assert agree.mean() > 0.99  # float rounding may flip a sample sitting on a threshold
    # A metrics.json cut short (not covered by the run's checksums) stops the export with its name and the remedy.
    metrics = run_dir / "metrics.json"
    metrics.write_text(metrics.read_text()[:200])
    assert cli.main(["export", "--run", str(run_dir), "--out", str(tmp_path / "onnx2")]) == 2
    err = capsys.readouterr().err
    assert "metrics.json is not valid JSON" in err and "evaluate the run again" in err and "Traceback" not in err


# ---------------------------------------------------------------- a learned exit policy carried by the export
@pytest.fixture(scope="module")
def learned_export(fashion_mnist_run, tmp_path_factory):
    """The Fashion-MNIST run exported with its learned exit policy (fitted on its validation logits) and the
    policy's points at relative costs 0.4 and 0.6, beside one threshold point."""
    from cgt.cost import exit_costs
    from cgt.evaluation.learned_policy import learned_operating_points

    run, data = fashion_mnist_run
    learned, points = learned_operating_points(run.logits["val"], run.logits["y_val"],
                                               exit_costs(run.model, data.input_shape), budgets=(0.4, 0.6))
    folder = deploy.export_model(run.model, data.input_shape, tmp_path_factory.mktemp("learned"),
                                 {"paper_tau": [0.9, 0.9]}, data.class_names, calibration_inputs=data.x["val"],
                                 learned=learned, learned_points=points)
    return {"model": run.model, "x": data.x["test"], "folder": folder, "learned": learned, "points": points}


@pytest.mark.parametrize("batch_size", [1, 64])
def test_a_learned_point_decides_as_evaluation_does_on_the_same_logits(learned_export, batch_size):
    """ONNX Runtime by segments under the exported learned policy: the same predictions and exits as
    cgt.inference.exits_from_logits (what evaluation scores) on the export's own logits, and the real PyTorch
    pass agrees (float rounding between the engines may move a sample sitting on a threshold)."""
    from cgt.inference import exits_from_logits

    model = deploy.load(learned_export["folder"], point="learned_budget_40", choose="segments")
    np.testing.assert_array_equal(model.learned.coef, learned_export["learned"].coef)
    assert model.thresholds == learned_export["points"]["learned_budget_40"]["thresholds"]
    x = learned_export["x"].numpy()
    preds, exits = model.predict(x, batch_size=batch_size)
    ref_preds, ref_exits = exits_from_logits(torch.from_numpy(np.stack(model.logits(x))), model.thresholds, model.learned)
    np.testing.assert_array_equal(exits, ref_exits.numpy())
    np.testing.assert_array_equal(preds, ref_preds.numpy())
    assert len(set(exits.tolist())) > 1  # the budget sends samples out by more than one exit
    real = early_exit_forward(learned_export["model"], learned_export["x"], model.thresholds, policy=model.learned)
    assert (real.exit_index.numpy() == exits).mean() > 0.99


def test_the_export_carries_the_learned_policy_verified_and_runs_it_only_where_it_can(learned_export, tmp_path):
    """The coefficients are in the verified manifest (an edited weight is refused); a learned point has no
    one-graph pass (refused by name; calibration times the plain network and segments only); the threshold
    points of the same export keep all three passes."""
    import shutil

    folder, learned = learned_export["folder"], learned_export["learned"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == deploy.FORMAT and manifest["learned_policy"]["coef"] == learned.coef.tolist()
    assert manifest["learned_policy"]["points"] == {name: {"budget": p["budget"], "objective_met": p["objective_met"]}
                                                    for name, p in learned_export["points"].items()}
    with pytest.raises(ValueError, match="one-graph pass cannot run it"):
        deploy.load(folder, point="learned_budget_60", choose="graph")
    for threads, names in ((1, {"full", "segments"}), (2, {"full", "segments", "full@1", "segments@1"})):
        auto = deploy.load(folder, point="learned_budget_60", threads=threads)  # at 2 threads, one-thread passes too
        assert all(set(times) == names for times in auto.calibration.values())
        assert auto.pass_for(1) in names and auto.pass_for(256) in names
        assert auto.predict(learned_export["x"].numpy()[:1], batch_size=1)[1][0] in range(3)
    with pytest.raises(deploy.ExportError, match="one-graph pass"):
        auto.predict_graph(learned_export["x"].numpy()[:2])
    assert deploy.load(folder, point="paper_tau", choose="graph").learned is None
    edited = tmp_path / "edited"
    shutil.copytree(folder, edited)
    manifest["learned_policy"]["coef"][0][0] += 0.5
    (edited / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(deploy.ExportError, match="does not match its own checksum"):
        deploy.load(edited, point="learned_budget_60")


def test_a_learned_point_takes_no_exit_plan(learned_export):
    """The learned policy scores every exit (its features include the earlier exits' predictions)."""
    point = next(iter(learned_export["points"]))
    with pytest.raises(ValueError, match="scores every exit; it takes no exit plan"):
        deploy.load(learned_export["folder"], point=point, exits="1+3")


def test_a_learned_policy_is_exported_only_whole_and_for_reachable_budgets(learned_export, fashion_mnist_run, tmp_path):
    from cgt.cost import exit_costs
    from cgt.evaluation.learned_policy import learned_operating_points

    run, data = fashion_mnist_run
    costs = exit_costs(run.model, data.input_shape)
    with pytest.raises(ValueError, match="must be at least exit 1's relative cost"):
        learned_operating_points(run.logits["val"], run.logits["y_val"], costs, budgets=(0.4, costs.relative[0] / 2))
    with pytest.raises(deploy.ExportError, match="give both or neither"):
        deploy.export_model(run.model, data.input_shape, tmp_path, {"paper_tau": [0.9, 0.9]}, data.class_names,
                            learned=learned_export["learned"])
    with pytest.raises(deploy.ExportError, match="have the names of threshold points"):
        deploy.export_model(run.model, data.input_shape, tmp_path, {"learned_budget_40": [0.9, 0.9]}, data.class_names,
                            learned=learned_export["learned"], learned_points=learned_export["points"])


# ---------------------------------------------------------------- the time model and the chooser on hand-made timings
def test_time_model_predicts_from_segment_times():
    from cgt.deployment.timecost import ExitTimes

    times = ExitTimes((10e-6, 20e-6, 30e-6), 50e-6)
    np.testing.assert_allclose(times.cumulative, [10e-6, 30e-6, 60e-6])
    np.testing.assert_allclose(times.relative, [0.2, 0.6, 1.2])
    # half leave at exit 1 (10 µs), a quarter at exit 2 (30), a quarter at exit 3 (60): 5 + 7.5 + 15 = 27.5 µs
    assert times.predicted_time([0.5, 0.25, 0.25]) == pytest.approx(27.5e-6)
    assert times.predicted_speedup([0.5, 0.25, 0.25]) == pytest.approx(50 / 27.5)
    assert times.all_exits_speedup() == pytest.approx(50 / 60)
    with pytest.raises(ValueError, match="one exit fraction per exit"):
        times.predicted_time([1.0])
    with pytest.raises(ValueError, match="positive full-network time"):
        ExitTimes((1e-6,), 0.0)


def test_measure_exit_times_times_each_exit_as_the_pass_reaches_it():
    """A fake clock: segment k costs k per sample, and calling a different segment than the last one costs 0.5 more
    (a session switch, which timing a segment alone, call after call, never sees). Reaching exit e is timed as
    segments 1..e back to back, so the switches are in the model: exits cost 1, 1 + 2.5, 1 + 2.5 + 3.5 per sample."""
    from cgt.deployment.timecost import measure_exit_times

    clock = {"t": 0.0, "last": None}

    def segment(k):
        def run(h):
            clock["t"] += k * len(h) + (0.5 * len(h) if clock["last"] not in (None, k) else 0.0)
            clock["last"] = k
            return h, None
        return run

    def time_fn(fn):
        clock["t"], clock["last"] = 0.0, None
        fn()
        return clock["t"]

    times = measure_exit_times([segment(1), segment(2), segment(3)], lambda h: clock.__setitem__("t", 5.0 * len(h)),
                               np.zeros(2), time_fn)
    assert times.segment_s == pytest.approx((1.0, 2.5, 3.5)) and times.full_s == 5.0 and times.batch_size == 2
    assert times.cumulative == pytest.approx([1.0, 3.5, 7.0])


def test_measure_exit_times_never_gives_a_negative_segment():
    """A prefix measured faster than a shorter one (timing noise) counts as the shorter one's time."""
    from cgt.deployment.timecost import measure_exit_times

    measured = iter([2.0, 1.5, 3.0, 4.0])  # exits 1, 2, 3, then the full network
    times = measure_exit_times([lambda h: (h, None)] * 3, lambda h: None, np.zeros(1), lambda fn: next(measured))
    assert times.segment_s == (2.0, 0.0, 1.0) and times.full_s == 4.0


def test_latency_points_fit_thresholds_to_a_time_budget_on_validation():
    """Two exits, exit 1 right and confident on samples 0-1 only, exit 2 right on all: 10 µs to exit 1,
    40 µs to exit 2. A 25 µs budget lets half go on (10·½ + 40·½): accuracy 1 at 25 µs; 5 µs cannot be met."""
    from cgt.cost import ExitCosts
    from cgt.deployment.timecost import ExitTimes, latency_curve, latency_points

    y = torch.tensor([0, 0, 1, 1])
    exit1 = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.2, 0.0], [0.2, 0.0]])  # confident (0.98) on 0-1, unsure (0.55) on 2-3
    exit2 = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [0.0, 3.0]])
    logits = torch.stack([exit1, exit2])
    times = ExitTimes((10e-6, 30e-6), 35e-6, "hand-made")
    points = latency_points(logits, y, times, [25, 5])
    fit = points["val_latency_25"]
    assert fit["met"] and fit["val_predicted_us"] == pytest.approx(25.0)
    assert 0.55 < fit["thresholds"][0] <= 0.98
    assert not points["val_latency_5"]["met"] and points["val_latency_5"]["thresholds"] == [0.0]
    curve = latency_curve(logits, y, logits, y, times, ExitCosts((10, 30), (1, 1)), [25, 5], device="test machine")
    assert curve["device"] == "test machine" and curve["test_accuracy"] == [1.0, 0.5]
    assert curve["test_predicted_us"] == pytest.approx([25.0, 10.0])
    assert curve["test_relative_flops"] == pytest.approx([(0.5 * 11 + 0.5 * 42) / 41, 11 / 41])
    with pytest.raises(ValueError, match="latency budgets must be positive"):
        latency_points(logits, y, times, [0])


def test_budget_curves_fit_the_same_relative_budget_in_time_and_in_flops():
    """The two-exit case above with FLOPs 11 to exit 1 and 42 through exit 2 (plain network 41): at 0.7 of the
    plain network, the time budget (24.5 µs) cannot send half on (25 µs), the FLOPs budget can (0.65):
    fitted to FLOPs, accuracy 1 at 25 µs; fitted to time, 0.5 at 10 µs. The figure draws both."""
    import matplotlib.pyplot as plt

    from cgt.cost import ExitCosts
    from cgt.deployment.timecost import ExitTimes, budget_curves
    from cgt.reporting.plots import accuracy_vs_latency

    y = torch.tensor([0, 0, 1, 1])
    logits = torch.stack([torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.2, 0.0], [0.2, 0.0]]),
                          torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [0.0, 3.0]])])
    times = ExitTimes((10e-6, 30e-6), 35e-6, "hand-made")
    assert ExitTimes.from_dict(times.to_dict()) == times
    curves = budget_curves(logits, y, logits, y, times, ExitCosts((10, 30), (1, 1)), "test machine",
                           relative_budgets=(0.5, 0.7))
    time_fit, flops_fit = curves["time_fitted"], curves["flops_fitted"]
    assert time_fit["budget_us"] == pytest.approx([17.5, 24.5]) and time_fit["test_accuracy"] == [0.5, 0.5]
    assert time_fit["test_predicted_us"] == pytest.approx([10.0, 10.0])
    assert flops_fit["relative_budget"] == [0.5, 0.7] and flops_fit["test_accuracy"] == [0.5, 1.0]
    assert flops_fit["test_predicted_us"] == pytest.approx([10.0, 25.0])
    assert flops_fit["test_relative_flops"] == pytest.approx([11 / 41, 26.5 / 41]) and all(flops_fit["budget_met"])
    assert curves["plain_network"] == {"test_accuracy": 1.0, "us": pytest.approx(35.0)}
    fig = accuracy_vs_latency(curves)
    assert [ax.get_xlabel() for ax in fig.axes] == ["predicted latency, µs per sample",
                                                    "average FLOPs (relative to the plain network)"]
    assert "hand-made, batch 1, 1 thread(s), test machine" in fig._suptitle.get_text()
    plt.close(fig)


def test_chooser_takes_the_fastest_pass_and_ties_go_to_the_plain_network():
    from cgt.deployment import chooser

    assert chooser.choose_pass({"full": 10.0, "graph": 8.0, "segments": 9.0}) == "graph"
    assert chooser.choose_pass({"full": 10.0, "graph": 12.0, "segments": 9.0}) == "segments"
    assert chooser.choose_pass({"full": 10.0, "graph": 9.8, "segments": 9.9}) == "full"  # within the margin: a tie
    assert chooser.choose_pass({"full": 10.0, "graph": 9.8, "segments": 11.0}, margin=0.0) == "graph"
    assert chooser.choose_pass({"full": 10.0, "graph": 20.0, "segments": 30.0}) == "full"
    # one-thread passes ('@1'): the plain network to beat is the faster of the two; equal plain networks: 'full'
    assert chooser.choose_pass({"full": 10.0, "segments": 9.0, "full@1": 8.0, "segments@1": 8.5}) == "full@1"
    assert chooser.choose_pass({"full": 10.0, "segments": 7.0, "full@1": 8.0, "segments@1": 8.5}) == "segments"
    assert chooser.choose_pass({"full": 8.0, "segments": 9.0, "full@1": 8.0}) == "full"
    assert chooser.base_pass("segments@1") == "segments" and chooser.base_pass("graph") == "graph"
    table = {1: {}, 64: {}, 1024: {}}
    assert [chooser.nearest_batch_size(table, b) for b in (1, 2, 16, 100, 600, 5000)] == [1, 64, 64, 64, 1024, 1024]
    assert chooser.nearest_batch_size({1: {}}, 32) == 1 and chooser.nearest_batch_size({256: {}}, 1) == 256
    # a learned exit policy has no one-graph pass: the choice is among the passes timed
    assert chooser.choose_pass({"full": 10.0, "segments": 9.0}) == "segments"
    for bad in ({"full": 1.0, "graph": 0.0, "segments": 1.0}, {"full": 1.0}, {"graph": 1.0, "segments": 1.0},
                {"full": 1.0, "segments": 1.0, "gpu": 0.5}):
        with pytest.raises(ValueError, match="positive times for 'full' and for at least one of"):
            chooser.choose_pass(bad)


def test_latency_targets_read_the_records():
    """Hand-made records: the chosen pass's speed-up over the best full network, the per-segment pass's
    batch-1 time ratio and the Fashion-MNIST speed-up over ONNX Runtime full, each against its goal."""
    from cgt.deployment.bench import latency_targets

    def rec(engine, **kw):
        return {"dataset": "fashion_mnist", "batch_size": 1, "threads": 1, "engine": engine, **kw}

    records = [rec("onnx_chosen", chosen_pass="segments", speedup_over_best_full=1.3, measured_speedup=1.3),
               rec("onnx_early_exit_segments", time_ratio=0.85, time_predicted_speedup=1.4),
               rec("torch_early_exit", time_ratio=5.0),
               rec("onnx_early_exit_graph", time_ratio=0.7)]
    got = {t["target"]: (t["value"], t["engine"], t["met"]) for t in latency_targets(records)}
    assert got == {"chosen pass / best full network": (1.3, "segments", True),
                   "chosen pass / ONNX Runtime full": (1.3, "segments", False),
                   "measured / time-predicted": (0.85, "onnx_early_exit_segments", False)}
    # with exit plans timed, the one chosen on validation has a line of its own against the same goal
    records[1]["val_plan"] = {"name": "1+2+3", "chosen": False}
    records.append(rec("onnx_plan_1+3", measured_speedup=1.45, val_plan={"name": "1+3", "chosen": True}))
    got = {t["target"]: (t["value"], t["engine"], t["met"]) for t in latency_targets(records)}
    assert got["exit plan chosen on validation / ONNX Runtime full"] == (1.45, "onnx_plan_1+3 (exits 1+3)", True)


def test_estimates_and_their_bootstrap_are_paired_by_round():
    """Hand-checked: each chunk's median over the rounds, summed, over n; bootstrap replicates redraw the
    rounds, the same rounds for every run, so a run that takes twice as long as another in every call is
    twice as slow in every replicate, whatever the rounds' own spread."""
    from cgt.deployment.timing import bootstrap_estimates, estimates

    t = np.zeros((3, 2, 2))
    t[:, 0] = [[1.0, 2.0], [3.0, 4.0], [100.0, 6.0]]  # run 0: chunk medians 3 and 4 → (3 + 4) / 7 samples
    t[:, 1] = 2 * t[:, 0]
    np.testing.assert_allclose(estimates(t, 7), [1.0, 2.0])
    rng = np.random.default_rng(1)
    noisy = rng.lognormal(0, 0.5, (30, 1, 10)) * np.array([1.0, 2.0])[None, :, None]
    replicates = bootstrap_estimates(noisy, 10, replicates=50, seed=3)
    assert replicates.shape == (50, 2) and replicates[:, 0].std() > 0.01
    np.testing.assert_allclose(replicates[:, 1] / replicates[:, 0], 2.0)
    np.testing.assert_array_equal(replicates, bootstrap_estimates(noisy, 10, replicates=50, seed=3))


def test_interleaved_rounds_draw_the_runs_order_afresh():
    """Every run is called on every chunk once per round, and a run does not always follow the same one (its
    time can depend on what ran before it); the same seed gives the same order."""
    from cgt.deployment.timing import interleaved_chunk_times

    def order(seed):
        calls = []
        runs = {name: (lambda a, b, name=name: calls.append((name, a))) for name in "abcd"}
        t = interleaved_chunk_times(runs, n=4, batch_size=2, repeats=20, warmup=0, seed=seed)
        assert t.shape == (20, 4, 2) and len(calls) == 20 * 4 * 2
        return [name for name, start in calls if start == 0]  # one entry per run per round

    rounds = order(0)
    predecessors = {rounds[i - 1] for i in range(1, len(rounds)) if rounds[i] == "b" and i % 4}
    assert all(sorted(rounds[i:i + 4]) == list("abcd") for i in range(0, len(rounds), 4))
    assert len(predecessors) == 3 and rounds == order(0) and rounds != order(1)


def test_latency_targets_give_a_paired_interval_and_say_when_a_run_cannot_tell():
    """With bootstrap replicates in the records, each target's ratio gets a 95 % interval, paired by round,
    against the row it is compared with (the best full network, ONNX Runtime full, or the time model's
    prediction); a goal inside that interval is not decided by the run."""
    from cgt.deployment.bench import latency_targets

    rng = np.random.default_rng(0)
    full = 40 + rng.normal(0, 1, 200)
    plain = full * (1 + rng.normal(0, 0.03, 200))  # the chosen pass is the plain network itself: a tie

    def rec(engine, replicates, **kw):
        return {"dataset": "indian_pines", "batch_size": 1, "threads": 1, "engine": engine,
                "median_us_per_sample": float(np.median(replicates)), "bootstrap_us_per_sample": list(replicates), **kw}

    records = [rec("onnx_full", full, measured_speedup=1.0),
               rec("onnx_chosen", plain, chosen_pass="full", speedup_over_best_full=0.99, measured_speedup=0.99),
               rec("onnx_early_exit_segments", full / 1.2, time_ratio=1.2 / 1.5, time_predicted_speedup=1.5)]
    got = {t["target"]: t for t in latency_targets(records)}
    tie = got["chosen pass / best full network"]
    assert not tie["met"] and not tie["decided"] and 0.9 < tie["interval"][0] < 1.0 < tie["interval"][1] < 1.1
    slow = got["measured / time-predicted"]  # every replicate measures 1.2x where the model says 1.5x: 0.8
    assert not slow["met"] and slow["decided"] and slow["interval"] == pytest.approx([0.8, 0.8])
    # the time model's prediction redrawn with the same rounds: its own spread widens the interval
    records[2]["bootstrap_time_predicted_speedup"] = [1.2, 1.5] * 100
    slow = {t["target"]: t for t in latency_targets(records)}["measured / time-predicted"]
    assert slow["interval"] == pytest.approx([0.8, 1.0]) and not slow["decided"]
    older = [{k: v for k, v in r.items() if k != "bootstrap_us_per_sample"} for r in records]
    assert "interval" not in latency_targets(older)[0] and "decided" not in latency_targets(older)[0]


def test_a_bound_call_keeps_its_arrays_alive(small_export):
    """ONNX Runtime writes into the arrays bound at construction: a kept `run` alone must keep them alive."""
    import gc

    import onnxruntime as ort

    session = ort.InferenceSession(str(small_export["folder"] / "full.onnx"), providers=["CPUExecutionProvider"])
    x = small_export["x"][:1].numpy()
    run = deploy._Bound(session, {"features": x.copy()}, deploy._session_outputs(session, 1)).run
    gc.collect()
    for _ in range(3):
        run()
    with torch.no_grad():
        assert run.arrays[1]["prediction"][0] == small_export["net"](small_export["x"][:1])[-1].argmax(-1).item()


def test_a_bound_call_is_one_cpp_call_with_the_public_methods_outputs(small_export):
    """_bound_run calls the session's C++ run_with_iobinding directly on the pinned onnxruntime (the Python
    wrapper's per-call checks are for WebGPU graph capture); its outputs equal the public method's."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(small_export["folder"] / "segment1.onnx"), providers=["CPUExecutionProvider"])
    x = small_export["x"][:1].numpy()
    direct = deploy._Bound(session, {"features": x.copy()}, deploy._session_outputs(session, 1))
    assert direct.run.func.__self__ is session._sess  # the fast path is taken, not the fallback
    public = deploy._session_outputs(session, 1)
    binding = session.io_binding()
    binding.bind_input("features", "cpu", 0, np.float32, [1, 12], x.ctypes.data)
    for name, array in public.items():
        binding.bind_output(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
    direct.run()
    session.run_with_iobinding(binding)
    for name in public:
        np.testing.assert_array_equal(direct.outputs[name], public[name])


def test_a_sample_no_exit_takes_is_refused_by_name(small_export):
    """A non-finite input gives NaN scores, which no exit's comparison accepts, not even the last's: the
    single-sample pass says which sample, instead of returning an unwritten prediction."""
    model = deploy.load(small_export["folder"], choose="segments")
    x = small_export["x"][:3].numpy().copy()
    x[1] = np.nan
    with pytest.raises(ValueError, match=r"sample 1: no exit took it \(exit score nan\); are its inputs finite\?"):
        model.predict(x, batch_size=1)
    preds, exits = model.predict(small_export["x"][:3].numpy(), batch_size=1)
    assert preds.dtype == exits.dtype == np.int64 and set(exits) <= {0, 1, 2}


@pytest.mark.parametrize("path", ["predict", "predict_graph", "predict_segments", "predict_full"])
def test_one_sample_per_call_gives_the_batch_results_in_new_arrays(trained, path):
    """A serving loop's call, one sample (the single-sample functions): the same predictions and exits as
    the pass on the whole batch, each call's results in arrays of their own (not the bound outputs, which
    the next call overwrites)."""
    model = deploy.load(trained["folder"], point="spread", threads=1, calibration={1: {"full": 3e-5, "segments": 1e-5}})
    x = trained["x"].numpy()
    fn = getattr(model, path)
    batch = fn(x, batch_size=64)
    singles = [fn(x[i:i + 1]) for i in range(len(x))]
    if path == "predict_full":
        np.testing.assert_array_equal(np.concatenate(singles), batch)
        return
    preds, exits = (np.concatenate(parts) for parts in zip(*singles))
    np.testing.assert_array_equal(preds, batch[0])
    np.testing.assert_array_equal(exits, batch[1])
    assert all(p.shape == e.shape == (1,) and p.dtype == e.dtype == np.int64 for p, e in singles)
    assert len({p.ctypes.data for p, _ in singles[:3]}) == 3 and len(set(exits.tolist())) > 1


def test_a_new_calibration_decides_the_single_sample_pass_again(small_export):
    """The single-sample function `predict` keeps is decided again when a calibration is set, and the
    segments' one refuses a sample no exit takes (a NaN score) by name."""
    x = small_export["x"][:1].numpy()
    model = deploy.load(small_export["folder"], calibration={1: {"full": 3e-5, "segments": 1e-5}})
    assert model.predict(x)[1][0] in (0, 1, 2) and model._one_sample is model._single["segments"]
    model._use_calibration({1: {"full": 1e-5, "segments": 3e-5}})
    assert model.predict(x)[1][0] == 2 and model._one_sample is model._single["full"]
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"no exit took the sample \(exit score nan\); are its inputs finite\?"):
        model.predict_segments(x)


def test_segments_that_decide_nothing_give_the_exported_segments_logits(trained):
    """cgt.deployment.bench.undecided_segments (the ceiling of any exit decision, in bench_components.json)
    times the same computation as the exported segments, without the score and class."""
    from cgt.deployment.bench import undecided_segments
    from cgt.inference import fuse_for_inference

    x = trained["x"][:16].numpy()
    sessions = undecided_segments(fuse_for_inference(trained["model"]).eval(), tuple(x.shape[1:]))
    assert all({o.name for o in s.get_outputs()} == {"features_out", "logits"} for s in sessions)
    h = x
    for session, want in zip(sessions, deploy.load(trained["folder"], choose="segments").logits(x)):
        h, logits = session.run(["features_out", "logits"], {"features": h})
        np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
