"""Byte deltas of the page's model: the WebAssembly build of the model it holds turned into the
build of the model served now, as copies from the old file and new bytes (docs/sqz-delta.md).

The page runs the integer C export compiled to WebAssembly, not the ``.sqz``: its update is a
delta of that file's bytes. A weights update leaves most of them in place (the code, the
entropy-coded indices); what moved is copied from where it now sits, what changed is sent. The
page applies it with ``static/bytedelta.js`` and checks the result's SHA-256 against the new
model card. Format: ``SQBD`` | version u16 | old length u32 | new length u32 | old SHA-256 |
new SHA-256 | raw deflate of (literal length, literal bytes, copy length, copy offset from the
end of the previous copy, zigzag) varints, repeated, ending with a copy of length 0.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

MAGIC = b"SQBD"
VERSION = 1
BLOCK = 32  # bytes a match must share at least
HEADER = struct.Struct("<4sHII32s32s")


class ByteDeltaError(ValueError):
    """A byte delta that does not apply: wrong base, damaged, or a result of another hash."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _matches(old: bytes, new: bytes):
    """(start in new, start in old, length) of long common runs, left to right, not overlapping in new."""
    index: dict[bytes, int] = {}
    for off in range(0, len(old) - BLOCK + 1, BLOCK):
        index.setdefault(old[off : off + BLOCK], off)
    i, done = 0, 0
    while i + BLOCK <= len(new):
        off = index.get(new[i : i + BLOCK])
        if off is None:
            i += 1
            continue
        while i > done and off > 0 and new[i - 1] == old[off - 1]:
            i, off = i - 1, off - 1
        n = BLOCK
        while i + n < len(new) and off + n < len(old) and new[i + n] == old[off + n]:
            n += 1
        yield i, off, n
        i = done = i + n


def make_byte_delta(old: bytes, new: bytes) -> bytes:
    ops, done, expected = bytearray(), 0, 0
    for start, off, n in _matches(old, new):
        move = off - expected
        ops += _varint(start - done) + new[done:start] + _varint(n) + _varint((move << 1) ^ (move >> 63))
        done, expected = start + n, off + n
    ops += _varint(len(new) - done) + new[done:] + _varint(0)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    body = packer.compress(bytes(ops)) + packer.flush()
    digests = hashlib.sha256(old).digest(), hashlib.sha256(new).digest()
    return HEADER.pack(MAGIC, VERSION, len(old), len(new), *digests) + body


def apply_byte_delta(old: bytes, delta: bytes) -> bytes:
    """The new file, or ``ByteDeltaError`` with one line (the page's ``bytedelta.js`` does the same)."""
    if len(delta) < HEADER.size or delta[:4] != MAGIC:
        raise ByteDeltaError("not a byte delta (bad magic)")
    _, version, old_len, new_len, old_sha, new_sha = HEADER.unpack_from(delta)
    if version != VERSION:
        raise ByteDeltaError(f"unsupported byte delta version {version}")
    if len(old) != old_len or hashlib.sha256(old).digest() != old_sha:
        raise ByteDeltaError(f"this delta applies to the file with SHA-256 {old_sha.hex()[:16]}..., not to this one")
    try:
        ops = zlib.decompressobj(-15).decompress(delta[HEADER.size :], 2 * new_len + 1024)
    except zlib.error as exc:
        raise ByteDeltaError(f"damaged byte delta ({exc})") from None
    out, pos, expected = bytearray(), 0, 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= len(ops) or shift > 63:
                raise ByteDeltaError("damaged byte delta (ends early)")
            byte = ops[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while True:
        n = varint()
        if pos + n > len(ops) or len(out) + n > new_len:
            raise ByteDeltaError("damaged byte delta (literal out of range)")
        out += ops[pos : pos + n]
        pos += n
        n = varint()
        if n == 0:
            break
        z = varint()
        off = expected + ((z >> 1) ^ -(z & 1))
        if off < 0 or off + n > len(old) or len(out) + n > new_len:
            raise ByteDeltaError("damaged byte delta (copy out of range)")
        out += old[off : off + n]
        expected = off + n
    if len(out) != new_len or hashlib.sha256(out).digest() != new_sha:
        raise ByteDeltaError("the patched file is not the one the delta names")
    return bytes(out)
