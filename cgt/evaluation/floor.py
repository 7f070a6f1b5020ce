"""The classic floor: what per-pixel spectra alone reach, on exactly the pixels a network trains and is
tested on. A network below it has not learned anything a patch adds.

Two models of scikit-learn on the raw spectra (every band, standardised on the training pixels):
an RBF support-vector machine, C and γ chosen on validation from a small declared grid, and a random
forest. Scores: overall accuracy (OA), average accuracy (AA, mean recall), Cohen's κ and macro-F1, the
averages over the classes present in that test split (a class absent from test has no recall).

    rows = floor_rows(cube, pixels, labels, protocol="blocked", fold=0, seed=0)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import cohen_kappa_score, f1_score, recall_score

FLOOR_COLUMNS = ["protocol", "fold", "seed", "model", "oa", "aa", "kappa", "macro_f1", "val_oa", "selected"]
"""One row per (protocol, fold, seed, model); `val_oa` and `selected` say what validation chose."""


@dataclass(frozen=True)
class FloorConfig:
    """The floor's models and the grid validation chooses from (declared here, before any run)."""

    svm_c: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)
    """RBF SVM: the C values tried."""
    svm_gamma: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    """RBF SVM: the γ values tried (on standardised bands, so 1/bands = 0.005 is sklearn's 'scale')."""
    forest_trees: int = 200
    """Random forest: number of trees (sqrt(bands) features per split, sklearn's default; no tuning)."""


def pixel_spectra(cube: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """(N, bands) float64 spectra of the flat pixel indices `pixels` of an (H, W, bands) cube."""
    return cube.reshape(-1, cube.shape[-1])[pixels].astype(np.float64)


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """OA, AA, κ and macro-F1; AA and macro-F1 average over the classes present in `y_true`."""
    present = np.unique(y_true)
    return {"oa": float(np.mean(y_true == y_pred)),
            "aa": float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
            "kappa": float(cohen_kappa_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))}


def fit_floor(x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], seed: int,
              cfg: FloorConfig = FloorConfig()) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """model → (validation predictions, test predictions, what was selected), from spectra `x` and labels
    `y` per split ("train", "val", "test"). The SVM keeps the (C, γ) of the highest validation accuracy
    (the first in grid order on ties)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    scaler = StandardScaler().fit(x["train"])
    z = {s: scaler.transform(v) for s, v in x.items()}
    best = None
    for c in cfg.svm_c:
        for gamma in cfg.svm_gamma:
            svm = SVC(C=c, gamma=gamma, kernel="rbf").fit(z["train"], y["train"])
            val_acc = float(np.mean(svm.predict(z["val"]) == y["val"]))
            if best is None or val_acc > best[0]:
                best = (val_acc, c, gamma, svm)
    _, c, gamma, svm = best
    forest = RandomForestClassifier(n_estimators=cfg.forest_trees, random_state=seed, n_jobs=1).fit(z["train"], y["train"])
    return {"svm_rbf": (svm.predict(z["val"]), svm.predict(z["test"]), f"C={c:g}, gamma={gamma:g}"),
            "random_forest": (forest.predict(z["val"]), forest.predict(z["test"]), f"{cfg.forest_trees} trees")}


def floor_rows(cube: np.ndarray, pixels: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], protocol: str,
               fold: int | None, seed: int, cfg: FloorConfig = FloorConfig()) -> list[dict]:
    """The floor's rows (FLOOR_COLUMNS) for one split of a scene: `pixels` are the flat indices into the
    (H, W, bands) `cube` of each split's pixels, `labels` their classes (the arrays a network of the same
    protocol, fold and seed trains and is tested on)."""
    missing = sorted({"train", "val", "test"} - set(pixels))
    if missing:
        raise ValueError(f"pixels lack the split(s) {missing}; the floor needs train, val and test")
    x = {s: pixel_spectra(cube, pixels[s]) for s in ("train", "val", "test")}
    y = {s: np.asarray(labels[s]) for s in ("train", "val", "test")}
    rows = []
    for model, (val_pred, test_pred, selected) in fit_floor(x, y, seed, cfg).items():
        rows.append({"protocol": protocol, "fold": fold, "seed": seed, "model": model, **scores(y["test"], test_pred),
                     "val_oa": float(np.mean(val_pred == y["val"])), "selected": selected})
    return rows
