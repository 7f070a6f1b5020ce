"""Sub-commands of `python -m cgt` beyond `data` (kept apart so __main__ stays a table of contents)."""
from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    pass
