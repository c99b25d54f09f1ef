"""Version 2's packed values: dense tensors deflated, codebooks sorted and stored as exp-Golomb
gaps between the ordered bit patterns of their values (neighbouring floats differ in few bits)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

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


def exp_golomb_bits(values: np.ndarray, k: int) -> str:
    """Order-k exp-Golomb code of non-negative integers, as a '0'/'1' string."""
    out = []
    for v in np.asarray(values, dtype=np.int64).tolist():
        x = (v >> k) + 1
        n = x.bit_length() - 1
        out.append("0" * n + format(x, "b") + (format(v & ((1 << k) - 1), f"0{k}b") if k else ""))
    return "".join(out)


def exp_golomb_decode(payload, count: int, k: int, limit: int) -> np.ndarray:
    """Inverse of ``exp_golomb_bits`` (packed MSB first); every value must be < ``limit``. The
    payload is read as one integer, so that finding a code's first 1 is ``bit_length`` (a patch
    reads every packed codebook of its base: a bit string walked in Python took most of its time)."""
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
    from code lengths alone: 2 * floor(log2((v >> k) + 1)) + 1 + k bits per value. Orders past
    the one that leaves every gap below 2^k cannot be shorter."""
    gaps = np.asarray(gaps, dtype=np.int64)
    best_k, best_len = 0, None
    for k in range(0, 25):
        x = (gaps >> k) + 1
        length = int((2 * (np.floor(np.log2(x.astype(np.float64))).astype(np.int64)) + 1 + k).sum())
        if best_len is None or length < best_len:
            best_k, best_len = k, length
        if len(gaps) == 0 or (gaps >> k).max() == 0:
            break
    return best_k


def pack_codebook(values: np.ndarray, dtype) -> bytes:
    """Sorted codebook -> first key, k, exp-Golomb gaps between consecutive keys."""
    keys = float_keys(values, dtype)
    check(bool(np.all(np.diff(keys) >= 0)), "packed codebook must be sorted")
    gaps = np.diff(keys)
    k = _cheapest_order(gaps)
    bits = exp_golomb_bits(gaps, k)
    packed = np.packbits(np.frombuffer(bits.encode(), np.uint8) - ord("0")).tobytes() if bits else b""
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
