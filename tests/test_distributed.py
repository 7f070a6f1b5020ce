"""DDP under torchrun on CPU (gloo): it trains, writes once, and matches single-process gradients."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def torchrun(args: list[str], runs_dir: Path, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    env = os.environ | {"CGT_RUNS_DIR": str(runs_dir), "CGT_ROOT": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_and_write_artifacts_once(tmp_path):
    """2 CPU processes: the loss falls, one complete run folder, keyed with world_size 2."""
    torchrun(["-m", "cgt", "train", "--dataset", "indian_pines", "--method", "hard_cgt", "--profile", "smoke",
              "--epochs", "3", "--quiet"], tmp_path)
    runs = list((tmp_path / "smoke" / "indian_pines" / "hard_cgt").glob("seed0-*"))
    assert len(runs) == 1
    run = runs[0]
    assert (run / "complete.json").exists() and not (run / "checkpoint.pt").exists()
    assert json.loads((run / "config.json").read_text())["train"]["world_size"] == 2
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]
    assert (run / "metrics.json").exists()
    leftovers = [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


PROBE = textwrap.dedent('''
    """One SGD step on a fixed global batch; saves (w0 - w1) / lr, i.e. the gradient that was applied."""
    import sys, torch
    from torch import nn
    from cgt.data import PreparedData
    from cgt.models import EarlyExitNet
    from cgt.train import TrainConfig, train_run

    runs_root, out = sys.argv[1], sys.argv[2]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    data = PreparedData("probe", {s: x for s in ("train", "val", "test")}, {s: y for s in ("train", "val", "test")},
                        ["a", "b", "c"], checksum="probe")

    batch_sizes = []  # rows this process trained on per step: proves each rank took its own shard

    def model_fn():  # no BatchNorm: per-process statistics would differ from single-process ones
        blocks = [nn.Sequential(nn.Linear(12, 16), nn.ReLU()), nn.Sequential(nn.Linear(16, 16), nn.ReLU()),
                  nn.Sequential(nn.Linear(16, 16), nn.ReLU())]
        net = EarlyExitNet(blocks, [nn.Linear(16, 3) for _ in range(3)])
        net.blocks[0].register_forward_pre_hook(lambda m, a: batch_sizes.append(len(a[0])) if m.training else None)
        return net

    cfg = TrainConfig(epochs=1, batch_size=64, optimizer="sgd", lr=0.5, weight_decay=0.0, device="cpu")
    torch.manual_seed(cfg.seed)
    w0 = {k: v.clone() for k, v in model_fn().state_dict().items()}
    run = train_run(data, "soft_cgt", cfg, runs_root=runs_root, model_fn=model_fn, progress=False)
    grads = {k: (w0[k] - v) / cfg.lr for k, v in run.model.state_dict().items()}
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        torch.save({"grads": grads, "batch_sizes": batch_sizes}, out)
''')


@pytest.mark.slow
def test_ddp_first_step_gradients_equal_single_process(tmp_path):
    """Same global batch and seed: the gradient DDP applies equals the single-process one."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    env = os.environ | {"CGT_ROOT": str(ROOT)}
    subprocess.run([sys.executable, str(probe), str(tmp_path / "single"), str(tmp_path / "g1.pt")], cwd=ROOT,
                   env=env, check=True, timeout=120)
    torchrun([str(probe), str(tmp_path / "ddp"), str(tmp_path / "g2.pt")], tmp_path)
    single, ddp = torch.load(tmp_path / "g1.pt"), torch.load(tmp_path / "g2.pt")
    assert single["batch_sizes"] == [64] and ddp["batch_sizes"] == [32]  # one step; each rank half the batch
    single, ddp = single["grads"], ddp["grads"]
    assert single.keys() == ddp.keys()
    assert any(v.abs().max() > 1e-4 for v in single.values())  # a real step was taken
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-6, msg=k)
