"""Bounds-checked reading: every length and count is checked against what is left before it is
taken, so that a truncated or corrupted file raises ``SqzError`` instead of allocating or reading
past the end."""

from __future__ import annotations

import struct
import zlib

import numpy as np


class SqzError(ValueError):
    """A .sqz file (or an input to the encoder) is truncated, corrupted or out of bounds."""


def check(cond: bool, message: str) -> None:
    if not cond:
        raise SqzError(message)


class Reader:
    """Bounds-checked little-endian reader over a bytes object."""

    def __init__(self, data: bytes | memoryview, what: str = "file"):
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or n > self.left:
            raise SqzError(f"truncated {self.what}: needs {n} bytes at offset {self.pos}, {self.left} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))

    def u8(self) -> int:
        return self.unpack("B")[0]

    def u16(self) -> int:
        return self.unpack("H")[0]

    def u32(self) -> int:
        return self.unpack("I")[0]

    def array(self, dtype, count: int) -> np.ndarray:
        dtype = np.dtype(dtype)
        if count < 0 or count * dtype.itemsize > self.left:
            raise SqzError(f"truncated {self.what}: {count} x {dtype} at offset {self.pos}, {self.left} bytes left")
        return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype, count=count)

    def done(self) -> None:
        if self.left:
            raise SqzError(f"{self.left} unexpected trailing bytes in {self.what}")


def checked_file(data: bytes, magic: bytes, what: str, smallest: int) -> Reader:
    """The envelope every file of the format shares: ``magic`` first, then the sections, then the
    file's length (u32) and the CRC32 of every byte before the CRC -> a Reader over the sections
    (the magic taken). The length is recorded in the file's last 8 bytes: a cut file's last bytes
    are other data, so the number it "records" would mean nothing to the user and is not shown."""
    check(len(data) >= smallest, f"truncated {what} ({len(data)} bytes)")
    check(data[: len(magic)] == magic, f"not a {what} (bad magic)")
    total, crc = struct.unpack("<II", data[-8:])
    check(total == len(data), f"truncated or padded {what} ({len(data):,} bytes do not match its recorded length)")
    check(zlib.crc32(data[:-4]) == crc, f"corrupted {what} (file CRC32 mismatch)")
    r = Reader(memoryview(data)[:-8], what)
    r.take(len(magic))
    return r
