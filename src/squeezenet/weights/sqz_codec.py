"""Pure-numpy codec of the ``.sqz`` compressed-weights format (see docs/sqz-format.md).

This module imports nothing but the standard library and numpy, so the PyTorch-free
runtime can load it as a standalone file. It holds the entropy coders (interleaved rANS,
canonical Huffman, raw bit packing), the sparse-position schemes (all positions,
Deep Compression 4-bit relative indices, bitmask, entropy-coded gaps) and the container
(sections with CRC32s). Every length and count is checked against the file size, the
tensor shape and fixed caps before anything is allocated; any defect raises ``SqzError``.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"SQZ\x00"
VERSION = 2  # written; version 1 files (no packed codebooks, deflated values or shared metadata) still read
READABLE_VERSIONS = (1, 2)
MAX_TENSOR_NUMEL = 1 << 26  # 64M elements per tensor
MAX_TOTAL_NUMEL = 1 << 27  # all tensors together
MAX_ALPHABET = 4096
MAX_META_BYTES = 1 << 24  # decompressed metadata JSON
MAX_NDIM = 8

# rANS: 32-bit state in [2^16, 2^32), 16-bit words, probabilities in units of 2^-PROB_BITS.
PROB_BITS = 15
PROB_SCALE = 1 << PROB_BITS
RANS_L = 1 << 16
DEFAULT_STEPS = 4096  # symbols per lane; lanes of all streams are decoded together

CODER_RAW, CODER_HUFFMAN, CODER_RANS, CODER_RANS_Z = 0, 1, 2, 3  # 3: rANS with a deflated table (v2)
CODER_NAMES = {CODER_RAW: "raw", CODER_HUFFMAN: "huffman", CODER_RANS: "rans", CODER_RANS_Z: "rans"}
POS_ALL, POS_RELIDX4, POS_BITMASK, POS_GAPS = 0, 1, 2, 3
POS_NAMES = {POS_ALL: "all", POS_RELIDX4: "relidx4", POS_BITMASK: "bitmask", POS_GAPS: "gaps"}
KIND_DENSE, KIND_SPARSE = 0, 1
DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f2")}
DTYPE_CODES = {"float32": 0, "float16": 1}
# version 2: codebooks sorted and stored as exp-Golomb-coded gaps between their values' ordered
# bit patterns; dense values deflated. Code = plain code + 2.
PACKED = 2
META_SHARED = 3  # metadata method: raw LZMA2; values equal to a shared list (shared_values()) stored by name
HUFFMAN_MAX_LEN = 15

SEC_META, SEC_TENSOR, SEC_RANS = b"META", b"TENS", b"RANS"


class SqzError(ValueError):
    """A .sqz file (or an input to the encoder) is truncated, corrupted or out of bounds."""


# ----------------------------------------------------------------------------- byte reading


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


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise SqzError(message)


# ----------------------------------------------------------------------------- frequency tables

# 2^(i/32) in 16.16 fixed point: integer-only weights, identical on every machine.
_LOG_BASE = [round(65536 * 2 ** (i / 32)) for i in range(32)]


def quantize_counts(counts: np.ndarray) -> np.ndarray:
    """Counts -> one byte per symbol: 0 = absent, q = weight 2^((q-1)/32) relative to the rarest."""
    counts = np.asarray(counts, dtype=np.float64)
    q = np.zeros(len(counts), dtype=np.uint8)
    present = counts > 0
    if present.any():
        top = counts[present].max()
        # the most frequent symbol gets q=255; anything 2^-7.9 below it or rarer clamps to q=1
        level = np.round(254 + 32 * np.log2(counts[present] / top))
        q[present] = np.clip(level, 1, 255).astype(np.uint8)
    return q


def table_weights(q: np.ndarray) -> np.ndarray:
    q = q.astype(np.int64)
    base = np.asarray(_LOG_BASE, dtype=np.int64)
    w = np.where(q > 0, base[(q - 1) % 32] << ((q - 1) // 32), 0)
    return w


def normalize_freqs(q: np.ndarray, total: int = PROB_SCALE) -> np.ndarray:
    """Integer frequencies summing to ``total``, >= 1 for every present symbol (deterministic)."""
    w = table_weights(q)
    present = w > 0
    k = int(present.sum())
    _check(k >= 1, "frequency table has no symbol")
    _check(k <= total, "frequency table has more symbols than probability slots")
    freq = np.where(present, np.maximum(1, (w * total) // int(w.sum())), 0)
    diff = total - int(freq.sum())
    order = np.argsort(-freq, kind="stable")
    while diff:
        for i in order:
            if diff == 0:
                break
            if diff > 0:
                freq[i] += 1
                diff -= 1
            elif freq[i] > 1:
                freq[i] -= 1
                diff += 1
    return freq.astype(np.int64)


# ----------------------------------------------------------------------------- rANS (interleaved lanes)


@dataclass
class RansStream:
    """One stream of a rANS bundle: symbols < len(table), table = quantized counts (bytes)."""

    n: int
    table: np.ndarray  # uint8 per symbol
    symbols: np.ndarray | None = None


def _lane_plan(ns: list[int], steps: int):
    """Lanes of every stream, ordered by symbol count (descending, stable)."""
    lane_stream, lane_local, lane_count, lane_stride = [], [], [], []
    for s, n in enumerate(ns):
        lanes = -(-n // steps) if n else 0
        for lane in range(lanes):
            lane_stream.append(s)
            lane_local.append(lane)
            lane_count.append((n - lane + lanes - 1) // lanes)
            lane_stride.append(lanes)
    lane_stream = np.asarray(lane_stream, dtype=np.int64)
    lane_local = np.asarray(lane_local, dtype=np.int64)
    lane_count = np.asarray(lane_count, dtype=np.int64)
    lane_stride = np.asarray(lane_stride, dtype=np.int64)
    order = np.argsort(-lane_count, kind="stable")
    return lane_stream[order], lane_local[order], lane_count[order], lane_stride[order]


def _tables(streams: list[RansStream]):
    """Flat freq/cum arrays over all streams, plus offsets into them."""
    freqs = [normalize_freqs(s.table) for s in streams]
    offsets = np.zeros(len(streams) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(f) for f in freqs])
    freq = np.concatenate(freqs) if freqs else np.zeros(0, np.int64)
    cum = np.concatenate([np.concatenate([[0], np.cumsum(f)[:-1]]) for f in freqs]) if freqs else freq
    return freqs, freq, cum, offsets


def rans_encode(streams: list[RansStream], steps: int = DEFAULT_STEPS) -> bytes:
    """Encode all streams into one interleaved bundle: lane states (u32) then 16-bit words."""
    _check(steps >= 1, "steps must be positive")
    ns = [s.n for s in streams]
    _, freq, cum, offsets = _tables(streams)
    syms = []
    for s in streams:
        sym = np.asarray(s.symbols, dtype=np.int64)
        _check(len(sym) == s.n, "stream length mismatch")
        if s.n:
            _check(int(sym.min()) >= 0 and int(sym.max()) < len(s.table), "symbol outside the alphabet")
            _check(bool(np.all(s.table[sym] > 0)), "symbol with zero frequency")
        syms.append(sym)
    flat = np.concatenate(syms) if syms else np.zeros(0, np.int64)
    base = np.zeros(len(streams) + 1, dtype=np.int64)
    base[1:] = np.cumsum(ns)
    lane_stream, lane_local, lane_count, lane_stride = _lane_plan(ns, steps)
    nl = len(lane_stream)
    x = np.full(nl, RANS_L, dtype=np.uint64)
    chunks = []
    max_t = int(lane_count[0]) if nl else 0
    active_by_t = np.searchsorted(-lane_count, -np.arange(max_t), side="left")  # lanes with count > t
    for t in range(max_t - 1, -1, -1):
        a = int(active_by_t[t])
        idx = base[lane_stream[:a]] + lane_local[:a] + t * lane_stride[:a]
        sym = flat[idx]
        tab = offsets[lane_stream[:a]] + sym
        f = freq[tab].astype(np.uint64)
        c = cum[tab].astype(np.uint64)
        xa = x[:a]
        x_max = (np.uint64((RANS_L >> PROB_BITS) << 16)) * f
        m = xa >= x_max
        chunks.append((xa[m] & np.uint64(0xFFFF)).astype("<u2"))
        xa = np.where(m, xa >> np.uint64(16), xa)
        x[:a] = ((xa // f) << np.uint64(PROB_BITS)) + (xa % f) + c
    words = np.concatenate(chunks[::-1]) if chunks else np.zeros(0, "<u2")
    return x.astype("<u4").tobytes() + words.astype("<u2").tobytes()


def rans_decode(blob: bytes | memoryview, streams: list[RansStream], steps: int = DEFAULT_STEPS) -> list[np.ndarray]:
    """Inverse of ``rans_encode``; every stream's ``n`` must already be bounds-checked."""
    _check(steps >= 1, "rANS steps must be positive")
    ns = [s.n for s in streams]
    freqs, freq, cum, offsets = _tables(streams)
    lane_stream, lane_local, lane_count, lane_stride = _lane_plan(ns, steps)
    nl = len(lane_stream)
    r = Reader(blob, "rANS data")
    x = r.array("<u4", nl).astype(np.int64)
    _check(bool(np.all(x >= RANS_L)), "corrupted rANS data (lane state out of range)")
    total = int(sum(ns))
    nwords = r.left // 2
    _check(r.left % 2 == 0, "corrupted rANS data (odd length)")
    words = np.zeros(nwords + total + 1, dtype=np.int64)  # padded: every step reads at most one word per lane
    words[:nwords] = r.array("<u2", nwords)
    # slot -> symbol lookup per stream
    lut = np.concatenate([np.repeat(np.arange(len(f)), f) for f in freqs]) if freqs else np.zeros(0, np.int64)
    lut_base = np.arange(len(streams), dtype=np.int64) * PROB_SCALE
    base = np.zeros(len(streams) + 1, dtype=np.int64)
    base[1:] = np.cumsum(ns)
    out = np.zeros(total, dtype=np.int64)
    pos = base[lane_stream] + lane_local
    lanes_lut = lut_base[lane_stream]
    lanes_off = offsets[lane_stream]
    ptr = 0
    mask = PROB_SCALE - 1
    max_t = int(lane_count[0]) if nl else 0
    counts_sorted = lane_count
    t = 0
    a = nl
    while t < max_t:
        while a and counts_sorted[a - 1] <= t:
            a -= 1
        xa = x[:a]
        slot = xa & mask
        sym = lut[lanes_lut[:a] + slot]
        tab = lanes_off[:a] + sym
        xa = freq[tab] * (xa >> PROB_BITS) + slot - cum[tab]
        m = xa < RANS_L
        k = int(np.count_nonzero(m))
        if k:
            xa[m] = (xa[m] << 16) | words[ptr : ptr + k]
            ptr += k
        x[:a] = xa
        out[pos[:a]] = sym
        pos[:a] += lane_stride[:a]
        t += 1
    _check(ptr == nwords, "corrupted rANS data (word count does not match)")
    _check(bool(np.all(x == RANS_L)), "corrupted rANS data (final lane state is wrong)")
    return [out[base[i] : base[i + 1]] for i in range(len(streams))]


# ----------------------------------------------------------------------------- Huffman (canonical)


def huffman_lengths(counts: np.ndarray, max_len: int = HUFFMAN_MAX_LEN) -> np.ndarray:
    """Code lengths (0 = absent) of a Huffman code limited to ``max_len`` bits.

    A code that comes out too deep is rebuilt with every count raised to a floor share of the
    total. The floor doubles on every try, so that by the last one all counts are equal (a
    code of ceil(log2 n) bits): raising it by the new total alone can creep for ever on
    Fibonacci-like counts, which rate-distortion codebooks do produce."""
    counts = np.asarray(counts, dtype=np.int64)
    present = np.flatnonzero(counts > 0)
    lengths = np.zeros(len(counts), dtype=np.uint8)
    _check(len(present) <= 1 << max_len, f"{len(present)} symbols do not fit a code of at most {max_len} bits")
    if len(present) == 1:
        lengths[present] = 1
        return lengths
    work = counts[present].astype(np.float64)
    for attempt in range(max_len + 1):
        lens = _huffman_depths(work)
        if lens.max() <= max_len:
            break
        work = np.maximum(work, work.sum() * 2.0**attempt / (1 << (max_len - 1)))  # flatten and retry
    lengths[present] = lens
    return lengths


def _huffman_depths(weights: np.ndarray) -> np.ndarray:
    """Depth of every leaf in the Huffman tree of ``weights`` (ties broken by index)."""
    heap = [(float(c), i) for i, c in enumerate(weights)]
    heapq.heapify(heap)
    parent: dict[int, int] = {}
    uid = len(weights)
    while len(heap) > 1:
        c1, i1 = heapq.heappop(heap)
        c2, i2 = heapq.heappop(heap)
        parent[i1] = parent[i2] = uid
        heapq.heappush(heap, (c1 + c2, uid))
        uid += 1
    depth = {}
    for node in range(uid - 1, -1, -1):  # parents have larger ids: each depth is known when needed
        depth[node] = depth[parent[node]] + 1 if node in parent else 0
    return np.array([depth[i] for i in range(len(weights))])


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = sorted((int(n), i) for i, n in enumerate(lengths) if n > 0)
    code = 0
    prev = order[0][0] if order else 0
    for n, i in order:
        code <<= n - prev
        codes[i] = code
        code += 1
        prev = n
    return codes


def _check_lengths(lengths: np.ndarray) -> None:
    _check(bool(np.all(lengths <= HUFFMAN_MAX_LEN)), "Huffman code length above the limit")
    used = lengths[lengths > 0].astype(np.int64)
    _check(len(used) >= 1, "Huffman table has no symbol")
    kraft = int(np.sum(1 << (HUFFMAN_MAX_LEN - used)))
    _check(kraft <= 1 << HUFFMAN_MAX_LEN, "Huffman code lengths violate the Kraft inequality")


def huffman_encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    symbols = np.asarray(symbols, dtype=np.int64)
    if not len(symbols):
        return b""
    codes = _canonical_codes(lengths)
    ln = lengths.astype(np.int64)[symbols]
    cd = codes[symbols]
    j = np.arange(HUFFMAN_MAX_LEN)
    bits = ((cd[:, None] >> (ln[:, None] - 1 - j)) & 1).astype(np.uint8)
    keep = j[None, :] < ln[:, None]
    return np.packbits(bits[keep]).tobytes()


def huffman_decode(payload: bytes | memoryview, lengths: np.ndarray, n: int) -> np.ndarray:
    _check_lengths(lengths)
    bits = np.unpackbits(np.frombuffer(payload, np.uint8)).astype(np.int64)
    nbits = len(bits)
    if n == 0:
        return np.zeros(0, np.int64)
    _check(n <= nbits, "Huffman data shorter than its symbol count")
    padded = np.concatenate([bits, np.zeros(HUFFMAN_MAX_LEN, np.int64)])
    window = np.zeros(nbits, dtype=np.int64)
    for j in range(HUFFMAN_MAX_LEN):
        window = (window << 1) | padded[j : j + nbits]
    codes = _canonical_codes(lengths)
    lut_sym = np.full(1 << HUFFMAN_MAX_LEN, -1, dtype=np.int64)
    lut_len = np.zeros(1 << HUFFMAN_MAX_LEN, dtype=np.int64)
    for s in np.flatnonzero(lengths):
        ln = int(lengths[s])
        lo = int(codes[s]) << (HUFFMAN_MAX_LEN - ln)
        lut_sym[lo : lo + (1 << (HUFFMAN_MAX_LEN - ln))] = s
        lut_len[lo : lo + (1 << (HUFFMAN_MAX_LEN - ln))] = ln
    step = lut_len[window].tolist()
    starts = []
    p = 0
    for _ in range(n):
        if p >= nbits or step[p] == 0:
            raise SqzError("corrupted Huffman data")
        starts.append(p)
        p += step[p]
    _check(p <= nbits, "corrupted Huffman data (runs past the end)")
    return lut_sym[window[np.asarray(starts)]]


# ----------------------------------------------------------------------------- raw bit packing


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    values = np.asarray(values, dtype=np.int64)
    j = np.arange(bits)
    return np.packbits(((values[:, None] >> (bits - 1 - j)) & 1).astype(np.uint8).ravel()).tobytes()


def unpack_bits(payload, bits: int, n: int) -> np.ndarray:
    _check(1 <= bits <= 16, f"bad bit width {bits}")
    _check(len(payload) == (n * bits + 7) // 8, "raw code data has the wrong length")
    raw = np.unpackbits(np.frombuffer(payload, np.uint8))[: n * bits].reshape(n, bits).astype(np.int64)
    return raw @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))


# ----------------------------------------------------------------------------- packed values (version 2)


def deflate(data: bytes) -> bytes:
    """Raw deflate (no zlib header: every byte counts in a file of a few hundred KB)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return c.compress(data) + c.flush()


def inflate_exact(payload, size: int, what: str) -> bytes:
    """Inflate raw deflate data that must expand to exactly ``size`` bytes (checked while inflating)."""
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(bytes(payload), size)
        _check(len(out) == size and not d.unconsumed_tail and d.flush(1) == b"", f"{what} has the wrong length")
    except zlib.error as exc:
        raise SqzError(f"corrupted {what} ({exc})") from None
    _check(d.eof and not d.unused_data, f"corrupted {what} (trailing or missing data)")
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
    """Inverse of ``exp_golomb_bits`` (packed MSB first); every value must be < ``limit``."""
    bits = "".join(format(b, "08b") for b in bytes(payload))
    out = np.zeros(count, np.int64)
    p = 0
    for i in range(count):
        one = bits.find("1", p)
        _check(one >= 0, "exp-Golomb data ends early")
        n = one - p
        _check(n <= 40, "corrupted exp-Golomb data")
        end = one + n + 1 + k
        _check(end <= len(bits), "exp-Golomb data ends early")
        v = ((int(bits[one : one + n + 1], 2) - 1) << k) | (int(bits[one + n + 1 : end], 2) if k else 0)
        _check(v < limit, "exp-Golomb value out of range")
        out[i] = v
        p = end
    _check(len(bits) - p < 8 and "1" not in bits[p:], "trailing bits after exp-Golomb data")
    return out


def pack_codebook(values: np.ndarray, dtype) -> bytes:
    """Sorted codebook -> first key, k, exp-Golomb gaps between consecutive keys."""
    keys = float_keys(values, dtype)
    _check(bool(np.all(np.diff(keys) >= 0)), "packed codebook must be sorted")
    gaps = np.diff(keys)
    best = None
    for k in range(0, 25):
        bits = exp_golomb_bits(gaps, k)
        if best is None or len(bits) < len(best[1]):
            best = (k, bits)
        if len(gaps) == 0 or (gaps >> k).max() == 0:
            break
    k, bits = best
    packed = np.packbits(np.frombuffer(bits.encode(), np.uint8) - ord("0")).tobytes() if bits else b""
    head = struct.pack("<I" if _KEY_TYPES[np.dtype(dtype)][1] == 32 else "<H", int(keys[0]))
    return head + struct.pack("<B", k) + packed


def unpack_codebook(payload, dtype, count: int) -> np.ndarray:
    dtype = np.dtype(dtype)
    bits = _KEY_TYPES[dtype][1]
    r = Reader(payload, "packed codebook")
    first = r.u32() if bits == 32 else r.u16()
    k = r.u8()
    _check(k <= 24, f"bad exp-Golomb order {k}")
    gaps = exp_golomb_decode(r.take(r.left), count - 1, k, 1 << bits)
    keys = first + np.concatenate([[0], np.cumsum(gaps)])
    _check(int(keys[-1]) < 1 << bits, "packed codebook runs past the largest value")
    return keys_to_floats(keys, dtype).astype(np.float32)


# ----------------------------------------------------------------------------- symbol streams


@dataclass
class StreamPlan:
    """How one symbol stream is stored; ``pending`` marks a rANS stream waiting for the bundle."""

    coder: int
    alphabet: int
    n: int
    header: bytes
    payload: bytes = b""
    rans: RansStream | None = None
    estimate: float = 0.0  # expected rANS bytes (for reports)


def plan_stream(symbols: np.ndarray, alphabet: int, coder: str = "auto") -> StreamPlan:
    """Encode a stream with ``coder`` ('raw', 'huffman', 'rans' or 'auto' = the smallest)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    _check(1 <= alphabet <= MAX_ALPHABET, f"alphabet of {alphabet} symbols is out of range")
    n = len(symbols)
    if n:
        _check(int(symbols.min()) >= 0 and int(symbols.max()) < alphabet, "symbol outside the alphabet")
    counts = np.bincount(symbols, minlength=alphabet)
    plans = []
    if coder in ("raw", "auto"):
        bits = max(1, int(alphabet - 1).bit_length())
        plans.append(StreamPlan(CODER_RAW, alphabet, n, struct.pack("<B", bits), pack_bits(symbols, bits)))
    if coder in ("huffman", "auto") and n:
        lengths = huffman_lengths(counts)
        payload = huffman_encode(symbols, lengths)
        plans.append(StreamPlan(CODER_HUFFMAN, alphabet, n, lengths.tobytes(), payload))
    if coder in ("rans", "auto") and n:
        q = quantize_counts(counts)
        freq = normalize_freqs(q)
        est = float(-(counts * np.log2(np.maximum(freq, 1) / PROB_SCALE)).sum()) / 8 + 4 * -(-n // DEFAULT_STEPS)
        plans.append(StreamPlan(CODER_RANS, alphabet, n, q.tobytes(), b"\0" * int(est), RansStream(n, q, symbols), est))
        packed = deflate((np.diff(np.concatenate([[0], q.astype(np.int64)])) % 256).astype(np.uint8).tobytes())
        header = struct.pack("<H", len(packed)) + packed
        if len(header) < len(q):
            rs = RansStream(n, q, symbols)
            plans.append(StreamPlan(CODER_RANS_Z, alphabet, n, header, b"\0" * int(est), rs, est))
    _check(bool(plans), f"unknown coder {coder!r}")
    best = min(plans, key=lambda p: len(p.header) + len(p.payload))
    if best.rans is not None:
        best.payload = b""
    return best


def stream_bytes(plan: StreamPlan) -> bytes:
    """Serialized stream descriptor: coder, alphabet, n, header, payload length, payload."""
    head = struct.pack("<BHI", plan.coder, plan.alphabet - 1, plan.n) + plan.header
    return head + struct.pack("<I", len(plan.payload)) + plan.payload


def read_stream(r: Reader, max_n: int, rans: list) -> tuple[int, int, object]:
    """-> (coder, alphabet, symbols or a rANS placeholder index). Checks n <= max_n."""
    coder, alphabet, n = r.unpack("BHI")
    alphabet += 1
    _check(coder in CODER_NAMES, f"unknown coder {coder}")
    _check(alphabet <= MAX_ALPHABET, f"alphabet of {alphabet} symbols is out of range")
    _check(n <= max_n, f"stream claims {n} symbols, at most {max_n} possible")
    if coder == CODER_RAW:
        bits = r.u8()
        _check(1 <= bits <= 16 and (1 << bits) >= alphabet, f"bad raw bit width {bits}")
        payload = r.take(r.u32())
        sym = unpack_bits(payload, bits, n)
        _check(bool(np.all(sym < alphabet)), "raw symbol outside the alphabet")
        return coder, alphabet, sym
    if coder == CODER_RANS_Z:
        deltas = inflate_exact(r.take(r.u16()), alphabet, "rANS table")
        table = (np.cumsum(np.frombuffer(deltas, np.uint8).astype(np.int64)) % 256).astype(np.uint8)
        coder = CODER_RANS
    else:
        table = r.array(np.uint8, alphabet)
    payload = r.take(r.u32())
    if coder == CODER_HUFFMAN:
        return coder, alphabet, huffman_decode(payload, table, n)
    _check(len(payload) == 0, "rANS stream with inline data")
    _check(n == 0 or bool(np.any(table)), "rANS table has no symbol")
    rans.append(RansStream(n, table.copy() if n else np.ones(1, np.uint8)))
    return coder, alphabet, len(rans) - 1


# ----------------------------------------------------------------------------- tensors


@dataclass
class SparseTensor:
    """A quantized tensor: flat positions (increasing) hold codebook[codes]; the rest is 0."""

    shape: tuple[int, ...]
    codebook: np.ndarray
    codes: np.ndarray
    positions: np.ndarray
    bits: int = 8  # nominal bits of the codebook (for reports)

    def to_dense(self) -> np.ndarray:
        flat = np.zeros(int(np.prod(self.shape)), dtype=np.float32)
        flat[self.positions] = self.codebook.astype(np.float32)[self.codes]
        return flat.reshape(self.shape)


@dataclass
class TensorPlan:
    name: str
    tensor: np.ndarray | SparseTensor
    codebook_dtype: str = "float32"
    dense_dtype: str = "float32"
    positions: str = "auto"  # all | relidx4 | bitmask | gaps | auto
    codes_coder: str = "auto"  # raw | huffman | rans | auto
    gaps_coder: str = "auto"
    stats: dict = field(default_factory=dict)
    packed: bool = True  # version 2's packed codebooks and deflated values where they are smaller


def _shape_bytes(name: str, shape) -> bytes:
    raw = name.encode()
    _check(len(raw) < 65536 and len(shape) <= MAX_NDIM, "tensor name or rank out of range")
    return struct.pack("<H", len(raw)) + raw + struct.pack(f"<B{len(shape)}I", len(shape), *shape)


def gap_symbols(positions: np.ndarray, alphabet: int) -> np.ndarray:
    """Gaps before each position as symbols < alphabet; symbol alphabet-1 = 'add alphabet-1, go on'."""
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    esc = alphabet - 1
    reps = gaps // esc
    total = len(gaps) + int(reps.sum())
    out = np.full(total, esc, dtype=np.int64)
    ends = np.cumsum(reps + 1) - 1
    out[ends] = gaps - reps * esc
    return out


def gaps_to_positions(sym: np.ndarray, alphabet: int, n: int, numel: int) -> np.ndarray:
    esc = alphabet - 1
    is_term = sym != esc
    _check(int(is_term.sum()) == n, "gap stream does not hold the stated number of entries")
    _check(n == 0 or bool(is_term[-1]), "gap stream ends inside a gap")
    cum_esc = np.cumsum(~is_term)
    term = np.flatnonzero(is_term)
    esc_before = cum_esc[term]
    esc_count = np.diff(np.concatenate([[0], esc_before]))
    gaps = sym[term] + esc * esc_count
    positions = np.cumsum(gaps + 1) - 1
    _check(n == 0 or int(positions[-1]) < numel, "gap stream points past the end of the tensor")
    return positions


def _relidx4(positions: np.ndarray, codes: np.ndarray, zero_code: int):
    """Deep Compression relative indices: 4-bit gaps, filler entries (code ``zero_code``) for longer runs."""
    sym = gap_symbols(positions, 17)  # 16 = a filler: 15 skipped positions, then a zero entry
    is_filler = sym == 16
    out_codes = np.full(len(sym), zero_code, dtype=np.int64)
    out_codes[~is_filler] = codes
    nib = np.where(is_filler, 15, sym)
    if len(nib) % 2:
        nib = np.concatenate([nib, [0]])
    packed = (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)
    all_pos = np.cumsum(nib[: len(sym)] + 1) - 1
    return packed.tobytes(), out_codes, all_pos


def encode_tensor(plan: TensorPlan) -> tuple[bytes, list[RansStream], dict]:
    """-> (section payload, rANS streams it defers to the bundle, size breakdown)."""
    t = plan.tensor
    if isinstance(t, np.ndarray):
        dt = DTYPE_CODES[plan.dense_dtype]
        raw = np.ascontiguousarray(t, dtype=DTYPES[dt]).tobytes()
        if plan.packed:
            packed = deflate(raw)
            if len(packed) + 4 < len(raw):
                dt, raw = dt + PACKED, struct.pack("<I", len(packed)) + packed
        body = _shape_bytes(plan.name, t.shape) + struct.pack("<BB", KIND_DENSE, dt) + raw
        return body, [], {"values": len(raw)}
    numel = int(np.prod(t.shape))
    positions = np.asarray(t.positions, dtype=np.int64)
    codes = np.asarray(t.codes, dtype=np.int64)
    codebook = np.asarray(t.codebook, dtype=np.float32)
    _check(len(positions) == len(codes), "positions and codes differ in length")
    _check(len(positions) == 0 or bool(np.all(np.diff(positions) > 0)), "positions must increase")
    _check(len(positions) == 0 or (positions[0] >= 0 and positions[-1] < numel), "position out of range")
    k = len(codebook)
    _check(1 <= k <= MAX_ALPHABET, "codebook size out of range")
    cb_dt = DTYPE_CODES[plan.codebook_dtype]
    stored = codebook.astype(DTYPES[cb_dt])
    cb_raw = stored.tobytes()
    if plan.packed:
        order = np.argsort(float_keys(stored, DTYPES[cb_dt]), kind="stable")
        packed = pack_codebook(stored[order], DTYPES[cb_dt])
        if len(packed) + 4 < len(cb_raw):  # sorted: the codes follow their values
            rank = np.empty(k, np.int64)
            rank[order] = np.arange(k)
            codes, codebook = rank[codes], codebook[order]
            cb_dt, cb_raw = cb_dt + PACKED, struct.pack("<I", len(packed)) + packed
    sizes = {"codebook": len(cb_raw)}

    # positions
    choice = plan.positions
    candidates = []
    if len(positions) == numel:
        candidates.append((POS_ALL, b"", [], codes, 0.0))
    if choice in ("relidx4", "auto"):
        zero = np.flatnonzero(codebook == 0)
        if len(zero):
            packed, rcodes, _ = _relidx4(positions, codes, int(zero[0]))
            candidates.append((POS_RELIDX4, struct.pack("<I", len(packed)) + packed, [], rcodes, 0.0))
    if choice in ("bitmask", "auto"):
        mask = np.zeros(numel, np.uint8)
        mask[positions] = 1
        packed = np.packbits(mask).tobytes()
        candidates.append((POS_BITMASK, struct.pack("<I", len(packed)) + packed, [], codes, 0.0))
    if choice in ("gaps", "auto") and len(positions):
        best = None
        max_gap = int((np.diff(np.concatenate([[-1], positions])) - 1).max())
        for alphabet in (2, 4, 8, 16, 32, 64, 128, 256):
            sym = gap_symbols(positions, alphabet)
            sp = plan_stream(sym, alphabet, plan.gaps_coder)
            cost = len(stream_bytes(sp)) + sp.estimate
            if best is None or cost < best[0]:
                best = (cost, sp)
            if alphabet > max_gap + 1:
                break
        sp = best[1]
        candidates.append((POS_GAPS, stream_bytes(sp), [sp.rans] if sp.rans else [], codes, sp.estimate))
    if choice == "all":
        _check(len(positions) == numel, "positions 'all' needs a dense tensor")
    if choice != "auto":
        named = {"all": POS_ALL, "relidx4": POS_RELIDX4, "bitmask": POS_BITMASK, "gaps": POS_GAPS}[choice]
        candidates = [c for c in candidates if c[0] == named] or candidates
    _check(bool(candidates), "no position scheme fits this tensor")
    pos_method, pos_bytes, pos_rans, ecodes, pos_est = min(candidates, key=lambda c: len(c[1]) + c[4])
    sizes["positions"] = len(pos_bytes)
    cp = plan_stream(ecodes, k, plan.codes_coder)
    code_bytes = stream_bytes(cp)
    sizes["codes"] = len(code_bytes)
    body = (
        _shape_bytes(plan.name, t.shape)
        + struct.pack("<BIBH", KIND_SPARSE, len(ecodes), cb_dt, k - 1)
        + cb_raw
        + struct.pack("<B", pos_method)
        + pos_bytes
        + code_bytes
    )
    info = {
        **sizes,
        "positions_method": POS_NAMES[pos_method],
        "codes_coder": CODER_NAMES[cp.coder],
        "entries": len(ecodes),
        "rans_estimate": pos_est + cp.estimate,
    }
    return body, pos_rans + ([cp.rans] if cp.rans else []), info


@dataclass
class _PendingTensor:
    name: str
    shape: tuple[int, ...]
    dense: np.ndarray | None = None
    codebook: np.ndarray | None = None
    n: int = 0
    pos_method: int = 0
    pos: object = None  # positions array or rANS index
    pos_alphabet: int = 0
    codes: object = None  # codes array or rANS index


def decode_tensor(payload, budget: list[int], rans: list, expected_shapes=None) -> _PendingTensor:
    r = Reader(payload, "tensor section")
    name = bytes(r.take(r.u16())).decode("utf-8", errors="replace")
    ndim = r.u8()
    _check(ndim <= MAX_NDIM, f"{name}: rank {ndim} out of range")
    shape = tuple(r.unpack(f"{ndim}I")) if ndim else ()
    if expected_shapes is not None:
        _check(name in expected_shapes, f"unexpected tensor {name!r} for this architecture")
        _check(tuple(expected_shapes[name]) == shape, f"{name}: shape {shape} does not fit the architecture")
    numel = 1
    for d in shape:
        numel *= d
    _check(numel <= MAX_TENSOR_NUMEL, f"{name}: {numel} elements is above the limit")
    budget[0] -= numel
    _check(budget[0] >= 0, "tensors hold more elements than the limit")
    kind = r.u8()
    out = _PendingTensor(name, shape)
    if kind == KIND_DENSE:
        dt = r.u8()
        _check(dt in DTYPES or dt - PACKED in DTYPES, f"{name}: unknown dtype code {dt}")
        if dt in DTYPES:
            out.dense = r.array(DTYPES[dt], numel).astype(np.float32).reshape(shape)
        else:
            dtype = DTYPES[dt - PACKED]
            raw = inflate_exact(r.take(r.u32()), numel * dtype.itemsize, f"{name}: deflated values")
            out.dense = np.frombuffer(raw, dtype).astype(np.float32).reshape(shape)
        r.done()
        return out
    _check(kind == KIND_SPARSE, f"{name}: unknown tensor kind {kind}")
    n, cb_dt, k = r.unpack("IBH")
    k += 1
    _check(cb_dt in DTYPES or cb_dt - PACKED in DTYPES, f"{name}: unknown codebook dtype {cb_dt}")
    if cb_dt in DTYPES:
        out.codebook = r.array(DTYPES[cb_dt], k).astype(np.float32)
    else:
        out.codebook = unpack_codebook(r.take(r.u32()), DTYPES[cb_dt - PACKED], k)
    _check(bool(np.all(np.isfinite(out.codebook))), f"{name}: codebook holds non-finite values")
    out.n = n
    method = r.u8()
    out.pos_method = method
    if method == POS_ALL:
        _check(n == numel, f"{name}: dense positions but {n} entries for {numel} elements")
        out.pos = None
    elif method == POS_RELIDX4:
        _check(n <= 16 * numel + 16, f"{name}: {n} entries is too many")
        nb = r.u32()
        _check(nb == (n + 1) // 2, f"{name}: relative-index data has the wrong length")
        packed = r.array(np.uint8, nb)
        nib = np.empty(2 * nb, dtype=np.int64)
        nib[0::2] = packed & 15
        nib[1::2] = packed >> 4
        out.pos = np.cumsum(nib[:n] + 1) - 1
        _check(n == 0 or int(out.pos[-1]) < numel, f"{name}: relative index points past the end")
    elif method == POS_BITMASK:
        _check(n <= numel, f"{name}: {n} entries for {numel} elements")
        nb = r.u32()
        _check(nb == (numel + 7) // 8, f"{name}: bitmask has the wrong length")
        bits = np.unpackbits(r.array(np.uint8, nb))[:numel]
        out.pos = np.flatnonzero(bits)
        _check(len(out.pos) == n, f"{name}: bitmask holds {len(out.pos)} entries, header says {n}")
    elif method == POS_GAPS:
        _check(n <= numel, f"{name}: {n} entries for {numel} elements")
        coder, alphabet, sym = read_stream(r, numel + n, rans)
        _check(alphabet >= 2, f"{name}: gap alphabet too small")
        out.pos_alphabet = alphabet
        out.pos = sym if coder == CODER_RANS else gaps_to_positions(sym, alphabet, n, numel)
        out.pos_method = POS_GAPS if coder != CODER_RANS else -POS_GAPS
    else:
        raise SqzError(f"{name}: unknown position scheme {method}")
    coder, alphabet, codes = read_stream(r, n, rans)
    _check(alphabet == k, f"{name}: code alphabet {alphabet} differs from codebook size {k}")
    _check(coder == CODER_RANS or len(codes) == n, f"{name}: code count mismatch")
    if coder == CODER_RANS:
        _check(rans[codes].n == n, f"{name}: code count mismatch")
    out.codes = (coder == CODER_RANS, codes)
    r.done()
    return out


def _finish_tensor(p: _PendingTensor, rans_out: list[np.ndarray]) -> np.ndarray:
    if p.dense is not None:
        return p.dense
    numel = 1
    for d in p.shape:
        numel *= d
    if p.pos_method == -POS_GAPS:
        positions = gaps_to_positions(rans_out[p.pos], p.pos_alphabet, p.n, numel)
    elif p.pos_method == POS_ALL:
        positions = None
    else:
        positions = p.pos
    is_rans, codes = p.codes
    if is_rans:
        codes = rans_out[codes]
    flat = np.zeros(numel, dtype=np.float32)
    if positions is None:
        flat[:] = p.codebook[codes]
    else:
        flat[positions] = p.codebook[codes]
    return flat.reshape(p.shape)


# ----------------------------------------------------------------------------- container


def _section(tag: bytes, payload: bytes) -> bytes:
    return tag + struct.pack("<I", len(payload)) + payload + struct.pack("<I", zlib.crc32(payload))


SHARED_LIST_FILE = "imagenet1k.tsv"  # beside this file; the package ships it (squeezenet/weights/)
# metadata is small: a 1 MiB dictionary (the preset's 64 MiB would be allocated by every reader)
LZMA_RAW = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 20}]
XZ_MEMLIMIT = 96 << 20  # version-1 files used xz's preset 9 (a 64 MiB dictionary); nothing larger is read


def shared_values() -> dict[str, str]:
    """{name: metadata value} of the lists a version-2 file may refer to instead of holding:
    the ImageNet-1k class names and wnids, exactly as ``WeightsInfo.to_metadata`` writes them."""
    path = Path(__file__).with_name(SHARED_LIST_FILE)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    rows = [[f.strip() for f in line.split("\t")] for line in lines if line.strip()]
    rows = [f for f in rows if len(f) >= 3 and f[0].isdigit()]
    return {
        "imagenet1k.names": json.dumps([f[2] for f in rows]),
        "imagenet1k.wnids": json.dumps([f[1] for f in rows]),
    }


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def pack_metadata(meta: dict, shared: bool = True) -> bytes:
    """Smallest of: plain JSON, zlib, or raw LZMA2 of {"meta", "shared"} (method 3, version 2),
    where values equal to a shared list are stored by name (when ``shared``). Method 2 (xz)
    is only read: method 3 is never larger."""
    raw = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
    options = [b"\x00" + raw, b"\x01" + zlib.compress(raw, 9)]
    names = {value: name for name, value in shared_values().items()} if shared else {}
    refs = {k: f"{names[v]}@{_digest(v)}" for k, v in meta.items() if isinstance(v, str) and v in names}
    body = {"meta": {k: v for k, v in meta.items() if k not in refs}, "shared": refs}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    options.append(bytes([META_SHARED]) + lzma.compress(text, format=lzma.FORMAT_RAW, filters=LZMA_RAW))
    return min(options, key=len)


def unpack_metadata(payload) -> dict:
    _check(len(payload) >= 1, "empty metadata section")
    method, body = payload[0], bytes(payload[1:])
    try:
        if method == 0:
            raw = body
        elif method == 1:
            d = zlib.decompressobj()
            raw = d.decompress(body, MAX_META_BYTES)
            _check(not d.unconsumed_tail, "metadata too large")
        elif method in (2, META_SHARED):
            if method == 2:
                d = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
            else:
                d = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=LZMA_RAW)
            raw = d.decompress(body, MAX_META_BYTES)
            _check(d.eof, "metadata truncated or too large")
        else:
            raise SqzError(f"unknown metadata compression {method}")
        meta = json.loads(raw.decode("utf-8"))
    except (zlib.error, lzma.LZMAError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SqzError(f"corrupted metadata ({exc})") from None
    _check(isinstance(meta, dict), "metadata is not a JSON object")
    if method == META_SHARED:
        meta = _resolve_shared(meta)
    return meta


def _resolve_shared(body: dict) -> dict:
    meta, refs = body.get("meta"), body.get("shared")
    _check(isinstance(meta, dict) and isinstance(refs, dict), "malformed shared metadata")
    values = None
    for key, ref in refs.items():
        _check(isinstance(ref, str) and ref.count("@") == 1, f"malformed shared metadata reference {key!r}")
        name, digest = ref.split("@")
        if values is None:
            values = shared_values()
        _check(bool(values), f"metadata {key!r} refers to {name}, which needs {SHARED_LIST_FILE} beside sqz_codec.py")
        _check(name in values, f"metadata {key!r} refers to an unknown shared list {name!r}")
        _check(_digest(values[name]) == digest, f"metadata {key!r}: {SHARED_LIST_FILE} differs from the writer's")
        meta[key] = values[name]
    return meta


def encode_sqz(
    meta: dict, tensors: list[TensorPlan], steps: int = DEFAULT_STEPS, shared_metadata: bool = True
) -> tuple[bytes, dict]:
    """-> (file bytes, per-tensor size breakdown)."""
    sections = [_section(SEC_META, pack_metadata(meta, shared_metadata))]
    streams: list[RansStream] = []
    report = {"metadata": len(sections[0])}
    for plan in tensors:
        body, rs, info = encode_tensor(plan)
        sec = _section(SEC_TENSOR, body)
        sections.append(sec)
        start = len(streams)
        streams.extend(rs)
        report[plan.name] = {**info, "section": len(sec), "rans_streams": (start, len(streams))}
    bundle = rans_encode(streams, steps) if streams else b""
    sections.append(_section(SEC_RANS, struct.pack("<I", steps) + bundle))
    report["rans_bundle"] = len(sections[-1])
    # attribute the bundle to tensors by re-encoding each tensor's streams alone (approximate)
    header = MAGIC + struct.pack("<HHI", VERSION, 0, len(sections))
    body = header + b"".join(sections)
    total = len(body) + 8
    data = body + struct.pack("<I", total) + struct.pack("<I", zlib.crc32(body + struct.pack("<I", total)))
    report["total"] = len(data)
    return data, report


def decode_sqz(data: bytes, expected_shapes=None) -> tuple[dict, dict[str, np.ndarray]]:
    """-> (metadata dict, {name: float32 array}); raises SqzError on any defect.

    ``expected_shapes``: {name: shape}, or a callable metadata -> {name: shape} (run before
    any tensor is allocated), to check every tensor against the architecture.
    """
    data = bytes(data)
    _check(len(data) >= 20, f"truncated .sqz file ({len(data)} bytes)")
    _check(data[:4] == MAGIC, "not a .sqz file (bad magic)")
    total, crc = struct.unpack("<II", data[-8:])
    _check(total == len(data), f"truncated or padded .sqz file ({len(data)} bytes, header says {total})")
    _check(zlib.crc32(data[:-4]) == crc, "corrupted .sqz file (file CRC32 mismatch)")
    r = Reader(memoryview(data)[:-8], ".sqz file")
    r.take(4)
    version, _flags, nsec = r.unpack("HHI")
    _check(version in READABLE_VERSIONS, f"unsupported .sqz version {version} (this reader knows 1 and {VERSION})")
    _check(3 <= nsec <= r.left // 12, f"bad section count {nsec}")
    meta = None
    pending: list[_PendingTensor] = []
    rans: list[RansStream] = []
    budget = [MAX_TOTAL_NUMEL]
    bundle = None
    for i in range(nsec):
        tag = bytes(r.take(4))
        payload = r.take(r.u32())
        _check(zlib.crc32(payload) == r.u32(), f"corrupted .sqz section {i} ({tag!r}: CRC32 mismatch)")
        if i == 0:
            _check(tag == SEC_META, "first section is not metadata")
            meta = unpack_metadata(payload)
            if callable(expected_shapes):
                expected_shapes = expected_shapes(meta)
        elif i == nsec - 1:
            _check(tag == SEC_RANS, "last section is not the rANS bundle")
            bundle = payload
        else:
            _check(tag == SEC_TENSOR, f"unknown section {tag!r}")
            pending.append(decode_tensor(payload, budget, rans, expected_shapes))
    r.done()
    names = [p.name for p in pending]
    _check(len(set(names)) == len(names), "duplicate tensor names")
    if expected_shapes is not None:
        missing = [k for k in expected_shapes if k not in names]
        _check(not missing, f"tensors missing: {missing[:3]}")
    br = Reader(bundle, "rANS section")
    steps = br.u32()
    _check(1 <= steps <= 1 << 24, f"bad rANS step count {steps}")
    outs = rans_decode(br.take(br.left), rans, steps) if rans else []
    _check(bool(rans) or br.left == 0, "unexpected rANS data")
    tensors = {p.name: _finish_tensor(p, outs) for p in pending}
    return meta, tensors
