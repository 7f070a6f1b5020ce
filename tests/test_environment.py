"""The two environment specs (pyproject.toml, environment.yml) pin the same packages at the same versions."""
from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)$")


def pyproject_requirements() -> list[str]:
    """Runtime dependencies plus the dev extra, as written in pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["dev"]]


def conda_env() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text())


def environment_pip_requirements() -> list[str]:
    """The pip section of environment.yml, without the editable install of the project itself."""
    pip = [d["pip"] for d in conda_env()["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml must have exactly one pip section"
    return [r for r in pip[0] if r.strip() != "-e ."]


def pins(requirements: list[str]) -> dict[str, str]:
    """name → version, asserting every requirement is an exact `name==version` pin, listed once."""
    out = {}
    for req in requirements:
        m = PIN.match(req.strip())
        assert m, f"{req!r} is not pinned exactly with =="
        name = m.group(1).lower().replace("_", "-")
        assert name not in out, f"{name} listed twice"
        out[name] = m.group(2)
    return out


def test_every_dependency_is_pinned_exactly():
    """Every dependency in both files is an exact `==` pin (no ranges, extras-free, no duplicates)."""
    assert len(pins(pyproject_requirements())) >= 10
    assert len(pins(environment_pip_requirements())) >= 10


def test_pyproject_and_environment_yml_agree():
    """pyproject.toml (deps + dev extra) and environment.yml's pip section name the same pins."""
    assert pins(pyproject_requirements()) == pins(environment_pip_requirements())


@pytest.mark.parametrize("requirements", [pyproject_requirements, environment_pip_requirements])
def test_torch_is_the_pinned_cpu_version(requirements):
    """torch is pinned as exactly `torch==2.13.0` in both files."""
    assert [r for r in requirements() if r.lower().startswith("torch")] == ["torch==2.13.0"]


def test_environment_yml_installs_the_project_and_matching_python():
    """environment.yml installs the project editable and a Python inside requires-python."""
    env = conda_env()
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    assert python == ["python=3.11"]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.12"


def test_running_environment_has_the_pinned_versions():
    """The interpreter running the tests has exactly the pinned versions installed (local tags like +cpu allowed)."""
    wrong = {}
    for req in map(Requirement, pyproject_requirements()):
        installed = importlib.metadata.version(req.name)
        if not req.specifier.contains(installed, prereleases=True):
            wrong[req.name] = (str(req.specifier), installed)
    assert wrong == {}
