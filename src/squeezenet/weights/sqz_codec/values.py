"""Version 2's packed values: dense tensors deflated, codebooks sorted and stored as exp-Golomb
gaps between the ordered bit patterns of their values (neighbouring floats differ in few bits)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from . import compiled
from .reader import Reader, SqzError, check


def deflate(data: bytes) -> bytes:
    """Raw deflate (no zlib header: every byte counts in a file of a few hundred KB)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return c.compress(data) + c.flush()


def inflate_exact(payload, size: int, what: str) -> bytes:
    """Inflate raw deflate data that must expand to exactly ``size`` bytes (checked while inflating)."""
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(bytes(payload), size)
        check(len(out) == size and not d.unconsumed_tail and d.flush(1) == b"", f"{what} has the wrong length")
    except zlib.error as exc:
        raise SqzError(f"corrupted {what} ({exc})") from None
    check(d.eof and not d.unused_data, f"corrupted {what} (trailing or missing data)")
    return out


_KEY_TYPES = {np.dtype("<f2"): (np.uint16, 16), np.dtype("<f4"): (np.uint32, 32)}


def float_keys(values: np.ndarray, dtype) -> np.ndarray:
    """Float bit patterns mapped to integers in the order of the values (-0 just below +0)."""
    utype, bits = _KEY_TYPES[np.dtype(dtype)]
    u = np.ascontiguousarray(values, dtype=dtype).view(utype).astype(np.int64)
    sign = np.int64(1) << (bits - 1)
    return np.where(u & sign, (sign - 1) - (u & (sign - 1)), u | sign)


def keys_to_floats(keys: np.ndarray, dtype) -> np.ndarray:
    utype, bits = _KEY_TYPES[np.dtype(dtype)]
    sign = np.int64(1) << (bits - 1)
    u = np.where(keys >= sign, keys - sign, ((sign - 1) - keys) | sign)
    return u.astype(utype).view(np.dtype(dtype))


def exp_golomb_pack(values: np.ndarray, k: int) -> bytes:
    """Order-k exp-Golomb code of non-negative integers, packed MSB first (the last byte padded
    with zeros). A code is n zeros, then x = (v >> k) + 1 in its n + 1 bits, then v's low k bits:
    as one integer, (x << k) | low in 2n + 1 + k bits, which NumPy writes for every value at
    once where it fits 64 bits (a patch packs every codebook it rewrites)."""
    v = np.asarray(values, dtype=np.int64)
    if len(v) == 0:
        return b""
    x = (v >> k) + 1
    n = np.frexp(x.astype(np.float64))[1].astype(np.int64) - 1  # bit length of x, less one (exact below 2^53)
    length = 2 * n + 1 + k
    if int(length.max()) > 64 or int(x.max()) >= 1 << 53:
        return _exp_golomb_pack_wide(v.tolist(), k)
    code = (x.astype(np.uint64) << np.uint64(k)) | (v & ((1 << k) - 1)).astype(np.uint64)
    aligned = code << (64 - length).astype(np.uint64)  # each code's first bit at bit 63
    bits = np.unpackbits(aligned.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
    return np.packbits(bits[np.arange(64) < length[:, None]]).tobytes()


def _exp_golomb_pack_wide(values: list[int], k: int) -> bytes:
    """``exp_golomb_pack`` with Python integers, for codes longer than 64 bits."""
    whole, size = 0, 0
    for v in values:
        x = (v >> k) + 1
        length = 2 * (x.bit_length() - 1) + 1 + k
        whole = (whole << length) | (x << k) | (v & ((1 << k) - 1))
        size += length
    pad = -size % 8
    return (whole << pad).to_bytes((size + pad) // 8, "big")


def exp_golomb_decode(payload, count: int, k: int, limit: int) -> np.ndarray:
    """Inverse of ``exp_golomb_pack``; every value must be < ``limit``. Compiled where the install
    could (``compiled``; a patch reads every packed codebook of its base), else ``_exp_golomb_decode_py``."""
    if compiled.COMPILED and 0 <= k <= 24 and 0 < limit <= 1 << 63:
        return compiled.exp_golomb_decode(payload, count, k, limit)
    return _exp_golomb_decode_py(payload, count, k, limit)


def _exp_golomb_decode_py(payload, count: int, k: int, limit: int) -> np.ndarray:
    """The payload read as one integer, so that finding a code's first 1 is ``bit_length`` (a bit
    string walked in Python took most of a patch's time)."""
    data = bytes(payload)
    whole, size = int.from_bytes(data, "big"), 8 * len(data)
    out = np.zeros(count, np.int64)
    p = 0
    for i in range(count):
        rest = whole & ((1 << (size - p)) - 1)  # the bits from p on
        check(rest != 0, "exp-Golomb data ends early")
        one = size - rest.bit_length()
        n = one - p
        check(n <= 40, "corrupted exp-Golomb data")
        end = one + n + 1 + k
        check(end <= size, "exp-Golomb data ends early")
        field = (rest >> (size - end)) & ((1 << (end - one)) - 1)  # bits one .. end - 1
        v = (((field >> k) - 1) << k) | (field & ((1 << k) - 1))
        check(v < limit, "exp-Golomb value out of range")
        out[i] = v
        p = end
    check(size - p < 8 and whole & ((1 << (size - p)) - 1) == 0, "trailing bits after exp-Golomb data")
    return out


def _cheapest_order(gaps: np.ndarray) -> int:
    """The order k in 0..24 whose exp-Golomb code of ``gaps`` is shortest (the lowest on a tie),
    from code lengths alone: 2 * floor(log2((v >> k) + 1)) + 1 + k bits per value, every order at
    once. Orders past the one that leaves every gap below 2^k only grow (one bit per value each)."""
    gaps = np.asarray(gaps, dtype=np.int64)
    orders = np.arange(25)
    x = (gaps[None, :] >> orders[:, None]) + 1
    lengths = (2 * np.floor(np.log2(x.astype(np.float64))).astype(np.int64) + 1 + orders[:, None]).sum(axis=1)
    return int(np.argmin(lengths))


def pack_codebook(values: np.ndarray, dtype) -> bytes:
    """Sorted codebook -> first key, k, exp-Golomb gaps between consecutive keys."""
    keys = float_keys(values, dtype)
    check(bool(np.all(np.diff(keys) >= 0)), "packed codebook must be sorted")
    gaps = np.diff(keys)
    k = _cheapest_order(gaps)
    packed = exp_golomb_pack(gaps, k)
    head = struct.pack("<I" if _KEY_TYPES[np.dtype(dtype)][1] == 32 else "<H", int(keys[0]))
    return head + struct.pack("<B", k) + packed


def unpack_codebook(payload, dtype, count: int) -> np.ndarray:
    dtype = np.dtype(dtype)
    bits = _KEY_TYPES[dtype][1]
    r = Reader(payload, "packed codebook")
    first = r.u32() if bits == 32 else r.u16()
    k = r.u8()
    check(k <= 24, f"bad exp-Golomb order {k}")
    gaps = exp_golomb_decode(r.take(r.left), count - 1, k, 1 << bits)
    keys = first + np.concatenate([[0], np.cumsum(gaps)])
    check(int(keys[-1]) < 1 << bits, "packed codebook runs past the largest value")
    return keys_to_floats(keys, dtype).astype(np.float32)
