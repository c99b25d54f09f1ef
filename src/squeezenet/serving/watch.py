"""Watching the weights file: replaced on disk, it is loaded aside and swapped in.

A poll of the file's size, modification time and inode every ``interval`` seconds, rather
than inotify (``watchfiles``): it sees a file replaced by rename (the safe way to update one,
which an inotify watch on the old inode misses) or rewritten in place, works on every file
system (network mounts included), and costs one ``stat`` a second. A change is acted on once
two polls in a row agree, so a file still being written is not read half-way; a file that
fails to load is not retried until it changes again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path


def signature(path: Path) -> tuple[int, int, int] | None:
    """(size, mtime in ns, inode), or None while the file is missing (mid-replacement)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


async def watch_file(path: Path, interval: float, on_change: Callable[[Path], Awaitable[None]]) -> None:
    """Call ``on_change(path)`` each time ``path`` has changed and then stayed the same for one poll."""
    seen = signature(path)
    candidate = None
    while True:
        await asyncio.sleep(interval)
        now = signature(path)
        if now is None or now == seen:
            candidate = None
            continue
        if now != candidate:  # changed since the last poll: wait until it holds still
            candidate = now
            continue
        seen, candidate = now, None
        await on_change(path)
