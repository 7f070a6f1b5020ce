"""A training run's identity, its folder, whether it finished, and loading what it wrote.

A run lives in its own folder, named by the hash of everything that produced it:

    runs/<profile>/<dataset>/<method>/seed<k>-<key>/
        config.json      the run's identity: resolved strategy options, training config, data
                         checksum and preparation parameters, architecture, code version
        checkpoint.pt    after every epoch (atomic): model, optimiser, scheduler, RNG, history
        history.json     per epoch: loss, per-exit train/val accuracy, mean gate weight, λ, time
        model.pt         final weights
        logits.pt        per-exit logits (E, N, K) and labels on val and test
        complete.json    written last, with the sha256 of each artifact above
        .lock            held (flock) by the one process training the run

A run is finished only if complete.json exists and every artifact still matches its hash. One process
trains a run at a time: `run_lock` is an exclusive flock on the folder's .lock file, which the kernel
releases when its holder exits or is killed (`kill -9` included), so a lock never outlives its holder.

The code version is the hash of the source of every module a training run executes: the import
closure of cgt.train inside the package, found by reading the imports (no hand-kept list). Editing
a module that training uses re-keys every run; editing a figure or report module does not.
"""
from __future__ import annotations

import ast
import fcntl
import hashlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import distributed
from .data import PreparedData
from .fileio import read_json, sha256_file, stable_hash
from .losses import resolve_options
from .methods import method_spec
from .models import EarlyExitNet

ARTIFACTS = ("config.json", "history.json", "model.pt", "logits.pt")
LOCK_FILE = ".lock"
PACKAGE_DIR = Path(__file__).resolve().parent
TRAINING_ENTRY = "cgt.train"


@dataclass
class TrainedRun:
    """A finished training run, loaded: where it lives, what it was, what it learned."""

    run_dir: Path
    config: dict[str, Any]
    """The run's identity (config.json)."""
    history: list[dict[str, Any]]
    model: EarlyExitNet
    logits: dict[str, torch.Tensor]
    """'val' / 'test' → (E, N, K) logits; 'y_val' / 'y_test' → labels."""
    cached: bool
    """True if loaded from an earlier run, False if trained just now."""


# ---------------------------------------------------------------- code version
def _module_file(module: str, package_dir: Path) -> Path | None:
    """cgt.a.b → <package_dir>/a/b.py or <package_dir>/a/b/__init__.py (None if not a module of ours)."""
    parts = module.split(".")[1:]
    base = package_dir.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(module: str, path: Path, package_dir: Path) -> set[str]:
    """Every module of the package that `module` imports, at module level or inside functions.
    `from x import y` names x.y when y is a module, else x."""
    package = module.split(".")[0]
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                parts = module.split(".")
                anchor = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != package:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if _module_file(sub, package_dir) is not None else base)
    return found


def import_graph(package_dir: Path = PACKAGE_DIR, package: str = "cgt") -> dict[str, set[str]]:
    """module → the package's modules it imports, for every module of the package."""
    graph = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).with_suffix("")
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        module = ".".join(parts)
        graph[module] = _imports(module, path, package_dir) - {module}
    return graph


def training_modules(package_dir: Path = PACKAGE_DIR, entry: str = TRAINING_ENTRY) -> list[str]:
    """The modules a training run executes: the import closure of `entry`, with the packages whose
    __init__ runs on the way. The top-level package's __init__ is left out: it holds the module map
    and no code (tests/test_architecture.py checks that)."""
    package = entry.split(".")[0]
    seen: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        path = _module_file(module, package_dir)
        if module in seen or path is None:
            continue
        seen.add(module)
        parents = [".".join(module.split(".")[:i]) for i in range(2, len(module.split(".")))]
        todo += parents + sorted(_imports(module, path, package_dir))
    return sorted(seen - {package})


def code_version(package_dir: Path = PACKAGE_DIR) -> str:
    """Hash of the source of every module training executes: editing one invalidates cached runs."""
    h = hashlib.sha256()
    for module in training_modules(package_dir):
        h.update(module.encode() + b"\0" + _module_file(module, package_dir).read_bytes())
    return h.hexdigest()[:12]


# ---------------------------------------------------------------- identity and folder
def run_identity(data: PreparedData, method: str, cfg, model: EarlyExitNet,
                 options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The resolved, JSON-able description of a run (`cfg` is a TrainConfig); its hash names the folder."""
    cfg.validate()
    strategy, opts = method_spec(method, **(options or {}))
    resolved = resolve_options(strategy, model.num_exits, **opts)
    train = asdict(cfg)
    train.pop("device")  # where it ran does not change what it computes (up to float rounding)
    train.pop("eval_batch_size")
    world_size = distributed.context().world_size
    if world_size > 1:  # per-process BatchNorm statistics make it a different computation
        train["world_size"] = world_size
    return {"dataset": data.name, "method": method, "strategy": strategy, "options": resolved,
            "train": train, "data_checksum": data.checksum, "data_params": data.params,
            "model": {"num_exits": model.num_exits, "architecture_sha256": stable_hash(str(model), 64)},
            "code_version": code_version()}


def run_dir(identity: dict[str, Any], runs_root: str | Path) -> Path:
    key = stable_hash(identity)
    return Path(runs_root) / identity["dataset"] / identity["method"] / f"seed{identity['train']['seed']}-{key}"


def is_complete(path: Path) -> bool:
    """True only if every artifact exists and matches the hash recorded when the run finished."""
    marker = path / "complete.json"
    if not marker.exists():
        return False
    try:
        recorded = read_json(marker)["sha256"]
        return all((path / name).exists() and sha256_file(path / name) == recorded[name] for name in ARTIFACTS)
    except Exception:
        return False


@contextmanager
def run_lock(path: str | Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the run folder's lock for the block; if another process holds it, call `on_wait` once and
    wait until it is released (the holder finished, failed or died). Creates the folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_run(path: str | Path, build: Callable[[], EarlyExitNet]) -> TrainedRun:
    """Load a finished run's artifacts (raises if the run is not complete)."""
    path = Path(path)
    if not is_complete(path):
        raise FileNotFoundError(f"{path} is not a finished run (complete.json missing or an artifact changed)")
    model = build()
    model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    logits = torch.load(path / "logits.pt", map_location="cpu", weights_only=True)
    return TrainedRun(path, read_json(path / "config.json"), read_json(path / "history.json"), model, logits,
                      cached=True)
