"""Which pipeline steps can be skipped: a notebook is executed again only when one of its inputs changed.

A step's inputs are the notebook's source, its parameters, the source of the cgt package (every
module: a notebook may call any of them), the training runs it read (each run folder's complete.json,
which holds the hashes of the run's artifacts) and what it wrote (the executed notebook; for the
figures step, every file it left in the figures folder). After a step runs, runs/<profile>/steps.json
records them; the next pipeline compares and says, per step, why it runs or that it is skipped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..experiments.paths import project_root
from ..experiments.provenance import package_version, project_relative
from ..fileio import read_json, sha256_file, write_json_atomic

RECORD = "steps.json"


def run_state(run_dir: Path) -> str | None:
    """Hash of a run's complete.json (its artifacts' hashes); None if the run is unfinished or an
    artifact no longer matches its recorded hash (the step must run again, and retrain it)."""
    from ..runs import is_complete

    return sha256_file(run_dir / "complete.json") if is_complete(run_dir) else None


def runs_read(record: Path) -> list[dict[str, Any]]:
    """The runs a notebook trained or loaded, in order, from the JSON-lines record it wrote
    (cgt.experiments.train_evaluate, $CGT_RUN_RECORD): [{"run": folder relative to the profile's runs
    folder, "cached": bool}], one entry per run (a run read twice counts once). No record: none read."""
    if not record.exists():
        return []
    entries = {}
    for number, line in enumerate(record.read_text().splitlines(), 1):
        try:
            entry = json.loads(line)
            entries.setdefault(entry["run"], entry)
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{record}, line {number}: not a run record ({line[:80]!r}); the notebook was "
                             f"interrupted while writing it — run the step again") from None
    return list(entries.values())


@dataclass
class StepInputs:
    notebook: str
    """sha256 of the notebook source."""
    parameters: dict[str, Any]
    code: str
    """package_version() at the time."""


class StepCache:
    """The record of one profile's executed steps (runs/<profile>/steps.json)."""

    def __init__(self, runs_root: Path):
        self.runs_root = runs_root
        self.path = runs_root / RECORD
        self.entries: dict[str, dict] = read_json(self.path) if self.path.exists() else {}
        self.code = package_version()

    def inputs(self, notebook: Path, parameters: dict[str, Any]) -> StepInputs:
        return StepInputs(sha256_file(notebook), json.loads(json.dumps(parameters, sort_keys=True)), self.code)

    def why_run(self, name: str, inputs: StepInputs, executed: Path) -> str | None:
        """Why the step must run, or None when every input and output is as recorded."""
        entry = self.entries.get(name)
        if entry is None:
            return "no record of an earlier run"
        if entry["notebook"] != inputs.notebook:
            return "the notebook changed"
        if entry["parameters"] != inputs.parameters:
            return "its parameters changed"
        if entry["code"] != inputs.code:
            return "the cgt package changed"
        if not executed.exists():
            return f"the executed notebook {executed.name} is missing"
        for run, state in entry["runs"].items():
            if run_state(self.runs_root / run) != state:
                return f"run {run} changed or is unfinished"
        for output, digest in entry["outputs"].items():
            path = project_root() / output  # an absolute `output` stays as it is
            if not path.exists() or sha256_file(path) != digest:
                return f"its output {output} changed or is missing"
        return None

    def record(self, name: str, inputs: StepInputs, runs: list[str], outputs: list[Path]) -> None:
        """Remember a step that just ran (written at once: a killed pipeline keeps what finished)."""
        self.entries[name] = {"notebook": inputs.notebook, "parameters": inputs.parameters, "code": inputs.code,
                              "runs": {run: run_state(self.runs_root / run) for run in runs},
                              "outputs": {project_relative(p): sha256_file(p) for p in outputs},
                              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json_atomic(self.path, self.entries)

    def runs_of(self, name: str) -> list[str]:
        return list(self.entries.get(name, {}).get("runs", {}))
