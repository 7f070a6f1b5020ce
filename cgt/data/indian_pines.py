"""Indian Pines (AVIRIS, 1992): a 145×145-pixel hyperspectral scene, 200 bands, 16 land-cover classes.

Preparation: the labelled pixels are split, the bands are standardised and reduced by PCA fitted on
the training pixels only, and each pixel becomes a (components, patch, patch) patch centred on it.
Three splits (protocols), each answering its own question:
  * blocked (the primary, leak-free protocol): spatially blocked K-fold cross-validation — square
    tiles spread over K folds, fold F tests its tiles, fold F+1 validates, the rest trains, with guard
    bands of the patch radius (cgt.data.splits.blocked_fold_map). How well does a method generalise to
    fields it has not seen, with training drawn from all over the scene?
  * spatial (the extrapolation stress test): each class cut once along a direction into spatially
    disjoint train / test / validation parts, with a guard band, so test means extrapolating to the
    far side of each field (cgt.data.splits.guarded_spatial_split);
  * random (the paper's protocol, leaking): stratified per pixel. Every test patch then overlaps
    training pixels, which inflates accuracy (Liang et al., IEEE TGRS 2017; Nalepa et al., IEEE GRSL
    2019): kept only for the comparison with the paper's numbers.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..models import indian_pines_cnn
from .base import SPLITS, DataConfig, DatasetSpec, PreparedArrays
from .raw import RawFile, RawSource, load_array, raw_paths
from .splits import (
    blocked_fold_map,
    cap_splits,
    check_blocked,
    check_fractions,
    guarded_spatial_split,
    missing_classes,
    split_from_map,
    split_map_of,
    stratified_split,
)

CLASSES = ["Alfalfa", "Corn-notill", "Corn-mintill", "Corn", "Grass-pasture", "Grass-trees",
           "Grass-pasture-mowed", "Hay-windrowed", "Oats", "Soybean-notill", "Soybean-mintill",
           "Soybean-clean", "Wheat", "Woods", "Buildings-Grass-Trees-Drives", "Stone-Steel-Towers"]
BANDS = 200
IMAGE_SHAPE = (145, 145)
SPLIT_KINDS = ("random", "spatial", "blocked")
FOLDED_SPLITS = ("blocked",)
"""Splits made of folds (a `fold` option picks one); the others are one split per seed."""
URL = "https://www.ehu.eus/ccwintco/uploads/"
TENSORLY_WHEEL = "tensorly==0.10.0"

CUBE = RawFile("Indian_pines_corrected.mat", URL + "6/67/Indian_pines_corrected.mat",
               "36468dd7336c8bd37a80cced54362ea426f226703f3797ba494556fd8134e77f",
               array_key="indian_pines_corrected", dtype="<u2")
GROUND_TRUTH = RawFile("Indian_pines_gt.mat", URL + "c/c4/Indian_pines_gt.mat",
                       "ebf20cfe0bce98f01885f0ab4fd1857925db3ef0a1f1624bbee3ffcb92425103",
                       array_key="indian_pines_gt", dtype="u1")


def offline_copy(workdir: Path) -> tuple[Path, str] | str:
    """(folder holding the arrays, description), or why there is no offline copy."""
    spec = importlib.util.find_spec("tensorly")
    if spec is not None and spec.origin:
        data = Path(spec.origin).parent / "datasets" / "data"
        if (data / "Indian_pines_gt.npy").exists():
            return data, f"arrays shipped in the installed tensorly package ({data})"
    # Not installed: fetch the wheel from the package registry and read the arrays out of it.
    ok = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                         TENSORLY_WHEEL, "-d", str(workdir)], capture_output=True, text=True)
    wheels = list(workdir.glob("tensorly-*.whl"))
    if ok.returncode != 0 or not wheels:
        return f"tensorly is not installed and `pip download {TENSORLY_WHEEL}` failed ({ok.stderr.strip()[-300:]})"
    out = workdir / "x"
    with zipfile.ZipFile(wheels[0]) as whl:
        for member in whl.namelist():
            if member.endswith(("Indian_pines_corrected.npy", "Indian_pines_gt.npy")):
                (out / Path(member).name).parent.mkdir(parents=True, exist_ok=True)
                (out / Path(member).name).write_bytes(whl.read(member))
    return out, f"arrays inside the {TENSORLY_WHEEL} wheel (pip download)"


RAW = RawSource(
    "indian_pines", (CUBE, GROUND_TRUTH), offline_copy,
    how_to_obtain=("delete the bad file and run `python -m cgt data --dataset indian_pines`, which takes the arrays "
                   f"from the tensorly wheel ({TENSORLY_WHEEL}) or downloads the .mat files from {URL} "
                   "(GIC hyperspectral scenes page, University of the Basque Country)"),
)


@dataclass(frozen=True)
class IndianPinesOptions:
    """Preparation options of Indian Pines: the defaults of every protocol, in one place (the
    defaults give the paper-protocol numbers; `split` picks the protocol)."""

    train_fraction: float = 0.2
    """random / spatial: fraction of each class's labelled pixels used for training; the rest after val
    is test. (blocked: unused, the folds decide.)"""
    split: str = "random"
    """'blocked': spatially blocked K-fold cross-validation with guard bands (the primary, leak-free
    protocol); 'spatial': each class cut once into disjoint regions with a guard band of ⌊patch_size / 2⌋
    pixels (the extrapolation stress test); 'random': stratified per-pixel split (the paper's protocol,
    leaking: every test patch overlaps training pixels)."""
    pca_components: int = 30
    """Spectral components kept by PCA (fitted on training pixels only)."""
    patch_size: int = 11
    """Odd side of the square patch around each labelled pixel."""
    tile: int = 20
    """blocked: side in pixels of the square tiles dealt to folds (from patch_size to 145). With 20 and
    5 folds (patch_size 11, seeds 0–1, measured): about 13 labelled tiles per fold, scattered enough that
    a fold lacks training pixels for 1.2 tested classes on average (at most 3: the classes of one or two
    small fields), large enough that the guard band (about 2,800 pixels, all of them training or
    validation pixels) leaves about 3,800 training pixels per fold (minimum 3,233)."""
    folds: int = 5
    """blocked: K, the number of folds (≥ 3: one tests, the next validates, the other K−2 train)."""
    fold: int | None = None
    """blocked: the fold tested, 0 … folds−1 (required); None for the splits without folds."""

    def validate(self, cfg: DataConfig) -> None:
        if self.split not in SPLIT_KINDS:
            raise ValueError(f"unknown split {self.split!r}; valid choices: {list(SPLIT_KINDS)}")
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size={self.patch_size} must be a positive odd number (the pixel is the centre)")
        if not 1 <= self.pca_components <= BANDS:
            raise ValueError(f"pca_components={self.pca_components} must be between 1 and the "
                             f"{BANDS} bands of Indian Pines")
        if self.split in FOLDED_SPLITS:
            if self.fold is None:
                raise ValueError(f"split={self.split!r} needs a fold in 0 … {self.folds - 1}")
            check_blocked(IMAGE_SHAPE, self.tile, self.folds, self.fold, self.patch_size // 2)
        elif self.fold is not None:
            raise ValueError(f"fold={self.fold}: split={self.split!r} has no folds (only {list(FOLDED_SPLITS)} has)")
        check_fractions({"train": self.train_fraction, "val": cfg.val_fraction}, "test")


def load_raw(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The verified (145, 145, 200) uint16 cube and (145, 145) uint8 ground truth."""
    paths = raw_paths(RAW, data_dir)
    return load_array(paths[CUBE.name], CUBE), load_array(paths[GROUND_TRUTH.name], GROUND_TRUTH)


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


def split_map(gt: np.ndarray, opts: IndianPinesOptions, val_fraction: float, seed: int) -> np.ndarray:
    """The (H, W) map of the split: 0 unlabelled, 1 train, 2 validation, 3 test, 4 guard band (spatial and
    blocked only)."""
    if opts.split == "blocked":
        return blocked_fold_map(gt, opts.tile, opts.folds, opts.fold, seed, radius=opts.patch_size // 2)
    fractions = {"train": opts.train_fraction, "val": val_fraction}
    if opts.split == "spatial":
        return guarded_spatial_split(gt, fractions, seed, radius=opts.patch_size // 2)
    labelled = np.flatnonzero(gt.ravel() > 0)  # background (label 0) is excluded everywhere
    idx = stratified_split(gt.ravel()[labelled], fractions, seed, rest="test")
    return split_map_of(gt.shape, {s: labelled[i] for s, i in idx.items()})


def fold_maps(gt: np.ndarray, opts: IndianPinesOptions, val_fraction: float, seed: int) -> dict[int, np.ndarray]:
    """fold → the split map of that fold, for every fold of a split with folds (`opts.fold` is ignored)."""
    if opts.split not in FOLDED_SPLITS:
        raise ValueError(f"split={opts.split!r} has no folds; only {list(FOLDED_SPLITS)} has")
    return {f: split_map(gt, replace(opts, fold=f), val_fraction, seed) for f in range(opts.folds)}


def prepare(cfg: DataConfig, opts: IndianPinesOptions) -> PreparedArrays:
    cube, gt = load_raw(cfg.data_dir)
    h, w = gt.shape
    labelled = np.flatnonzero(gt.ravel() > 0)
    the_map = split_map(gt, opts, cfg.val_fraction, cfg.seed)
    pixels = {s: idx for s, idx in split_from_map(the_map).items() if s in SPLITS}
    labels = {s: gt.ravel()[p].astype(np.int64) - 1 for s, p in pixels.items()}
    pixels, labels = cap_splits(pixels, labels, cfg.max_train, cfg.max_eval, cfg.seed)
    # Classes absent from a split, in label units (0..K-1) and over labelled pixels only (never background).
    missing = missing_classes(gt.ravel()[labelled].astype(np.int64) - 1,
                              {s: np.searchsorted(labelled, p) for s, p in pixels.items()})
    image, pca = fit_spectral_pca(cube, pixels["train"], opts.pca_components, cfg.seed)
    x = {}
    for s in SPLITS:
        rows, cols = np.divmod(pixels[s], w)
        x[s] = extract_patches(image, rows, cols, opts.patch_size)
    return {"x": x, "y": labels, "class_names": CLASSES,
            "extras": {**{f"pixels_{s}": pixels[s] for s in SPLITS},
                       "image_shape": np.array([h, w]), "split_map": the_map.astype(np.uint8),
                       "labelled_per_class": np.bincount(gt.ravel(), minlength=len(CLASSES) + 1)[1:],
                       "pca_explained_variance_ratio": pca.explained_variance_ratio_.astype(np.float32),
                       "missing_classes": np.array(str(missing))}}


SPEC = DatasetSpec(
    name="indian_pines",
    description="Indian Pines: 145×145 hyperspectral scene, 200 bands, 16 classes (PCA + spatial patches per pixel)",
    prepare=prepare,
    build_model=lambda input_shape, num_classes: indian_pines_cnn(num_classes, in_channels=input_shape[0]),
    options=IndianPinesOptions,
    raw=RAW,
)
