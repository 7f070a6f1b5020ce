"""Training runs on workers (cgt.pipeline.runner): local processes and a Dask LocalCluster give the same bits as
a serial run in a process set to several threads (one run key, one result), a killed worker's run resumes from its checkpoint, bad settings fail before any work,
and the plan covers everything the pipeline's notebooks train."""
from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

import pytest
import torch

from cgt.experiments.ablations import LOG_GRADIENTS_EVERY
from cgt.experiments.train_evaluate import train_methods
from cgt.pipeline import runner
from cgt.pipeline.runner import RunnerError, RunRequest

# one epoch each: bit-identity shows from the first step on, and CI time matters
REQUESTS = [RunRequest("indian_pines", "smoke", method, 0, train_overrides={"epochs": 1})
            for method in ("joint_uniform", "hard_cgt", "soft_cgt")]


def results(runs_root: Path) -> dict[str, dict[str, torch.Tensor]]:
    """finished run folder (relative) → its weights and logits. (Tensors, not file hashes: torch.save
    names the archive after the file it writes, a temporary name.)"""
    return {str(p.parent.relative_to(runs_root)): torch.load(p.parent / "model.pt") | torch.load(p.parent / "logits.pt")
            for p in sorted(runs_root.rglob("complete.json"))}


def assert_bit_identical(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> None:
    assert a.keys() == b.keys() and a
    for run in a:
        assert a[run].keys() == b[run].keys()
        different = [name for name in a[run] if not torch.equal(a[run][name], b[run][name])]
        assert not different, f"{run}: {different} differ"


@pytest.fixture(scope="module")
def serial(tmp_path_factory, raw_dir):
    """REQUESTS trained one after another in this process, as a notebook or `python -m cgt train` does,
    with the process set to several intra-op threads: training itself takes one (cgt.train), so the
    workers below must give the same bits whatever this process's setting."""
    runs = tmp_path_factory.mktemp("serial")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CGT_RUNS_DIR", str(runs))
        before = torch.get_num_threads()
        torch.set_num_threads(3)
        try:
            for r in REQUESTS:
                train_methods(r.dataset, r.profile, [r.method], [r.seed], train_overrides=r.train_overrides)
        finally:
            torch.set_num_threads(before)
    return results(runs / "smoke")


@pytest.mark.slow
def test_local_workers_are_bit_identical_to_a_serial_run(serial, tmp_path, monkeypatch):
    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path))
    lines = []
    trained = runner.train_all(REQUESTS + REQUESTS[:1], workers=2, log=lines.append)
    assert len(trained) == 3  # the repeated request names the same run: trained once
    assert_bit_identical(results(tmp_path / "smoke"), serial)
    assert "3 run(s) to train (0 already finished) on 2 local worker process(es), 1 thread(s) per CPU run" in lines[0]
    assert any(line.startswith("[3/3 runs]") and "ETA" in line for line in lines)  # plain lines off a terminal
    # everything finished: nothing to do, no worker started
    assert runner.train_all(REQUESTS, workers=2, log=lines.append) == []
    assert "0 run(s) to train (3 already finished)" in lines[-1]


@pytest.mark.slow
def test_dask_local_cluster_is_bit_identical_to_a_serial_run(serial, tmp_path, monkeypatch):
    from distributed import LocalCluster

    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        trained = runner.train_all(REQUESTS, scheduler=cluster.scheduler_address, log=lambda _: None)
    assert len(trained) == 3 and all(t["threads"] == 1 for t in trained)
    assert_bit_identical(results(tmp_path / "smoke"), serial)


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_run_resumes_from_its_checkpoint(tmp_path, monkeypatch, raw_dir):
    long = RunRequest("indian_pines", "smoke", "soft_cgt", 0, train_overrides={"epochs": 6})
    # the uninterrupted reference, in this process
    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path / "reference"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_methods(long.dataset, long.profile, [long.method], [long.seed], train_overrides=long.train_overrides)
    finally:
        torch.set_num_threads(before)

    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path / "killed"))
    killed = []

    def kill_after_first_checkpoint():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list((tmp_path / "killed").rglob("checkpoint.pt")):
            time.sleep(0.02)
        for child in multiprocessing.active_children():  # the pool's worker processes
            child.kill()
            killed.append(child.pid)

    watcher = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    watcher.start()
    lines = []
    trained = runner.train_all([long], workers=1, log=lines.append)
    watcher.join(timeout=5)
    assert killed, "no worker was running when the checkpoint appeared"
    assert any("a worker died; 1 unfinished run(s) queued again" in line for line in lines), lines
    assert len(trained) == 1
    assert_bit_identical(results(tmp_path / "killed" / "smoke"), results(tmp_path / "reference" / "smoke"))


def test_an_unreachable_scheduler_fails_within_seconds_and_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(RunnerError, match=r"could not reach a Dask scheduler at 'tcp://127.0.0.1:9' within 10 s"):
        runner.train_all(REQUESTS, scheduler="tcp://127.0.0.1:9")
    assert time.perf_counter() - t0 < 15
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("workers", [0, -2, 1.5])
def test_workers_outside_the_valid_range_are_refused(workers):
    with pytest.raises(ValueError, match=r"must be an integer ≥ 1"):
        runner.check_workers(workers)


def test_the_plan_mirrors_the_notebooks_parameters():
    """What step_requests assumes about each notebook's defaults, read from the notebooks themselves."""
    root = Path(__file__).resolve().parents[1] / "notebooks"
    for notebook, methods in runner.NOTEBOOK_METHODS.items():
        source = "".join("".join(c["source"]) for c in json.loads((root / f"{notebook}.ipynb").read_text())["cells"])
        if notebook == "01_baselines":
            assert "methods = BASELINES if methods is None else methods" in source
        else:  # the notebook trains the list the runner plans (one home: train_evaluate.NOTEBOOK_METHODS)
            assert f'run_methods(dataset, profile, NOTEBOOK_METHODS["{notebook}"]' in source, notebook
    ablations_nb = "".join("".join(c["source"]) for c in json.loads((root / "06_ablations.ipynb").read_text())["cells"])
    for needle in ("ablations.grid_seeds(get_profile(profile).seeds, split)", "for method in ablations.INTERFERENCE_METHODS:",
                   "get_profile(profile).seeds[:ablations.INTERFERENCE_SEEDS]", "ablations.interference_folds(split, folds)",
                   f"log_gradients_every = {LOG_GRADIENTS_EVERY}"):
        assert needle in ablations_nb


def test_step_requests_cover_each_training_notebook():
    params = {"profile": "smoke", "dataset": "indian_pines", "split": "spatial"}
    baselines = runner.step_requests("01_baselines", params)
    assert {r.method for r in baselines} == set(runner.NOTEBOOK_METHODS["01_baselines"])
    assert all(r.split == "spatial" for r in baselines)
    assert runner.step_requests("00_data", params) == [] and runner.step_requests("04_figures", {"profile": "smoke"}) == []
    blocked = runner.step_requests("01_baselines", params | {"split": "blocked", "folds": [0, 2]})
    assert sorted({(r.fold, r.seed) for r in blocked}) == [(0, 0), (2, 0)] and all(r.split == "blocked" for r in blocked)
    paper = runner.step_requests("02_hard_cgt", {"profile": "paper", "dataset": "indian_pines", "split": "blocked"})
    assert len(paper) == 3 * 5 * 2  # 3 methods × every fold × the paper plan's 2 seeds
    with pytest.raises(ValueError, match=r"folds=\[0\]: split 'spatial' has no folds"):
        runner.step_requests("01_baselines", params | {"folds": [0]})
    grid = runner.step_requests("06_ablations", {"profile": "smoke", "dataset": "indian_pines"})
    logged = [r for r in grid if r.train_overrides and "log_gradients_every" in r.train_overrides]
    assert [r.method for r in logged] == ["joint_uniform", "joint_annealed", "hard_cgt", "soft_cgt"]
    # on the blocked protocol (the pipeline's for Indian Pines): the grid on every fold of the first seed,
    # gradient logging on the first fold for three seeds
    from cgt.experiments import ablations

    blocked06 = runner.step_requests("06_ablations", {"profile": "paper", "dataset": "indian_pines", "split": "blocked",
                                                      "folds": None})
    logged = [r for r in blocked06 if r.train_overrides and "log_gradients_every" in r.train_overrides]
    assert len(blocked06) - len(logged) == (1 + len(ablations.GRIDS["full"])) * 5
    assert {(r.fold, r.seed) for r in logged} == {(0, 0), (0, 1), (0, 2)} and all(r.split == "blocked" for r in blocked06)


@pytest.mark.slow
def test_scaling_measures_each_worker_count_on_the_same_run_list(tmp_path, raw_dir):
    from cgt.pipeline.scaling import measure

    record = measure([1, 2], str(tmp_path / "scaling.json"), runs=2, epochs=1)
    assert json.loads((tmp_path / "scaling.json").read_text()) == record
    assert [r["workers"] for r in record["rows"]] == [1, 2] and all(r["runs"] == 2 for r in record["rows"])
    first = record["rows"][0]["wall_s"]
    assert all(r["speedup_vs_1_worker"] == round(first / r["wall_s"], 2) for r in record["rows"])
    with pytest.raises(ValueError, match="must be an integer ≥ 1"):
        measure([0], str(tmp_path / "never.json"))
    assert not (tmp_path / "never.json").exists()


def test_pipeline_comparison_runs_serial_then_workers_each_in_a_fresh_runs_folder(tmp_path, monkeypatch):
    """The bookkeeping of `python -m cgt scaling --pipeline` (the pipeline itself replaced by a stand-in)."""
    import os

    from cgt.pipeline import notebooks as pipeline
    from cgt.pipeline import scaling

    calls = []

    def fake_pipeline(profile, datasets, workers, log):
        calls.append((profile, workers, os.environ["CGT_RUNS_DIR"]))
        time.sleep(0.2 if workers == 1 else 0.1)

    monkeypatch.setattr(pipeline, "run_pipeline", fake_pipeline)
    monkeypatch.setattr(runner, "distinct_runs", lambda requests: [])
    record = scaling.pipeline_comparison("smoke", 2, str(tmp_path / "cmp.json"), datasets=["indian_pines"])
    assert [(p, w) for p, w, _ in calls] == [("smoke", 1), ("smoke", 2)]
    assert calls[0][2] != calls[1][2] and not any(Path(folder).exists() for _, _, folder in calls)
    assert [r["workers"] for r in record["rows"]] == [1, 2] and record["speedup"] > 1
    assert json.loads((tmp_path / "cmp.json").read_text()) == record
    with pytest.raises(ValueError, match="must be an integer ≥ 1"):
        scaling.pipeline_comparison("smoke", 0, str(tmp_path / "never.json"))


@pytest.mark.slow
def test_a_runs_own_error_stops_the_runner_and_names_the_run(tmp_path, monkeypatch, raw_dir):
    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path))
    on_gpu = [RunRequest("indian_pines", "smoke", "joint_uniform", 0, device="cuda:7")]  # no such device here
    with pytest.raises(RunnerError, match=r"indian_pines joint_uniform seed 0 .*failed: ValueError: .*cuda"):
        runner.train_all(on_gpu, workers=2, log=lambda _: None)


def test_a_run_landing_in_another_folder_than_planned_is_an_error(tmp_path):
    planned = tmp_path / "runs" / "smoke" / "indian_pines" / "hard_cgt" / "seed0-aaaa"
    runner._same_run({"run": "/elsewhere/smoke/indian_pines/hard_cgt/seed0-aaaa"}, planned)  # same run, other mount
    with pytest.raises(RunnerError, match="the worker's cgt code differs"):
        runner._same_run({"run": str(planned.with_name("seed0-bbbb"))}, planned)


# ---------------------------------------------------------------- finished runs trained again (python -m cgt reproduce)
def test_differing_tensors_names_every_difference():
    from cgt.pipeline.reproduce import differing_tensors

    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5]), "only_a": torch.zeros(1)}
    b = {"w": torch.tensor([1.0, 2.0 + 2 ** -20]), "b": torch.tensor([0.5], dtype=torch.float64), "only_b": torch.zeros(1)}
    assert differing_tensors(a, b) == ["only_a", "only_b", "b", "w"]
    assert differing_tensors(a, {k: v.clone() for k, v in a.items()}) == []


@pytest.mark.slow
def test_a_finished_run_trained_again_is_bit_identical(tmp_path, monkeypatch, capsys):
    """`python -m cgt reproduce` on the smoke profile: one finished planned run, trained again in a temporary folder
    by the runner, has the same weights and logits; its record names it; a bad count is refused first."""
    from cgt import cli
    from cgt.pipeline.reproduce import RECORD, finished_runs, reproduce

    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="no finished planned run"):
        reproduce("smoke", 1)
    planned = RunRequest("indian_pines", "smoke", "hard_cgt", 0)  # notebook 02's run, at the profile's own epochs
    runner.train_all([planned], workers=1, log=lambda _: None)
    assert [r.label for r, _ in finished_runs("smoke")] == [planned.label]
    assert cli.main(["reproduce", "--profile", "smoke", "--runs", "3"]) == 0
    assert "1 of 1 run(s) trained again are bit-identical" in capsys.readouterr().out
    record = json.loads((tmp_path / "smoke" / RECORD).read_text())
    assert record["identical"] and record["rows"][0]["differing"] == [] and record["rows"][0]["tensors"] > 10
    assert list((tmp_path / "smoke").rglob("complete.json")) == [p / "complete.json" for _, p in finished_runs("smoke")]
    with pytest.raises(ValueError, match="count=0"):
        reproduce("smoke", 0)
