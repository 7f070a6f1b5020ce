"""Training runs (cgt.train): deterministic, cached by content, resumable after a kill, and the
last_exit baseline really is the plain network. Uses a small subset of the real Indian Pines data."""
from __future__ import annotations

import copy
import glob
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cgt import train
from cgt.data import DataConfig, load
from cgt.losses import resolve_options
from cgt.runs import is_complete, run_lock
from cgt.train import EpochSetup, TrainConfig, new_state, train_epoch, train_run

ROOT = Path(__file__).resolve().parents[1]
CFG = TrainConfig(epochs=2, batch_size=64, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ip_data(tmp_path_factory):
    return load(DataConfig(dataset="indian_pines", data_dir=str(ROOT / "data" / "raw"),
                           cache_dir=str(tmp_path_factory.mktemp("prepared")), max_train=300, max_eval=200,
                           options={"pca_components": 8, "patch_size": 5}))


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in history]


# ---------------------------------------------------------------- determinism
def test_same_seed_gives_bit_identical_runs(ip_data, tmp_path):
    """Two runs with the same config and seed: identical weights, histories (but timing) and logits; another seed differs."""
    a = train_run(ip_data, "hard_cgt", CFG, runs_root=tmp_path / "a", progress=False, force=True)
    b = train_run(ip_data, "hard_cgt", CFG, runs_root=tmp_path / "b", progress=False, force=True)
    assert not a.cached and not b.cached
    assert state_equal(a.model.state_dict(), b.model.state_dict())
    assert without_time(a.history) == without_time(b.history)
    for split in ("val", "test"):
        assert torch.equal(a.logits[split], b.logits[split])
    assert a.run_dir.relative_to(tmp_path / "a") == b.run_dir.relative_to(tmp_path / "b")
    c = train_run(ip_data, "hard_cgt", TrainConfig(epochs=2, batch_size=64, device="cpu", seed=1),
                  runs_root=tmp_path / "a", progress=False)
    assert c.run_dir != a.run_dir and c.run_dir.name.startswith("seed1-")
    assert not torch.equal(c.model.state_dict()["heads.0.2.weight"], a.model.state_dict()["heads.0.2.weight"])


# ---------------------------------------------------------------- caching
def test_finished_run_is_reused_not_retrained(ip_data, tmp_path):
    """A second call with the same config loads the finished run (cached=True, files untouched, same logits)."""
    first = train_run(ip_data, "joint_uniform", CFG, runs_root=tmp_path, progress=False)
    assert not first.cached and is_complete(first.run_dir)
    assert not (first.run_dir / "checkpoint.pt").exists()  # the finished artifacts supersede it
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.run_dir.iterdir()}
    time.sleep(0.01)
    second = train_run(ip_data, "joint_uniform", CFG, runs_root=tmp_path, progress=False)
    assert second.cached and second.run_dir == first.run_dir
    assert {p.name: p.stat().st_mtime_ns for p in first.run_dir.iterdir()} == mtimes
    assert state_equal(second.model.state_dict(), first.model.state_dict())
    assert torch.equal(second.logits["test"], first.logits["test"])
    assert second.history == json.loads(json.dumps(first.history))


def test_changed_option_gives_a_new_run_dir(ip_data, tmp_path):
    """Changing a strategy option (hard_cgt τ_train) or a training value names a different run folder."""
    base = train_run(ip_data, "hard_cgt", CFG, runs_root=tmp_path, progress=False)
    other = train_run(ip_data, "hard_cgt", CFG, runs_root=tmp_path, progress=False, options={"tau_train": 0.8})
    assert not other.cached and other.run_dir != base.run_dir
    assert other.config["options"]["tau_train"] == 0.8 and base.config["options"]["tau_train"] == 0.5
    # the default spelled out explicitly is the same run
    same = train_run(ip_data, "hard_cgt", CFG, runs_root=tmp_path, progress=False, options={"tau_train": 0.5})
    assert same.cached and same.run_dir == base.run_dir
    lr = train_run(ip_data, "hard_cgt", TrainConfig(epochs=2, batch_size=64, device="cpu", lr=1e-3),
                   runs_root=tmp_path, progress=False)
    assert lr.run_dir not in (base.run_dir, other.run_dir)


def test_a_cpu_run_trains_with_one_thread_whatever_the_callers_setting(ip_data, tmp_path, monkeypatch):
    """One run key, one result: the run trains (and computes its logits) with one intra-op thread even if
    its caller set three, gives the same bits as a run started at one thread, and leaves the caller's
    setting as it was."""
    seen = []
    real_epoch = train.train_epoch

    def recording_epoch(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", recording_epoch)
    at_one = train_run(ip_data, "hard_cgt", CFG, runs_root=tmp_path / "one", progress=False)
    torch.set_num_threads(3)
    try:
        at_three = train_run(ip_data, "hard_cgt", CFG, runs_root=tmp_path / "three", progress=False)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(1)
    assert seen == [train.CPU_TRAINING_THREADS] * (2 * CFG.epochs) == [1] * 4
    assert state_equal(at_one.model.state_dict(), at_three.model.state_dict())
    assert all(torch.equal(at_one.logits[k], at_three.logits[k]) for k in ("val", "test"))


def test_training_threads_restores_the_setting_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"):
        with train.training_threads(torch.device("cpu")):
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_run_lock_makes_a_second_holder_wait_and_tells_it(tmp_path):
    """While one holder has the run's lock, a second (another thread here: flock locks open files, not
    processes) calls its on_wait once and gets the lock only after the first released it."""
    events, waited = [], threading.Event()
    with run_lock(tmp_path / "run"):
        def second():
            with run_lock(tmp_path / "run", on_wait=lambda: (events.append("waiting"), waited.set())):
                events.append("second holds it")
        thread = threading.Thread(target=second)
        thread.start()
        assert waited.wait(5)
        events.append("first releases it")
    thread.join(5)
    assert events == ["waiting", "first releases it", "second holds it"]
    with run_lock(tmp_path / "run", on_wait=lambda: events.append("unexpected wait")):
        pass  # free again: no waiting
    assert events[-1] == "second holds it" and (tmp_path / "run" / ".lock").exists()


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "delete"])
def test_damaged_artifact_makes_the_run_incomplete_and_it_is_redone(ip_data, tmp_path, damage, capsys):
    """A truncated, altered or missing logits.pt fails the hash check; the run is then redone, identically,
    with a notice on stderr even though progress is off."""
    first = train_run(ip_data, "joint_uniform", CFG, runs_root=tmp_path, progress=False)
    path = first.run_dir / "logits.pt"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "corrupt":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        path.unlink()
    assert not is_complete(first.run_dir)
    capsys.readouterr()
    redone = train_run(ip_data, "joint_uniform", CFG, runs_root=tmp_path, progress=False)
    out, err = capsys.readouterr()
    assert out == "" and f"{first.run_dir}: an artifact no longer matches the hash recorded" in err
    assert not redone.cached and redone.run_dir == first.run_dir and is_complete(redone.run_dir)
    assert torch.equal(torch.load(path, weights_only=True)["test"], first.logits["test"])
    assert state_equal(redone.model.state_dict(), first.model.state_dict())


def test_a_full_disk_while_writing_the_artifacts_leaves_an_unfinished_run_that_resumes(ip_data, tmp_path,
                                                                                      monkeypatch):
    """The disk fills up (OSError ENOSPC) as model.pt is written: the run raises, is not taken for finished
    (no complete.json, nothing half-written under an artifact's name), keeps its last epoch checkpoint, and
    the next call resumes from it and ends bit-identical to a run that never failed."""
    import errno
    from contextlib import contextmanager

    from cgt import fileio

    reference = train_run(ip_data, "hard_cgt", CFG, runs_root=tmp_path / "reference", progress=False)
    real_atomic_path = fileio.atomic_path

    @contextmanager
    def full_disk_at_model(path):
        with real_atomic_path(path) as tmp:
            yield tmp
            if tmp.name.startswith(".model.pt."):
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    monkeypatch.setattr(train, "atomic_path", full_disk_at_model)
    with pytest.raises(OSError, match="No space left on device"):
        train_run(ip_data, "hard_cgt", CFG, runs_root=tmp_path / "full", progress=False)
    monkeypatch.undo()
    (folder,) = (tmp_path / "full").rglob("seed0-*")
    assert not is_complete(folder) and not (folder / "complete.json").exists()
    assert not (folder / "model.pt").exists() and not list(folder.glob(".*.tmp"))
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["epoch"] == CFG.epochs
    resumed = train_run(ip_data, "hard_cgt", CFG, runs_root=tmp_path / "full", progress=False)
    assert not resumed.cached and is_complete(folder)
    assert state_equal(resumed.model.state_dict(), reference.model.state_dict())
    assert all(torch.equal(resumed.logits[k], reference.logits[k]) for k in ("val", "test"))


# ---------------------------------------------------------------- history
def test_per_epoch_lines_go_to_the_log_not_to_a_notebooks_output(ip_data, tmp_path, capsys, caplog):
    """Off a terminal (a notebook, a log file) nothing per epoch is printed; one log record per epoch goes to
    the `cgt.train` logger, which `cgt train` shows and a notebook (no handler) does not."""
    import logging

    with caplog.at_level(logging.INFO, logger="cgt.train"):
        train_run(ip_data, "joint_uniform", CFG, runs_root=tmp_path, progress=True)
    assert " ep 1/2" not in capsys.readouterr().out
    lines = [r.getMessage() for r in caplog.records if r.name == "cgt.train"]
    assert [line.split(":")[0] for line in lines] == ["joint_uniform s0 ep 1/2", "joint_uniform s0 ep 2/2"]


def test_history_records_every_epoch(ip_data, tmp_path):
    """history.json holds, per epoch: loss, E train/val accuracies, E mean weights, λ and the epoch time."""
    run = train_run(ip_data, "hard_cgt", CFG, runs_root=tmp_path, progress=False)
    assert run.history == json.loads((run.run_dir / "history.json").read_text())
    assert [h["epoch"] for h in run.history] == [1, 2]
    for h in run.history:
        assert {"loss", "train_acc", "val_acc", "mean_weight", "lambdas", "epoch_time_s"} <= set(h)
        assert h["loss"] > 0 and h["epoch_time_s"] > 0
        for key in ("train_acc", "val_acc", "mean_weight", "lambdas"):
            assert len(h[key]) == 3, key
        assert all(0 <= a <= 1 for a in h["train_acc"] + h["val_acc"])
        assert sum(h["mean_weight"]) == pytest.approx(1.0, abs=1e-5)  # normalised per sample
    # annealed λ: the schedule's start at the first epoch, its end at the last
    assert run.history[0]["lambdas"] == pytest.approx([1.0, 0.55, 0.1])
    assert run.history[-1]["lambdas"] == pytest.approx([0.2, 0.6, 1.0])


def test_gradient_interference_is_logged_without_changing_training(ip_data, tmp_path):
    """log_gradients_every = 3: history holds, every 3 steps, an E×E cosine matrix (1 on the diagonal)
    and norm shares summing to 1; the weights and logits are bit-identical to a run without logging."""
    import dataclasses

    plain = train_run(ip_data, "joint_uniform", CFG, runs_root=tmp_path / "a", progress=False)
    logged = train_run(ip_data, "joint_uniform", dataclasses.replace(CFG, log_gradients_every=3),
                       runs_root=tmp_path / "b", progress=False)
    assert state_equal(plain.model.state_dict(), logged.model.state_dict())
    assert torch.equal(plain.logits["test"], logged.logits["test"])
    steps_per_epoch = -(-300 // CFG.batch_size)
    records = [g for h in logged.history for g in h["gradients"]]
    assert [g["step"] for g in records] == list(range(0, CFG.epochs * steps_per_epoch, 3))
    for g in records:
        assert [g["cosine"][e][e] for e in range(3)] == pytest.approx([1.0] * 3)
        assert sum(g["norm_share"]) == pytest.approx(1.0) and all(-1 <= c <= 1 + 1e-6 for row in g["cosine"] for c in row)
    assert "gradients" not in plain.history[0]


def test_gradient_interference_matches_separate_backward_passes():
    """Each exit's gradient, computed by its own backward pass, gives the same cosines and shares — each pair
    compared on the blocks both exits reach, shares on block 0 (every exit's); an exit with zero weight has
    no direction (None) and no share."""
    from cgt.interference import gradient_interference
    from cgt.models import generic_mlp

    torch.manual_seed(0)
    net = generic_mlp((6,), 3, width=8, depth=3)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    w = torch.full((16, 3), 1 / 3)
    got = gradient_interference(net, net(x), y, w)

    def gradient(e: int, blocks: int) -> torch.Tensor:
        """Exit e's gradient on blocks 0..blocks-1, by its own backward pass."""
        net.zero_grad()
        (F.cross_entropy(net(x)[e], y) / 3).backward()
        return torch.cat([p.grad.flatten() for block in net.blocks[:blocks] for p in block.parameters()])

    # exits 1 and 2 share block 0 only; exits 2 and 3 share blocks 0 and 1
    assert got["cosine"][0][1] == pytest.approx(float(F.cosine_similarity(gradient(0, 1), gradient(1, 1), dim=0)),
                                                rel=1e-4)
    assert got["cosine"][1][2] == pytest.approx(float(F.cosine_similarity(gradient(1, 2), gradient(2, 2), dim=0)),
                                                rel=1e-4)
    on_block0 = torch.stack([gradient(e, 1).norm() for e in range(3)])
    assert got["norm_share"] == pytest.approx((on_block0 / on_block0.sum()).tolist(), rel=1e-4)
    assert got["norm_share_per_block"][2][:2] == [None, None] and got["norm_share_per_block"][2][2] == 1.0
    # the biased measurement this replaces: exit 1's gradient padded with zeros on block 1 lowers its cosine
    padded = torch.cat([gradient(0, 1), torch.zeros_like(gradient(1, 2)[len(gradient(0, 1)):])])
    assert abs(float(F.cosine_similarity(padded, gradient(1, 2), dim=0))) < abs(got["cosine"][0][1])
    w[:, 1] = 0
    zeroed = gradient_interference(net, net(x), y, w)
    assert zeroed["cosine"][1][0] is None and zeroed["norm_share"][1] == 0


def test_hard_cgt_gate_moves_weight_off_the_last_exit(ip_data, tmp_path):
    """With equal λ, joint_uniform weighs every exit 1/3 but HardCGT gives exit 3 clearly less than exit 1."""
    uniform = train_run(ip_data, "joint_uniform", CFG, runs_root=tmp_path, progress=False)
    for h in uniform.history:
        assert h["mean_weight"] == pytest.approx([1 / 3] * 3, abs=1e-6)
    hard = train_run(ip_data, "hard_cgt", CFG, runs_root=tmp_path, progress=False, options={"lambdas": [1, 1, 1]})
    w1, w2, w3 = hard.history[-1]["mean_weight"]
    # per sample w_1 = (1 + ε)/S ≥ w_3 = (elig_3 + ε)/S, strictly where an earlier exit succeeded
    assert w3 < w1 - 0.02 and w2 <= w1 + 1e-6


# ---------------------------------------------------------------- last_exit is the plain network
def test_last_exit_backbone_gradient_is_the_plain_networks(ip_data):
    """last_exit: one training step gives the backbone exactly the gradient of the last exit's CE alone; early heads still learn."""
    x, y = ip_data.x["train"][:64], ip_data.y["train"][:64]
    torch.manual_seed(0)
    model = ip_data.default_model()
    ref = copy.deepcopy(model)
    # One batch of 64: .grad holds that batch's gradient, computed before the (negligible) step.
    cfg = TrainConfig(epochs=1, batch_size=64, device="cpu", optimizer="sgd", lr=1e-9, weight_decay=0.0)
    state = new_state(model, cfg)
    train_epoch(model, state, EpochSetup(cfg, "last_exit", resolve_options("last_exit", 3)), x, y)
    # the same batch in the same order, trained as the plain network: CE of the last exit only
    order = torch.randperm(64, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + 0))
    ref.train()
    F.cross_entropy(ref(x[order])[-1], y[order]).backward()
    got, want = dict(model.named_parameters()), dict(ref.named_parameters())
    for name, p in got.items():
        if name.startswith("blocks."):
            torch.testing.assert_close(p.grad, want[name].grad, rtol=1e-5, atol=1e-7, msg=name)
        elif name.startswith(("heads.0.", "heads.1.")):
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name  # early heads do learn
            assert want[name].grad is None or torch.count_nonzero(want[name].grad) == 0, name
    # control: joint training sends early-exit gradient into the backbone, so the check above can fail
    joint = copy.deepcopy(ref)
    joint.zero_grad()
    train_epoch(joint, new_state(joint, cfg), EpochSetup(cfg, "joint_uniform", resolve_options("joint_uniform", 3)),
                x, y)
    g_joint = dict(joint.named_parameters())["blocks.0.0.weight"].grad
    assert not torch.allclose(g_joint, want["blocks.0.0.weight"].grad, rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------- resume after SIGKILL
EPOCHS = 6  # long enough to be killed between checkpoints, short enough for CI


def _command(epochs: int = EPOCHS) -> list[str]:
    return [sys.executable, "-m", "cgt", "train", "--dataset", "indian_pines", "--method", "joint_uniform",
            "--profile", "smoke", "--epochs", str(epochs), "--quiet"]


COMMAND = _command()


def _env(runs: Path) -> dict[str, str]:
    # One thread per process: two torch processes with a thread per core each oversubscribe a
    # small CPU badly (10x slower). Every run of this test uses the same setting.
    return os.environ | {"CGT_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1"}


def _start(runs: Path, epochs: int = EPOCHS) -> subprocess.Popen:
    return subprocess.Popen(_command(epochs), cwd=ROOT, env=_env(runs), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _run_dir(runs: Path) -> Path:
    found = glob.glob(str(runs / "smoke" / "indian_pines" / "joint_uniform" / "seed0-*"))
    assert len(found) == 1, found
    return Path(found[0])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """`python -m cgt train` SIGKILLed mid-run, then rerun, ends bit-identical to an uninterrupted run."""
    clean = _start(tmp_path / "clean")  # the uninterrupted reference, in parallel
    killed = _start(tmp_path / "killed")
    pattern = str(tmp_path / "killed" / "smoke" / "indian_pines" / "joint_uniform" / "seed0-*" / "checkpoint.pt")
    epoch, deadline = 0, time.monotonic() + 150
    while epoch < 1:
        assert killed.poll() is None, f"run ended before it could be killed: {killed.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        for path in glob.glob(pattern):
            try:  # written atomically by rename: either absent or complete
                epoch = torch.load(path, weights_only=False)["epoch"]
            except FileNotFoundError:
                pass
        time.sleep(0.02)
    killed.kill()  # SIGKILL: no cleanup runs
    killed.communicate()
    run_dir = _run_dir(tmp_path / "killed")
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert 1 <= ckpt["epoch"] < EPOCHS and len(ckpt["history"]) == ckpt["epoch"]
    assert not (run_dir / "complete.json").exists() and not (run_dir / "model.pt").exists()

    resumed = subprocess.run(COMMAND, cwd=ROOT, env=_env(tmp_path / "killed"), capture_output=True, text=True, timeout=200)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} after epoch {ckpt['epoch']}" in resumed.stderr  # shown despite --quiet
    out, err = clean.communicate(timeout=200)
    assert clean.returncode == 0, err

    a, b = _run_dir(tmp_path / "killed"), _run_dir(tmp_path / "clean")
    assert a.name == b.name and is_complete(a) and is_complete(b)
    assert state_equal(torch.load(a / "model.pt", weights_only=True), torch.load(b / "model.pt", weights_only=True))
    hist_a, hist_b = (json.loads((d / "history.json").read_text()) for d in (a, b))
    assert len(hist_a) == EPOCHS and without_time(hist_a) == without_time(hist_b)
    # it really resumed: the epochs done before the kill keep their recorded timings (a restart re-measures them)
    assert hist_a[: ckpt["epoch"]] == ckpt["history"]
    la, lb = (torch.load(d / "logits.pt", weights_only=True) for d in (a, b))
    assert all(torch.equal(la[k], lb[k]) for k in ("val", "test"))


# ---------------------------------------------------------------- one training per run key
def _stderr_lines(proc: subprocess.Popen) -> list[str]:
    """The lines `proc` writes to stderr, collected as they come (a reader thread)."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    return lines


def _trained_or_cached(stdout: str) -> tuple[str, str]:
    """('trained' | 'cached', the metrics the command printed for its run)."""
    (line,) = [x for x in stdout.splitlines() if x.startswith("indian_pines joint_uniform seed 0:")]
    status, metrics = line.split(": ", 1)[1].split("; ", 1)
    return ("cached" if status == "cached" else "trained"), metrics


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_identical_commands_train_the_run_once(tmp_path):
    """Two `python -m cgt train` of the same run started together: one trains, the other waits on the run's
    lock and loads the finished run; the same numbers, in well under twice the time of one command."""
    command = [c for c in COMMAND if c != "--quiet"]  # the per-run summary line tells trained from cached
    t0 = time.perf_counter()
    single = subprocess.run(command, cwd=ROOT, env=_env(tmp_path / "single"), capture_output=True, text=True,
                            timeout=200)
    one = time.perf_counter() - t0
    assert single.returncode == 0, single.stderr
    t0 = time.perf_counter()
    pair = [subprocess.Popen(command, cwd=ROOT, env=_env(tmp_path / "pair"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in pair]
    both = time.perf_counter() - t0
    assert all(p.returncode == 0 for p in pair), outputs
    results = sorted(_trained_or_cached(out) for out, _ in outputs)
    assert [status for status, _ in results] == ["cached", "trained"], outputs
    assert results[0][1] == results[1][1] == _trained_or_cached(single.stdout)[1]
    print(f"one command {one:.1f} s; two identical commands together {both:.1f} s ({both / one:.2f}x)")
    assert both < 1.5 * one


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_waiter_takes_over_a_run_whose_holder_was_killed_and_resumes_it(tmp_path):
    """A second command waits on the run's lock; the holder is SIGKILLed; the kernel releases its lock, and
    the waiter resumes the run from the holder's last checkpoint, ending bit-identical to a clean run."""
    # The holder must still be training when the waiter, a new process, has started and reached the lock: an
    # epoch takes a few seconds and a process start ten or more under load, hence more epochs than the others.
    epochs = 3 * EPOCHS
    clean = _start(tmp_path / "clean", epochs)  # the uninterrupted reference, in parallel
    holder = _start(tmp_path / "killed", epochs)
    pattern = str(tmp_path / "killed" / "smoke" / "indian_pines" / "joint_uniform" / "seed0-*" / "checkpoint.pt")
    deadline = time.monotonic() + 150
    while not glob.glob(pattern):
        assert holder.poll() is None, f"run ended before it could be killed: {holder.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    waiter = _start(tmp_path / "killed", epochs)
    waiter_err = _stderr_lines(waiter)
    while not any("another process is training this run; waiting for it" in line for line in waiter_err):
        assert holder.poll() is None, "the holder finished before the waiter reached the lock"
        assert waiter.poll() is None and time.monotonic() < deadline + 100, waiter_err
        time.sleep(0.05)
    holder.kill()  # SIGKILL: no cleanup runs, the kernel drops its flock
    holder.communicate()
    run_dir = _run_dir(tmp_path / "killed")
    assert waiter.wait(timeout=200) == 0, waiter_err
    time.sleep(0.2)  # the reader thread takes the last lines
    assert any(line.startswith(f"resuming {run_dir} after epoch ") for line in waiter_err), waiter_err
    assert clean.wait(timeout=200) == 0
    a, b = _run_dir(tmp_path / "killed"), _run_dir(tmp_path / "clean")
    assert a.name == b.name and is_complete(a) and is_complete(b)
    assert state_equal(torch.load(a / "model.pt", weights_only=True), torch.load(b / "model.pt", weights_only=True))
    la, lb = (torch.load(d / "logits.pt", weights_only=True) for d in (a, b))
    assert all(torch.equal(la[k], lb[k]) for k in ("val", "test"))
