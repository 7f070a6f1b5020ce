"""The whole paper as one command: the notebooks, in order, through papermill.

    python -m cgt paper --profile smoke|quick|paper [--dataset fashion_mnist indian_pines] [--force]

Steps: 00_data → 01_baselines → 02_hard_cgt → 03_soft_cgt per dataset, then 04_figures once.
Each executed notebook is kept under runs/<profile>/notebooks/ so a reader can open what ran.
Training runs are cached by key (config, data checksum, code version), so a second run trains
nothing and a killed pipeline resumes: finished runs are skipped, an interrupted one continues
from its last checkpoint, and an artifact that no longer matches its recorded hash is redone.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import DATASETS, get_profile
from .custom_data import display_name, is_npz
from .data import check_dataset
from .paths import project_root, runs_dir

PER_DATASET = ["00_data", "01_baselines", "02_hard_cgt", "03_soft_cgt"]
ONCE = ["04_figures"]


@dataclass
class Step:
    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        ds = self.parameters.get("dataset")
        return f"{self.notebook}" + (f" [{display_name(ds)}]" if ds else "")

    @property
    def output_name(self) -> str:
        ds = self.parameters.get("dataset")
        return f"{self.notebook}{'-' + display_name(ds) if ds else ''}.ipynb"


class PipelineError(RuntimeError):
    pass


def plan(profile: str, datasets: list[str] | None = None, force: bool = False) -> list[Step]:
    """The ordered steps; validates names before anything runs."""
    get_profile(profile)
    datasets = list(DATASETS) if not datasets else datasets
    for d in datasets:
        check_dataset(d)
    # notebooks run with notebooks/ as cwd: a relative .npz path must not depend on it
    datasets = [str(Path(d).resolve()) if is_npz(d) else d for d in datasets]
    steps = [Step(nb, {"profile": profile, "dataset": ds, **({"force": True} if force and nb != "00_data" else {})})
             for ds in datasets for nb in PER_DATASET]
    steps += [Step(nb, {"profile": profile, "datasets": datasets}) for nb in ONCE]
    return steps


def run_pipeline(profile: str, datasets: list[str] | None = None, force: bool = False,
                 notebooks_dir: str | Path | None = None, log=print) -> list[Path]:
    """Execute every step with papermill; returns the executed notebooks' paths."""
    import papermill as pm

    steps = plan(profile, datasets, force)
    src = Path(notebooks_dir or project_root() / "notebooks")
    out_dir = runs_dir(profile) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    env_profile = os.environ.get("CGT_PROFILE")
    os.environ["CGT_PROFILE"] = profile  # kernels inherit it; parameters injected below win anyway
    t_start = time.perf_counter()
    outputs = []
    try:
        for i, step in enumerate(steps, 1):
            t0 = time.perf_counter()
            log(f"[{i}/{len(steps)}] {step.label}: running ({_elapsed(t_start)} elapsed)")
            output = out_dir / step.output_name
            try:
                pm.execute_notebook(str(src / f"{step.notebook}.ipynb"), str(output), parameters=step.parameters,
                                    cwd=str(src), kernel_name="python3", progress_bar=False, log_output=False)
            except pm.PapermillExecutionError as exc:
                raise PipelineError(f"{step.label} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                                    f"  executed notebook (open it to see the traceback): {output}") from None
            log(f"[{i}/{len(steps)}] {step.label}: done in {time.perf_counter() - t0:.0f} s; {_cache_note(output)}")
            outputs.append(output)
    finally:
        if env_profile is None:
            os.environ.pop("CGT_PROFILE", None)
        else:
            os.environ["CGT_PROFILE"] = env_profile
    log(f"pipeline {profile}: {len(steps)} steps in {_elapsed(t_start)}")
    return outputs


def _elapsed(t0: float) -> str:
    s = int(time.perf_counter() - t0)
    return f"{s // 60}m{s % 60:02d}s"


def _cache_note(executed: Path) -> str:
    """How many training runs the notebook took from the cache (it prints one line per run)."""
    text = json.dumps(json.loads(executed.read_text()).get("cells", []))
    cached, trained = text.count(": cached;"), text.count(": trained in")
    return f"{trained} run(s) trained, {cached} from cache" if cached or trained else "no training"
