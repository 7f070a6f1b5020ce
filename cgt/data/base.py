"""What every dataset has in common: the record that describes it, and the config that prepares it.

A dataset is one `DatasetSpec`: how its raw files are obtained and verified (if it has any), how they
become train / val / test arrays, which options that preparation takes, and its default early-exit
network. The built-in records live in one module each (`fashion_mnist.py`, `indian_pines.py`) and are
listed in `registry.py`; `.npz` files and registered loaders get a record made for them (`custom.py`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypedDict

import numpy as np

from ..models import EarlyExitNet
from .raw import RawSource
from .splits import check_fractions

SPLITS = ("train", "val", "test")


@dataclass
class DataConfig:
    """How a dataset is prepared: what every dataset shares, plus its own `options`."""

    dataset: str = "fashion_mnist"
    """A built-in dataset, a registered loader's name, or a path to a .npz file."""
    data_dir: str = "data/raw"
    """Where verified raw files live (one sub-folder per dataset)."""
    cache_dir: str = "data/prepared"
    """Where prepared arrays are cached."""
    seed: int = 0
    """Seed of every split; fixed across training seeds so all methods see the same data."""
    val_fraction: float = 0.1
    """Fraction of each class held out for validation (threshold fitting, model selection)."""
    max_train: int | None = None
    """Stratified cap on the training set (the smoke profile uses a tiny subset); None = all."""
    max_eval: int | None = None
    """Stratified cap on the validation and test sets; None = all."""
    options: dict[str, Any] = field(default_factory=dict)
    """The dataset's own preparation options, checked against its options class (e.g.
    `IndianPinesOptions`: split, patch size, PCA components); unset ones take its defaults."""

    def validate(self) -> None:
        """Raise ValueError naming the bad value, before any work (the options are the spec's to check)."""
        for name in ("max_train", "max_eval"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name}={v} must be a positive number of samples or None")
        check_fractions({"val": self.val_fraction}, "train")


COMMON_FIELDS = tuple(f.name for f in fields(DataConfig) if f.name != "options")


@dataclass(frozen=True)
class NoOptions:
    """A dataset whose preparation takes no options of its own."""

    def validate(self, cfg: DataConfig) -> None:
        pass


class PreparedArrays(TypedDict):
    """What a dataset's `prepare` returns."""

    x: dict[str, np.ndarray]
    """split → inputs, (N, C, H, W) float32 (or (N, F) for tabular data)."""
    y: dict[str, np.ndarray]
    """split → labels in 0..K-1, (N,) int64."""
    class_names: list[str]
    extras: dict[str, np.ndarray]
    """Dataset-specific arrays kept with the prepared data (for figures, or to map labels back)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: everything the rest of the package needs to know about it."""

    name: str
    """Short name for folders, cache files and tables."""
    description: str
    """One line for listings."""
    prepare: Callable[[DataConfig, Any], PreparedArrays]
    """prepare(cfg, options) → split arrays; called only when no cached copy exists."""
    build_model: Callable[..., EarlyExitNet]
    """build_model(input_shape, num_classes, **model_options) → the default early-exit network."""
    options: type = NoOptions
    """Dataclass of the dataset's own preparation options (its fields, defaults and `validate`)."""
    raw: RawSource | None = None
    """Verified raw files; None for data of your own (read as given, nothing to verify)."""
    fingerprint: Callable[[], str] | None = None
    """Hash of data given by the user (part of the cache key: edited data is prepared again)."""
    model_options: Sequence[str] = ()
    """Options `build_model` accepts (the paper models take none: their architecture is the paper's)."""

    def option_names(self) -> list[str]:
        """Names of the dataset's own preparation options."""
        return [f.name for f in fields(self.options)]

    def resolve_options(self, cfg: DataConfig) -> Any:
        """cfg.options filled with defaults and checked; unknown names are an error naming the valid ones."""
        valid = self.option_names()
        unknown = sorted(set(cfg.options) - set(valid))
        if unknown:
            raise ValueError(f"unknown data option(s) {unknown} for dataset {self.name!r}; its options are {valid}, "
                             f"and every dataset takes {list(COMMON_FIELDS[1:])}")
        opts = self.options(**cfg.options)
        opts.validate(cfg)
        return opts

    def preparation_params(self, cfg: DataConfig) -> dict[str, Any]:
        """Everything that changes the prepared arrays (paths excluded): the cache key, and part of
        every training run's identity."""
        params = {k: v for k, v in asdict(cfg).items() if k not in ("data_dir", "cache_dir", "options")}
        params["dataset"] = self.name
        params |= asdict(self.resolve_options(cfg))
        if self.fingerprint is not None:
            params["source_sha256"] = self.fingerprint()
        return params

    def default_model(self, input_shape: Sequence[int], num_classes: int, **options: Any) -> EarlyExitNet:
        unknown = sorted(set(options) - set(self.model_options))
        if unknown:
            if not self.model_options:
                raise ValueError(f"the paper model of {self.name} takes no options; got {sorted(options)}")
            raise ValueError(f"unknown model option(s) {unknown}; valid options: {sorted(self.model_options)}")
        return self.build_model(input_shape, num_classes, **options)
