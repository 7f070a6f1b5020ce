"""Sub-commands of `python -m cgt` beyond `data`: train, paper (the pipeline), results, bench."""
from __future__ import annotations

import argparse
import json
import sys


def _parse_options(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--options must be a JSON object, e.g. '{{\"tau_train\": 0.8}}'; got {text!r} ({exc})")
    if not isinstance(value, dict):
        raise ValueError(f"--options must be a JSON object; got {text!r}")
    return value


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import METHODS
    from .experiment import run_methods

    methods = list(METHODS) if args.method == ["all"] else args.method
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr)) if v is not None}
    options = _parse_options(args.options)
    run_methods(args.dataset, args.profile, methods, seeds=args.seed, options={m: options for m in methods},
                data_dir=args.data_dir, device=args.device, train_overrides=overrides, force=args.force,
                progress=not args.quiet, model_options=_parse_options(args.model_options) or None)
    return 0


def _cmd_paper(args: argparse.Namespace) -> int:
    from .pipeline import PipelineError, run_pipeline

    try:
        run_pipeline(args.profile, args.dataset, force=args.force)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from .config import DATASETS
    from .paths import figures_dir, project_root
    from .report import results_markdown, update_readme

    section = results_markdown(figures_dir(args.profile), args.dataset or DATASETS)
    if args.profile == "paper" and not args.stdout:
        update_readme(project_root() / "README.md", section)
        print("README.md results section regenerated from", figures_dir(args.profile))
    else:
        print(section)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run

    run(args.profile, args.method, args.tau, n_single=args.n_single, repeats=args.repeats)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from .config import DATASETS, METHODS, PROFILES

    p = sub.add_parser("train", help="train methods × seeds on one dataset (finished runs are reused)")
    p.add_argument("--dataset", required=True, help=f"{' | '.join(DATASETS)} | path/to/your_data.npz")
    p.add_argument("--method", nargs="+", default=["all"], choices=[*METHODS, "all"])
    p.add_argument("--profile", default="quick", choices=list(PROFILES))
    p.add_argument("--seed", type=int, nargs="+", default=None, help="default: the profile's seeds")
    p.add_argument("--options", default=None, help="extra strategy options as JSON, applied to every method given, e.g. '{\"tau_train\": 0.8}'")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--model-options", default=None,
                   help="width/depth of the generic network for your own data as JSON, e.g. '{\"width\": 64}'")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--force", action="store_true", help="retrain even if a finished run exists")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("paper", help="run every notebook with papermill: data, baselines, HardCGT, SoftCGT, figures")
    p.add_argument("--profile", default="paper", choices=list(PROFILES))
    p.add_argument("--dataset", nargs="+", default=None,
                   help=f"default: {' '.join(DATASETS)}; a path/to/your_data.npz works too")
    p.add_argument("--force", action="store_true", help="retrain every run even if a finished one exists")
    p.set_defaults(func=_cmd_paper)

    p = sub.add_parser("results", help="regenerate the README's results section from the tables 04_figures wrote")
    p.add_argument("--profile", default="paper", choices=list(PROFILES))
    p.add_argument("--dataset", nargs="+", default=None, choices=DATASETS)
    p.add_argument("--stdout", action="store_true", help="print the section instead of editing README.md")
    p.set_defaults(func=_cmd_results)

    p = sub.add_parser("bench", help="wall-clock speed-up of real early exit against its FLOPs prediction")
    p.add_argument("--profile", default="quick", choices=list(PROFILES))
    p.add_argument("--method", default="soft_cgt", choices=list(METHODS))
    p.add_argument("--tau", type=float, default=0.9)
    p.add_argument("--n-single", type=int, default=1000, help="samples timed one by one")
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(func=_cmd_bench)
