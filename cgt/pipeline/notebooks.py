"""The whole paper as one command: the notebooks, in order, through papermill.

    python -m cgt paper --profile smoke|quick|paper [--dataset fashion_mnist indian_pines] [--force]
                        [--workers N | --scheduler tcp://HOST:8786]   # the runs first, on workers (cgt.pipeline.runner)

Steps: 00_data → 01_baselines → 02_hard_cgt → 03_soft_cgt per dataset — again on the spatial split
and on the blocked K-fold protocol (every planned fold × seed) for the profile's datasets that plan
them (Indian Pines; cgt.experiments.profiles.ProtocolPlan) — then 06_ablations per built-in dataset,
then 04_figures once.
Each executed notebook is kept under runs/<profile>/notebooks/ so a reader can open what ran.
A step whose inputs are unchanged — notebook, parameters, package code, the runs it read, its
outputs (cgt.pipeline.stepcache) — is skipped, and the log says for each step why it ran or that it was
skipped. Training runs are cached by key (config, data checksum, code version), so a step that runs
again trains nothing new and a killed pipeline resumes: finished runs are skipped, an interrupted
one continues from its last checkpoint, and an artifact that no longer matches its recorded hash is
redone.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..data import BUILTIN, display_name, resolve
from ..data.custom import is_npz
from ..experiments.paths import figures_dir, project_root, runs_dir
from ..experiments.profiles import get_profile, profile_environment
from ..experiments.provenance import device_description, git_state
from ..experiments.train_evaluate import RUN_RECORD_ENV
from ..fileio import read_json, write_bytes_atomic, write_json_atomic
from . import runner
from .mathjax import copy_mathjax, script_url
from .nbtools import quiet_kernel_manager
from .stepcache import StepCache, runs_read

PER_DATASET = ["00_data", "01_baselines", "02_hard_cgt", "03_soft_cgt"]
ABLATIONS = ["06_ablations"]
"""Per dataset, on its primary protocol (blocked cross-validation where planned), after the training notebooks."""
POLICIES = ["07_learned_policy"]
"""Per dataset, on its primary protocol's first replicate (blocked: the first planned fold): the learned exit
policy against the thresholds on runs the training notebooks left; trains nothing."""
ONCE = ["04_figures"]


@dataclass
class Step:
    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def variant(self) -> str:
        """The dataset's display name, with the split when it is not the default one ('' for 04)."""
        ds, split = self.parameters.get("dataset"), self.parameters.get("split")
        return (display_name(ds) + (f"-{split}" if split else "")) if ds else ""

    @property
    def label(self) -> str:
        return f"{self.notebook}" + (f" [{self.variant}]" if self.variant else "")

    @property
    def output_name(self) -> str:
        return f"{self.notebook}{'-' + self.variant if self.variant else ''}.ipynb"


class PipelineError(RuntimeError):
    pass


RUNNER_STEP = "training runs"
"""How the timing record names the stages that train runs before any notebook (cgt.reporting.readme counts them)."""


def _recipe_searches(profile: str, datasets: list[str], workers: int, client, force: bool, log) -> list[dict]:
    """Run the profile's declared recipe search of each dataset that has one (cgt.experiments.recipe), unless
    the choice on disk was made by the same search with the same training code; one timing record each."""
    from ..experiments.recipe import run_profile_search, search_is_current
    from ..experiments.recipe_choice import recipe_path
    from ..runs import is_complete

    records = []
    for dataset in dict.fromkeys(d for d in datasets if resolve(d).name in get_profile(profile).recipe_search):
        t0, label = time.perf_counter(), f"{RUNNER_STEP}: recipe search [{display_name(dataset)}]"
        if not force and search_is_current(profile, dataset):
            log(f"{label}: skipped — {recipe_path(profile, dataset)} was chosen by this search with this code")
            records.append({"step": label, "seconds": 0.0, "runs_trained": 0, "runs_cached": 0, "skipped": True})
            continue
        requests = runner.search_requests(profile, dataset)
        todo = sum(force or not is_complete(path) for _, path in runner.distinct_runs(requests))
        log(f"{label}: {len(requests)} run(s) of the reference method ({todo} to train), each candidate scored "
            f"on validation")
        if workers > 1 or client is not None:
            runner.train_all(requests, workers, force=force, log=log, client=client)
            recipe = run_profile_search(profile, dataset, train=False)
        else:  # in this process, as the notebooks train without workers
            recipe = run_profile_search(profile, dataset, train=True, force=force, progress=False)
        log(f"{label}: chose data {recipe.data}, training {recipe.train} → {recipe_path(profile, dataset)}")
        records.append({"step": label, "seconds": round(time.perf_counter() - t0, 1), "runs_trained": todo,
                        "runs_cached": len(requests) - todo, "skipped": False})
    return records


def plan(profile: str, datasets: list[str] | None = None, force: bool = False) -> list[Step]:
    """The ordered steps; validates names before anything runs."""
    get_profile(profile)
    datasets = list(BUILTIN) if not datasets else datasets
    for d in datasets:
        resolve(d)
    # notebooks run with notebooks/ as cwd: a relative .npz path must not depend on it
    datasets = [str(Path(d).resolve()) if is_npz(d) else d for d in datasets]
    spatial = [ds for ds in get_profile(profile).spatial if ds in datasets]
    blocked = [ds for ds in get_profile(profile).blocked if ds in datasets]
    # the blocked steps name their folds, so a notebook run by hand with folds=None (all) is another step
    variants = [(ds, {}) for ds in datasets] + [(ds, {"split": "spatial"}) for ds in spatial] + \
        [(ds, {"split": "blocked", "folds": get_profile(profile).plan_for(ds, "blocked").folds}) for ds in blocked]
    steps = [Step(nb, {"profile": profile, "dataset": ds, **split,
                       **({"force": True} if force and nb != "00_data" else {})})
             for ds, split in variants for nb in PER_DATASET]
    # the ablation grid runs on a dataset's primary protocol: blocked cross-validation where it is planned
    steps += [Step(nb, {"profile": profile, "dataset": ds,
                        **({"split": "blocked", "folds": get_profile(profile).plan_for(ds, "blocked").folds}
                           if ds in blocked else {})})
              for ds in datasets if ds in BUILTIN for nb in ABLATIONS]
    # the learned policy reads one replicate of the primary protocol: blocked, the first planned fold (None: all, so 0)
    steps += [Step(nb, {"profile": profile, "dataset": ds,
                        **({"split": "blocked", "fold": (get_profile(profile).plan_for(ds, "blocked").folds or [0])[0]}
                           if ds in blocked else {})})
              for ds in datasets if ds in BUILTIN for nb in POLICIES]
    steps += [Step(nb, {"profile": profile, "datasets": datasets, "spatial": spatial, "blocked": blocked})
              for nb in ONCE]
    return steps


def run_pipeline(profile: str, datasets: list[str] | None = None, force: bool = False,
                 notebooks_dir: str | Path | None = None, log=print, force_steps: list[str] | None = None,
                 workers: int = 1, scheduler: str | None = None) -> list[Path]:
    """Execute every step whose inputs changed (cgt.pipeline.stepcache) with papermill; returns the executed
    notebooks' paths. force: retrain every run and execute every step; force_steps: notebook names
    (e.g. "04_figures") executed again even if unchanged.

    workers > 1 or scheduler (a Dask scheduler's address): the steps' training runs are planned and
    trained first, by local worker processes or on the Dask cluster (cgt.pipeline.runner); the notebooks
    then find them finished. Every CPU run trains with one thread however it is scheduled (cgt.train),
    so workers change the wall time, never a result."""
    import papermill as pm

    valid = PER_DATASET + ABLATIONS + POLICIES + ONCE
    unknown = sorted(set(force_steps or []) - set(valid))
    if unknown:
        raise ValueError(f"unknown step(s) {unknown} for --force-step; valid choices: {valid}")
    runner.check_workers(workers)
    if scheduler and workers > 1:
        raise ValueError(f"--workers {workers} and --scheduler {scheduler!r}: give one (local processes, or a Dask cluster)")
    pretrain = workers > 1 or bool(scheduler)
    # With workers, the runs are trained (--force: retrained) first and the notebooks only find them: the
    # steps' planned runs, then notebook 06's label-smoothing runs, which are chosen from its trained grid.
    steps = plan(profile, datasets, force and not pretrain)
    src = Path(notebooks_dir or project_root() / "notebooks")
    out_dir = runs_dir(profile) / "notebooks"
    cache = StepCache(runs_dir(profile))
    t_start = time.perf_counter()
    outputs, record, runs_so_far = [], [], []
    client = runner.connect(scheduler) if scheduler else None  # unreachable: an error, nothing started
    try:
        # First the recipe searches: every other run of their datasets is planned with what they choose.
        record += _recipe_searches(profile, [s.parameters["dataset"] for s in steps if "dataset" in s.parameters],
                                   workers, client, force, log)
        if pretrain:
            t0 = time.perf_counter()
            trained = runner.train_all(runner.planned_runs([(s.notebook, s.parameters) for s in steps]), workers,
                                       force=force, log=log, client=client)
            where = "Dask" if scheduler else f"{workers} workers"
            record.append(_runner_record(f"{RUNNER_STEP} ({where})", t0, trained))
            t0 = time.perf_counter()
            checks = [r for s in steps for r in runner.recipe_check_requests(s.notebook, s.parameters)]
            if checks:
                log(f"recipe check: {len(checks)} label-smoothed run(s) of the grids' best configurations, chosen "
                    f"on validation")
                trained = runner.train_all(checks, workers, force=force, log=log, client=client)
                record.append(_runner_record(f"{RUNNER_STEP}: recipe check ({where})", t0, trained))
    finally:
        if client is not None:
            client.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    with profile_environment(profile):  # kernels inherit it; the parameters injected below win anyway
        for i, step in enumerate(steps, 1):
            t0, started = time.perf_counter(), time.time()
            output = out_dir / step.output_name
            notebook = src / f"{step.notebook}.ipynb"
            inputs = cache.inputs(notebook, step.parameters)
            reason = ("--force" if force else "--force-step" if step.notebook in (force_steps or [])
                      else cache.why_run(step.output_name, inputs, output))
            if reason is None:
                runs_so_far += cache.runs_of(step.output_name)
                log(f"[{i}/{len(steps)}] {step.label}: skipped — notebook, parameters, code, the "
                    f"{len(cache.runs_of(step.output_name))} run(s) it read and its outputs are unchanged")
                outputs.append(output)
                record.append({"step": step.label, "seconds": 0.0, "runs_trained": 0, "runs_cached": 0, "skipped": True})
                continue
            log(f"[{i}/{len(steps)}] {step.label}: running, because {reason} ({_elapsed(t_start)} elapsed)")
            run_record = output.with_suffix(".runs.jsonl")  # what the notebook trains or loads, in its own words
            run_record.unlink(missing_ok=True)
            os.environ[RUN_RECORD_ENV] = str(run_record)  # the kernel inherits it
            try:
                pm.execute_notebook(str(notebook), str(output), parameters=step.parameters,
                                    cwd=str(src), kernel_name="python3", progress_bar=False, log_output=False,
                                    kernel_manager_class=quiet_kernel_manager())
            except pm.PapermillExecutionError as exc:
                raise PipelineError(f"{step.label} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                                    f"  executed notebook (open it to see the traceback): {output}") from None
            finally:
                os.environ.pop(RUN_RECORD_ENV, None)
            read = runs_read(run_record)
            trained, cached = sum(not r["cached"] for r in read), sum(bool(r["cached"]) for r in read)
            seconds = time.perf_counter() - t0
            log(f"[{i}/{len(steps)}] {step.label}: done in {seconds:.0f} s; "
                + (f"{trained} run(s) trained, {cached} from cache" if trained or cached else "no training"))
            if step.notebook in ONCE:  # reads every run the steps before it read; writes the figures folder
                runs, written = runs_so_far, [p for p in figures_dir(profile).iterdir()
                                              if p.is_file() and p.stat().st_mtime >= started]
            else:
                runs, written = [r["run"] for r in read], []
            runs_so_far += runs
            cache.record(step.output_name, inputs, runs, [output, *written])
            outputs.append(output)
            record.append({"step": step.label, "seconds": round(seconds, 1), "runs_trained": trained,
                           "runs_cached": cached, "skipped": False})
    log(f"pipeline {profile}: {len(steps)} steps in {_elapsed(t_start)}")
    _append_timing(profile, record, time.perf_counter() - t_start)
    if get_profile(profile).publishes:
        published = publish_notebooks(profile)
        log(f"executed notebooks with their outputs, and HTML exports, in {published[0].parent}")
    return outputs


PUBLISHED_MAX_BYTES = 3_000_000
"""Notebook 04 shows every protocol's tables and 24 figures (2.1 MB at the paper profile); a larger file is
refused so a figure at an accidental high dpi is caught, not committed."""


def _runner_record(step: str, t0: float, trained: list[dict[str, Any]]) -> dict[str, Any]:
    """A runner stage's line of the pipeline timing."""
    return {"step": step, "seconds": round(time.perf_counter() - t0, 1), "runs_trained": sum(not t["cached"] for t in trained),
            "runs_cached": sum(bool(t["cached"]) for t in trained), "skipped": False}


def publish_notebooks(profile: str, dest: str | Path | None = None) -> list[Path]:
    """Copy the executed notebooks of `profile` (runs/<profile>/notebooks/) to `dest` (default: the
    committed paper/ folder) with an HTML export of each, so they can be read on GitHub or in a
    browser without running anything. A file over PUBLISHED_MAX_BYTES is refused by name (lower the figures' dpi)."""
    import nbformat
    from nbconvert import HTMLExporter

    src = runs_dir(profile) / "notebooks"
    executed = sorted(src.glob("*.ipynb"))
    if not executed:
        raise FileNotFoundError(f"no executed notebooks in {src}: run `python -m cgt paper --profile {profile}` first")
    dest = Path(dest or project_root() / "paper")
    exporter, written, stylesheets = HTMLExporter(), [], set()
    exporter.mathjax_url = script_url(MATHJAX_DIR)  # served from beside the pages: math renders offline
    root = str(project_root()) + "/"
    for nb_path in executed:
        text = nb_path.read_text().replace(root, "")  # project-relative paths, not this machine's
        html, _ = exporter.from_notebook_node(nbformat.reads(text, as_version=4))
        html, css = _shared_stylesheet(_without_requirejs(html))
        stylesheets.add(css)
        for path, data in ((dest / nb_path.name, text.encode()),
                           (dest / nb_path.with_suffix(".html").name, html.encode())):
            if len(data) > PUBLISHED_MAX_BYTES:
                raise PipelineError(f"{path.name} would be {len(data) / 1e6:.1f} MB, over the "
                                    f"{PUBLISHED_MAX_BYTES / 1e6:.0f} MB limit for committed notebooks")
            write_bytes_atomic(path, data)
            written.append(path)
    if len(stylesheets) != 1:  # one exporter, one template: the styles cannot differ between notebooks
        raise PipelineError(f"the HTML exports carry {len(stylesheets)} different stylesheets; expected one")
    write_bytes_atomic(dest / STYLESHEET, stylesheets.pop().encode())
    copy_mathjax(dest / MATHJAX_DIR)
    return [*written, dest / STYLESHEET, dest / MATHJAX_DIR]


MATHJAX_DIR = "mathjax"
"""The folder beside the HTML exports that serves MathJax to them (cgt.pipeline.mathjax)."""
_REQUIREJS = re.compile(r'<script src="[^"]*require(?:\.min)?\.js"></script>\s*')


def _without_requirejs(html: str) -> str:
    """The page without nbconvert's RequireJS <script>, which loads from a CDN and serves only interactive
    widget outputs; the notebooks have none, and a published page makes no request off its own folder."""
    return _REQUIREJS.sub("", html, count=1)


STYLESHEET = "notebook.css"
_STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.S)


def _shared_stylesheet(html: str) -> tuple[str, str]:
    """(the page with the <style> blocks of its <head> replaced by one link to STYLESHEET, their CSS):
    the template's CSS is about 260 kB, the same in every export, so it is committed once. Styles in
    the body (a table's scoped style in a cell's output) stay where they are."""
    head_end = html.find("</head>")
    head = html[:head_end] if head_end >= 0 else ""
    first = _STYLE.search(head)
    if first is None:
        return html, ""
    css = "\n".join(_STYLE.findall(head))
    link = f'<link rel="stylesheet" href="{STYLESHEET}">'
    return head[:first.start()] + link + _STYLE.sub("", head[first.end():]) + html[head_end:], css


TIMINGS = "pipeline_timings.json"


def _append_timing(profile: str, steps: list[dict[str, Any]], wall_s: float) -> None:
    """Add this complete pipeline run to runs/<profile>/pipeline_timings.json: the artifact behind
    any wall time quoted for it (each entry: when, at which commit, per step seconds and runs trained)."""
    path = runs_dir(profile) / TIMINGS
    entries = read_json(path) if path.exists() else []
    entries.append({"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git": git_state(),
                    "device": device_description("cpu"), "wall_time_s": round(wall_s, 1), "steps": steps})
    write_json_atomic(path, entries)


def _elapsed(t0: float) -> str:
    s = int(time.perf_counter() - t0)
    return f"{s // 60}m{s % 60:02d}s"


