"""The paper pipeline end to end (smoke profile), its caching, and its argument checks."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cgt_cli(*args: str, runs_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = os.environ | {"CGT_RUNS_DIR": str(runs_dir), "CGT_ROOT": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "cgt", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m cgt {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def trained_counts(log: str) -> list[int]:
    """Runs trained per step, from the pipeline's progress lines."""
    return [int(n) for n in re.findall(r"(\d+) run\(s\) trained", log)]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    t0 = time.perf_counter()
    # with 2 workers, as `make paper` runs it: the runs are trained first, then the notebooks find them
    proc = cgt_cli("paper", "--profile", "smoke", "--workers", "2", runs_dir=runs)
    return runs, proc.stdout + proc.stderr, time.perf_counter() - t0


@pytest.mark.slow
def test_smoke_pipeline_runs_every_notebook_and_writes_every_artifact(first_run):
    """Every notebook ran for both datasets; tables, figures and provenance sidecars exist."""
    runs, log, seconds = first_run
    executed = sorted(p.name for p in (runs / "smoke" / "notebooks").glob("*.ipynb"))
    assert executed == sorted([f"{nb}-{ds}.ipynb" for nb in ("00_data", "01_baselines", "02_hard_cgt", "03_soft_cgt")
                               for ds in ("fashion_mnist", "indian_pines", "indian_pines-spatial", "indian_pines-blocked")]
                              + ["06_ablations-fashion_mnist.ipynb", "06_ablations-indian_pines-blocked.ipynb"]
                              + ["07_learned_policy-fashion_mnist.ipynb", "07_learned_policy-indian_pines-blocked.ipynb"]
                              + ["04_figures.ipynb"])
    figures = runs / "smoke" / "figures"
    for table in ("split_comparison", "spatial_split_counts"):
        assert (figures / f"table_indian_pines_{table}.md").exists()
    for ds in ("fashion_mnist", "indian_pines", "indian_pines_spatial"):
        for stem in ("accuracy_vs_cost", "exit_distribution", "gate_weights", "per_exit_accuracy", "per_class_f1"):
            assert (figures / f"{stem}_{ds}.png").stat().st_size > 1000
            assert (figures / f"{stem}_{ds}.pdf").exists()
            assert (figures / f"{stem}_{ds}.png.provenance.json").exists()
        for table in ("paper_tau", "val_common_target", "vs_paper", "verdicts_paper_tau", "verdicts_val_common_target",
                      "verdicts_matched_cost", "per_class_f1", "costs", "calibration", "risk_control"):
            assert (figures / f"table_{ds}_{table}.md").exists()
            sidecar = json.loads((figures / f"table_{ds}_{table}.csv.provenance.json").read_text())
            assert {"git", "params", "packages", "data_checksums", "device"} <= set(sidecar)
            # seeds and wall time recorded; run folders relative to the project, never machine paths
            assert sidecar["seed"] == [0] and sidecar["wall_time_s"] > 0
            assert all(not Path(r).is_absolute() for r in sidecar["params"]["runs"])
    assert (figures / "exit_depth_map_indian_pines.png").exists()
    assert (figures / "exit_examples_fashion_mnist.png").exists()
    assert "without encryption" not in log  # kernels run over IPC: no transport warnings in the output
    # the smoke profile never writes into the committed figures/ folder
    assert (figures / "table_indian_pines_floor.csv").exists() and (figures / "table_indian_pines_floor.csv.provenance.json").exists()
    # 11 methods × 4 (dataset, split) × 1 seed (× fold 0 of blocked), each trained once; notebook 06: the grid's
    # configurations not already trained (Fashion-MNIST 3 of 4, Indian Pines 16 of 18), 4 runs logging gradients
    # per dataset (smoke has one seed), and the label-smoothing check of each method's best configuration
    # (Fashion-MNIST's grid: HardCGT alone; Indian Pines: HardCGT and SoftCGT) plus its like-for-like
    # reference, joint_uniform with the same smoothing
    steps = json.loads((runs / "smoke" / "pipeline_timings.json").read_text())[0]["steps"]
    assert sum(s["runs_trained"] for s in steps) == 44 + (3 + 4 + 2) + (16 + 4 + 3), log
    # The runner's plan covers every run the notebooks train at their default parameters: the steps' runs
    # (cgt.pipeline.runner.step_requests), then the label-smoothing runs of 06, chosen from its trained grid
    # (recipe_check_requests) — the same ones the notebook's own choice names, so no notebook trains a run.
    assert re.search(r"\d+ run\(s\) to train \(0 already finished\) on 2 local worker process\(es\)", log), log
    assert "recipe check: 5 label-smoothed run(s)" in log, log
    in_notebooks = {s["step"]: s["runs_trained"] for s in steps if s["runs_trained"] and not s["step"].startswith("training runs")}
    assert in_notebooks == {}, log
    (check,) = [s for s in steps if s["step"] == "training runs: recipe check (2 workers)"]
    assert check["runs_trained"] == 2 + 3, check
    for ds in ("fashion_mnist", "indian_pines"):
        for table in ("means", "verdicts", "gating", "interference", "recipe"):
            assert (figures / f"table_{ds}_ablation_{table}.md").exists()
        for stem in ("interference", "best", "heatmap"):
            assert (figures / f"ablation_{stem}_{ds}.png").exists()
    print(f"smoke pipeline: {seconds:.0f} s")


@pytest.mark.slow
def test_second_run_trains_nothing_and_a_truncated_artifact_is_redone(first_run):
    """Re-running reuses every finished run; a run whose logits were truncated is trained again."""
    runs, _, _ = first_run
    victim = next((runs / "smoke" / "indian_pines" / "hard_cgt").glob("seed0-*"))
    logits = victim / "logits.pt"
    logits.write_bytes(logits.read_bytes()[:100])
    log = cgt_cli("paper", "--profile", "smoke", "--dataset", "indian_pines", runs_dir=runs).stdout
    assert sum(trained_counts(log)) == 1, log  # only the damaged run
    log = cgt_cli("paper", "--profile", "smoke", "--dataset", "indian_pines", runs_dir=runs).stdout
    assert sum(trained_counts(log)) == 0, log
    # nothing changed since: every step is skipped, and says so
    assert log.count(": skipped") == 15 and ": running" not in log, log
    log = cgt_cli("paper", "--profile", "smoke", "--dataset", "indian_pines", "--force-step", "04_figures",
                  runs_dir=runs).stdout
    assert log.count(": skipped") == 14 and "04_figures: running, because --force-step" in log, log


@pytest.mark.slow
def test_a_changed_parameter_retrains_only_what_depends_on_it(first_run):
    """Changing one method's option retrains that method only; the others come from the cache."""
    runs, _, _ = first_run
    proc = cgt_cli("train", "--dataset", "indian_pines", "--profile", "smoke", "--method", "hard_cgt", "joint_uniform",
                   runs_dir=runs)
    assert proc.stdout.count(": cached;") == 2
    proc = cgt_cli("train", "--dataset", "indian_pines", "--profile", "smoke", "--method", "hard_cgt",
                   "--options", '{"tau_train": 0.7}', runs_dir=runs)
    assert proc.stdout.count(": trained in") == 1


@pytest.mark.parametrize("args, message", [
    (("paper", "--profile", "huge"), "invalid choice: 'huge'"),
    (("paper", "--profile", "smoke", "--dataset", "cifar10"), "unknown dataset 'cifar10'"),
    (("train", "--dataset", "indian_pines", "--method", "deep_gate"), "invalid choice: 'deep_gate'"),
    (("train", "--dataset", "indian_pines", "--method", "hard_cgt", "--options", '{"tau": 1}'), "unknown option"),
    (("train", "--dataset", "indian_pines", "--method", "hard_cgt", "--options", "tau=1"), "must be a JSON object"),
    (("train", "--dataset", "indian_pines", "--split", "diagonal"), "invalid choice: 'diagonal'"),
    (("train", "--dataset", "fashion_mnist", "--split", "spatial"), "split='spatial' needs a dataset with a spatial"),
    (("split", "--dataset", "fashion_mnist", "--out", "map.npz"), "split='spatial' needs a dataset with a spatial"),
    (("split", "--dataset", "indian_pines", "--out", "map.txt"), "must name a .npz file"),
    (("paper", "--profile", "smoke", "--workers", "0"), "argument --workers: '0' is not a positive integer"),
    (("paper", "--profile", "smoke", "--workers", "-3"), "is not a positive integer"),
    (("paper", "--profile", "smoke", "--workers", "2", "--threads-per-run", "2"), "unrecognized arguments: --threads-per-run"),
    (("paper", "--profile", "smoke", "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"), "give one"),
])
def test_bad_arguments_fail_before_anything_runs(tmp_path, monkeypatch, capsys, args, message):
    """Invalid profile, dataset, method or option (`python -m cgt`, in-process): a clear error, exit
    status 2, and nothing written."""
    from cgt import cli
    from cgt.experiments import train_evaluate as experiment

    def refuse(*_args, **_kw):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(experiment, "load_dataset", refuse)
    try:
        status = cli.main(list(args))
    except SystemExit as exc:  # argparse's own errors (invalid choice)
        status = exc.code
    assert status == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_unreachable_scheduler_is_an_error_within_seconds_and_nothing_runs(tmp_path):
    t0 = time.perf_counter()
    proc = cgt_cli("paper", "--profile", "smoke", "--scheduler", "tcp://127.0.0.1:9", runs_dir=tmp_path, check=False)
    assert proc.returncode == 1 and time.perf_counter() - t0 < 30  # 10 s to connect, the rest is Python starting
    assert "could not reach a Dask scheduler at 'tcp://127.0.0.1:9' within 10 s" in proc.stderr
    assert not any(tmp_path.iterdir())



def test_pipeline_plan_validates_names():
    """The Python API rejects unknown profiles and datasets with the valid choices."""
    from cgt.pipeline.notebooks import plan

    with pytest.raises(ValueError, match="valid choices"):
        plan("paper-full")
    with pytest.raises(ValueError, match="valid choices"):
        plan("smoke", ["mnist"])
    steps = plan("smoke", ["indian_pines"])
    assert [s.label for s in steps] == [f"{nb} [indian_pines{split}]" for split in ("", "-spatial", "-blocked")
                                        for nb in ("00_data", "01_baselines", "02_hard_cgt", "03_soft_cgt")] + [
        "06_ablations [indian_pines-blocked]", "07_learned_policy [indian_pines-blocked]", "04_figures"]
    assert steps[4].parameters["split"] == "spatial" and steps[-1].parameters["spatial"] == ["indian_pines"]
    # the blocked protocol runs the folds the profile plans (smoke: fold 0 only)
    assert steps[8].parameters == {"profile": "smoke", "dataset": "indian_pines", "split": "blocked", "folds": [0]}
    assert steps[-1].parameters["blocked"] == ["indian_pines"]
    assert steps[-2].parameters == {"profile": "smoke", "dataset": "indian_pines", "split": "blocked", "fold": 0}
    assert all("split" not in s.parameters for s in plan("smoke", ["fashion_mnist"]))


def test_a_failing_notebook_is_named_with_its_cell_error_and_executed_copy(tmp_path, monkeypatch):
    """A failure says which notebook, which cell and which error, and where the executed copy is."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from cgt.pipeline.notebooks import PipelineError, run_pipeline

    params = new_code_cell("profile = 'smoke'\ndataset = 'indian_pines'")
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell("x = 1"), new_code_cell("raise RuntimeError('broken on purpose')")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, tmp_path / "00_data.ipynb")
    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path / "runs"))
    with pytest.raises(PipelineError) as info:
        run_pipeline("smoke", ["indian_pines"], notebooks_dir=tmp_path, log=lambda *_: None)
    message = str(info.value)
    assert "00_data [indian_pines] failed in cell" in message
    assert "RuntimeError: broken on purpose" in message
    executed = tmp_path / "runs" / "smoke" / "notebooks" / "00_data-indian_pines.ipynb"
    assert str(executed) in message and executed.exists()


@pytest.mark.slow
def test_pipeline_records_its_timing(first_run):
    """Each complete pipeline run appends its per-step seconds and run counts to pipeline_timings.json."""
    runs, _, _ = first_run
    entries = json.loads((runs / "smoke" / "pipeline_timings.json").read_text())
    first = entries[0]
    # the workers' training stages (the steps' runs, then notebook 06's recipe check), then the notebooks
    assert len(first["steps"]) == 2 + 21 and first["wall_time_s"] > 0
    assert [s["step"] for s in first["steps"][:2]] == ["training runs (2 workers)", "training runs: recipe check (2 workers)"]
    assert sum(s["runs_trained"] for s in first["steps"]) == 76  # as counted in the first test
    assert {"commit", "dirty"} <= set(first["git"])
