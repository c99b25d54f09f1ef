"""Canonical Huffman codes limited to HUFFMAN_MAX_LEN bits (the stored table is one length per
symbol), and raw fixed-width bit packing: the coders a stream uses where rANS is not smaller."""

from __future__ import annotations

import heapq

import numpy as np

from .reader import SqzError, check

HUFFMAN_MAX_LEN = 15


def huffman_lengths(counts: np.ndarray, max_len: int = HUFFMAN_MAX_LEN) -> np.ndarray:
    """Code lengths (0 = absent) of a Huffman code limited to ``max_len`` bits.

    A code that comes out too deep is rebuilt with every count raised to a floor share of the
    total. The floor doubles on every try, so that by the last one all counts are equal (a
    code of ceil(log2 n) bits): raising it by the new total alone can creep for ever on
    Fibonacci-like counts, which rate-distortion codebooks do produce."""
    counts = np.asarray(counts, dtype=np.int64)
    present = np.flatnonzero(counts > 0)
    lengths = np.zeros(len(counts), dtype=np.uint8)
    check(len(present) <= 1 << max_len, f"{len(present)} symbols do not fit a code of at most {max_len} bits")
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
    check(bool(np.all(lengths <= HUFFMAN_MAX_LEN)), "Huffman code length above the limit")
    used = lengths[lengths > 0].astype(np.int64)
    check(len(used) >= 1, "Huffman table has no symbol")
    kraft = int(np.sum(1 << (HUFFMAN_MAX_LEN - used)))
    check(kraft <= 1 << HUFFMAN_MAX_LEN, "Huffman code lengths violate the Kraft inequality")


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
    check(n <= nbits, "Huffman data shorter than its symbol count")
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
    check(p <= nbits, "corrupted Huffman data (runs past the end)")
    return lut_sym[window[np.asarray(starts)]]


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    values = np.asarray(values, dtype=np.int64)
    j = np.arange(bits)
    return np.packbits(((values[:, None] >> (bits - 1 - j)) & 1).astype(np.uint8).ravel()).tobytes()


def unpack_bits(payload, bits: int, n: int) -> np.ndarray:
    check(1 <= bits <= 16, f"bad bit width {bits}")
    check(len(payload) == (n * bits + 7) // 8, "raw code data has the wrong length")
    raw = np.unpackbits(np.frombuffer(payload, np.uint8))[: n * bits].reshape(n, bits).astype(np.int64)
    return raw @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
