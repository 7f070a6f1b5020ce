"""cgt.augment: the batch augmentations keep shapes and labels, are seeded, and off is the identity."""
from __future__ import annotations

import pytest
import torch

from cgt.augment import augment_batch, check_augment, flip, rotate90
from cgt.train import TrainConfig

ALL_ON = {"flip": True, "rot90": True, "noise_std": 0.1}


def patches(n: int = 6, c: int = 3, p: int = 5) -> torch.Tensor:
    return torch.arange(n * c * p * p, dtype=torch.float32).reshape(n, c, p, p)


def test_off_is_the_identity():
    x = patches()
    for off in ({}, {"flip": False, "rot90": False, "noise_std": 0.0}):
        assert augment_batch(x, off, seed=0, epoch=0, step=0) is x


def test_shapes_and_values_are_kept_by_the_symmetries():
    """Flips and rotations move values within each patch and channel, never between samples or channels."""
    x = patches()
    out = augment_batch(x, {"flip": True, "rot90": True}, seed=3, epoch=1, step=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values)
    # the centre pixel (whose label the patch carries) stays the centre pixel
    assert torch.equal(out[..., 2, 2], x[..., 2, 2])


def test_labels_travel_with_their_samples_in_the_training_loop():
    """The hook augments inputs only: a labels tensor indexed beside it is untouched by construction,
    so check the batch order is preserved (sample i stays at row i)."""
    x = patches()
    out = augment_batch(x, ALL_ON, seed=0, epoch=0, step=0)
    # each row's sorted values stay within 0.5 of its own original (noise σ = 0.1), far from any other row
    for i in range(len(x)):
        dist = (out[i].flatten().sort().values - x.flatten(1).sort(-1).values).abs().amax(-1)
        assert int(dist.argmin()) == i


def test_same_key_same_batch_other_key_other_batch():
    x = patches(32)
    a = augment_batch(x, ALL_ON, seed=1, epoch=4, step=9)
    b = augment_batch(x, ALL_ON, seed=1, epoch=4, step=9)
    assert torch.equal(a, b)
    for other in ({"seed": 2, "epoch": 4, "step": 9}, {"seed": 1, "epoch": 5, "step": 9},
                  {"seed": 1, "epoch": 4, "step": 10}):
        assert not torch.equal(a, augment_batch(x, ALL_ON, **other))


def test_four_quarter_turns_are_the_identity_and_one_is_rot90():
    x = patches()
    one = torch.ones(len(x), dtype=torch.long)
    y = x
    for _ in range(4):
        y = rotate90(y, one)
    assert torch.equal(y, x)
    assert torch.equal(rotate90(x, one)[0, 0], torch.rot90(x[0, 0]))
    assert torch.equal(rotate90(x, torch.full((len(x),), 4)), x)


def test_flip_mirrors_only_the_masked_samples():
    x = patches(2)
    out = flip(x, torch.tensor([True, False]))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])


def test_noise_has_the_declared_sigma():
    x = torch.zeros(64, 4, 7, 7)
    noise = augment_batch(x, {"noise_std": 0.5}, seed=0, epoch=0, step=0)
    assert abs(float(noise.std()) - 0.5) < 0.02 and abs(float(noise.mean())) < 0.02


def test_channels_last_layout_is_kept():
    x = patches().contiguous(memory_format=torch.channels_last)
    assert augment_batch(x, ALL_ON, 0, 0, 0).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("bad, word", [({"mixup": True}, "mixup"), ({"flip": 1}, "flip"),
                                       ({"noise_std": -0.1}, "noise_std"), ({"noise_std": "x"}, "noise_std"),
                                       ("flip", "dict")])
def test_bad_switches_are_refused_naming_them(bad, word):
    with pytest.raises(ValueError, match=word):
        check_augment(bad)
    with pytest.raises(ValueError, match=word):
        TrainConfig(augment=bad).validate()


def test_spatial_switches_need_square_patches():
    with pytest.raises(ValueError, match="square"):
        augment_batch(torch.zeros(4, 10), {"flip": True}, 0, 0, 0)
    assert augment_batch(torch.zeros(4, 10), {"noise_std": 0.1}, 0, 0, 0).shape == (4, 10)


# ---------------------------------------------------------------- in the training loop
@pytest.fixture(scope="module")
def ip_data(tmp_path_factory):
    from pathlib import Path

    from cgt.data import DataConfig, load
    root = Path(__file__).resolve().parents[1]
    return load(DataConfig(dataset="indian_pines", data_dir=str(root / "data" / "raw"),
                           cache_dir=str(tmp_path_factory.mktemp("prepared")), max_train=200, max_eval=100,
                           options={"pca_components": 6, "patch_size": 5}))


@pytest.mark.usefixtures("one_thread")
def test_augmented_training_is_deterministic_resumable_and_not_a_no_op(ip_data, tmp_path, monkeypatch):
    import cgt.train as train
    from cgt.train import train_run
    cfg = TrainConfig(epochs=2, batch_size=64, device="cpu", augment=ALL_ON)
    a = train_run(ip_data, "joint_uniform", cfg, runs_root=tmp_path / "a", progress=False)
    plain = train_run(ip_data, "joint_uniform", TrainConfig(epochs=2, batch_size=64, device="cpu"),
                      runs_root=tmp_path / "a", progress=False)
    assert plain.run_dir != a.run_dir
    assert not torch.equal(plain.logits["val"], a.logits["val"])
    # a run killed after its first epoch resumes from the checkpoint and ends with the same weights
    real_epoch = train.train_epoch

    def dies_in_second_epoch(model, state, *args):
        if state.epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(model, state, *args)
    monkeypatch.setattr(train, "train_epoch", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_run(ip_data, "joint_uniform", cfg, runs_root=tmp_path / "b", progress=False)
    assert (tmp_path / "b" / a.run_dir.relative_to(tmp_path / "a") / "checkpoint.pt").exists()  # epoch 1 saved
    monkeypatch.setattr(train, "train_epoch", real_epoch)
    b = train_run(ip_data, "joint_uniform", cfg, runs_root=tmp_path / "b", progress=False)
    assert torch.equal(a.logits["val"], b.logits["val"]) and torch.equal(a.logits["test"], b.logits["test"])
