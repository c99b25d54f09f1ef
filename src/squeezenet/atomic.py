"""Atomic file writes: a crash, SIGKILL or full disk never leaves a torn file where a good one was.

Every file the project writes (weights, .sqz, ONNX, checkpoints, downloads) goes through
``atomic_path``: the data lands in a temporary file in the same folder, which is fsynced
and renamed over the target, and the folder is fsynced. Either the old or the new file
survives, never half of one.

A link to a file is written through: the file it names is replaced, the link stays. A device,
pipe or socket (a named pipe another program reads, ``/dev/null``) must not be renamed over:
that replaces the device itself (as root, ``-o /dev/full`` once "succeeded" and left a regular
file in its place). The finished file is copied into it instead.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from squeezenet.errors import SqueezeNetError


def _fsync(path: str | Path, flags: int = os.O_RDONLY) -> None:
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync folders
    finally:
        os.close(fd)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | Path, error: type[SqueezeNetError] = SqueezeNetError) -> Iterator[Path]:
    """Yield a temporary path; once the block succeeds its file replaces ``path`` (or, for a
    device or pipe, is copied into it).

    If the block raises, the temporary file is removed and ``path`` is left untouched.
    OS errors become one-line ``error`` exceptions that name ``path``.
    """
    path = Path(path)
    write = _copied_into if _is_special(path) else _renamed_over
    with write(path, error) as tmp:
        yield tmp


def _is_special(path: Path) -> bool:
    """A device, pipe or socket, directly or through links."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextmanager
def _temporary(path: Path, folder: str | Path | None, error: type[SqueezeNetError]) -> Iterator[str]:
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        yield tmp
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def _renamed_over(path: Path, error: type[SqueezeNetError]) -> Iterator[Path]:
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    folder = target.parent if str(target.parent) else Path(".")
    with _temporary(path, folder, error) as tmp:
        yield Path(tmp)
        os.chmod(tmp, _default_mode())  # mkstemp's 0600 would make outputs private
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(folder)


@contextmanager
def _copied_into(path: Path, error: type[SqueezeNetError]) -> Iterator[Path]:
    with _temporary(path, None, error) as tmp:  # the system's temporary folder, not /dev
        yield Path(tmp)
        with open(tmp, "rb") as source, open(path, "wb") as sink:
            shutil.copyfileobj(source, sink)


def atomic_write_bytes(path: str | Path, data: bytes, error: type[SqueezeNetError] = SqueezeNetError) -> Path:
    with atomic_path(path, error) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, error: type[SqueezeNetError] = SqueezeNetError) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), error)
