"""Provenance (cgt.experiments.provenance): a checkout is dirty when its source changed, not when the pipeline
rewrote its own outputs; every sidecar says how long its artifact took."""
from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest

from cgt.experiments import ablations
from cgt.experiments.provenance import git_state, provenance
from cgt.reporting.paper_figures import save_ablation_outputs


def test_outputs_do_not_make_the_checkout_dirty(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "table.md").write_text("old")
    (tmp_path / "README.md").write_text("old")
    (tmp_path / "model.py").write_text("x = 1")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setenv("CGT_ROOT", str(tmp_path))
    assert git_state()["dirty"] is False
    (tmp_path / "figures" / "table.md").write_text("regenerated")
    (tmp_path / "README.md").write_text("regenerated block")
    assert git_state()["dirty"] is False
    (tmp_path / "model.py").write_text("x = 2")
    assert git_state()["dirty"] is True


def test_a_sidecar_cannot_be_written_without_its_wall_time():
    with pytest.raises(TypeError, match="wall_time_s"):
        provenance(params={})
    with pytest.raises(ValueError, match="wall_time_s=None"):
        provenance(params={}, wall_time_s=None)
    assert provenance(params={}, wall_time_s=1.26)["wall_time_s"] == 1.3


def test_the_ablation_tables_sidecars_record_a_wall_time(tmp_path, monkeypatch):
    """The sidecars of notebook 06's tables once said `"wall_time_s": null`: they now hold the seconds the
    caller spent computing the table plus the time spent writing it."""
    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path))
    written = save_ablation_outputs({"recipe": pd.DataFrame({"config": ["a"], "accuracy": [0.9]})}, {}, "indian_pines",
                                    "smoke", [ablations.REFERENCE], [0, 1], seconds=12.0)
    sidecar = json.loads((tmp_path / "smoke" / "figures" / "table_indian_pines_ablation_recipe.csv.provenance.json")
                         .read_text())
    assert [p.name for p in written] == ["table_indian_pines_ablation_recipe.csv", "table_indian_pines_ablation_recipe.md"]
    assert isinstance(sidecar["wall_time_s"], float) and 12.0 <= sidecar["wall_time_s"] < 20 and sidecar["seed"] == [0, 1]
