"""Command line: `python -m cgt data|split|train|paper|scaling|publish|results|export|bench ...` (see --help of each).

Every sub-command checks its arguments before any work; a bad value ends with `error: ...` naming
the valid choices and exit status 2, a failed pipeline step with status 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .data import BUILTIN, DataVerificationError
from .deployment.exported import ExportError
from .experiments.profiles import PROFILES
from .experiments.train_evaluate import SPLITS
from .methods import METHODS

DATASET_HELP = f"{' | '.join(BUILTIN)} | path/to/your_data.npz"


def _json_object(flag: str, text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag} must be a JSON object, e.g. '{{\"tau_train\": 0.8}}'; got {text!r} ({exc})")
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object; got {text!r}")
    return value


def cmd_data(args: argparse.Namespace) -> int:
    from .data import acquire

    for ds in list(BUILTIN) if args.dataset == "all" else [args.dataset]:
        t0 = time.perf_counter()
        source = acquire(ds, args.data_dir, mirror=args.mirror)
        print(f"{ds}: verified, source: {source} ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .experiments.train_evaluate import run_methods

    methods = list(METHODS) if args.method == ["all"] else args.method
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr)) if v is not None}
    options = _json_object("--options", args.options)
    run_methods(args.dataset, args.profile, methods, seeds=args.seed, split=args.split,
                options={m: options for m in methods},
                model=_json_object("--model-options", args.model_options) or None, data_dir=args.data_dir,
                device=args.device, train_overrides=overrides, force=args.force, progress=not args.quiet)
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    """Write the (H, W) split map of a scene dataset, for evaluating any other method on exactly this split."""
    from .data.splits import SPLIT_CODES
    from .experiments.train_evaluate import check_split, load_dataset
    from .fileio import atomic_path

    check_split(args.split, args.dataset)
    if not args.out.endswith(".npz"):
        raise ValueError(f"--out {args.out!r} must name a .npz file")
    data = load_dataset(args.dataset, args.profile, args.data_dir, args.split, split_seed=args.seed)
    if "split_map" not in data.extras:
        scenes = [name for name in BUILTIN if "split" in BUILTIN[name].option_names()]
        raise ValueError(f"{args.dataset!r} has no spatial layout, so no split map; datasets with one: {scenes}")
    split_map = data.extras["split_map"]
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, split_map=split_map, codes=np.array(["unlabelled", *SPLIT_CODES]),
                                dataset=args.dataset, split=args.split, seed=args.seed)
    counts = ", ".join(f"{name} {int((split_map == code).sum())}" for name, code in SPLIT_CODES.items())
    print(f"{args.out}: {args.dataset} {args.split} split, seed {args.seed}, {split_map.shape[0]}×{split_map.shape[1]} "
          f"map (0 unlabelled, {', '.join(f'{c} {n}' for n, c in SPLIT_CODES.items())}); pixels: {counts}")
    return 0


def cmd_paper(args: argparse.Namespace) -> int:
    from .pipeline.notebooks import PipelineError, run_pipeline
    from .pipeline.runner import RunnerError

    try:
        run_pipeline(args.profile, args.dataset, force=args.force, force_steps=args.force_step, workers=args.workers,
                     scheduler=args.scheduler, threads_per_run=args.threads_per_run)
    except (PipelineError, RunnerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    from .pipeline.scaling import measure, pipeline_comparison

    if args.pipeline:
        if len(args.workers) != 1 or args.workers[0] < 2:
            raise ValueError(f"--pipeline compares serial with one worker count ≥ 2 (e.g. --workers 2); got {args.workers}")
        record = pipeline_comparison(args.pipeline, args.workers[0], args.out)
        print(f"{args.pipeline} pipeline: serial {record['rows'][0]['wall_s']:.0f} s, {args.workers[0]} workers "
              f"{record['rows'][1]['wall_s']:.0f} s ({record['speedup']:.2f}x); {args.out} written")
        return 0
    record = measure(args.workers, args.out, args.runs, args.epochs)
    for row in record["rows"]:
        print(f"{row['workers']:3d} worker(s): {row['runs']} runs in {row['wall_s']:.1f} s "
              f"({row['speedup_vs_1_worker']:.2f}x the 1-worker wall time)")
    print(f"{args.out} written")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from .pipeline.notebooks import publish_notebooks

    written = publish_notebooks(args.profile)
    print(f"{len(written)} files written to {written[0].parent} (executed notebooks and their HTML exports)")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from .experiments.paths import figures_dir, project_root, runs_dir
    from .reporting.readme import publish_timing, results_markdown, update_readme, write_block

    fig_dir = figures_dir(args.profile)
    publish_timing(runs_dir(args.profile), fig_dir)
    datasets = args.dataset or list(BUILTIN)
    section = results_markdown(fig_dir, datasets, [ds for ds in PROFILES[args.profile].spatial if ds in datasets])
    block = write_block(fig_dir, section)
    if PROFILES[args.profile].publishes and not args.stdout:
        update_readme(project_root() / "README.md", section)
        print(f"README.md results section regenerated from {fig_dir} (also in {block})")
    else:
        print(section)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .deployment.exported import export_run

    bad = [b for b in args.latency_budget_us if not b > 0]
    if bad or args.threads < 1:
        print(f"error: --latency-budget-us takes positive µs per sample (got {bad}) and --threads a positive count "
              f"(got {args.threads})", file=sys.stderr)
        return 2
    out, digest = export_run(args.run, args.out, args.latency_budget_us, args.threads)
    print(f"exported {args.run} -> {out} (the early-exit graph, one graph per exit segment, the plain network, "
          f"calibration samples; manifest.json with every file's sha256)")
    print(f"export digest: {digest}  (pin it: cgt.deployment.exported.load(DIR, digest=...); recorded in "
          f"{Path(args.run) / 'exports.json'})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .deployment.bench import run

    datasets = tuple(BUILTIN) if args.dataset == "all" else (args.dataset,)
    run(args.profile, args.method, args.tau, datasets=datasets, repeats=args.repeats, single_samples=args.single_samples,
        force=args.force)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m cgt", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    profiles = list(PROFILES)

    p = sub.add_parser("data", help="obtain and verify the raw datasets (offline sources first)")
    p.add_argument("--dataset", default="all", choices=[*BUILTIN, "all"])
    p.add_argument("--data-dir", default="data/raw")
    p.add_argument("--mirror", default=None, help="base URL replacing the canonical download location")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("split", help="write a scene's split map (.npz): 0 unlabelled, 1 train, 2 val, 3 test, 4 guard")
    p.add_argument("--dataset", default="indian_pines", choices=list(BUILTIN))
    p.add_argument("--split", default="spatial", choices=list(SPLITS))
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--profile", default="paper", choices=profiles, help="preparation settings (patch size) of this profile")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True, help="output .npz file")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("train", help="train methods × seeds on one dataset (finished runs are reused)")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--method", nargs="+", default=["all"], choices=[*METHODS, "all"])
    p.add_argument("--profile", default="quick", choices=profiles)
    p.add_argument("--seed", type=int, nargs="+", default=None, help="default: the profile's seeds")
    p.add_argument("--split", default="random", choices=list(SPLITS),
                   help="random (the paper's) | spatial (Indian Pines: disjoint regions, guard band; split seed = seed)")
    p.add_argument("--options", default=None, help="extra strategy options as JSON, applied to every method given, "
                                                   "e.g. '{\"tau_train\": 0.8}'")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--model-options", default=None,
                   help="width/depth of the generic network for your own data as JSON, e.g. '{\"width\": 64}'")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--force", action="store_true", help="retrain even if a finished run exists")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("paper", help="run every notebook with papermill: data, baselines, HardCGT, SoftCGT, figures")
    p.add_argument("--profile", default="paper", choices=profiles)
    p.add_argument("--dataset", nargs="+", default=None, help=f"default: {' '.join(BUILTIN)}; a path/to/your_data.npz works too")
    p.add_argument("--force", action="store_true", help="retrain every run and execute every notebook")
    p.add_argument("--force-step", nargs="+", default=None, metavar="NOTEBOOK",
                   help="execute these notebooks (e.g. 04_figures) even if their inputs are unchanged")
    p.add_argument("--workers", type=int, default=1,
                   help="train the steps' runs first on N local worker processes (default 1: inside the notebooks)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="train the steps' runs first on the Dask cluster at ADDRESS (e.g. tcp://10.0.0.5:8786)")
    p.add_argument("--threads-per-run", type=int, default=None, metavar="T",
                   help="intra-op threads of each run (default: cores / workers locally, 1 on Dask)")
    p.set_defaults(func=cmd_paper)

    p = sub.add_parser("scaling", help="how the local runner scales: one fixed run list, 1, 2, 4 … worker processes")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], metavar="N")
    p.add_argument("--runs", type=int, default=16, help="Indian Pines runs (quick profile) in the fixed list")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", default="figures/runner_scaling.json")
    p.add_argument("--pipeline", default=None, choices=profiles,
                   help="instead: the whole pipeline of this profile from nothing, serial vs --workers N")
    p.set_defaults(func=cmd_scaling)

    p = sub.add_parser("publish", help="copy the executed notebooks (with outputs) and HTML exports to paper/")
    p.add_argument("--profile", default="paper", choices=profiles)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("results", help="regenerate the README's results section from the tables 04_figures wrote")
    p.add_argument("--profile", default="paper", choices=profiles)
    p.add_argument("--dataset", nargs="+", default=None, choices=list(BUILTIN))
    p.add_argument("--stdout", action="store_true", help="print the section instead of editing README.md")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("export", help="write a finished run as one ONNX graph per exit segment (ONNX Runtime early exit)")
    p.add_argument("--run", required=True, help="a finished run folder, runs/<profile>/<dataset>/<method>/seed<k>-<key>")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", default=None, help="output folder (default: <run>/onnx)")
    p.add_argument("--latency-budget-us", type=float, nargs="*", default=[],
                   help="add val_latency_<us> operating points: thresholds fitted on validation to a predicted time "
                        "per sample on this machine (batch 1, ONNX Runtime segments, measured at export)")
    p.add_argument("--threads", type=int, default=1, help="threads the latency time model is measured with")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="wall-clock speed-up of real early exit against its FLOPs prediction")
    p.add_argument("--profile", default="quick", choices=profiles)
    p.add_argument("--method", default="soft_cgt", choices=list(METHODS))
    p.add_argument("--tau", type=float, default=0.9)
    p.add_argument("--single-samples", type=int, default=200, help="samples timed one at a time (batch size 1)")
    p.add_argument("--repeats", type=int, default=30, help="timings per row (median and IQR), after a warm-up")
    p.add_argument("--force", action="store_true", help="measure even if bench.json has the same inputs")
    p.add_argument("--dataset", default="all", choices=[*BUILTIN, "all"], help="time one dataset's model only")
    p.set_defaults(func=cmd_bench)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, DataVerificationError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
