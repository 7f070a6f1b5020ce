"""Atomic writes (cgt.fileio): a write that fails part-way — the disk full, the process killed — leaves the
previous file exactly as it was and no temporary file behind."""
from __future__ import annotations

import errno
import json

import pytest

from cgt import fileio


def disk_full(*_args, **_kw):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_that_fails_half_way_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "metrics.json"
    fileio.write_json_atomic(target, {"accuracy": 0.9})
    before = target.read_bytes()
    with pytest.raises(OSError) as info:
        with fileio.atomic_path(target) as tmp:
            tmp.write_bytes(b'{"accur')  # the first bytes made it to disk, then the disk was full
            disk_full()
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == before and json.loads(before) == {"accuracy": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # the temporary file is gone


def test_write_json_atomic_on_a_full_disk_raises_and_keeps_the_old_file(tmp_path, monkeypatch):
    """The same through the public writer, the failure injected where the bytes are written."""
    target = tmp_path / "steps.json"
    fileio.write_json_atomic(target, {"01": "done"})
    monkeypatch.setattr(fileio.Path, "write_bytes", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        fileio.write_json_atomic(target, {"01": "done", "02": "done"})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"01": "done"}
    assert [p.name for p in tmp_path.iterdir()] == ["steps.json"]
