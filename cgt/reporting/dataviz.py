"""Figures and tables for looking at the data before training (notebook 00).

Every function returns a matplotlib Figure or a pandas DataFrame and shows nothing itself. Figures
are built with `matplotlib.figure.Figure`, not pyplot: pyplot would also auto-display them in
Jupyter (the figure twice) and keep every one alive in its global registry.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..data import SPLITS, PreparedData
from ..data.splits import GUARD, SPLIT_CODES

SPLIT_COLOURS = {"train": "#d62728", "val": "#ff9f1c", "test": "#1f4e9c"}
GUARD_COLOUR = (0.15, 0.15, 0.15, 1)
FALSE_COLOUR_BANDS = (50, 27, 17)
"""Bands (0-based, of the 200-band corrected cube) shown as R, G, B: near-infrared, red, green,
the usual false-colour composite in which vegetation looks red."""


def class_colours(n: int) -> list[tuple]:
    """n distinct colours: tab20's ten dark hues first, then their light versions, so classes with
    neighbouring indices (Corn-notill, Corn-mintill) do not get two shades of the same hue."""
    tab20 = colormaps["tab20"]
    return [tab20(i) for i in (*range(0, 20, 2), *range(1, 20, 2))][:n]


def class_count_table(prepared: PreparedData) -> pd.DataFrame:
    """Samples per class (rows) in each split (columns), with a `total` row."""
    counts = prepared.counts()
    df = pd.DataFrame({s: counts[s] for s in SPLITS}, index=pd.Index(prepared.class_names, name="class"))
    df.loc["total"] = df.sum()
    return df


def fashion_mnist_samples(prepared: PreparedData, per_class: int = 10, split: str = "train") -> Figure:
    """The first `per_class` images of each class in `split`, one row per class."""
    x, y = prepared.x[split][:, 0].numpy(), prepared.y[split].numpy()  # (N, 28, 28), (N,)
    # Undo the training-set standardisation so pixels are back in [0, 1].
    x = x * float(prepared.extras["pixel_std"]) + float(prepared.extras["pixel_mean"])
    k, side = prepared.num_classes, x.shape[-1]
    grid = np.full((k, per_class, side, side), np.nan)  # NaN (blank) where a class has too few images
    for c in range(k):
        imgs = x[y == c][:per_class]
        grid[c, :len(imgs)] = imgs
    # One mosaic image (class rows × sample columns) instead of k × per_class axes: fast and compact.
    mosaic = grid.transpose(0, 2, 1, 3).reshape(k * side, per_class * side)
    fig = Figure(figsize=(0.8 * per_class + 1.5, 0.8 * k), layout="constrained")
    ax = fig.subplots()
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(side * np.arange(k) + side / 2, prepared.class_names)
    ax.set_xticks([])
    ax.set_title(f"Fashion-MNIST: {per_class} {split} images per class")
    return fig


def false_colour(cube: np.ndarray, bands: Sequence[int] = FALSE_COLOUR_BANDS) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] from three bands, each stretched between its 2nd and 98th percentile
    (a min–max stretch would let a few very bright pixels darken the whole scene)."""
    rgb = cube[:, :, list(bands)].astype(np.float32)
    lo, hi = np.percentile(rgb, (2, 98), axis=(0, 1))
    return np.clip((rgb - lo) / (hi - lo), 0, 1)


def indian_pines_overview(cube: np.ndarray, gt: np.ndarray, prepared: PreparedData,
                          bands: Sequence[int] = FALSE_COLOUR_BANDS) -> Figure:
    """Three maps of the scene: false colour, ground truth, and the train/val/test pixels over it."""
    names = prepared.class_names
    cmap = ListedColormap([(0, 0, 0, 1), *class_colours(len(names))])  # label 0 = background, black
    fig = Figure(figsize=(15, 6.5), layout="constrained")
    ax_rgb, ax_gt, ax_split = fig.subplots(1, 3)

    ax_rgb.imshow(false_colour(cube, bands))
    ax_rgb.set_title(f"(a) false colour, bands {tuple(bands)} as RGB")
    ax_gt.imshow(gt, cmap=cmap, vmin=0, vmax=len(names), interpolation="nearest")
    ax_gt.set_title("(b) ground truth (black: unlabelled)")

    # (c) the labelled area in light grey, each split's pixels painted on top in its colour, the guard
    # band of a spatial split in black. Labelled pixels left grey belong to no split (only when a
    # profile caps the sample counts).
    h, w = (int(v) for v in prepared.extras["image_shape"])
    overlay = np.ones((h * w, 4))
    overlay[gt.ravel() > 0] = (0.8, 0.8, 0.8, 1)
    guard = np.flatnonzero(prepared.extras["split_map"].ravel() == GUARD) if "split_map" in prepared.extras else []
    overlay[guard] = GUARD_COLOUR
    for s in SPLITS:
        overlay[prepared.extras[f"pixels_{s}"]] = (*to_rgb(SPLIT_COLOURS[s]), 1)
    ax_split.imshow(overlay.reshape(h, w, 4), interpolation="nearest")
    ax_split.set_title("(c) which split each labelled pixel is in")
    ax_split.legend(handles=[Patch(color=SPLIT_COLOURS[s], label=f"{s} ({len(prepared.extras[f'pixels_{s}'])})")
                             for s in SPLITS] + [Patch(color=GUARD_COLOUR, label=f"guard band ({len(guard)})"),
                                                 Patch(color=(0.8, 0.8, 0.8), label="labelled, in no split")],
                    loc="upper right", fontsize=8)
    for ax in (ax_rgb, ax_gt, ax_split):
        ax.set_xticks([]), ax.set_yticks([])
    fig.legend(handles=[Patch(color=cmap(i + 1), label=f"{i}: {n}") for i, n in enumerate(names)],
               loc="outside lower center", ncol=6, fontsize=8)
    return fig


def mean_spectra(cube: np.ndarray, gt: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Mean spectrum of each class over all its labelled pixels (gt label c + 1 is class c)."""
    flat, labels = cube.reshape(-1, cube.shape[-1]).astype(np.float64), gt.ravel()
    fig = Figure(figsize=(11, 5), layout="constrained")
    ax = fig.subplots()
    for c, (name, colour) in enumerate(zip(class_names, class_colours(len(class_names)))):
        pixels = flat[labels == c + 1]
        ax.plot(pixels.mean(axis=0), color=colour, lw=1.2, label=f"{name} ({len(pixels)})")
    ax.set(xlabel=f"band index (of the {cube.shape[-1]} corrected bands, ≈0.4–2.5 µm)",
           ylabel="mean value (sensor units)", title="Mean spectrum per class (pixel count in brackets)")
    fig.legend(loc="outside right upper", fontsize=8)  # outside the axes: 16 entries would hide the curves
    return fig


def pca_variance(prepared: PreparedData) -> Figure:
    """Explained variance ratio of each PCA component (fitted on the training pixels), and the
    running total."""
    if "pca_explained_variance_ratio" not in prepared.extras:
        raise ValueError(f"{prepared.name} has no PCA (extras lacks 'pca_explained_variance_ratio'); "
                         "pca_variance applies to indian_pines")
    ratio = prepared.extras["pca_explained_variance_ratio"]
    k = np.arange(1, len(ratio) + 1)
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.subplots()
    ax.bar(k, ratio, color="#1f4e9c", label="per component")
    ax.plot(k, np.cumsum(ratio), "o-", color="#d62728", ms=3, label="cumulative")
    ax.set(xlabel="PCA component", ylabel="fraction of variance (standardised bands)", ylim=(0, 1.02),
           title=f"PCA on training pixels: {len(ratio)} components keep {ratio.sum():.1%} of the variance")
    ax.legend(loc="center right")
    return fig



def patch_leakage(prepared: PreparedData, patch_size: int) -> pd.DataFrame:
    """Per evaluation split: how many of its pixels have a training pixel inside their own patch (and,
    for test, a validation pixel), and the median number of training pixels a patch holds. The random
    split leaks into nearly every patch; the spatial split's guard band makes it zero."""
    h, w = (int(v) for v in prepared.extras["image_shape"])
    radius = patch_size // 2

    def in_window(split: str) -> np.ndarray:  # per pixel: pixels of `split` in its patch window
        mask = np.zeros((h + 2 * radius, w + 2 * radius))
        rows, cols = np.divmod(prepared.extras[f"pixels_{split}"], w)
        mask[rows + radius, cols + radius] = 1
        windows = np.lib.stride_tricks.sliding_window_view(mask, (patch_size, patch_size))
        return windows.sum(axis=(2, 3))

    near = {s: in_window(s).ravel() for s in ("train", "val")}
    rows = {}
    for s in ("val", "test"):
        pixels = prepared.extras[f"pixels_{s}"]
        rows[s] = {"pixels": len(pixels), "with a training pixel in the patch": int((near["train"][pixels] > 0).sum()),
                   "median training pixels per patch": float(np.median(near["train"][pixels])) if len(pixels) else 0.0,
                   "with a validation pixel in the patch": int((near["val"][pixels] > 0).sum()) if s == "test" else None}
    return pd.DataFrame(rows).T


PARTS = tuple(SPLIT_CODES)
"""The parts of a fold's split map: train, val, test, guard."""


def fold_coverage_table(gt: np.ndarray, maps: Mapping[int, np.ndarray], class_names: Sequence[str]) -> pd.DataFrame:
    """Pixels per (class, fold) in each part (train / val / test / guard) of each fold's split map
    (gt label c + 1 is class c), and what the fold can do with the class: `ok` (trained and tested),
    `test-only` (tested but no training pixel: the network never saw it in this fold), `train-only`
    (trained but not tested), `absent` (neither). Each row's parts sum to the class's labelled pixels."""
    rows = []
    for fold, m in maps.items():
        for c, name in enumerate(class_names):
            counts = {part: int(((gt == c + 1) & (m == code)).sum()) for part, code in SPLIT_CODES.items()}
            status = {(True, True): "ok", (False, True): "test-only", (True, False): "train-only",
                      (False, False): "absent"}[counts["train"] > 0, counts["test"] > 0]
            rows.append({"class": name, "fold": fold, **counts, "status": status})
    return pd.DataFrame(rows).set_index(["class", "fold"])


def fold_coverage_summary(coverage: pd.DataFrame) -> pd.DataFrame:
    """Per fold: pixels in each part, and the classes `test-only` / `train-only` in it (by name)."""
    out = coverage[list(PARTS)].groupby(level="fold").sum()
    for status in ("test-only", "train-only"):
        out[status] = [", ".join(part.index[part["status"] == status]) or "—"
                       for part in (coverage.xs(f, level="fold") for f in out.index)]
    return out


def blocked_folds_figure(gt: np.ndarray, maps: Mapping[int, np.ndarray], class_names: Sequence[str],
                         dataset: str = "Indian Pines", protocol: str = "blocked", shown_fold: int = 0) -> Figure:
    """Three maps: (a) the classes, (b) the fold that tests each labelled pixel, (c) the parts of fold
    `shown_fold` (train, validation, test, guard band). Keys name the classes, folds and parts."""
    h, w = gt.shape
    folds = sorted(maps)
    cmap = ListedColormap([(0, 0, 0, 1), *class_colours(len(class_names))])
    fig = Figure(figsize=(15, 6.5), layout="constrained")
    ax_gt, ax_fold, ax_part = fig.subplots(1, 3)
    ax_gt.imshow(gt, cmap=cmap, vmin=0, vmax=len(class_names), interpolation="nearest")
    ax_gt.set_title("(a) ground truth (black: unlabelled)")

    fold_colours = [colormaps["Set2"](i % 8) for i in range(len(folds))]
    tested_by = np.ones((h, w, 4))
    for f, colour in zip(folds, fold_colours):
        tested_by[maps[f] == SPLIT_CODES["test"]] = colour
    ax_fold.imshow(tested_by, interpolation="nearest")
    ax_fold.set_title("(b) the fold that tests each labelled pixel")
    ax_fold.legend(handles=[Patch(color=c, label=f"fold {f} ({int((maps[f] == SPLIT_CODES['test']).sum())} px)")
                            for f, c in zip(folds, fold_colours)], loc="upper right", fontsize=8)

    m = maps[shown_fold]
    parts = np.ones((h, w, 4))
    for part, colour in (*SPLIT_COLOURS.items(), ("guard", GUARD_COLOUR)):
        parts[m == SPLIT_CODES[part]] = (*to_rgb(colour), 1)
    ax_part.imshow(parts, interpolation="nearest")
    ax_part.set_title(f"(c) fold {shown_fold}: train, validation (fold {(shown_fold + 1) % len(folds)}), test, guard")
    ax_part.legend(handles=[Patch(color=c, label=f"{p} ({int((m == SPLIT_CODES[p]).sum())})")
                            for p, c in (*SPLIT_COLOURS.items(), ("guard", GUARD_COLOUR))],
                   loc="upper right", fontsize=8)
    for ax in (ax_gt, ax_fold, ax_part):
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{dataset}, {protocol} protocol: {len(folds)} folds of square tiles, guard band on the training side")
    fig.legend(handles=[Patch(color=cmap(i + 1), label=f"{i}: {n}") for i, n in enumerate(class_names)],
               loc="outside lower center", ncol=6, fontsize=8)
    return fig
