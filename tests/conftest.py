"""Fixtures shared by the test modules."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgt.data import BUILTIN, acquire

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
    (batch size 1, small models) up to 100x slower; results do not depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
