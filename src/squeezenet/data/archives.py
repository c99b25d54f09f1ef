"""Class-folder trees inside tar archives, read in place (never extracted to disk).

The archive is indexed once with ``tarfile``: image members ``[<wrapper>/][<split>/]<class>/<file>``
become samples. An uncompressed ``.tar`` is read by offset: each DataLoader worker opens
its own file handle (lazily, per process) and seeks to the member's data. A compressed
archive (gzip, bzip2, xz) cannot be seeked cheaply, so its image bytes are read once, in
one stream pass, into a single in-memory buffer that forked workers share copy-on-write
(CIFAR-10 as JPEG: 19 MB packed, about 60 MB of image bytes).
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path, PurePosixPath

from PIL import Image

from squeezenet.data.images import IMAGE_EXTENSIONS, decode_image
from squeezenet.data.labeled import VAL_SPLIT_NAMES, LabeledImages
from squeezenet.errors import DataError, ImageError

MAX_IN_MEMORY_BYTES = 4 << 30


def decode_image_bytes(data: bytes, name: str, mode: str = "RGB") -> Image.Image:
    """``load_image`` for bytes: decode, EXIF-orient, convert; ``ImageError`` when unreadable."""
    return decode_image(io.BytesIO(data), name, mode)


class ArchiveReader:
    """(offset, size) -> PIL image, from a file (per-process handle) or a shared buffer."""

    def __init__(self, path: Path, buffer: bytes | None = None) -> None:
        self.path = Path(path)
        self.buffer = buffer
        self._handle = None
        self._pid = None

    def __getstate__(self):  # spawn-started workers get a fresh handle
        return {**self.__dict__, "_handle": None, "_pid": None}

    def read_bytes(self, offset: int, size: int) -> bytes:
        if self.buffer is not None:
            return self.buffer[offset : offset + size]
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self.path, "rb")  # noqa: SIM115  (kept open for the worker's life)
            self._pid = os.getpid()
        self._handle.seek(offset)
        data = self._handle.read(size)
        if len(data) != size:
            raise ImageError(f"{self.path}: archive is truncated")
        return data

    def __call__(self, key, mode: str):
        offset, size, name = key
        return decode_image_bytes(self.read_bytes(offset, size), f"{self.path.name}:{name}", mode)


def _is_image_member(name: str) -> bool:
    p = PurePosixPath(name)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


@lru_cache(maxsize=4)
def index_archive(path: Path, mtime_ns: int) -> tuple[list[tuple[str, int, int]], bytes | None]:
    """[(member name, offset, size)] of the image members, plus the buffer for compressed archives."""
    del mtime_ns  # part of the cache key only
    entries: list[tuple[str, int, int]] = []
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        compressed = magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic[:6] == b"\xfd7zXZ\x00"
        if not compressed:
            with tarfile.open(path, "r:") as tf:
                for m in tf:
                    if m.isfile() and _is_image_member(m.name):
                        entries.append((m.name, m.offset_data, m.size))
            return entries, None
        chunks: list[bytes] = []
        total = 0
        with tarfile.open(path, "r|*") as tf:
            for m in tf:
                if not (m.isfile() and _is_image_member(m.name)):
                    continue
                f = tf.extractfile(m)
                data = f.read() if f is not None else b""
                entries.append((m.name, total, len(data)))
                chunks.append(data)
                total += len(data)
                if total > MAX_IN_MEMORY_BYTES:
                    raise DataError(
                        f"{path}: compressed archive holds over {MAX_IN_MEMORY_BYTES >> 30} GiB of images; "
                        "decompress it to a plain .tar (read in place) first"
                    )
        return entries, b"".join(chunks)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable tar archive ({exc})") from None


def archive_splits(path: str | Path, classes: Sequence[str] | None = None) -> dict[str, LabeledImages]:
    """{"train", "val"} (or {"train"} / {"all"}) datasets of the class-folder tree in ``path``."""
    path = Path(path)
    entries, buffer = index_archive(path.resolve(), path.stat().st_mtime_ns)
    if not entries:
        raise DataError(f"{path}: archive holds no image files")
    groups: dict[str, list[tuple[str, str, int, int]]] = {}
    for name, offset, size in entries:
        parts = PurePosixPath(name).parts
        if len(parts) < 2:
            continue  # a loose image at the top has no class
        split = parts[-3].lower() if len(parts) >= 3 else ""
        groups.setdefault(split, []).append((parts[-2], name, offset, size))
    if not groups:
        raise DataError(f"{path}: expected <class>/<image> members, found only loose files")
    reader = ArchiveReader(path, buffer)

    def build(members, cls, label, split="") -> LabeledImages:
        order = tuple(cls) if cls is not None else tuple(sorted({c for c, *_ in members}))
        lookup = {c: i for i, c in enumerate(order)}
        unknown = sorted({c for c, *_ in members if c not in lookup})
        if unknown:
            raise DataError(f"{path}: class folder(s) {unknown[:3]} of {label} are not among the training classes")
        members = sorted(members, key=lambda m: m[1])
        items = [((offset, size, name), lookup[c]) for c, name, offset, size in members]
        names = [f"{path.name}:{n}" for _, n, *_ in members]
        return LabeledImages(order, items, reader, names, description=label, split=split)

    if "train" in groups:
        splits = {"train": build(groups["train"], classes, f"{path}:train", "train")}
        for val_name in VAL_SPLIT_NAMES:
            if val_name in groups:
                splits["val"] = build(groups[val_name], splits["train"].classes, f"{path}:{val_name}", val_name)
                break
        return splits
    if len(groups) > 1:
        raise DataError(f"{path}: several top folders {sorted(groups)[:4]} but none is train/")
    return {"all": build(next(iter(groups.values())), classes, str(path))}
