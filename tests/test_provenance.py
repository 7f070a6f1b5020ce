"""Provenance (cgt.experiments.provenance): a checkout is dirty when its source changed, not when the pipeline
rewrote its own outputs."""
from __future__ import annotations

import subprocess

from cgt.experiments.provenance import git_state


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
