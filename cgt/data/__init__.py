"""Datasets: one record per dataset (`DatasetSpec`), one way to load any of them.

    from cgt.data import DataConfig, load
    data = load(DataConfig("indian_pines", options={"patch_size": 9}))   # PreparedData: tensors per split

Modules: `base` (the record and the config), `registry` (names → records; `register` for loaders of
your own), `fashion_mnist` and `indian_pines` (the built-in datasets, one module each), `custom`
(.npz files and registered loaders), `raw` (obtaining and verifying raw files), `splits` (seeded
splitters), `prepared` (preparation cache and the tensors a notebook gets).
"""
from .base import SPLITS, DataConfig, DatasetSpec
from .prepared import PreparedData, load, preparation_params
from .raw import DataVerificationError
from .registry import BUILTIN, acquire, display_name, register, resolve

__all__ = ["BUILTIN", "SPLITS", "DataConfig", "DataVerificationError", "DatasetSpec", "PreparedData", "acquire",
           "display_name", "load", "preparation_params", "register", "resolve"]
