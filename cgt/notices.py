"""Notices: lines a user must see whatever the progress setting — a run trained again after its
artifacts failed their check, a run resumed from its checkpoint, a data file refused or replaced.

They go to stderr and are never silenced by `--quiet` (which only turns progress off), so a log of a
quiet run still says when something was not as the user left it.
"""
from __future__ import annotations

import sys


def notice(message: str) -> None:
    """Write one notice line to stderr at once (no buffering behind progress output)."""
    print(message, file=sys.stderr, flush=True)
