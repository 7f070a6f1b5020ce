"""The pipeline's step cache (cgt.pipeline.stepcache): a step is skipped only when every input and output is as
recorded, and otherwise the reason names what changed."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cgt.fileio import sha256_file, write_json_atomic
from cgt.pipeline import stepcache
from cgt.pipeline.stepcache import StepCache, runs_read
from cgt.runs import ARTIFACTS, is_complete


def finished_run(folder: Path, content: bytes = b"logits") -> Path:
    """A run folder that cgt.runs.is_complete accepts: every artifact, and their recorded hashes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACTS:
        (folder / name).write_bytes(content + name.encode())
    write_json_atomic(folder / "complete.json", {"sha256": {name: sha256_file(folder / name) for name in ARTIFACTS}})
    assert is_complete(folder)
    return folder


@pytest.fixture
def setting(tmp_path):
    runs = tmp_path / "runs"
    finished_run(runs / "ds" / "m" / "seed0-abc")
    notebook = tmp_path / "01.ipynb"
    notebook.write_text('{"cells": []}')
    executed = tmp_path / "executed.ipynb"
    executed.write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": [{"text": "a summary line"}]}]}))
    record = tmp_path / "executed.runs.jsonl"  # what cgt.experiments.train_evaluate appends, one line per run
    record.write_text(json.dumps({"run": "ds/m/seed0-abc", "cached": True}) + "\n"
                      + json.dumps({"run": "ds/m/seed0-abc", "cached": True}) + "\n")
    output = tmp_path / "table.csv"
    output.write_text("a,b\n")
    cache = StepCache(runs)
    inputs = cache.inputs(notebook, {"profile": "smoke", "dataset": "ds"})
    cache.record("01", inputs, [r["run"] for r in runs_read(record)], [executed, output])
    return {"runs": runs, "notebook": notebook, "executed": executed, "output": output, "inputs": inputs,
            "record": record}


def test_the_runs_a_notebook_read_come_from_its_json_record_once_each(setting):
    assert runs_read(setting["record"]) == [{"run": "ds/m/seed0-abc", "cached": True}]
    assert runs_read(setting["record"].with_name("none.jsonl")) == []


def test_a_torn_run_record_is_refused_by_name(setting):
    with open(setting["record"], "a") as f:
        f.write('{"run": "ds/m/see')  # a kernel killed mid-line
    with pytest.raises(ValueError, match=r"executed.runs.jsonl, line 3: not a run record"):
        runs_read(setting["record"])


def test_a_notebook_appends_each_run_it_reads_to_the_record(tmp_path, monkeypatch):
    """The writer side: cgt.experiments.train_evaluate appends one JSON line per run when the pipeline asks."""
    from types import SimpleNamespace

    from cgt.experiments import train_evaluate

    record = tmp_path / "r.jsonl"
    monkeypatch.setenv(train_evaluate.RUN_RECORD_ENV, str(record))
    for cached in (False, True):
        train_evaluate._record_run(SimpleNamespace(run_dir=tmp_path / "ds" / "m" / "seed0-abc", cached=cached))
    assert runs_read(record) == [{"run": "ds/m/seed0-abc", "cached": False}]
    assert len(record.read_text().splitlines()) == 2


def test_unchanged_step_is_skipped_even_by_a_new_cache_object(setting):
    cache = StepCache(setting["runs"])  # read back from runs/steps.json
    assert cache.entries["01"]["runs"]["ds/m/seed0-abc"] is not None  # recorded as a finished run
    assert cache.why_run("01", setting["inputs"], setting["executed"]) is None
    assert cache.runs_of("01") == ["ds/m/seed0-abc"]


@pytest.mark.parametrize("change, reason", [
    (lambda s: s["notebook"].write_text('{"cells": [1]}'), "the notebook changed"),
    (lambda s: s["executed"].unlink(), "the executed notebook executed.ipynb is missing"),
    (lambda s: (s["runs"] / "ds/m/seed0-abc/logits.pt").write_bytes(b"truncated"),
     "run ds/m/seed0-abc changed or is unfinished"),
    (lambda s: finished_run(s["runs"] / "ds/m/seed0-abc", b"retrained"), "run ds/m/seed0-abc changed"),
    (lambda s: s["output"].write_text("edited"), "table.csv changed or is missing"),
    (lambda s: s["output"].unlink(), "table.csv changed or is missing"),
])
def test_each_change_is_named(setting, change, reason):
    change(setting)
    cache = StepCache(setting["runs"])
    inputs = cache.inputs(setting["notebook"], setting["inputs"].parameters)
    assert reason in cache.why_run("01", inputs, setting["executed"])


def test_parameters_code_and_unknown_steps(setting, monkeypatch):
    cache = StepCache(setting["runs"])
    assert cache.why_run("02", setting["inputs"], setting["executed"]) == "no record of an earlier run"
    other = cache.inputs(setting["notebook"], {"profile": "smoke", "dataset": "other"})
    assert cache.why_run("01", other, setting["executed"]) == "its parameters changed"
    monkeypatch.setattr(stepcache, "package_version", lambda: "edited")
    edited = StepCache(setting["runs"])
    assert edited.why_run("01", edited.inputs(setting["notebook"], setting["inputs"].parameters),
                          setting["executed"]) == "the cgt package changed"


def test_package_version_follows_every_module(tmp_path):
    (tmp_path / "a.py").write_text("x = 1")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2")
    before = stepcache.package_version(tmp_path)
    (tmp_path / "sub" / "b.py").write_text("y = 3")
    assert stepcache.package_version(tmp_path) != before
    # by default the whole cgt package, every storey: an edit upstairs or on the ground floor re-runs the steps
    import cgt

    assert stepcache.package_version() == stepcache.package_version(Path(cgt.__file__).parent)


def test_unknown_force_step_is_refused_with_the_choices():
    from cgt.pipeline.notebooks import run_pipeline

    with pytest.raises(ValueError, match=r"unknown step\(s\) \['05_figures'\] for --force-step; valid choices: "
                                         r"\['00_data', '01_baselines'"):
        run_pipeline("smoke", force_steps=["05_figures"])


def test_published_notebooks_carry_no_machine_paths(tmp_path, monkeypatch):
    """`python -m cgt publish`: each executed notebook and its HTML export, with the project's own path
    made relative."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from cgt.experiments.paths import project_root
    from cgt.pipeline.notebooks import publish_notebooks

    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path / "runs"))
    executed = tmp_path / "runs" / "smoke" / "notebooks"
    executed.mkdir(parents=True)
    cell = new_code_cell("print(figures)", outputs=[new_output("stream", text=f"writing to {project_root()}/figures\n")])
    nbformat.write(new_notebook(cells=[cell]), executed / "04_figures.ipynb")
    written = publish_notebooks("smoke", tmp_path / "paper")
    assert sorted(p.name for p in written) == ["04_figures.html", "04_figures.ipynb", "mathjax", "notebook.css"]
    for path in written[:2]:
        assert str(project_root()) not in path.read_text() and "writing to figures" in path.read_text()
    # the template's CSS is committed once, beside the pages, and linked from each
    html = (tmp_path / "paper" / "04_figures.html").read_text()
    head = html[:html.index("</head>")]
    assert "<style" not in head and '<link rel="stylesheet" href="notebook.css">' in head
    assert len((tmp_path / "paper" / "notebook.css").read_text()) > 10_000
    # MathJax and nothing else is loaded by <script src>, from the folder beside the pages: no CDN
    scripts = re.findall(r'<script src="([^"]*)"', html)
    assert scripts == ["mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe,local/cgt"]
    assert (tmp_path / "paper" / "mathjax" / "MathJax.js").is_file()
    assert (tmp_path / "paper" / "mathjax" / "config" / "local" / "cgt.js").is_file()


def test_a_step_killed_mid_execution_runs_again(setting):
    """papermill writes the executed notebook after every cell, and a step is recorded only once it
    finished: a pipeline killed mid-step leaves a partial executed notebook that no record vouches for,
    so the next pipeline executes the step again rather than trusting it."""
    partial = json.loads(setting["executed"].read_text()) | {"cells": []}  # the cells run before the kill
    setting["executed"].write_text(json.dumps(partial))
    reason = StepCache(setting["runs"]).why_run("01", setting["inputs"], setting["executed"])
    assert reason is not None and "executed.ipynb changed or is missing" in reason
