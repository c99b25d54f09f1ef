"""The ``.sqzd`` container (docs/sqz-delta.md): header with the SHA-256 of the base and of the
result, a PLAN section (JSON: what to do with each tensor) and a DATA section (the arrays the plan
refers to), each with its method, decoded size and CRC32; then the file's length and CRC32.

Arrays are integers stored in the fewest bytes that hold them, as byte planes (all first bytes,
then all second bytes, ...), signed ones zigzag-coded: small differences compress to little.
Float values travel as their ordered bit patterns (``values.float_keys``), so that a small change
of a value is a small integer."""

from __future__ import annotations

import hashlib
import json
import lzma
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .constants import DTYPE_CODES, DTYPES, MAX_META_BYTES, MAX_TENSOR_NUMEL
from .metadata import LZMA_RAW
from .reader import Reader, SqzError, check, checked_file
from .tensors import SparseTensor
from .values import float_keys, keys_to_floats

DELTA_MAGIC = b"SQZD"
DELTA_VERSION = 1
SEC_PLAN, SEC_DATA = b"PLAN", b"DATA"
STORED, LZMA2 = 0, 1  # a section's method: as is, or raw LZMA2 (``LZMA_RAW``)
MAX_DATA_BYTES = 1 << 26  # a section's decoded size, at most (a SqueezeNet update is kilobytes; a whole .sqz fits)
OPS = ("same", "values", "entries", "whole")
CHOICE_KEYS = ("dtype", "positions", "codes_coder", "gaps_coder")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArrayWriter:
    """The DATA section being written: arrays stored as byte planes (all first bytes, then all
    second bytes, ...), which LZMA compresses far better for small differences."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.size = 0

    def put(self, values: np.ndarray, dtype: str) -> list:
        """Store integers (``dtype`` '<i8': signed, zigzag-coded; else unsigned) in the fewest bytes
        that hold them all, after the op's earlier arrays -> the reference [count, bytes per value, signed]."""
        signed = dtype == "<i8"
        ints = np.asarray(values, np.int64)
        if signed:
            ints = (ints << 1) ^ (ints >> 63)  # zigzag: 0, -1, 1, -2 -> 0, 1, 2, 3
        top = int(ints.max()) if len(ints) else 0
        width = next(w for w in (1, 2, 4, 8) if top < 1 << (8 * w) or w == 8)
        raw = ints.astype(np.dtype(f"<u{width}"))
        planes = raw.view(np.uint8).reshape(-1, width).T.tobytes()
        ref = [len(raw), width, int(signed)]
        self.chunks.append(planes)
        self.size += len(planes)
        return ref


def value_keys(values: np.ndarray, dtype: str) -> np.ndarray:
    return float_keys(np.asarray(values, np.float32).astype(DTYPES[DTYPE_CODES[dtype]]), DTYPES[DTYPE_CODES[dtype]])


def key_values(keys: np.ndarray, dtype: str) -> np.ndarray:
    np_dtype = DTYPES[DTYPE_CODES[dtype]]
    limit = 1 << (8 * np_dtype.itemsize)
    check(bool(np.all((keys >= 0) & (keys < limit))), "value outside its type")
    values = keys_to_floats(keys, np_dtype).astype(np.float32)
    check(bool(np.all(np.isfinite(values))), "non-finite value")
    return values


def write_delta_file(base: bytes, new: bytes, plan: dict, data: bytes) -> bytes:
    text = json.dumps(plan, separators=(",", ":"), ensure_ascii=False).encode()
    sections = [_delta_section(SEC_PLAN, text), _delta_section(SEC_DATA, data)]
    head = DELTA_MAGIC + struct.pack("<HH", DELTA_VERSION, 0)
    head += bytes.fromhex(sha256(base)) + bytes.fromhex(sha256(new)) + struct.pack("<II", len(new), len(sections))
    body = head + b"".join(sections)
    body += struct.pack("<I", len(body) + 8)
    return body + struct.pack("<I", zlib.crc32(body))


def _delta_section(tag: bytes, raw: bytes) -> bytes:
    packed = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=LZMA_RAW)
    method, payload = (LZMA2, packed) if len(packed) < len(raw) else (STORED, raw)
    header = tag + struct.pack("<BII", method, len(raw), len(payload))
    return header + payload + struct.pack("<I", zlib.crc32(payload))


@dataclass
class DeltaHeader:
    base_sha256: str
    result_sha256: str
    result_bytes: int
    plan: dict
    data: bytes


def read_delta(delta: bytes) -> DeltaHeader:
    """The delta's header, plan and data, every length and checksum checked; SqzError otherwise."""
    r = checked_file(bytes(delta), DELTA_MAGIC, ".sqzd delta", 84)
    version, _flags = r.unpack("HH")
    check(version == DELTA_VERSION, f"unsupported .sqzd version {version} (this reader knows {DELTA_VERSION})")
    base_hash, result_hash = bytes(r.take(32)).hex(), bytes(r.take(32)).hex()
    result_bytes, nsec = r.unpack("II")
    check(nsec == 2, f"bad .sqzd section count {nsec}")
    sections = [_read_section(r, tag) for tag in (SEC_PLAN, SEC_DATA)]
    r.done()
    check(len(sections[0]) <= MAX_META_BYTES, "delta plan too large")
    try:
        plan = json.loads(sections[0].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SqzError(f"corrupted delta plan ({exc})") from None
    check(isinstance(plan, dict), "corrupted delta plan (not an object)")
    return DeltaHeader(base_hash, result_hash, result_bytes, plan, sections[1])


def _read_section(r: Reader, tag: bytes) -> bytes:
    got = bytes(r.take(4))
    check(got == tag, f"expected section {tag.decode()}, found {got!r}")
    method, size, length = r.unpack("BII")
    payload = bytes(r.take(length))
    check(zlib.crc32(payload) == r.u32(), f"corrupted .sqzd section {tag.decode()} (CRC32 mismatch)")
    limit = f"over the {MAX_DATA_BYTES >> 20} MiB limit"
    check(size <= MAX_DATA_BYTES, f"section {tag.decode()} claims {size:,} bytes, {limit}")
    if method == STORED:
        check(length == size, f"section {tag.decode()}: stored length differs from its size")
        return payload
    check(method == LZMA2, f"section {tag.decode()}: unknown method {method}")
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=LZMA_RAW)
    try:
        raw = dec.decompress(payload, max_length=size + 1)
    except lzma.LZMAError as exc:
        raise SqzError(f"corrupted .sqzd section {tag.decode()} ({exc})") from None
    check(len(raw) == size and dec.eof and not dec.unused_data, f"section {tag.decode()}: wrong decompressed size")
    return raw


class ArrayReader:
    """The arrays of one op, read in the order they were stored from where the op's data starts;
    every reference is checked against the DATA section and against the counts expected."""

    def __init__(self, data: bytes, at: int = 0):
        self.data, self.pos = data, at

    def at(self, op: dict) -> ArrayReader:
        at = op.get("at")
        check(isinstance(at, int) and 0 <= at <= len(self.data), "bad data offset")
        return ArrayReader(self.data, at)

    def get(self, ref, dtype: str, count: int | None = None, limit: int = MAX_TENSOR_NUMEL) -> np.ndarray:
        """The integers ``ref`` points at (``dtype`` '<i8': signed), as int64, every count checked."""
        check(isinstance(ref, list) and len(ref) == 3 and all(isinstance(v, int) for v in ref), "bad data reference")
        n, width, signed = ref
        check(width in (1, 2, 4, 8) and signed == int(dtype == "<i8"), "bad data reference")
        check(0 <= n <= limit and (count is None or n == count), f"data reference of {n} values where {count} fit")
        offset = self.pos
        check(offset + n * width <= len(self.data), "data reference outside the delta")
        self.pos += n * width
        planes = np.frombuffer(self.data, np.uint8, n * width, offset).reshape(width, n)
        ints = planes.T.copy().view(np.dtype(f"<u{width}")).reshape(n).astype(np.uint64)
        if signed:
            return ((ints >> np.uint64(1)).astype(np.int64)) ^ -((ints & np.uint64(1)).astype(np.int64))
        check(n == 0 or int(ints.max()) < 1 << 62, "value out of range")
        return ints.astype(np.int64)


def code_grid(t: SparseTensor) -> np.ndarray:
    """0 where a tensor stores nothing, else 1 + the code stored there (flat, C order; uint16:
    a codebook holds at most ``MAX_ALPHABET`` values, and a narrow grid is scanned faster)."""
    check(len(t.codebook) < 1 << 16, "codebook too large")
    grid = np.zeros(int(np.prod(t.shape)), np.uint16)
    grid[t.positions] = np.asarray(t.codes) + 1
    return grid
