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


@pytest.mark.parametrize("path", ["predict", "predict_graph", "predict_segments"])
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
    for path in (model.predict, model.predict_graph, model.predict_segments):
        preds, exits = path(np.zeros((0, 1, 28, 28), np.float32))
        assert preds.shape == exits.shape == (0,)


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


def test_cli_exports_a_finished_run_with_its_fitted_thresholds(tmp_path, monkeypatch, capsys):
    """`python -m cgt export --run DIR` on a finished Indian Pines run: the manifest carries every operating
    point's validation-fitted thresholds, and ONNX Runtime reproduces the PyTorch decisions."""
    from cgt.experiments.train_evaluate import load_dataset, run_methods

    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path / "runs"))
    (record,) = run_methods("indian_pines", "smoke", ["hard_cgt"], progress=False)
    assert cli.main(["export", "--run", str(record.run.run_dir), "--out", str(tmp_path / "onnx")]) == 0
    assert "exported" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["source"]["method"] == "hard_cgt" and manifest["input_shape"] == [30, 11, 11]
    for point, values in record.metrics["operating_points"].items():
        assert manifest["thresholds"][point] == values["thresholds"]
    model = deploy.load(tmp_path / "onnx", point="val_tolerance")
    x = load_dataset("indian_pines", "smoke").x["test"]
    preds, exits = model.predict(x.numpy())
    ref = early_exit_forward(record.run.model, x, model.thresholds)
    agree = (exits == ref.exit_index.numpy()) & (preds == ref.predictions.numpy())
    assert agree.mean() > 0.99  # float rounding may flip a sample sitting on a threshold
