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


def test_a_link_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "v3.sqz"
    real.write_bytes(b"old")
    link = tmp_path / "model.sqz"
    link.symlink_to(real.name)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.sqz", "v3.sqz"]


def test_a_named_pipe_receives_the_bytes_and_stays_a_pipe(tmp_path):
    import os
    import stat
    import threading

    pipe = tmp_path / "out.pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()), daemon=True)
    reader.start()
    atomic_write_bytes(pipe, b"weights" * 1000)
    reader.join(10)
    assert received == [b"weights" * 1000]
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["out.pipe"]


def test_a_full_device_is_one_clear_error_and_stays_a_device():
    import os
    import stat
    from pathlib import Path

    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full on this system")
    with pytest.raises(WeightsError, match="cannot write /dev/full: No space left on device"):
        atomic_write_bytes(full, b"x" * 100_000, WeightsError)
    assert stat.S_ISCHR(os.stat(full).st_mode)
