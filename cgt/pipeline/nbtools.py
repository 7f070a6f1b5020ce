"""Keep committed notebooks small and testable: execute them, then strip what nbval must not see.

    python -m cgt.pipeline.nbtools refresh notebooks/00_data.ipynb [...]   execute (smoke profile), then strip
    python -m cgt.pipeline.nbtools strip PATH [...]                          strip only
    python -m cgt.pipeline.nbtools check PATH [...]                          exit 1 if a notebook is not stripped

The committed notebook is what nbval executes (`--nbval-lax`: only cells whose source starts with
`# NBVAL_CHECK_OUTPUT` are compared). Those cells keep their outputs, produced by the smoke profile
that the test session uses, *and* their execution counts: nbval treats a cell with outputs but no
execution count as an unrun cell and fails with "Unrun reference cell has outputs". Every other
cell loses its outputs (figures would make the file large and differ on every run) and its count.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from ..experiments.profiles import profile_environment
from ..fileio import atomic_path

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
TEST_PROFILE = "smoke"  # the profile conftest.py sets for the test session


def is_checked(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK_MARK)


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop outputs, execution counts and run metadata, except the outputs/counts of checked cells."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # nbclient's per-cell timestamps: noise in every diff
        cell.metadata.pop("papermill", None)
        if cell.cell_type == "code" and not is_checked(cell):
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    return nb


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """What `strip` would change or what nbval would reject; empty for a good committed notebook."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if is_checked(cell) and cell.execution_count is None:
            out.append(f"cell {i}: checked cell has no execution count (run `refresh`)")
        if not is_checked(cell) and (cell.outputs or cell.execution_count is not None):
            out.append(f"cell {i}: unchecked cell has stored outputs or an execution count (run `strip`)")
    return out


def quiet_kernel_manager():
    """The kernel manager class for running notebooks here: IPC transport (local Unix sockets, no TCP
    ports), so no kernel logs "running over TCP without encryption" into the pipeline's output."""
    import os
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import default

    class IpcKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self):
            return "ipc"

        @default("ip")
        def _ip_default(self):
            # An absolute socket path: the kernel may start in another folder than this process
            # (a relative one would then name two different sockets).
            os.makedirs(jupyter_runtime_dir(), exist_ok=True)
            return os.path.join(jupyter_runtime_dir(), f"cgt-kernel-{uuid.uuid4().hex[:12]}")

    return IpcKernelManager


def execute(nb: nbformat.NotebookNode, folder: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell in a fresh python3 kernel, cwd = the notebook's folder, in the test profile."""
    from nbclient import NotebookClient

    with profile_environment(TEST_PROFILE):  # the kernel inherits this process's environment
        NotebookClient(nb, kernel_name="python3", timeout=timeout, kernel_manager_class=quiet_kernel_manager(),
                       resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    """Validate and write atomically: an interrupted refresh leaves the old notebook intact."""
    nbformat.validate(nb)
    with atomic_path(path) as tmp:
        nbformat.write(nb, str(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cgt.pipeline.nbtools", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["refresh", "strip", "check"])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (refresh)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    failed = False
    for path in args.paths:
        nb = nbformat.read(str(path), as_version=4)
        if args.command == "check":
            for p in problems(nb):
                print(f"{path}: {p}")
                failed = True
            continue
        if args.command == "refresh":
            execute(nb, path.resolve().parent, args.timeout)
        write(strip(nb), path)
        done = "executed and stripped" if args.command == "refresh" else "stripped"
        kept = sum(is_checked(c) for c in nb.cells)
        print(f"{path}: {done}; outputs kept in {kept} checked cell(s); {path.stat().st_size} bytes")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
