"""The package's shape: one home per concept, no import cycle, a run key computed from the code
itself, a module map that matches the tree (package docstring and README)."""
from __future__ import annotations

import ast
import graphlib
import re
import shutil
from pathlib import Path

import pytest

import cgt
from cgt.runs import code_version, import_graph, training_modules

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cgt"


def modules() -> list[str]:
    """Every module of the package, as its map names it: `runs`, `data/` for the data package."""
    names = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    return sorted(names) + sorted(f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists())


def test_no_import_cycle_anywhere_in_the_package():
    """Module-level and function-level imports together form a DAG (no module leans on a local import)."""
    graph = import_graph()
    assert "cgt.data.registry" in graph and "cgt.data.fashion_mnist" in graph["cgt.data.registry"]
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


@pytest.fixture
def package_copy(tmp_path) -> Path:
    return Path(shutil.copytree(PACKAGE, tmp_path / "cgt", ignore=shutil.ignore_patterns("__pycache__")))


@pytest.mark.parametrize("module, rekeys", [
    ("losses.py", True), ("train.py", True), ("data/indian_pines.py", True), ("models.py", True),
    ("policy.py", True),  # BranchyNet's training gate uses its entropy
    ("plots.py", False), ("report.py", False), ("paper_figures.py", False), ("evaluate.py", False),
    ("cli.py", False), ("__init__.py", False),
])
def test_editing_a_module_rekeys_runs_only_if_training_executes_it(package_copy, module, rekeys):
    """The code version covers what training runs (found from the imports), and nothing else."""
    before = code_version(package_copy)
    assert before == code_version(PACKAGE)
    with open(package_copy / module, "a") as f:
        f.write("\n# an edit\n")
    assert (code_version(package_copy) != before) is rekeys


def test_a_new_module_imported_by_training_joins_the_key(package_copy):
    """No hand-kept list to forget: a new module the training loop imports is part of the key."""
    before = code_version(package_copy)
    (package_copy / "schedules.py").write_text("WARMUP = 0\n")
    assert code_version(package_copy) == before  # not imported by training yet
    train = package_copy / "train.py"
    train.write_text(train.read_text().replace("from . import distributed\n", "from . import distributed, schedules\n"))
    assert "cgt.schedules" in training_modules(package_copy) and code_version(package_copy) != before


def test_package_init_holds_the_module_map_and_no_code():
    """cgt/__init__.py is the module map (every module named) and nothing else."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)  # the docstring alone
    missing = [m for m in modules() if not re.search(rf"(^|[\s,]){re.escape(m)}(\s|,|$)", cgt.__doc__, re.M)]
    assert missing == []


def test_readme_layout_names_every_module_and_notebook():
    """The README's layout section matches the tree: each module and each notebook is named."""
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = [m for m in modules() if not re.search(rf"\b{re.escape(m.rstrip('/'))}\b", layout)]
    missing += [p.stem for p in (ROOT / "notebooks").glob("*.ipynb") if p.stem not in layout]
    assert missing == []
