"""Command line: `python -m cgt data|train|paper|results|bench ...` (see --help of each)."""
from __future__ import annotations

import argparse
import sys
import time


def _cmd_data(args: argparse.Namespace) -> int:
    from .acquire import DATASET_FILES, acquire

    datasets = sorted(DATASET_FILES) if args.dataset == "all" else [args.dataset]
    for ds in datasets:
        t0 = time.perf_counter()
        source = acquire(ds, args.data_dir, mirror=args.mirror)
        print(f"{ds}: verified, source: {source} ({time.perf_counter() - t0:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .acquire import DATASET_FILES

    parser = argparse.ArgumentParser(prog="python -m cgt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="obtain and verify the raw datasets (offline sources first)")
    p.add_argument("--dataset", default="all", choices=[*sorted(DATASET_FILES), "all"])
    p.add_argument("--data-dir", default="data/raw")
    p.add_argument("--mirror", default=None, help="base URL replacing the canonical download location")
    p.set_defaults(func=_cmd_data)

    from . import cli_commands  # train / evaluate / paper / bench

    cli_commands.add_commands(sub)
    args = parser.parse_args(argv)
    from .acquire import DataVerificationError

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, DataVerificationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
