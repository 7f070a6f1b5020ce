"""Bring your own data: a .npz file or a registered loader, prepared like the paper datasets.

Accepted arrays (as .npz keys, or the dict a registered loader returns):
  * `x`, `y`                     — all samples; train/val/test made by the stratified, seeded splitter;
  * `x`, `y`, `split`            — `split` holds 'train' / 'val' / 'test' per sample (0/1/2 also accepted);
  * `x_train`, `y_train`, `x_test`, `y_test` [, `x_val`, `y_val`] — given splits (val carved from
    train when missing);
  * optional `class_names`       — one name per distinct label, in sorted label order.
`x` is image-like (N, C, H, W) or (N, H, W), or tabular (N, F); `y` integer labels (any values:
they are remapped to 0..K-1 and the mapping is kept in the prepared data's extras).

    python -m cgt train --dataset path/to/file.npz --method hard_cgt joint_uniform --profile quick

    from cgt.data import register
    register("my_data", lambda: {"x": features, "y": labels})   # e.g. arrays built from a torch Dataset

Each such dataset gets a `DatasetSpec` made here (`npz_spec`, `loader_spec`): its preparation, its
options (`test_fraction`), a fingerprint of the data as given, and the generic early-exit network.
"""
from __future__ import annotations

import functools
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..fileio import sha256_file
from ..models import generic_model
from .base import DataConfig, DatasetSpec, PreparedArrays
from .splits import cap_splits, check_fractions, stratified_split

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
Loader = Callable[[], dict[str, np.ndarray]]


@dataclass(frozen=True)
class CustomDataOptions:
    """Preparation options of data of your own."""

    test_fraction: float = 0.2
    """When the data comes without splits: fraction of each class held out as test."""

    def validate(self, cfg: DataConfig) -> None:
        check_fractions({"val": cfg.val_fraction, "test": self.test_fraction}, "train")


def is_npz(dataset: str) -> bool:
    return str(dataset).endswith(".npz")


def npz_spec(path: str) -> DatasetSpec:
    """The record of a .npz file (named after its stem: runs and tables say `npz-<stem>`)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    return _spec(f"npz-{Path(path).stem}", f"arrays of {path}", functools.partial(read_npz, path),
                 functools.partial(_npz_fingerprint, path))


def loader_spec(name: str, loader: Loader) -> DatasetSpec:
    """The record of a registered loader (asked again for its data whenever a fingerprint is needed)."""
    read = functools.partial(_call_loader, name, loader)
    return _spec(name, f"registered loader {name!r}", read, lambda: _arrays_fingerprint(read()))


def _spec(name: str, description: str, read: Loader, fingerprint: Callable[[], str]) -> DatasetSpec:
    return DatasetSpec(name=name, description=description, prepare=functools.partial(prepare, read),
                       build_model=generic_model, options=CustomDataOptions, fingerprint=fingerprint,
                       model_options=("width", "depth"))


def _npz_fingerprint(path: str) -> str:
    stat = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def _arrays_fingerprint(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key, value in sorted(arrays.items()):
        h.update(key.encode() + str(value.dtype).encode() + str(value.shape).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, computed once per (path, size, mtime): a large .npz is not re-read for
    every cache-key lookup, and an edited file gets a new entry."""
    return sha256_file(path)


def _call_loader(name: str, loader: Loader) -> dict[str, np.ndarray]:
    arrays = loader()
    if not isinstance(arrays, dict):
        raise ValueError(f"the loader registered as {name!r} returned {type(arrays).__name__}, not a dict of arrays")
    return {k: np.asarray(v) for k, v in arrays.items()}


def read_npz(dataset: str) -> dict[str, np.ndarray]:
    path = Path(dataset)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    if not zipfile.is_zipfile(path):  # .npz is a zip archive of .npy files
        raise ValueError(f"{path} is not a valid .npz file (not a zip archive); write one with numpy.savez(path, x=..., y=...)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a valid .npz file ({type(exc).__name__}: {exc}); "
                         f"write one with numpy.savez(path, x=..., y=...)") from None


def _splits_given(arrays: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Normalise the three accepted layouts to {split: (x, y)} (val/test may be missing)."""
    if "x" in arrays and "y" in arrays:
        x, y = arrays["x"], arrays["y"]
        _check_pair("x", x, "y", y)
        if "split" not in arrays:
            return {"all": (x, y)}
        split = np.asarray(arrays["split"])
        if len(split) != len(x):
            raise ValueError(f"split has {len(split)} entries but x has {len(x)} samples")
        if split.dtype.kind == "S":
            split = split.astype(str)  # bytes b"train" → "train"
        if split.dtype.kind == "U":
            bad = sorted(set(np.unique(split).tolist()) - set(SPLIT_CODES))
            codes = np.array([SPLIT_CODES.get(s, -1) for s in split])
        elif split.dtype.kind in "iu":
            codes = split.astype(int)
            bad = sorted(set(np.unique(codes).tolist()) - set(SPLIT_CODES.values()))
        else:
            raise ValueError(f"split must hold strings or integers; got dtype {split.dtype}")
        if bad:
            raise ValueError(f"split contains {bad}; valid values: {list(SPLIT_CODES)} or {list(SPLIT_CODES.values())}")
        if not (codes == SPLIT_CODES["train"]).any():
            raise ValueError("split assigns no sample to 'train'")
        return {name: (x[codes == c], y[codes == c]) for name, c in SPLIT_CODES.items() if (codes == c).any()}
    if "x_train" in arrays and "y_train" in arrays:
        out = {}
        for s in SPLIT_CODES:
            if f"x_{s}" in arrays or f"y_{s}" in arrays:
                if f"x_{s}" not in arrays or f"y_{s}" not in arrays:
                    raise ValueError(f"x_{s} and y_{s} must be given together")
                _check_pair(f"x_{s}", arrays[f"x_{s}"], f"y_{s}", arrays[f"y_{s}"])
                if len(arrays[f"x_{s}"]) == 0:
                    raise ValueError(f"x_{s} is empty: a given split needs at least one sample")
                out[s] = (arrays[f"x_{s}"], arrays[f"y_{s}"])
        shapes = {f"x_{s}": v[0].shape[1:] for s, v in out.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"the splits' samples have different shapes {shapes}; they must match")
        return out
    raise ValueError(f"arrays {sorted(arrays)} hold no data: expected 'x' and 'y' (optionally 'split'), or "
                     f"'x_train', 'y_train' (optionally 'x_val', 'y_val', 'x_test', 'y_test')")


def _check_pair(xn: str, x: np.ndarray, yn: str, y: np.ndarray) -> None:
    if y.ndim != 1:
        raise ValueError(f"{yn} must be one label per sample, shape (N,); got shape {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{xn} has {len(x)} samples but {yn} has {len(y)} labels")
    if y.dtype.kind not in "iu":
        raise ValueError(f"{yn} labels must be integers; got dtype {y.dtype} (map your classes to integers)")
    if x.dtype.kind not in "iufb":
        raise ValueError(f"{xn} must be numeric; got dtype {x.dtype}")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"{xn} has shape {x.shape}; expected (N, F) tabular, (N, H, W) or (N, C, H, W) images")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{xn} contains {int((~np.isfinite(x)).sum())} NaN or infinite values")


def prepare(read: Loader, cfg: DataConfig, opts: CustomDataOptions) -> PreparedArrays:
    """Validate, split (when needed), remap labels, standardise with training statistics."""
    arrays = read()
    parts = _splits_given(arrays)
    all_y = np.concatenate([y for _, y in parts.values()])
    classes = np.unique(all_y)
    if len(classes) < 2:
        raise ValueError(f"the labels hold a single class ({classes.tolist()}); a classifier needs at least two")
    if "all" in parts:
        x, y = parts.pop("all")
        idx = stratified_split(y, {"train": 1 - cfg.val_fraction - opts.test_fraction, "val": cfg.val_fraction},
                               cfg.seed, rest="test")
        parts = {s: (x[i], y[i]) for s, i in idx.items()}
    elif "val" not in parts:
        x, y = parts["train"]
        idx = stratified_split(y, {"val": cfg.val_fraction}, cfg.seed, rest="train")
        parts |= {s: (x[i], y[i]) for s, i in idx.items()}
    if "test" not in parts:
        raise ValueError("with x_train/y_train, give x_test/y_test too (or pass x, y and let the splitter make all three)")
    x = {s: np.asarray(parts[s][0], np.float32) for s in ("train", "val", "test")}
    y = {s: np.searchsorted(classes, parts[s][1]).astype(np.int64) for s in ("train", "val", "test")}
    x, y = cap_splits(x, y, cfg.max_train, cfg.max_eval, cfg.seed)
    if x["train"].ndim == 3:
        x = {s: v[:, None] for s, v in x.items()}  # (N, H, W) → (N, 1, H, W)
    # Standardise per channel (images) or per feature (tabular) with training statistics only.
    axes = (0, 2, 3) if x["train"].ndim == 4 else (0,)
    mean = x["train"].mean(axis=axes, keepdims=True)
    std = np.maximum(x["train"].std(axis=axes, keepdims=True), 1e-6)
    x = {s: ((v - mean) / std).astype(np.float32) for s, v in x.items()}
    names = arrays.get("class_names")
    if names is not None and len(names) != len(classes):
        raise ValueError(f"class_names has {len(names)} entries but the labels hold {len(classes)} classes "
                         f"{classes.tolist()}; give one name per class, in sorted label order")
    class_names = [str(c) for c in (names if names is not None else classes)]
    return {"x": x, "y": y, "class_names": class_names,
            "extras": {"label_values": classes, "feature_mean": mean.squeeze(), "feature_std": std.squeeze()}}
