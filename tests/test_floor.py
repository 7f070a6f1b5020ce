"""The classic floor (cgt.evaluation.floor) against a fit checked by hand on a tiny synthetic scene."""
from __future__ import annotations

import numpy as np
import pytest

from cgt.evaluation.floor import FLOOR_COLUMNS, FloorConfig, floor_rows, pixel_spectra, scores


def tiny_scene():
    """A 2×6 scene of one band, read row by row: training pixels at −2, −1 (class 0) and 1, 2 (class 1),
    validation at ∓1.5, test at −3, −0.5 (class 0), 0.5 (class 1) and 3 (class 0, deliberately on the
    class-1 side). The training set is symmetric about 0 with balanced classes, so any RBF SVM's
    decision function is odd in x and predicts sign(x): test predictions 0, 0, 1, 1."""
    values = np.array([[-2, -1, 1, 2, -1.5, 1.5], [-3, -0.5, 0.5, 3, 0, 0]], dtype=np.float64)
    cube = values[:, :, None] * 10 + 100  # sensor units: standardisation on the training pixels undoes it
    pixels = {"train": np.array([0, 1, 2, 3]), "val": np.array([4, 5]), "test": np.array([6, 7, 8, 9])}
    labels = {"train": np.array([0, 0, 1, 1]), "val": np.array([0, 1]), "test": np.array([0, 0, 1, 0])}
    return cube, pixels, labels


def test_scores_by_hand():
    """y = 0 0 1 0, prediction 0 0 1 1: OA 3/4; recalls 2/3 and 1 → AA 5/6; F1 0.8 and 2/3 → 11/15;
    κ = (0.75 − 0.5) / (1 − 0.5) = 0.5 (chance agreement 3/4·1/2 + 1/4·1/2)."""
    got = scores(np.array([0, 0, 1, 0]), np.array([0, 0, 1, 1]))
    assert got == pytest.approx({"oa": 0.75, "aa": 5 / 6, "kappa": 0.5, "macro_f1": 11 / 15})


def test_macro_scores_average_over_the_classes_present_in_test():
    """A class predicted but absent from test (2) does not count in AA or macro-F1."""
    got = scores(np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1]))
    assert got["aa"] == pytest.approx((0.5 + 1) / 2) and got["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)


def test_pixel_spectra_reads_flat_indices_row_by_row():
    cube, pixels, _ = tiny_scene()
    np.testing.assert_array_equal(pixel_spectra(cube, pixels["val"])[:, 0], [85.0, 115.0])


def test_floor_reproduces_the_hand_checked_svm_fit():
    cube, pixels, labels = tiny_scene()
    rows = floor_rows(cube, pixels, labels, protocol="blocked", fold=2, seed=0,
                      cfg=FloorConfig(svm_c=(1.0, 10.0), svm_gamma=(0.1, 1.0), forest_trees=5))
    assert [list(r) for r in rows] == [FLOOR_COLUMNS, FLOOR_COLUMNS]
    svm = rows[0]
    assert (svm["protocol"], svm["fold"], svm["seed"], svm["model"]) == ("blocked", 2, 0, "svm_rbf")
    assert svm["val_oa"] == 1.0 and svm["selected"] == "C=1, gamma=0.1"  # every pair is perfect: the first wins
    assert (svm["oa"], svm["aa"], svm["kappa"], svm["macro_f1"]) == pytest.approx((0.75, 5 / 6, 0.5, 11 / 15))
    assert rows[1]["model"] == "random_forest" and rows[1]["selected"] == "5 trees"


def test_the_floor_needs_all_three_splits():
    cube, pixels, labels = tiny_scene()
    del pixels["val"]
    with pytest.raises(ValueError, match=r"pixels lack the split\(s\) \['val'\]"):
        floor_rows(cube, pixels, labels, "random", None, 0)


def test_floor_table_of_the_smoke_profile_has_every_protocol_and_a_sidecar(tmp_path, monkeypatch, raw_dir):
    """One row per model for each protocol × fold × seed the smoke profile runs, folds as integers."""
    import json

    import pandas as pd

    from cgt.experiments.floors import floor_summary, write_floor_table

    monkeypatch.setenv("CGT_RUNS_DIR", str(tmp_path))
    cfg = FloorConfig(svm_c=(10.0,), svm_gamma=(0.01,), forest_trees=10)
    table, path = write_floor_table("smoke", cfg=cfg, workers=2)
    assert path.name == "table_indian_pines_floor.csv" and path.is_relative_to(tmp_path)
    written = pd.read_csv(path)
    assert list(written.columns) == FLOOR_COLUMNS and len(written) == 6
    assert written[["protocol", "model"]].drop_duplicates().shape[0] == 6
    assert written.loc[written["protocol"] == "blocked", "fold"].tolist() == [0, 0]
    assert written.loc[written["protocol"] != "blocked", "fold"].isna().all()
    assert (written[["oa", "aa", "kappa", "macro_f1"]].abs() <= 1).all().all()
    sidecar = json.loads(path.with_name(path.name + ".provenance.json").read_text())
    assert sidecar["params"]["floor"]["svm_c"] == [10.0] and len(sidecar["data_checksums"]) == 3
    assert floor_summary(table)["n"].tolist() == [1] * 6
