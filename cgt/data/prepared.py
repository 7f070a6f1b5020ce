"""Prepared datasets as in-memory tensors: acquire verified raw files, prepare splits, cache the result.

`load(DataConfig(...))` is the one call a notebook makes. Preparation is cached under
`cache_dir`, keyed by every preparation parameter (and PREP_VERSION): a changed parameter
re-prepares, an unchanged one loads the cache. Raw files are verified whenever the cache is built, and
on every load when the caller names the data folder (`verify_raw`: a folder given explicitly is checked
even if its prepared arrays are cached); the prepared arrays' own checksum is part of every training
run's key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..fileio import save_npz_atomic, sha256_bytes, stable_hash
from ..models import EarlyExitNet
from ..notices import notice
from .base import SPLITS, DataConfig, DatasetSpec
from .raw import obtain
from .registry import resolve

PREP_VERSION = 2  # bump when preparation code changes what it produces: invalidates every cache


@dataclass
class PreparedData:
    """A dataset ready for training: float32 inputs, int64 labels, per split."""

    name: str
    x: dict[str, torch.Tensor]
    """'train' / 'val' / 'test' → inputs, (N, C, H, W)."""
    y: dict[str, torch.Tensor]
    """'train' / 'val' / 'test' → labels in 0..K-1, (N,)."""
    class_names: list[str]
    checksum: str
    """sha256 of the prepared arrays: part of every training run's cache key."""
    params: dict = field(default_factory=dict)
    """The preparation parameters (DatasetSpec.preparation_params): also part of the run key."""
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Dataset-specific arrays for figures (e.g. pixel coordinates of each Indian Pines sample)."""
    spec: DatasetSpec | None = None
    """The dataset's record (its default network among others); None for arrays made by hand."""

    def default_model(self, **model_options) -> EarlyExitNet:
        """The dataset's default early-exit network for these inputs and classes."""
        if self.spec is None:
            raise ValueError(f"prepared data {self.name!r} has no dataset record: pass a model_fn")
        return self.spec.default_model(self.input_shape, self.num_classes, **model_options)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x["train"].shape[1:])

    def counts(self) -> dict[str, np.ndarray]:
        """Samples per class in each split."""
        return {s: np.bincount(self.y[s].numpy(), minlength=self.num_classes) for s in self.y}


def preparation_params(cfg: DataConfig) -> dict:
    """Every parameter the prepared arrays depend on; checks `cfg` first (name, common fields, the
    dataset's own options), so a bad value fails here, before any work."""
    spec = resolve(cfg.dataset)
    cfg.validate()
    return spec.preparation_params(cfg) | {"prep_version": PREP_VERSION}


def cache_path(cfg: DataConfig, params: dict | None = None) -> Path:
    """Where the prepared arrays of `cfg` are cached: named by the hash of its parameters."""
    params = preparation_params(cfg) if params is None else params
    return Path(cfg.cache_dir) / f"{params['dataset']}-{stable_hash(params)}.npz"


def load(cfg: DataConfig, verbose: bool = False, verify_raw: bool = False) -> PreparedData:
    """Acquire (verified), prepare and cache `cfg.dataset`; return it as tensors.

    verify_raw: the user named cfg.data_dir (`--data-dir`): verify its raw files even when the prepared
    arrays are cached, and name the folder in the repair hint of a file that fails."""
    spec = resolve(cfg.dataset)
    params = preparation_params(cfg)
    path = cache_path(cfg, params)
    if verify_raw and spec.raw is not None:
        obtain(spec.raw, cfg.data_dir, named_dir=True)
    arrays = _read_cache(path)
    if arrays is None:
        if spec.raw is not None:
            source = obtain(spec.raw, cfg.data_dir, named_dir=verify_raw)
            if verbose:
                print(f"{spec.name}: raw data from {source}")
        prepared = spec.prepare(cfg, spec.resolve_options(cfg))
        arrays = {f"{k}_{s}": prepared[k][s] for k in ("x", "y") for s in SPLITS}
        arrays["class_names"] = np.array(prepared["class_names"])
        arrays |= {f"extra_{k}": v for k, v in prepared["extras"].items()}
        save_npz_atomic(path, **arrays)
    elif verbose:
        print(f"{spec.name}: prepared arrays loaded from cache {path}")
    checksum = sha256_bytes(b"".join(np.ascontiguousarray(arrays[f"{k}_{s}"]).tobytes()
                                     for k in ("x", "y") for s in SPLITS))
    return PreparedData(
        name=spec.name,
        x={s: torch.from_numpy(np.ascontiguousarray(arrays[f"x_{s}"], np.float32)) for s in SPLITS},
        y={s: torch.from_numpy(np.ascontiguousarray(arrays[f"y_{s}"], np.int64)) for s in SPLITS},
        class_names=[str(c) for c in arrays["class_names"]],
        checksum=checksum,
        params=params,
        extras={k[len("extra_"):]: v for k, v in arrays.items() if k.startswith("extra_")},
        spec=spec,
    )


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None if absent or unreadable (then it is prepared again, with a notice)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as exc:
        notice(f"{path}: unreadable prepared arrays ({type(exc).__name__}: {exc}); preparing them again")
        return None
