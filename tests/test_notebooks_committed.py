"""The committed notebooks are what readers open and what nbval runs: thin, stripped, parameterised
narrated drivers over the package (no cell repeated across notebooks, no unused import, equations
as LaTeX math)."""
from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import nbformat
import pytest

from cgt.pipeline.nbtools import is_checked, problems

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(path: Path) -> list[str]:
    return [c.source for c in read(path).cells if c.cell_type == "code"]


def python_of(source: str) -> str:
    """A cell's source without IPython magics and shell lines (which are not Python)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def test_every_pipeline_notebook_is_present():
    """00–07 exist under notebooks/ (the pipeline and the README refer to them by name)."""
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_parameterised_and_checked(path):
    """No stored outputs but those nbval compares; a papermill `parameters` cell whose profile
    default comes from cgt.experiments.profiles.default_profile() (that is, from $CGT_PROFILE)."""
    nb = read(path)
    assert problems(nb) == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0] is code[0]
    assert "profile = default_profile()" in params[0].source
    assert any(is_checked(c) for c in code), "nbval would compare nothing in this notebook"
    assert path.stat().st_size < 100_000


def test_no_code_cell_of_four_or_more_lines_is_repeated_across_notebooks():
    """A view shared by notebooks is one package call, not a copied cell."""
    def normalised(source: str) -> str:
        return "\n".join(line.strip() for line in source.strip().splitlines() if line.strip())

    seen: dict[str, str] = {}
    repeated = []
    for path in NOTEBOOKS:
        for source in set(map(normalised, code_cells(path))):
            if source.count("\n") >= 3:
                if source in seen and seen[source] != path.name:
                    repeated.append((seen[source], path.name, source.splitlines()[0]))
                seen.setdefault(source, path.name)
    assert repeated == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_import_is_used(path):
    """Each name a notebook imports is used somewhere in its code."""
    trees = [ast.parse(python_of(s)) for s in code_cells(path)]
    imported, used = set(), set()
    for node in itertools.chain.from_iterable(ast.walk(t) for t in trees):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name):
            used.add(node.id)
    assert sorted(imported - used) == []


# Plain-text stand-ins for maths (Π_{k<e}, λ_e, τ_train, w_e(i)) outside $…$ and `code`.
PLAIN_MATH = re.compile(r"_\{|[ΠΣλτεσ]_[\w{]|\bw_e\b|\belig_")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_equations_are_latex_math(path):
    """Markdown equations are written as $…$ LaTeX (JupyterLab and GitHub render it), not plain text."""
    offending = []
    for cell in read(path).cells:
        if cell.cell_type != "markdown":
            continue
        text = re.sub(r"\$\$.*?\$\$|\$[^$\n]+\$|`[^`\n]*`", "", cell.source, flags=re.S)
        offending += [line for line in text.splitlines() if PLAIN_MATH.search(line)]
    assert offending == []


def test_no_notebook_reimplements_a_package_formula():
    """The SoftCGT residual and the exit scores are the package's (cgt.losses, cgt.policy), not a copy."""
    for path in NOTEBOOKS:
        code = "\n".join(code_cells(path))
        assert "torch.sigmoid" not in code and ".softmax(" not in code, path.name


def test_a_notebook_runs_in_its_own_folder_over_ipc(tmp_path, monkeypatch):
    """cgt.pipeline.nbtools.execute starts the kernel in the notebook's folder while this process stays elsewhere:
    the IPC sockets must be found by both (an absolute path), and the kernel's cwd is the folder."""
    from nbformat.v4 import new_code_cell, new_notebook

    from cgt.pipeline.nbtools import execute

    folder = tmp_path / "nb"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    nb = execute(new_notebook(cells=[new_code_cell("import os\nprint(os.path.basename(os.getcwd()))")]), folder,
                 timeout=120)
    assert nb.cells[0].outputs[0]["text"].strip() == "nb"


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_every_parameter_the_pipeline_passes_is_one_its_notebook_declares(profile, caplog):
    """papermill injects undeclared parameters with only a warning, and skips (with a warning) a parameter
    line it cannot parse, e.g. one with a second '=' in its comment: both would leave a notebook running on
    a default the pipeline meant to replace."""
    import papermill as pm

    from cgt.pipeline.notebooks import plan

    folder = NOTEBOOKS[0].parent
    with caplog.at_level("WARNING", logger="papermill"):
        declared = {p.stem: set(pm.inspect_notebook(str(p))) for p in NOTEBOOKS}
    assert not [r.getMessage() for r in caplog.records if "Unable to parse" in r.getMessage()]
    for step in plan(profile):
        undeclared = set(step.parameters) - declared[step.notebook]
        assert not undeclared, f"{step.label} passes {sorted(undeclared)}, not declared in {folder / step.notebook}.ipynb"
