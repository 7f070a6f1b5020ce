"""Command line: `python -m cgt data|split|train|paper|scaling|reproduce|publish|results|export|bench ...` (see --help of each).

Every sub-command checks its arguments before any work; a bad value ends with one line on stderr,
`error: argument --flag: ...` naming the valid choices, and exit status 2 (no traceback, nothing
started); a failed pipeline step ends with status 1. The argument types below are generic: a new flag
takes the one that fits (e.g. `type=non_negative_int` for a fold index).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np

from .data import BUILTIN, DataVerificationError
from .deployment.exported import ExportError
from .experiments.profiles import PROFILES
from .experiments.train_evaluate import PROTOCOLS
from .methods import COMPARED, METHODS
from .policy import PAPER_TAU

DATASET_HELP = f"{' | '.join(BUILTIN)} | path/to/your_data.npz"
DATA_DIR_HELP = "raw data folder, verified on every use (default: the project's data/raw, from any working directory)"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: argument --flag: ...` on stderr, exit status 2 (argparse's
    default also prints the whole usage, burying the one line that says what is wrong)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def non_negative_int(text: str) -> int:
    """A seed, fold or other index: 0, 1, 2, ..."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or str(value) != text.strip().lstrip("+"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer (0, 1, 2, ...)")
    return value


def positive_int(text: str) -> int:
    """A count: 1, 2, 3, ..."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != text.strip().lstrip("+"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer (1, 2, 3, ...)")
    return value


def positive_float(text: str) -> float:
    """A rate or size: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number > 0")
    return value


def unit_interval(text: str) -> float:
    """A confidence threshold: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in [0, 1]")
    return value


def device_name(text: str) -> str:
    """auto | cpu | cuda | cuda:N, with CUDA refused where torch sees no GPU (or not GPU N)."""
    if text in ("auto", "cpu"):
        return text
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; valid choices: auto, cpu, cuda, cuda:N")
    import torch

    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine; use auto or cpu")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return text


def dataset_name(text: str) -> str:
    """A built-in dataset, a registered loader or an existing .npz file of your own (cgt.data.resolve)."""
    from .data import resolve

    try:
        resolve(text)
    except (ValueError, OSError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def existing_dir(text: str) -> str:
    """A folder that must already exist (a data folder, a run)."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing folder")
    return text


def file_in_existing_dir(suffix: str):
    """An output file named `*<suffix>` whose folder exists (so a long job does not fail at its last write)."""
    def check(text: str) -> str:
        if not text.endswith(suffix):
            raise argparse.ArgumentTypeError(f"{text!r} must name a {suffix} file")
        if not Path(text).resolve().parent.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r}: its folder {str(Path(text).parent)!r} does not exist")
        return text
    check.__name__ = f"{suffix} file"
    return check


def json_object(text: str) -> dict:
    """A JSON object given on the command line, e.g. '{"tau_train": 0.8}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"must be a JSON object, e.g. '{{\"tau_train\": 0.8}}'; got {text!r} ({exc})")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object; got {text!r}")
    return value


def cmd_data(args: argparse.Namespace) -> int:
    from .data import acquire
    from .experiments.paths import data_dir

    for ds in list(BUILTIN) if args.dataset == "all" else [args.dataset]:
        t0 = time.perf_counter()
        source = acquire(ds, args.data_dir or data_dir(), mirror=args.mirror, named_dir=args.data_dir is not None)
        print(f"{ds}: verified, source: {source} ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .experiments.train_evaluate import run_methods

    methods = list(COMPARED) if args.method == ["all"] else args.method
    if not args.quiet:  # the per-epoch lines of cgt.train, when stdout is a log file rather than a terminal
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr)) if v is not None}
    options = args.options or {}
    _check_fold_flag(args)
    run_methods(args.dataset, args.profile, methods, seeds=args.seed, split=args.split, folds=args.fold,
                options={m: options for m in methods}, model=args.model_options or None, data_dir=args.data_dir,
                device=args.device, train_overrides=overrides, force=args.force, progress=not args.quiet)
    return 0


def _check_fold_flag(args: argparse.Namespace) -> None:
    """--fold only with a split made of folds (the fold's range is checked with the protocol's K)."""
    from .experiments.train_evaluate import FOLDED

    if args.fold is not None and args.split not in FOLDED:
        given = args.fold if isinstance(args.fold, int) else " ".join(map(str, args.fold))
        raise ValueError(f"--fold {given}: --split {args.split} has no folds; only --split {' | '.join(FOLDED)} has")


def cmd_split(args: argparse.Namespace) -> int:
    """Write the (H, W) split map of a scene dataset, for evaluating any other method on exactly this split."""
    from .data.splits import SPLIT_CODES
    from .experiments.train_evaluate import FOLDED, check_split, load_dataset
    from .fileio import atomic_path

    check_split(args.split, args.dataset)
    _check_fold_flag(args)
    folded = args.split in FOLDED
    protocol = {k: v for k, v in (("tile", args.tile), ("folds", args.folds)) if v is not None}
    if protocol and not folded:
        raise ValueError(f"--tile/--folds: --split {args.split} has no folds; only --split {' | '.join(FOLDED)} has")
    fold = (args.fold or 0) if folded else None
    data = load_dataset(args.dataset, args.profile, args.data_dir, args.split, split_seed=args.seed, fold=fold,
                        **protocol)
    if "split_map" not in data.extras:
        scenes = [name for name in BUILTIN if "split" in BUILTIN[name].option_names()]
        raise ValueError(f"{args.dataset!r} has no spatial layout, so no split map; datasets with one: {scenes}")
    split_map = data.extras["split_map"]
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, split_map=split_map, codes=np.array(["unlabelled", *SPLIT_CODES]),
                                dataset=args.dataset, split=args.split, seed=args.seed,
                                **({"fold": fold, "folds": data.params["folds"], "tile": data.params["tile"]}
                                   if folded else {}),
                                **({"radius": data.params["patch_size"] // 2} if args.split != "random" else {}))
    counts = ", ".join(f"{name} {int((split_map == code).sum())}" for name, code in SPLIT_CODES.items())
    which = f"fold {fold} of {data.params['folds']}, " if folded else ""
    print(f"{args.out}: {args.dataset} {args.split} split, {which}seed {args.seed}, {split_map.shape[0]}×{split_map.shape[1]} "
          f"map (0 unlabelled, {', '.join(f'{c} {n}' for n, c in SPLIT_CODES.items())}); pixels: {counts}")
    return 0


def cmd_paper(args: argparse.Namespace) -> int:
    from .pipeline.notebooks import PipelineError, run_pipeline
    from .pipeline.runner import RunnerError

    try:
        run_pipeline(args.profile, args.dataset, force=args.force, force_steps=args.force_step, workers=args.workers,
                     scheduler=args.scheduler)
    except (PipelineError, RunnerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .pipeline.reproduce import RECORD, reproduce

    record = reproduce(args.profile, args.runs, args.draw_seed)
    same = sum(not r["differing"] for r in record["rows"])
    print(f"{same} of {len(record['rows'])} run(s) trained again are bit-identical to the finished ones "
          f"(drawn from {record['finished_runs']} finished); runs/{args.profile}/{RECORD} written")
    return 0 if record["identical"] else 1


def cmd_scaling(args: argparse.Namespace) -> int:
    from .experiments.paths import project_root
    from .pipeline.scaling import measure, pipeline_comparison

    args.out = args.out or str(project_root() / "figures" / "runner_scaling.json")

    if args.pipeline:
        if len(args.workers) != 1 or args.workers[0] < 2:  # checked before any work: ValueError → status 2
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
    from .reporting.readme import headline_markdown, publish_timing, update_readme
    from .reporting.results_pages import write_pages

    t0 = time.perf_counter()
    fig_dir = figures_dir(args.profile)
    publish_timing(runs_dir(args.profile), fig_dir)
    datasets = sorted({p.name[len("metrics_"):-len("_all_runs.csv")] for p in fig_dir.glob("metrics_*_all_runs.csv")})
    if not datasets:
        raise FileNotFoundError(f"no result tables in {fig_dir}: run `python -m cgt paper --profile {args.profile}` first")
    block = headline_markdown(fig_dir)
    if PROFILES[args.profile].publishes and not args.stdout:
        pages = write_pages(fig_dir, project_root() / "results", datasets,
                            [ds for ds in PROFILES[args.profile].spatial if ds in datasets], time.perf_counter() - t0)
        update_readme(project_root() / "README.md", block)
        print(f"README.md answer block and {len(pages)} results pages (results/) regenerated from {fig_dir}")
    else:
        print(block)
    return 0


def cmd_recipe(args: argparse.Namespace) -> int:
    from .experiments.profiles import get_profile
    from .experiments.recipe import run_profile_search
    from .experiments.recipe_choice import recipe_path

    declared = list(get_profile(args.profile).recipe_search)
    if not declared:
        raise ValueError(f"--profile {args.profile}: this profile declares no recipe search (it trains with its own "
                         f"settings); profiles that do: {[p for p in PROFILES if PROFILES[p].recipe_search]}")
    datasets = declared if args.dataset is None else [args.dataset]
    if any(d not in declared for d in datasets):
        raise ValueError(f"--dataset {args.dataset}: the {args.profile!r} profile declares a recipe search for {declared}")
    for dataset in datasets:
        recipe = run_profile_search(args.profile, dataset, progress=not args.quiet)
        print(f"{dataset}: chose data {recipe.data}, training {recipe.train} (on validation) → "
              f"{recipe_path(args.profile, dataset)}")
    return 0


def cmd_verdicts(args: argparse.Namespace) -> int:
    from .reporting.primary_tables import write_primary

    written = write_primary(args.profile)
    print(f"pre-registered verdicts (PREREGISTRATION.md) written: {', '.join(str(p) for p in written[::2])}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .deployment.exported import LATENCY, export_run
    from .fileio import read_json

    bad = [b for b in args.latency_budget_us if not b > 0]
    if bad or args.threads < 1:
        print(f"error: --latency-budget-us takes positive µs per sample (got {bad}) and --threads a positive count "
              f"(got {args.threads})", file=sys.stderr)
        return 2
    bad = [b for b in args.learned_budget if not 0 < b <= 1]
    if bad:
        print(f"error: --learned-budget takes relative costs in (0, 1] (the share of the full network's FLOPs); "
              f"got {bad}", file=sys.stderr)
        return 2
    out, digest = export_run(args.run, args.out, args.latency_budget_us, args.threads, args.learned_budget)
    print(f"exported {args.run} -> {out} (the early-exit graph, one graph per exit segment, the plain network, "
          f"calibration samples; manifest.json with every file's sha256)")
    print(f"export digest: {digest}  (pin it: cgt.deployment.exported.load(DIR, digest=...); recorded in "
          f"{Path(args.run) / 'exports.json'})")
    if (out / LATENCY).exists():
        choices = read_json(out / LATENCY)["plans"]
        leaving = {point: c for point, c in choices.items() if c["chosen"] != c["table"][0]["name"]}
        print(f"exit plans chosen on validation ({LATENCY}): every exit kept at {len(choices) - len(leaving)} of "
              f"{len(choices)} operating points" + (", exits left out at:" if leaving else ""))
        for point, choice in leaving.items():
            rows = {row["name"]: row for row in choice["table"]}
            chosen, every = rows[choice["chosen"]], choice["table"][0]
            print(f"  {point}: exits {choice['chosen']} (predicted {chosen['predicted_us']:.1f} us per sample, every "
                  f"exit {every['predicted_us']:.1f}; validation accuracy {100 * chosen['val_accuracy']:.2f} %, every "
                  f"exit {100 * every['val_accuracy']:.2f} %): load(DIR, point={point!r}, exits={choice['chosen']!r})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .deployment.bench import run, subset_suffix
    from .reporting.paper_figures import save_latency_figures

    datasets = tuple(BUILTIN) if args.dataset == "all" else (args.dataset,)
    run(args.profile, args.method, args.tau, datasets=datasets, repeats=args.repeats, single_samples=args.single_samples,
        force=args.force)
    for path in save_latency_figures(args.profile, subset_suffix(datasets)):
        print(f"written: {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="python -m cgt", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    profiles = list(PROFILES)

    p = sub.add_parser("data", help="obtain and verify the raw datasets (offline sources first)")
    p.add_argument("--dataset", default="all", choices=[*BUILTIN, "all"])
    p.add_argument("--data-dir", default=None, help="default: the project's data/raw, from any working directory")
    p.add_argument("--mirror", default=None, help="base URL replacing the canonical download location")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("split", help="write a scene's split map (.npz): 0 unlabelled, 1 train, 2 val, 3 test, 4 guard")
    p.add_argument("--dataset", default="indian_pines", choices=list(BUILTIN))
    p.add_argument("--split", default="spatial", choices=list(PROTOCOLS))
    p.add_argument("--seed", type=non_negative_int, default=0, help="split seed")
    p.add_argument("--fold", type=non_negative_int, default=None, help="blocked: the fold tested, 0 … K−1 (default 0)")
    p.add_argument("--folds", type=positive_int, default=None, help="blocked: K, the number of folds (default: the profile's)")
    p.add_argument("--tile", type=positive_int, default=None, help="blocked: side of the square tiles in pixels (default: the profile's)")
    p.add_argument("--profile", default="paper", choices=profiles, help="preparation settings (patch size) of this profile")
    p.add_argument("--data-dir", type=existing_dir, default=None, help=DATA_DIR_HELP)
    p.add_argument("--out", required=True, type=file_in_existing_dir(".npz"), help="output .npz file")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("train", help="train methods × seeds on one dataset (finished runs are reused)")
    p.add_argument("--dataset", required=True, type=dataset_name, help=DATASET_HELP)
    p.add_argument("--method", nargs="+", default=["all"], choices=[*METHODS, "all"])
    p.add_argument("--profile", default="quick", choices=profiles)
    p.add_argument("--seed", type=non_negative_int, nargs="+", default=None, help="default: the profile's seeds")
    p.add_argument("--split", default="random", choices=list(PROTOCOLS),
                   help="random (the paper's, leaking) | spatial (Indian Pines: the extrapolation stress test) | blocked "
                        "(Indian Pines: blocked K-fold cross-validation, the leak-free protocol); split seed = seed")
    p.add_argument("--fold", type=non_negative_int, nargs="+", default=None, help="blocked: the folds to train (default: all)")
    p.add_argument("--options", type=json_object, default=None, help="extra strategy options as JSON, applied to every method given, "
                                                   "e.g. '{\"tau_train\": 0.8}'")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--device", type=device_name, default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--model-options", type=json_object, default=None,
                   help="width/depth of the generic network for your own data as JSON, e.g. '{\"width\": 64}'")
    p.add_argument("--data-dir", type=existing_dir, default=None, help=DATA_DIR_HELP)
    p.add_argument("--force", action="store_true", help="retrain even if a finished run exists")
    p.add_argument("--quiet", action="store_true", help="no progress output (notices still go to stderr)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("paper", help="run every notebook with papermill: data, baselines, HardCGT, SoftCGT, figures")
    p.add_argument("--profile", default="paper", choices=profiles)
    p.add_argument("--dataset", nargs="+", type=dataset_name, default=None, help=f"default: {' '.join(BUILTIN)}; a path/to/your_data.npz works too")
    p.add_argument("--force", action="store_true", help="retrain every run and execute every notebook")
    p.add_argument("--force-step", nargs="+", default=None, metavar="NOTEBOOK",
                   help="execute these notebooks (e.g. 04_figures) even if their inputs are unchanged")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="train the steps' runs first on N local worker processes, one thread each (default 1: "
                        "inside the notebooks; `make paper` uses one per core); results do not depend on N")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="train the steps' runs first on the Dask cluster at ADDRESS (e.g. tcp://10.0.0.5:8786)")
    p.set_defaults(func=cmd_paper)

    p = sub.add_parser("scaling", help="how the local runner scales: one fixed run list, 1, 2, 4 … worker processes")
    p.add_argument("--workers", type=positive_int, nargs="+", default=[1, 2], metavar="N")
    p.add_argument("--runs", type=positive_int, default=16, help="Indian Pines runs (quick profile) in the fixed list")
    p.add_argument("--epochs", type=positive_int, default=5)
    p.add_argument("--out", type=file_in_existing_dir(".json"), default=None,
                   help="output .json file (default: the project's figures/runner_scaling.json)")
    p.add_argument("--pipeline", default=None, choices=profiles,
                   help="instead: the whole pipeline of this profile from nothing, serial vs --workers N")
    p.set_defaults(func=cmd_scaling)

    p = sub.add_parser("reproduce", help="train a few finished runs again from nothing and compare them bit for bit")
    p.add_argument("--profile", default="paper", choices=profiles)
    p.add_argument("--runs", type=positive_int, default=2, help="how many finished runs to train again")
    p.add_argument("--draw-seed", type=int, default=0, help="seed of the random draw of runs")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("publish", help="copy the executed notebooks (with outputs) and HTML exports to paper/")
    p.add_argument("--profile", default="paper", choices=profiles)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("results", help="regenerate the README's answer block and the results pages (results/)")
    p.add_argument("--profile", default="paper", choices=profiles)
    p.add_argument("--stdout", action="store_true", help="print the answer block instead of writing README.md and results/")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("recipe", help="the profile's declared training-recipe search, chosen on validation (make paper runs it first)")
    p.add_argument("--profile", default="paper", choices=profiles)
    p.add_argument("--dataset", default=None, choices=list(BUILTIN), help="default: every dataset the profile searches")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_recipe)

    p = sub.add_parser("verdicts", help="the pre-registered analysis (PREREGISTRATION.md) of a profile's finished runs")
    p.add_argument("--profile", default="paper", choices=profiles)
    p.set_defaults(func=cmd_verdicts)

    p = sub.add_parser("export", help="write a finished run as one ONNX graph per exit segment (ONNX Runtime early exit)")
    p.add_argument("--run", required=True, help="a finished run folder, runs/<profile>/<dataset>/<method>/seed<k>-<key>")
    p.add_argument("--out", default=None, help="output folder (default: <run>/onnx)")
    p.add_argument("--latency-budget-us", type=float, nargs="*", default=[],
                   help="add val_latency_<us> operating points: thresholds fitted on validation to a predicted time "
                        "per sample on this machine (batch 1, ONNX Runtime segments, measured at export)")
    p.add_argument("--threads", type=int, default=1, help="threads the latency time model is measured with")
    p.add_argument("--learned-budget", type=float, nargs="*", default=[],
                   help="carry the learned exit policy (fitted on the run's validation logits) with learned_budget_<pct> "
                        "points: per-exit thresholds on its score, picked on validation for these relative costs")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="wall-clock speed-up of real early exit against its FLOPs prediction")
    p.add_argument("--profile", default="quick", choices=profiles)
    p.add_argument("--method", default="soft_cgt", choices=list(METHODS))
    p.add_argument("--tau", type=unit_interval, default=PAPER_TAU)
    p.add_argument("--single-samples", type=positive_int, default=200, help="samples timed one at a time (batch size 1)")
    p.add_argument("--repeats", type=positive_int, default=30, help="timings per row (median and IQR), after a warm-up")
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
