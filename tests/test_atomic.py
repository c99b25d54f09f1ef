"""Atomic writes: a failed write leaves the old file intact and no temporary file behind."""

from __future__ import annotations

import pytest

from squeezenet.atomic import atomic_path, atomic_write_bytes
from squeezenet.errors import SqueezeNetError, WeightsError


def test_success_replaces_file(tmp_path):
    target = tmp_path / "w.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]


def test_failure_keeps_old_file(tmp_path):
    target = tmp_path / "w.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]


def test_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="cannot write"):
        atomic_write_bytes(tmp_path / "no" / "such" / "dir.bin", b"x", WeightsError)
    assert issubclass(WeightsError, SqueezeNetError)


def test_written_file_is_not_private(tmp_path):
    target = atomic_write_bytes(tmp_path / "w.bin", b"x")
    assert target.stat().st_mode & 0o044  # readable by others under the usual umask
