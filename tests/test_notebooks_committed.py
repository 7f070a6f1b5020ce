"""The committed notebooks are what readers open and what nbval runs: thin, stripped, parameterised."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from cgt.nbtools import is_checked, problems

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_every_pipeline_notebook_is_present():
    """00–05 exist under notebooks/ (the pipeline and the README refer to them by name)."""
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_parameterised_and_checked(path):
    """No stored outputs but those nbval compares; a papermill `parameters` cell reading CGT_PROFILE."""
    nb = nbformat.read(path, as_version=4)
    assert problems(nb) == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0] is code[0]
    assert 'os.environ.get("CGT_PROFILE", "quick")' in params[0].source
    assert any(is_checked(c) for c in code), "nbval would compare nothing in this notebook"
    assert path.stat().st_size < 100_000
