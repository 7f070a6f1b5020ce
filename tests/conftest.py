"""Fixtures shared by the test modules."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgt.data import BUILTIN, DataConfig, acquire, load
from cgt.train import TrainConfig, train_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def raw_dir() -> Path:
    """The project's raw data folder, with every dataset present and verified (fetched if missing)."""
    data_dir = REPO / "data" / "raw"
    for dataset in BUILTIN:
        acquire(dataset, data_dir)  # raises DataVerificationError if the real data cannot be had
    return data_dir


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a busy 2-core machine two spinning threads make a loop of tiny ops
    (batch size 1, small models) up to 100x slower. Training results do depend on the thread count at
    float-rounding level (reductions split differently), so tests that compare trained tensors bit for
    bit pin it here; the assertions that use this fixture hold at any thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fashion_mnist_run(raw_dir, tmp_path_factory):
    """A Fashion-MNIST early-exit CNN trained for 2 epochs on 2,000 real images (joint_uniform),
    shared by the inference and deployment tests: (the finished run, its prepared data)."""
    data = load(DataConfig(dataset="fashion_mnist", data_dir=str(raw_dir),
                           cache_dir=str(tmp_path_factory.mktemp("prepared")), max_train=2000, max_eval=300))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the `one_thread` tests that use it: the same weights whoever asks first
    try:
        run = train_run(data, "joint_uniform", TrainConfig(epochs=2, batch_size=64, device="cpu"),
                        runs_root=tmp_path_factory.mktemp("runs"), progress=False)
    finally:
        torch.set_num_threads(before)
    return run, data
