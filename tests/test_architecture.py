"""The package's shape: two storeys (the method on the ground floor, the machinery upstairs in named
subpackages, imports only going down), one home per concept, no import cycle, a run key computed from
the code itself and from the ground floor only, module maps that match the tree."""
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


FLOORS = ["evaluation", "experiments", "pipeline", "deployment", "reporting"]
"""Upstairs, bottom to top: each floor may import the ground floor and the floors below it, never above."""
ROOF = {"cgt.cli", "cgt.__main__"}


def floor_of(module: str) -> int:
    """0 for the ground floor (the method), 1.. for the subpackages in FLOORS, one above them for the CLI."""
    if module in ROOF:
        return len(FLOORS) + 1
    parts = module.split(".")
    return FLOORS.index(parts[1]) + 1 if len(parts) > 1 and parts[1] in FLOORS else 0


def modules(package: Path = PACKAGE) -> list[str]:
    """Every module of a (sub)package, as its map names it: `runs`, `data/` for a subpackage."""
    names = {p.stem for p in package.glob("*.py")} - {"__init__", "__main__"}
    return sorted(names) + sorted(f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists())


def test_upstairs_subpackages_are_the_named_floors():
    assert sorted(m.rstrip("/") for m in modules() if m.endswith("/")) == sorted(["data", *FLOORS])


def test_imports_only_go_down():
    """A module imports the ground floor and the floors below its own (or its own floor), nothing above."""
    upward = [f"{m} -> {d}" for m, deps in import_graph().items() for d in deps if floor_of(d) > floor_of(m)]
    assert upward == []


def test_training_executes_the_ground_floor_only():
    """The run key is computed from the ground floor alone, so moving or editing machinery upstairs never
    re-keys a training run: the code version is the same with every upstairs subpackage deleted."""
    assert all(floor_of(m) == 0 for m in training_modules())


def test_deleting_the_upstairs_leaves_every_run_key_unchanged(tmp_path):
    copy = Path(shutil.copytree(PACKAGE, tmp_path / "cgt", ignore=shutil.ignore_patterns("__pycache__")))
    for floor in FLOORS:
        shutil.rmtree(copy / floor)
    (copy / "cli.py").unlink()
    assert code_version(copy) == code_version(PACKAGE)


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
    ("reporting/plots.py", False), ("reporting/tables.py", False), ("reporting/paper_figures.py", False),
    ("evaluation/evaluate.py", False), ("experiments/profiles.py", False), ("pipeline/runner.py", False),
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
    """cgt/__init__.py is the module map (every module and subpackage named) and nothing else."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)  # the docstring alone
    missing = [m for m in modules() if not re.search(rf"(^|[\s,]){re.escape(m)}(\s|,|$)", cgt.__doc__, re.M)]
    assert missing == []


@pytest.mark.parametrize("floor", FLOORS)
def test_each_floor_maps_its_modules_and_holds_no_code(floor):
    """Each upstairs subpackage's __init__ is its own map: every module named, no code to run on import."""
    tree = ast.parse((PACKAGE / floor / "__init__.py").read_text())
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)
    doc = ast.get_docstring(tree)
    assert [m for m in modules(PACKAGE / floor) if not re.search(rf"^\s*{re.escape(m)}\s", doc, re.M)] == []


def test_readme_layout_names_every_module_and_notebook():
    """The README's layout section matches the tree: each module and each notebook is named."""
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = [m for m in modules() if not re.search(rf"\b{re.escape(m.rstrip('/'))}\b", layout)]
    missing += [p.stem for p in (ROOT / "notebooks").glob("*.ipynb") if p.stem not in layout]
    assert missing == []
