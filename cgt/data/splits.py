"""Seeded splits of labelled samples: stratified per class, or spatially disjoint with a guard band."""
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


TRAIN, VAL, TEST, GUARD = 1, 2, 3, 4
"""Codes of a split map (0: unlabelled background)."""
SPLIT_CODES = {"train": TRAIN, "val": VAL, "test": TEST, "guard": GUARD}


def guard_band(assignment: np.ndarray, radius: int) -> np.ndarray:
    """The map with the guard band applied: a validation or test pixel within Chebyshev distance
    `radius` of a training pixel, or a test pixel within `radius` of a validation pixel, becomes GUARD.
    With radius = ⌊patch / 2⌋ no validation or test patch contains a training pixel, and no test
    patch a validation pixel."""
    from scipy.ndimage import binary_dilation

    window = np.ones((2 * radius + 1, 2 * radius + 1), bool)
    out = assignment.copy()
    near_train = binary_dilation(out == TRAIN, structure=window)
    out[((out == VAL) | (out == TEST)) & near_train] = GUARD
    near_val = binary_dilation(out == VAL, structure=window)
    out[(out == TEST) & near_val] = GUARD
    return out


def _cut(rows: np.ndarray, cols: np.ndarray, angle: float, n_train: int, n_val: int) -> np.ndarray:
    """Codes for one class's pixels cut along a direction: the first n_train pixels (by their projection
    on the direction) train, the last n_val validate, the middle tests — validation is the far end, so
    only test pixels lie between it and training."""
    order = np.argsort(rows * np.cos(angle) + cols * np.sin(angle), kind="stable")
    codes = np.full(len(rows), TEST)
    codes[order[:n_train]] = TRAIN
    if n_val:
        codes[order[len(order) - n_val:]] = VAL
    return codes


def guarded_spatial_split(label_map: np.ndarray, fractions: Mapping[str, float], seed: int, radius: int,
                          directions: int = 8) -> np.ndarray:
    """A spatially disjoint split of the labelled pixels of an image, with a guard band: a (H, W) map of
    0 (unlabelled), TRAIN, VAL, TEST and GUARD.

    Class by class, largest first, the class's pixels are cut along a direction into a training part
    (fractions["train"] of them), a test part and, at the far end, a validation part (fractions["val"]);
    then `guard_band` removes every validation or test pixel a patch of radius `radius` could leak
    from. Of `directions` directions (evenly spaced from a seeded angle), the class takes the one that
    keeps it in test, then in validation, then keeps the most validation and test pixels of the whole
    map. A class whose fields are too small for that gets a smaller training part (halved until one
    pixel) and, if it must, no validation part. Classes that still end up absent from a split are
    reported by `missing_classes`; the seed varies every cut.
    """
    check_fractions(fractions, "test")
    rng = np.random.default_rng(seed)
    assignment = np.zeros(label_map.shape, np.int64)
    classes, sizes = np.unique(label_map[label_map > 0], return_counts=True)
    for c in classes[np.argsort(-sizes, kind="stable")]:  # the large fields first: the rare ones fit around them
        rows, cols = np.nonzero(label_map == c)
        n_train = max(1, int(round(fractions["train"] * len(rows))))
        n_val = max(1, int(round(fractions["val"] * len(rows))))
        start = rng.uniform(0.0, 2 * np.pi)
        best_key, best_codes = None, None
        while True:
            for val_pixels in (n_val, 0):
                for k in range(directions):
                    codes = _cut(rows, cols, start + 2 * np.pi * k / directions, n_train, val_pixels)
                    trial = assignment.copy()
                    trial[rows, cols] = codes
                    guarded = guard_band(trial, radius)
                    mine = guarded[rows, cols]
                    key = ((mine == TEST).any(), (mine == VAL).any(), int(np.isin(guarded, (VAL, TEST)).sum()))
                    if best_key is None or key > best_key:
                        best_key, best_codes = key, codes
            if best_key[0] or n_train == 1:
                break
            n_train = max(1, n_train // 2)
        assignment[rows, cols] = best_codes
    return guard_band(assignment, radius)


def split_from_map(split_map: np.ndarray) -> dict[str, np.ndarray]:
    """Flat indices (into split_map.ravel(), sorted) of each split of a split map, the guard band included."""
    flat = split_map.ravel()
    return {name: np.flatnonzero(flat == code) for name, code in SPLIT_CODES.items()}


def split_map_of(shape: tuple[int, int], pixels: Mapping[str, np.ndarray]) -> np.ndarray:
    """The (H, W) split map of flat pixel indices per split (names of SPLIT_CODES)."""
    out = np.zeros(shape, np.int64)
    for name, idx in pixels.items():
        out.ravel()[idx] = SPLIT_CODES[name]
    return out


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
