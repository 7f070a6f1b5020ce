"""The spatial split of Indian Pines (cgt.data.splits.guarded_spatial_split) on the real ground truth.

Leakage is counted here without the splitter's code: for every pixel, the number of training (or
validation) pixels inside its patch window, by a summed-area table over the split map.
"""
from __future__ import annotations

import numpy as np
import pytest

from cgt.data.indian_pines import CLASSES, IndianPinesOptions, load_raw, split_map
from cgt.data.splits import GUARD, TEST, TRAIN, VAL, guarded_spatial_split

FRACTIONS = {"train": 0.2, "val": 0.1}
PATCH = 11
RADIUS = PATCH // 2


def pixels_in_window(mask: np.ndarray, radius: int) -> np.ndarray:
    """For every pixel, how many True pixels of `mask` lie in the (2r+1)×(2r+1) window centred on it
    (clipped at the image border), by a summed-area table."""
    h, w = mask.shape
    table = np.zeros((h + 1, w + 1), np.int64)
    table[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    rows, cols = np.arange(h), np.arange(w)
    r0, r1 = np.clip(rows - radius, 0, h), np.clip(rows + radius + 1, 0, h)
    c0, c1 = np.clip(cols - radius, 0, w), np.clip(cols + radius + 1, 0, w)
    return (table[r1][:, c1] - table[r0][:, c1] - table[r1][:, c0] + table[r0][:, c0])


@pytest.fixture(scope="module")
def gt(raw_dir) -> np.ndarray:
    return load_raw(raw_dir)[1]


@pytest.fixture(scope="module")
def maps(gt) -> dict[int, np.ndarray]:
    return {seed: guarded_spatial_split(gt, FRACTIONS, seed, RADIUS) for seed in (0, 1, 2)}


def test_window_count_is_right_on_a_hand_example():
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = mask[4, 4] = True
    counts = pixels_in_window(mask, 1)
    assert counts[0, 0] == 1 and counts[1, 1] == 1 and counts[2, 2] == 0 and counts[3, 3] == 1
    assert pixels_in_window(np.ones((5, 5), bool), 1)[2, 2] == 9 and pixels_in_window(np.ones((5, 5), bool), 1)[0, 0] == 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_validation_or_test_patch_sees_a_training_pixel(gt, maps, seed):
    m = maps[seed]
    near_train = pixels_in_window(m == TRAIN, RADIUS)
    near_val = pixels_in_window(m == VAL, RADIUS)
    assert near_train[(m == VAL) | (m == TEST)].max() == 0
    assert near_val[m == TEST].max() == 0
    # The random split, for contrast, leaks into every test patch but a handful.
    random = split_map(gt, IndianPinesOptions(), FRACTIONS["val"], seed)
    assert (pixels_in_window(random == TRAIN, RADIUS)[random == TEST] > 0).mean() > 0.99


def test_the_map_covers_exactly_the_labelled_pixels(gt, maps):
    for m in maps.values():
        assert ((m > 0) == (gt > 0)).all()
        assert set(np.unique(m).tolist()) <= {0, TRAIN, VAL, TEST, GUARD}


def test_every_class_trains_and_nearly_every_class_is_tested(gt, maps):
    """Every class is in train; all but the geometry-limited rare classes are in test and validation."""
    for m in maps.values():
        for code, allowed_missing in ((TRAIN, 0), (TEST, 1), (VAL, 4)):
            missing = [CLASSES[c - 1] for c in range(1, 17) if not ((gt == c) & (m == code)).any()]
            assert len(missing) <= allowed_missing, (code, missing)
        # the split keeps most labelled pixels for evaluation
        assert (m == TEST).sum() > 4000 and (m == VAL).sum() > 700 and (m == TRAIN).sum() > 1900


def test_each_split_seed_gives_its_own_split_and_the_same_again(gt, maps):
    assert not np.array_equal(maps[0], maps[1])
    np.testing.assert_array_equal(maps[0], guarded_spatial_split(gt, FRACTIONS, 0, RADIUS))


def test_fractions_are_checked_by_name():
    with pytest.raises(ValueError, match=r"train=1\.2 must be in \(0, 1\)"):
        guarded_spatial_split(np.ones((9, 9), int), {"train": 1.2, "val": 0.1}, 0, 1)
    with pytest.raises(ValueError, match=r"sum to 1\.000; they must sum to < 1"):
        guarded_spatial_split(np.ones((9, 9), int), {"train": 0.5, "val": 0.5}, 0, 1)


def test_split_command_writes_a_map_anyone_can_check(gt, tmp_path, capsys):
    """`python -m cgt split` writes the (145, 145) map of the split the training uses; checked here by
    the independent window count, not by the splitter."""
    from cgt import cli

    out = tmp_path / "split.npz"
    assert cli.main(["split", "--dataset", "indian_pines", "--split", "spatial", "--seed", "1", "--profile", "smoke",
                     "--out", str(out)]) == 0
    assert "guard" in capsys.readouterr().out
    with np.load(out) as f:
        m, codes = f["split_map"], f["codes"].tolist()
    assert m.shape == (145, 145) and codes == ["unlabelled", "train", "val", "test", "guard"]
    np.testing.assert_array_equal(m, guarded_spatial_split(gt, FRACTIONS, 1, RADIUS))
    assert pixels_in_window(m == TRAIN, RADIUS)[(m == VAL) | (m == TEST)].max() == 0
    assert cli.main(["split", "--dataset", "indian_pines", "--split", "random", "--profile", "smoke", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert (f["split_map"] == GUARD).sum() == 0 and ((f["split_map"] > 0) == (gt > 0)).all()
