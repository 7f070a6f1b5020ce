"""Datasets as in-memory tensors: acquire verified raw files, prepare splits, cache the result.

`load(DataConfig(...))` is the one call a notebook makes. Preparation is cached under
`cache_dir`, keyed by every preparation parameter (and PREP_VERSION): a changed parameter
re-prepares, an unchanged one loads the cache. Raw files are verified whenever the cache is built;
the prepared arrays' own checksum is part of every training run's key.
"""
from __future__ import annotations

import gzip
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import acquire as acq
from .fileio import save_npz_atomic, sha256_bytes, stable_hash
from .splits import missing_classes, spatial_block_split, stratified_split, stratified_subsample

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
INDIAN_PINES_CLASSES = ["Alfalfa", "Corn-notill", "Corn-mintill", "Corn", "Grass-pasture", "Grass-trees",
                        "Grass-pasture-mowed", "Hay-windrowed", "Oats", "Soybean-notill", "Soybean-mintill",
                        "Soybean-clean", "Wheat", "Woods", "Buildings-Grass-Trees-Drives", "Stone-Steel-Towers"]
INDIAN_PINES_BANDS = 200
SPLIT_KINDS = ("random", "spatial")
PREP_VERSION = 2  # bump when preparation code changes what it produces: invalidates every cache


@dataclass
class DataConfig:
    """How a dataset is obtained and prepared. Fields marked (IP) apply to Indian Pines only."""

    dataset: str = "fashion_mnist"
    """Registered dataset name: fashion_mnist or indian_pines."""
    data_dir: str = "data/raw"
    """Where verified raw files live (one sub-folder per dataset)."""
    cache_dir: str = "data/prepared"
    """Where prepared arrays are cached."""
    seed: int = 0
    """Seed of every split; fixed across training seeds so all methods see the same data."""
    val_fraction: float = 0.1
    """Fraction of each class held out for validation (threshold fitting, model selection)."""
    train_fraction: float = 0.2
    """(IP) Fraction of each class's labelled pixels used for training; the rest after val is test."""
    split: str = "random"
    """(IP) 'random': stratified per-pixel split; 'spatial': disjoint image blocks."""
    block_size: int = 12
    """(IP) Side in pixels of the blocks of the spatial split."""
    pca_components: int = 30
    """(IP) Spectral components kept by PCA (fitted on training pixels only)."""
    patch_size: int = 11
    """(IP) Odd side of the square patch around each labelled pixel."""
    test_fraction: float = 0.2
    """(your data, when it comes without splits) Fraction of each class held out as test."""
    max_train: int | None = None
    """Stratified cap on the training set (the smoke profile uses a tiny subset); None = all."""
    max_eval: int | None = None
    """Stratified cap on the validation and test sets; None = all."""

    def validate(self) -> None:
        """Raise ValueError naming the bad value and the valid choices, before any work."""
        from .custom_data import is_custom

        check_dataset(self.dataset)
        if self.split not in SPLIT_KINDS:
            raise ValueError(f"unknown split {self.split!r}; valid choices: {list(SPLIT_KINDS)}")
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size={self.patch_size} must be a positive odd number (the pixel is the centre)")
        if not 1 <= self.pca_components <= INDIAN_PINES_BANDS:
            raise ValueError(f"pca_components={self.pca_components} must be between 1 and the "
                             f"{INDIAN_PINES_BANDS} bands of Indian Pines")
        if self.block_size < 1:
            raise ValueError(f"block_size={self.block_size} must be >= 1")
        for name in ("max_train", "max_eval"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name}={v} must be a positive number of samples or None")
        from .splits import check_fractions

        check_fractions({"val": self.val_fraction}, "train")
        if self.dataset == "indian_pines":
            check_fractions({"train": self.train_fraction, "val": self.val_fraction}, "test")
        if is_custom(self.dataset):
            check_fractions({"val": self.val_fraction, "test": self.test_fraction}, "train")

    def preparation_params(self) -> dict:
        """The fields that change the prepared arrays (paths excluded): the cache key."""
        params = asdict(self)
        for k in ("data_dir", "cache_dir"):
            params.pop(k)
        from .custom_data import is_custom, source_fingerprint

        if self.dataset != "indian_pines":
            for k in ("train_fraction", "split", "block_size", "pca_components", "patch_size"):
                params.pop(k)
        if not is_custom(self.dataset):
            params.pop("test_fraction")
        else:
            params["source_sha256"] = source_fingerprint(self.dataset)
        return params | {"prep_version": PREP_VERSION}


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
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Dataset-specific arrays for figures (e.g. pixel coordinates of each Indian Pines sample)."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x["train"].shape[1:])

    def counts(self) -> dict[str, np.ndarray]:
        """Samples per class in each split."""
        return {s: np.bincount(self.y[s].numpy(), minlength=self.num_classes) for s in self.y}


SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------- Fashion-MNIST
def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped idx file (the MNIST format: big-endian header, then uint8 data)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def prepare_fashion_mnist(cfg: DataConfig) -> dict:
    paths = acq.raw_paths("fashion_mnist", cfg.data_dir)
    x_trainval = read_idx(paths["train-images-idx3-ubyte.gz"])
    y_trainval = read_idx(paths["train-labels-idx1-ubyte.gz"]).astype(np.int64)
    x_test = read_idx(paths["t10k-images-idx3-ubyte.gz"])
    y_test = read_idx(paths["t10k-labels-idx1-ubyte.gz"]).astype(np.int64)
    # The standard 60k/10k split; validation is carved from the 60k, stratified, with a fixed seed.
    idx = stratified_split(y_trainval, {"val": cfg.val_fraction}, cfg.seed, rest="train")
    x = {"train": x_trainval[idx["train"]], "val": x_trainval[idx["val"]], "test": x_test}
    y = {"train": y_trainval[idx["train"]], "val": y_trainval[idx["val"]], "test": y_test}
    x, y = cap_splits(x, y, cfg)
    # Scale to [0, 1] then standardise with the *training* mean/std (no statistics from test).
    mean, std = (x["train"] / 255.0).mean(), (x["train"] / 255.0).std()
    x = {s: ((v / 255.0 - mean) / std).astype(np.float32)[:, None] for s, v in x.items()}
    return {"x": x, "y": y, "class_names": FASHION_MNIST_CLASSES,
            "extras": {"pixel_mean": np.float32(mean), "pixel_std": np.float32(std)}}


# ---------------------------------------------------------------- Indian Pines
def load_indian_pines_raw(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The verified (145, 145, 200) uint16 cube and (145, 145) uint8 ground truth."""
    paths = acq.raw_paths("indian_pines", data_dir)
    specs = {s.name: s for s in acq.DATASET_FILES["indian_pines"]}
    cube = acq.load_array(paths["Indian_pines_corrected.mat"], specs["Indian_pines_corrected.mat"])
    gt = acq.load_array(paths["Indian_pines_gt.mat"], specs["Indian_pines_gt.mat"])
    return cube, gt


def extract_patches(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) image → (N, C, size, size) patches centred on (rows[i], cols[i]).

    Borders are reflect-padded, so every pixel gets a full patch. One strided view, one gather:
    no per-pixel Python.
    """
    r = size // 2
    padded = np.pad(image, ((r, r), (r, r), (0, 0)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(0, 1))  # (H, W, C, s, s)
    return np.ascontiguousarray(windows[rows, cols])


def fit_spectral_pca(cube: np.ndarray, train_pixels: np.ndarray, n_components: int, seed: int):
    """Per-band standardisation + PCA, both fitted on the training pixels only (no test leakage).

    Returns the transformed (H, W, n_components) image and the fitted PCA.
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    h, w, bands = cube.shape
    flat = cube.reshape(-1, bands).astype(np.float64)
    scaler = StandardScaler().fit(flat[train_pixels])
    pca = PCA(n_components=n_components, svd_solver="full", random_state=seed).fit(scaler.transform(flat[train_pixels]))
    reduced = pca.transform(scaler.transform(flat))
    # Unit variance per component (on train pixels) so the leading component does not dominate.
    reduced /= reduced[train_pixels].std(axis=0, keepdims=True)
    return reduced.reshape(h, w, n_components).astype(np.float32), pca


def prepare_indian_pines(cfg: DataConfig) -> dict:
    cube, gt = load_indian_pines_raw(cfg.data_dir)
    h, w = gt.shape
    labelled = np.flatnonzero(gt.ravel() > 0)  # background (label 0) is excluded everywhere
    fractions = {"train": cfg.train_fraction, "val": cfg.val_fraction}
    if cfg.split == "random":
        idx = stratified_split(gt.ravel()[labelled], fractions, cfg.seed, rest="test")
        pixels = {s: labelled[i] for s, i in idx.items()}
    else:
        pixels = spatial_block_split(gt, fractions, cfg.seed, cfg.block_size, rest="test")
    labels = {s: gt.ravel()[p].astype(np.int64) - 1 for s, p in pixels.items()}
    pixels, labels = cap_splits(pixels, labels, cfg)
    image, pca = fit_spectral_pca(cube, pixels["train"], cfg.pca_components, cfg.seed)
    x = {}
    for s in SPLITS:
        rows, cols = np.divmod(pixels[s], w)
        x[s] = extract_patches(image, rows, cols, cfg.patch_size)
    # Classes absent from a split, in label units (0..K-1) and over labelled pixels only (never background).
    missing = missing_classes(gt.ravel()[labelled].astype(np.int64) - 1,
                              {s: np.searchsorted(labelled, p) for s, p in pixels.items()})
    return {"x": x, "y": labels, "class_names": INDIAN_PINES_CLASSES,
            "extras": {**{f"pixels_{s}": pixels[s] for s in SPLITS},
                       "image_shape": np.array([h, w]),
                       "pca_explained_variance_ratio": pca.explained_variance_ratio_.astype(np.float32),
                       "missing_classes": np.array(str(missing))}}


def cap_splits(x: dict, y: dict, cfg: DataConfig) -> tuple[dict, dict]:
    """Apply max_train / max_eval (stratified, seeded); a no-op for the full profiles."""
    caps = {"train": cfg.max_train, "val": cfg.max_eval, "test": cfg.max_eval}
    for s, cap in caps.items():
        if cap is not None:
            keep = stratified_subsample(y[s], cap, cfg.seed)
            x[s], y[s] = x[s][keep], y[s][keep]
    return x, y


# ---------------------------------------------------------------- registry and cache
def check_dataset(dataset: str) -> None:
    """A paper dataset, a registered one, or an existing .npz file; else a clear error."""
    from .custom_data import LOADERS, is_npz

    if is_npz(dataset):
        if not Path(dataset).is_file():
            raise FileNotFoundError(f"dataset file {dataset} does not exist")
        return
    if dataset not in PREPARERS and dataset not in LOADERS:
        raise ValueError(f"unknown dataset {dataset!r}; valid choices: {sorted(PREPARERS) + sorted(LOADERS)} "
                         f"or a path to a .npz file")


PREPARERS: dict[str, Callable[[DataConfig], dict]] = {
    "fashion_mnist": prepare_fashion_mnist,
    "indian_pines": prepare_indian_pines,
}


def cache_path(cfg: DataConfig) -> Path:
    from .custom_data import display_name

    return Path(cfg.cache_dir) / f"{display_name(cfg.dataset)}-{stable_hash(cfg.preparation_params())}.npz"


def load(cfg: DataConfig, verbose: bool = False) -> PreparedData:
    """Acquire (verified), prepare and cache `cfg.dataset`; return it as tensors."""
    from .custom_data import display_name, is_custom, prepare_custom

    cfg.validate()
    path = cache_path(cfg)
    arrays = _read_cache(path)
    if arrays is None:
        if is_custom(cfg.dataset):
            prepared = prepare_custom(cfg)
        else:
            source = acq.acquire(cfg.dataset, cfg.data_dir)
            if verbose:
                print(f"{cfg.dataset}: raw data from {source}")
            prepared = PREPARERS[cfg.dataset](cfg)
        arrays = {f"{k}_{s}": prepared[k][s] for k in ("x", "y") for s in SPLITS}
        arrays["class_names"] = np.array(prepared["class_names"])
        arrays |= {f"extra_{k}": v for k, v in prepared["extras"].items()}
        save_npz_atomic(path, **arrays)
    elif verbose:
        print(f"{cfg.dataset}: prepared arrays loaded from cache {path}")
    checksum = sha256_bytes(b"".join(np.ascontiguousarray(arrays[f"{k}_{s}"]).tobytes()
                                     for k in ("x", "y") for s in SPLITS))
    return PreparedData(
        name=display_name(cfg.dataset),
        x={s: torch.from_numpy(np.ascontiguousarray(arrays[f"x_{s}"], np.float32)) for s in SPLITS},
        y={s: torch.from_numpy(np.ascontiguousarray(arrays[f"y_{s}"], np.int64)) for s in SPLITS},
        class_names=[str(c) for c in arrays["class_names"]],
        checksum=checksum,
        extras={k[len("extra_"):]: v for k, v in arrays.items() if k.startswith("extra_")},
    )


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None if absent or unreadable (then it is simply prepared again)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception:
        return None
