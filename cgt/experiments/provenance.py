"""Provenance sidecars: what produced an artifact, so every number can be traced back."""
from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..fileio import write_json_atomic
from .paths import project_root

PACKAGES = ("cgt", "torch", "numpy", "scipy", "scikit-learn", "pandas", "matplotlib", "seaborn", "papermill")


OUTPUTS = ("figures", "paper", "README.md")
"""What `make paper` writes into the checkout (committed results, not source)."""


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the project checkout (None when not a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    commit = git("rev-parse", "HEAD")
    # The pipeline's own outputs do not make the checkout dirty: a run rewriting figures/ would
    # otherwise mark every artifact after its first as "with uncommitted changes".
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":(exclude){p}" for p in OUTPUTS))
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_version(package_dir: Path | None = None) -> str:
    """Hash of every module of the cgt package (paths and contents): what a pipeline step or a run's evaluation
    was computed with (training runs have their own, narrower key: cgt.runs.code_version)."""
    package_dir = package_dir or Path(__file__).resolve().parents[1]  # cgt/, not this subpackage
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        h.update(str(path.relative_to(package_dir)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_description(device: str | torch.device = "cpu") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def project_relative(path: str | Path) -> str:
    """A path as recorded in a sidecar: relative to the project when inside it (no machine paths)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(project_root()))
    except ValueError:
        return str(path)


def provenance(params: dict[str, Any], *, wall_time_s: float, device: str | torch.device = "cpu",
               data_checksums: dict[str, str] | None = None, seed: int | list[int] | None = None) -> dict[str, Any]:
    """seed: the seed of a single run, or the seeds an aggregate was computed over. wall_time_s is
    required: a sidecar without it once reached the committed figures as `null`."""
    if not isinstance(wall_time_s, (int, float)) or not wall_time_s >= 0:
        raise ValueError(f"wall_time_s={wall_time_s!r}: the seconds it took to produce the artifact, a number ≥ 0")
    return {"git": git_state(), "params": params, "seed": seed, "data_checksums": data_checksums or {},
            "packages": package_versions(), "python": platform.python_version(),
            "device": device_description(device), "wall_time_s": round(wall_time_s, 1)}


def write_sidecar(artifact: str | Path, **kwargs: Any) -> Path:
    """Write <artifact>.provenance.json next to `artifact`."""
    path = Path(str(artifact) + ".provenance.json")
    write_json_atomic(path, provenance(**kwargs))
    return path
