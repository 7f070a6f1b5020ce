"""Seeded splits of labelled samples: stratified per class, spatially disjoint with a guard band, or
spatially blocked K-fold cross-validation with guard bands (`blocked_fold_map`)."""
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


GUARD_SIDES = ("evaluation", "training")
"""Which pixels a guard band takes: the evaluation side's (validation and test pixels near training,
test pixels near validation) or the training side's (training pixels near validation or test,
validation pixels near test). Both leave the same property; the second never removes a test pixel."""


def guard_band(assignment: np.ndarray, radius: int, side: str = "evaluation") -> np.ndarray:
    """The map with the guard band applied. side="evaluation": a validation or test pixel within
    Chebyshev distance `radius` of a training pixel, or a test pixel within `radius` of a validation
    pixel, becomes GUARD. side="training": a validation pixel within `radius` of a test pixel, then a
    training pixel within `radius` of a (remaining) validation or test pixel, becomes GUARD.
    Either way, with radius = ⌊patch / 2⌋ no validation or test patch contains a training pixel, and no
    test patch a validation pixel."""
    from scipy.ndimage import binary_dilation

    if side not in GUARD_SIDES:
        raise ValueError(f"unknown guard side {side!r}; valid choices: {list(GUARD_SIDES)}")
    window = np.ones((2 * radius + 1, 2 * radius + 1), bool)
    out = assignment.copy()
    if side == "training":
        out[(out == VAL) & binary_dilation(out == TEST, structure=window)] = GUARD
        out[(out == TRAIN) & binary_dilation((out == VAL) | (out == TEST), structure=window)] = GUARD
        return out
    near_train = binary_dilation(out == TRAIN, structure=window)
    out[((out == VAL) | (out == TEST)) & near_train] = GUARD
    near_val = binary_dilation(out == VAL, structure=window)
    out[(out == TEST) & near_val] = GUARD
    return out


def tile_ids(shape: tuple[int, int], tile: int) -> np.ndarray:
    """(H, W) map of square tiles of side `tile`, numbered row by row (the last row and column of
    tiles are narrower when `tile` does not divide the image)."""
    h, w = shape
    per_row = -(-w // tile)
    rows, cols = np.indices(shape)
    return (rows // tile) * per_row + cols // tile


def deal_tiles(label_map: np.ndarray, tile: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) map of the fold (0 … folds−1) of every pixel's tile; −1 on tiles without labelled pixels.

    Class-aware greedy balance: tiles are taken rarest content first (a tile is as rare as the
    smallest class it holds; ties in a random order) and each goes to the fold where it least raises
    Σ_c (pixels of class c in the fold / pixels of class c)², plus the same term for all pixels
    (equal-sized folds), ties broken in a random fold order. A class spread over several tiles thus
    lands in as many folds as it can, so it keeps training pixels when any one fold is tested.
    """
    ids = tile_ids(label_map.shape, tile)
    classes = np.unique(label_map[label_map > 0])
    n_tiles = int(ids.max()) + 1
    # counts[t, j]: pixels of class classes[j] in tile t; the last column: all labelled pixels
    counts = np.zeros((n_tiles, len(classes) + 1))
    for j, c in enumerate(classes):
        counts[:, j] = np.bincount(ids[label_map == c], minlength=n_tiles)
    counts[:, -1] = counts[:, :-1].sum(1)
    totals = counts.sum(0)
    shuffled = rng.permutation(np.flatnonzero(counts[:, -1] > 0))
    rarity = np.array([totals[:-1][counts[t, :-1] > 0].min() for t in shuffled])
    load = np.zeros((folds, counts.shape[1]))
    fold_of_tile = np.full(n_tiles, -1)
    for t in shuffled[np.argsort(rarity, kind="stable")]:
        fold_order = rng.permutation(folds)
        cost = (((load[fold_order] + counts[t]) / totals) ** 2 - (load[fold_order] / totals) ** 2).sum(1)
        f = fold_order[int(np.argmin(cost))]
        load[f] += counts[t]
        fold_of_tile[t] = f
    return fold_of_tile[ids]


def _fold_split(label_map: np.ndarray, fold_map: np.ndarray, fold: int, folds: int, radius: int) -> np.ndarray:
    """The guarded split map of one fold of a dealt fold map (see blocked_fold_map)."""
    assignment = np.zeros(label_map.shape, np.int64)
    labelled = label_map > 0
    assignment[labelled] = TRAIN
    assignment[labelled & (fold_map == fold)] = TEST
    assignment[labelled & (fold_map == (fold + 1) % folds)] = VAL
    return guard_band(assignment, radius, side="training")


def _coverage_gaps(label_map: np.ndarray, fold_map: np.ndarray, folds: int, radius: int) -> tuple[int, int]:
    """(fold × class pairs tested but without training pixels, pairs without validation pixels)."""
    no_train = no_val = 0
    for f in range(folds):
        m = _fold_split(label_map, fold_map, f, folds, radius)
        tested = set(np.unique(label_map[m == TEST]).tolist())
        no_train += len(tested - set(np.unique(label_map[m == TRAIN]).tolist()))
        no_val += len(tested - set(np.unique(label_map[m == VAL]).tolist()))
    return no_train, no_val


DEAL_RADIUS = 5
"""The guard radius the tile deal is judged with (that of the default 11-pixel patch), whatever patch a run
uses: the folds then depend on the seed alone, so runs with different patch sizes (the recipe search's
candidates, the methods after it) are tested and validated on the same tiles."""


def assign_tiles_to_folds(label_map: np.ndarray, tile: int, folds: int, seed: int,
                          attempts: int = 8) -> np.ndarray:
    """The fold of every pixel's tile (−1: no labelled pixel in it): of `attempts` seeded deals
    (`deal_tiles`), the one whose guarded folds (at DEAL_RADIUS) leave the fewest (fold, class) pairs
    tested without training pixels, then without validation pixels (first deal on ties). The ground
    truth's layout and the seed alone decide it (as they do the spatial split's cut): no result is looked at."""
    rng = np.random.default_rng(seed)
    deals = [deal_tiles(label_map, tile, folds, rng) for _ in range(attempts)]
    gaps = [_coverage_gaps(label_map, d, folds, DEAL_RADIUS) for d in deals]
    return deals[min(range(attempts), key=lambda i: gaps[i])]


def blocked_fold_map(label_map: np.ndarray, tile: int, folds: int, fold: int, seed: int, radius: int) -> np.ndarray:
    """Fold `fold` of spatially blocked K-fold cross-validation: a (H, W) map of 0 (unlabelled), TRAIN,
    VAL, TEST and GUARD (Roberts et al. 2017, Ecography: blocks against spatial autocorrelation).

    The scene is cut into square tiles of side `tile`; the tiles holding labelled pixels are dealt to
    `folds` folds by `assign_tiles_to_folds` (seeded, class-aware). Fold F tests the labelled pixels
    of its tiles; validation is fold (F+1) mod K — tiles disjoint from test and, the folds being
    balanced per class, with about the class mix of test, which the validation-fitted thresholds are
    applied to; every fold validates once, as every fold tests once. Training is the other K−2 folds.
    The guard band (`guard_band`, side="training", radius ⌊patch/2⌋) takes the training pixels within
    `radius` of validation or test, and the validation pixels within `radius` of test: no test pixel is
    ever removed, so over the K folds every labelled pixel is tested exactly once. A class left without
    training (or test) pixels in a fold is reported by `missing_classes`, not refused.
    """
    check_blocked(label_map.shape, tile, folds, fold, radius)
    return _fold_split(label_map, assign_tiles_to_folds(label_map, tile, folds, seed), fold, folds, radius)


def check_blocked(shape: tuple[int, int], tile: int, folds: int, fold: int | None, radius: int) -> None:
    """Refuse a tile smaller than a patch or larger than the image, fewer than 2 folds (3 are needed:
    test, validation and training each take one), or a fold outside 0 … folds−1 — before any work."""
    patch = 2 * radius + 1
    if not patch <= tile <= min(shape):
        raise ValueError(f"tile={tile} must be between the patch size {patch} and the image side {min(shape)}")
    if folds < 3:
        raise ValueError(f"folds={folds} must be at least 3 (each fold: one fold tests, the next validates, "
                         f"the rest train)")
    if fold is not None and not 0 <= fold < folds:
        raise ValueError(f"fold={fold} must be in 0 … {folds - 1} (folds={folds})")


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
