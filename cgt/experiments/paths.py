"""Where things live. Notebooks run with their own folder as working directory (JupyterLab,
papermill, nbval), so paths are resolved from the project root, not from the cwd."""
from __future__ import annotations

import os
from pathlib import Path

from .profiles import get_profile


def project_root() -> Path:
    """$CGT_ROOT if set; else the nearest folder above the cwd holding pyproject.toml and cgt/;
    else the cwd (the package used outside its repository)."""
    if os.environ.get("CGT_ROOT"):
        return Path(os.environ["CGT_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "cgt").is_dir():
            return folder
    return here


def data_dir() -> Path:
    return project_root() / "data" / "raw"


def prepared_dir() -> Path:
    return project_root() / "data" / "prepared"


def runs_dir(profile: str) -> Path:
    """Training runs, metrics and executed notebooks of one profile (git-ignored)."""
    return Path(os.environ.get("CGT_RUNS_DIR") or project_root() / "runs") / profile


def figures_dir(profile: str) -> Path:
    """Only a publishing profile (the paper's) writes into the committed figures/; others stay under runs/."""
    return project_root() / "figures" if get_profile(profile).publishes else runs_dir(profile) / "figures"
