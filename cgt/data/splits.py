"""Seeded splits of labelled samples: stratified per class, or spatially disjoint image blocks."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def check_fractions(fractions: Mapping[str, float], rest: str) -> None:
    """Fractions must each be in (0, 1) and leave something for the `rest` split."""
    for name, f in fractions.items():
        if not 0.0 < f < 1.0:
            raise ValueError(f"split fraction {name}={f} must be in (0, 1)")
    total = sum(fractions.values())
    if total >= 1.0:
        raise ValueError(f"split fractions {dict(fractions)} sum to {total:.3f}; they must sum to < 1 "
                         f"so that the '{rest}' split keeps the remainder")


def stratified_split(labels: np.ndarray, fractions: Mapping[str, float], seed: int,
                     rest: str = "test") -> dict[str, np.ndarray]:
    """Split indices class by class so that every split holds every class.

    Each named split gets round(fraction * n_c) samples of class c (at least 1); `rest` gets the
    remainder (at least 1). Indices within each split are sorted, so the result depends only on
    (labels, fractions, seed).
    """
    check_fractions(fractions, rest)
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {name: [] for name in [*fractions, rest]}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        counts = [max(1, int(round(f * len(idx)))) for f in fractions.values()]
        if sum(counts) >= len(idx):
            raise ValueError(f"class {c} has only {len(idx)} samples: too few to put at least one in each of "
                             f"the splits {[*fractions, rest]} with fractions {dict(fractions)}")
        start = 0
        for name, n in zip(fractions, counts):
            out[name].append(idx[start:start + n])
            start += n
        out[rest].append(idx[start:])
    return {name: np.sort(np.concatenate(parts)) for name, parts in out.items()}


def spatial_block_split(label_map: np.ndarray, fractions: Mapping[str, float], seed: int, block: int,
                        rest: str = "test") -> dict[str, np.ndarray]:
    """Split the labelled pixels of an image by square blocks, so splits do not share neighbourhoods.

    Blocks of `block`×`block` pixels are shuffled with `seed` and dealt to the splits in order until
    each holds its fraction of the labelled pixels. Returns flat indices into `label_map.ravel()`
    (labelled pixels only). Unlike the stratified split, a rare class can be missing from a split;
    `missing_classes` reports it.
    """
    check_fractions(fractions, rest)
    h, w = label_map.shape
    flat = np.flatnonzero(label_map.ravel() > 0)
    rows, cols = np.divmod(flat, w)
    block_of = (rows // block) * ((w + block - 1) // block) + cols // block
    blocks = np.random.default_rng(seed).permutation(np.unique(block_of))
    sizes = np.bincount(block_of, minlength=block_of.max() + 1)
    targets = np.cumsum([f * len(flat) for f in fractions.values()])
    assignment, filled, split_i = {}, 0, 0
    for b in blocks:
        while split_i < len(targets) and filled >= targets[split_i]:
            split_i += 1
        assignment[b] = split_i
        filled += sizes[b]
    split_of = np.array([assignment[b] for b in block_of])
    names = [*fractions, rest]
    return {name: flat[split_of == i] for i, name in enumerate(names)}


def missing_classes(labels: np.ndarray, splits: Mapping[str, np.ndarray]) -> dict[str, list[int]]:
    """Classes of `labels` that some split does not contain (empty dict when all are everywhere)."""
    classes = set(np.unique(labels).tolist())
    out = {name: sorted(classes - set(np.unique(labels[idx]).tolist())) for name, idx in splits.items()}
    return {k: v for k, v in out.items() if v}


def stratified_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """min(n, N) indices, class proportions kept (for the tiny smoke profile), sorted.

    Each class gets its share n * n_c / N rounded by largest remainder (so the total is exactly n)
    and at least one sample; only if n is below the number of classes does that floor win (one
    index per class, so more than n).
    """
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(labels, return_counts=True)
    quota = n * sizes / len(labels)
    k = np.maximum(np.floor(quota).astype(np.int64), 1)
    below = quota - k  # how far each class is under its exact share
    while k.sum() < n:  # fewer than K steps
        i = int(np.argmax(np.where(k < sizes, below, -np.inf)))
        k[i] += 1
        below[i] -= 1
    while k.sum() > n and (k > 1).any():  # only when the at-least-one floor overshot
        i = int(np.argmin(np.where(k > 1, below, np.inf)))
        k[i] -= 1
        below[i] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(kc), replace=False) for c, kc in zip(classes, k)]
    return np.sort(np.concatenate(picked))


def cap_splits(x: dict, y: dict, max_train: int | None, max_eval: int | None, seed: int) -> tuple[dict, dict]:
    """Apply the caps on train and on val/test (stratified, seeded); a no-op for the full profiles."""
    caps = {"train": max_train, "val": max_eval, "test": max_eval}
    for s, cap in caps.items():
        if cap is not None:
            keep = stratified_subsample(y[s], cap, seed)
            x[s], y[s] = x[s][keep], y[s][keep]
    return x, y
