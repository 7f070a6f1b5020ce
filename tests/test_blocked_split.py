"""The blocked K-fold protocol of Indian Pines (cgt.data.splits.blocked_fold_map) on the real ground truth.

Leakage is counted here without the splitter's code: for every pixel, the number of training (or
validation) pixels inside its patch window, by adding the mask shifted to every offset of the window
(plain array shifts, no dilation, no summed-area table).
"""
from __future__ import annotations

import numpy as np
import pytest

from cgt.data.indian_pines import CLASSES, IndianPinesOptions, fold_maps, load_raw
from cgt.data.splits import GUARD, TEST, TRAIN, VAL, blocked_fold_map, deal_tiles, guard_band, tile_ids
from cgt.reporting.dataviz import PARTS, blocked_folds_figure, fold_coverage_summary, fold_coverage_table

OPTS = IndianPinesOptions(split="blocked", fold=0)
RADIUS = OPTS.patch_size // 2


def pixels_in_window(mask: np.ndarray, radius: int) -> np.ndarray:
    """For every pixel, how many True pixels of `mask` lie within Chebyshev distance `radius` of it
    (the patch window, clipped at the border): the mask shifted by every offset, added up."""
    h, w = mask.shape
    padded = np.zeros((h + 2 * radius, w + 2 * radius), np.int64)
    padded[radius:radius + h, radius:radius + w] = mask
    out = np.zeros((h, w), np.int64)
    for dr in range(2 * radius + 1):
        for dc in range(2 * radius + 1):
            out += padded[dr:dr + h, dc:dc + w]
    return out


@pytest.fixture(scope="module")
def gt(raw_dir) -> np.ndarray:
    return load_raw(raw_dir)[1]


@pytest.fixture(scope="module")
def maps(gt) -> dict[int, np.ndarray]:
    return fold_maps(gt, OPTS, 0.1, seed=0)


def test_window_count_is_right_on_a_hand_example():
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = mask[4, 4] = True
    counts = pixels_in_window(mask, 1)
    assert counts[0, 0] == 1 and counts[1, 1] == 1 and counts[2, 2] == 0 and counts[3, 3] == 1
    assert pixels_in_window(np.ones((5, 5), bool), 1)[2, 2] == 9 and pixels_in_window(np.ones((5, 5), bool), 1)[0, 0] == 4


def test_training_side_guard_band_on_a_hand_example():
    """Radius 1. Training side: the validation pixel next to test goes, and then the training pixel
    next to it stays (its neighbour is a guard pixel now). Evaluation side: the evaluation pixels go."""
    row = np.array([[TRAIN, TRAIN, TRAIN, VAL, TEST]])
    np.testing.assert_array_equal(guard_band(row, 1, side="training"), [[TRAIN, TRAIN, TRAIN, GUARD, TEST]])
    row = np.array([[TRAIN, TRAIN, VAL, VAL, 0, TEST]])  # the test pixel is 2 away from validation
    np.testing.assert_array_equal(guard_band(row, 1, side="training"), [[TRAIN, GUARD, VAL, VAL, 0, TEST]])
    np.testing.assert_array_equal(guard_band(row, 1), [[TRAIN, TRAIN, GUARD, VAL, 0, TEST]])
    with pytest.raises(ValueError, match="unknown guard side 'both'; valid choices"):
        guard_band(row, 1, side="both")


def test_tiles_are_numbered_row_by_row_with_narrow_last_tiles():
    ids = tile_ids((5, 5), 2)
    assert ids[0].tolist() == [0, 0, 1, 1, 2] and ids[:, 0].tolist() == [0, 0, 3, 3, 6] and ids.max() == 8


def test_a_class_in_several_tiles_is_dealt_to_several_folds():
    """Four 2×2 tiles, each holding one class-1 pixel and one class-2 pixel: 3 folds must each get at
    least one tile of each class, so every fold that is tested leaves both classes for training."""
    label_map = np.zeros((4, 4), int)
    label_map[0::2, 0::2] = 1
    label_map[1::2, 1::2] = 2
    for seed in range(5):
        folds = deal_tiles(label_map, 2, 3, np.random.default_rng(seed))
        assert sorted(np.unique(folds[label_map == 1]).tolist()) == [0, 1, 2]


@pytest.mark.parametrize("fold", range(OPTS.folds))
def test_no_validation_or_test_patch_sees_a_training_pixel(maps, fold):
    m = maps[fold]
    assert pixels_in_window(m == TRAIN, RADIUS)[(m == VAL) | (m == TEST)].max() == 0
    assert pixels_in_window(m == VAL, RADIUS)[m == TEST].max() == 0
    assert (m == TRAIN).sum() > 2500 and (m == TEST).sum() > 1500 and (m == VAL).sum() > 1000


def test_every_labelled_pixel_is_tested_exactly_once_over_the_folds(gt, maps):
    """The guard takes training and validation pixels only: each labelled pixel is tested in exactly
    one fold, and each fold's map covers exactly the labelled pixels."""
    tested = sum((m == TEST).astype(int) for m in maps.values())
    assert (tested[gt > 0] == 1).all() and (tested[gt == 0] == 0).all()
    for m in maps.values():
        assert ((m > 0) == (gt > 0)).all() and set(np.unique(m).tolist()) <= {0, TRAIN, VAL, TEST, GUARD}
    # validation is the next fold's test tiles, less its guard pixels
    for f, m in maps.items():
        assert ((m == VAL) <= (maps[(f + 1) % len(maps)] == TEST)).all()


def test_the_split_is_seeded(gt, maps):
    np.testing.assert_array_equal(maps[2], blocked_fold_map(gt, OPTS.tile, OPTS.folds, 2, 0, RADIUS))
    assert not np.array_equal(maps[2], blocked_fold_map(gt, OPTS.tile, OPTS.folds, 2, 1, RADIUS))


def test_coverage_table_sums_and_reports_classes_it_cannot_train(gt, maps):
    table = fold_coverage_table(gt, maps, CLASSES)
    assert table.shape == (len(CLASSES) * OPTS.folds, len(PARTS) + 1)
    per_class = np.bincount(gt.ravel(), minlength=17)[1:]
    for f in maps:
        np.testing.assert_array_equal(table.xs(f, level="fold")[list(PARTS)].sum(axis=1).to_numpy(), per_class)
        np.testing.assert_array_equal(table.xs(f, level="fold")[list(PARTS)].sum().to_numpy(),
                                      [(maps[f] == code).sum() for code in (TRAIN, VAL, TEST, GUARD)])
    # every class is tested in some fold, and the class-aware deal leaves few (fold, class) pairs untrained
    assert (table.groupby(level="class")["test"].sum() > 0).all()
    assert (table["status"] == "test-only").sum() <= 8
    assert ((table["status"] == "test-only") == ((table["train"] == 0) & (table["test"] > 0))).all()
    summary = fold_coverage_summary(table)
    assert summary["test"].sum() == (gt > 0).sum() and list(summary.index) == list(maps)


def test_the_fold_figure_names_dataset_protocol_and_classes(gt, maps):
    fig = blocked_folds_figure(gt, maps, CLASSES)
    assert "Indian Pines, blocked protocol" in fig._suptitle.get_text()
    assert "1: Corn-notill" in [t.get_text() for t in fig.legends[0].get_texts()]


@pytest.mark.parametrize("options, message", [
    (dict(tile=9), r"tile=9 must be between the patch size 11 and the image side 145"),
    (dict(tile=146), r"tile=146 must be between the patch size 11 and the image side 145"),
    (dict(folds=2), r"folds=2 must be at least 3"),
    (dict(fold=5), r"fold=5 must be in 0 … 4 \(folds=5\)"),
    (dict(fold=-1), r"fold=-1 must be in 0 … 4"),
    (dict(fold=None), r"split='blocked' needs a fold in 0 … 4"),
    (dict(split="random", fold=1), r"fold=1: split='random' has no folds"),
])
def test_bad_protocol_options_are_refused_by_name(options, message):
    from cgt.data import DataConfig

    with pytest.raises(ValueError, match=message):
        IndianPinesOptions(**({"split": "blocked", "fold": 0} | options)).validate(DataConfig())


@pytest.mark.parametrize("argv, message", [
    (["split", "--split", "random", "--fold", "1"], "--fold 1: --split random has no folds"),
    (["split", "--split", "spatial", "--tile", "20"], "--tile/--folds: --split spatial has no folds"),
    (["split", "--split", "blocked", "--fold", "7"], "fold=7 must be in 0 … 4"),
    (["split", "--split", "blocked", "--tile", "5"], "tile=5 must be between the patch size 11"),
    (["train", "--dataset", "indian_pines", "--split", "spatial", "--fold", "0", "1"],
     "--fold 0 1: --split spatial has no folds"),
    (["train", "--dataset", "indian_pines", "--split", "blocked", "--fold", "5", "--profile", "smoke"],
     "fold=5 must be in 0 … 4"),
    (["train", "--dataset", "fashion_mnist", "--split", "blocked", "--profile", "smoke"],
     "split='blocked' needs a dataset with a spatial layout"),
])
def test_cli_refuses_bad_folds_before_any_work(argv, message, tmp_path, capsys):
    from cgt import cli

    out = ["--out", str(tmp_path / "m.npz")] if argv[0] == "split" else []
    assert cli.main([*argv, *out]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "m.npz").exists()


def test_split_command_writes_the_fold_map_anyone_can_check(gt, maps, tmp_path, capsys):
    from cgt import cli

    out = tmp_path / "fold3.npz"
    assert cli.main(["split", "--dataset", "indian_pines", "--split", "blocked", "--fold", "3", "--seed", "0",
                     "--profile", "smoke", "--out", str(out)]) == 0
    assert "fold 3 of 5" in capsys.readouterr().out
    with np.load(out) as f:
        m = f["split_map"]
        assert (int(f["fold"]), int(f["folds"]), int(f["radius"]), str(f["split"])) == (3, 5, RADIUS, "blocked")
    np.testing.assert_array_equal(m, maps[3])
    assert pixels_in_window(m == TRAIN, RADIUS)[(m == VAL) | (m == TEST)].max() == 0


def test_protocol_folds_come_from_the_profile_plan_and_are_checked():
    from cgt.experiments.train_evaluate import protocol_folds

    assert protocol_folds("indian_pines", "paper", "blocked") == [0, 1, 2, 3, 4]
    assert protocol_folds("indian_pines", "smoke", "blocked") == [0]  # the smoke plan runs fold 0 only
    assert protocol_folds("indian_pines", "smoke", "blocked", [4, 2]) == [4, 2]
    assert protocol_folds("indian_pines", "paper", "spatial") == [None]
    with pytest.raises(ValueError, match=r"folds=\[1\]: split 'random' has no folds"):
        protocol_folds("indian_pines", "paper", "random", [1])
    with pytest.raises(ValueError, match=r"fold=5 must be in 0 … 4"):
        protocol_folds("indian_pines", "paper", "blocked", [0, 5])


def test_the_folds_do_not_depend_on_the_patch_size(gt):
    """The recipe search compares patch sizes: every candidate must be tested and validated on the same
    tiles, so only the guard band (the patch radius) may differ between patch sizes: every fold tests the
    same pixels (the guard never takes a test pixel) at every patch size."""
    for fold in range(OPTS.folds):
        tested = [blocked_fold_map(gt, OPTS.tile, OPTS.folds, fold, seed=0, radius=patch // 2) == TEST
                  for patch in (3, 5, 7, 11)]
        assert all(np.array_equal(tested[0], t) for t in tested[1:]), fold
