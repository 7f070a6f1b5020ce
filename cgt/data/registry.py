"""Every dataset name the package accepts, resolved to its record (`DatasetSpec`).

    resolve("indian_pines")          a built-in dataset (one module each, listed in BUILTIN)
    resolve("my_data")               a loader registered in this process with `register`
    resolve("path/to/file.npz")      a .npz file of your own

Adding a built-in dataset: write `cgt/data/<name>.py` with its raw files, `prepare` and `SPEC`
(see fashion_mnist.py), and add its SPEC to BUILTIN below.
"""
from __future__ import annotations

from pathlib import Path

from . import fashion_mnist, indian_pines
from .base import DatasetSpec
from .custom import Loader, is_npz, loader_spec, npz_spec
from .raw import SOURCES, obtain

BUILTIN: dict[str, DatasetSpec] = {spec.name: spec for spec in (fashion_mnist.SPEC, indian_pines.SPEC)}
"""The paper's datasets, in the order the pipeline runs them."""
LOADERS: dict[str, Loader] = {}
"""Loaders registered in this process (`register`)."""


def register(name: str, loader: Loader) -> None:
    """Make `name` usable as a dataset everywhere in this process (notebooks, run_methods). `loader()`
    returns arrays in the .npz layout of cgt.data.custom. The command line and the papermill
    pipeline start new processes: they need a .npz file instead."""
    if name in BUILTIN:
        raise ValueError(f"dataset name {name!r} is taken by a built-in dataset; choose another")
    if not callable(loader):
        raise ValueError(f"loader for {name!r} must be a callable returning a dict of arrays")
    LOADERS[name] = loader


def resolve(dataset: str) -> DatasetSpec:
    """The record of a dataset name or .npz path; a clear error for anything else."""
    if is_npz(dataset):
        return npz_spec(dataset)
    if dataset in BUILTIN:
        return BUILTIN[dataset]
    if dataset in LOADERS:
        return loader_spec(dataset, LOADERS[dataset])
    raise ValueError(f"unknown dataset {dataset!r}; valid choices: {sorted(BUILTIN) + sorted(LOADERS)} "
                     f"or a path to a .npz file")


def display_name(dataset: str) -> str:
    """Short name for folders and tables: the .npz file's `npz-<stem>`, else the name itself."""
    return f"npz-{Path(dataset).stem}" if is_npz(dataset) else dataset


def acquire(dataset: str, data_dir: str | Path = "data/raw", sources: tuple[str, ...] = SOURCES,
            mirror: str | None = None, named_dir: bool = False) -> str:
    """Make a built-in dataset's raw files present and verified; returns the source used.
    named_dir: the user gave data_dir (`--data-dir`); a failed file's repair hint then names it."""
    if dataset not in BUILTIN:
        raise ValueError(f"unknown dataset {dataset!r}; valid choices: {sorted(BUILTIN)}")
    return obtain(BUILTIN[dataset].raw, data_dir, sources, mirror, named_dir)
