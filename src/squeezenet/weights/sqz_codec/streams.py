"""Symbol streams: one stream of symbols < alphabet stored with whichever coder is smallest (raw
bits, canonical Huffman, or rANS, whose symbols wait for the file's interleaved bundle)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .bundle import RansStream
from .constants import (
    CODER_HUFFMAN,
    CODER_NAMES,
    CODER_RANS,
    CODER_RANS_Z,
    CODER_RAW,
    DEFAULT_STEPS,
    MAX_ALPHABET,
    PROB_SCALE,
)
from .freqs import normalize_freqs, quantize_counts
from .huffman import huffman_decode, huffman_encode, huffman_lengths, pack_bits, unpack_bits
from .reader import Reader, check
from .values import deflate, inflate_exact


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
    check(1 <= alphabet <= MAX_ALPHABET, f"alphabet of {alphabet} symbols is out of range")
    n = len(symbols)
    if n:
        check(int(symbols.min()) >= 0 and int(symbols.max()) < alphabet, "symbol outside the alphabet")
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
        plans += _rans_plans(counts, n, alphabet, symbols)
    check(bool(plans), f"unknown coder {coder!r}")
    return _smallest(plans)


def plan_rans_counts(counts: np.ndarray, alphabet: int) -> StreamPlan:
    """The plan ``plan_stream(symbols, alphabet, "rans")`` makes, from the symbols' counts alone:
    a rANS stream's bytes and estimate depend on nothing else, so a writer comparing alphabets
    builds the symbols of the one it keeps only (its ``rans.symbols`` are left to fill)."""
    counts = np.asarray(counts, dtype=np.int64)
    check(1 <= alphabet <= MAX_ALPHABET and len(counts) == alphabet, "counts do not fit the alphabet")
    n = int(counts.sum())
    check(n > 0, "a rANS stream needs a symbol")
    return _smallest(_rans_plans(counts, n, alphabet, None))


def _rans_plans(counts: np.ndarray, n: int, alphabet: int, symbols) -> list[StreamPlan]:
    """The table stored plain, and deflated where that is smaller; the payload stands for the
    estimated bytes the bundle will hold (so that the writer compares coders by size)."""
    q = quantize_counts(counts)
    freq = normalize_freqs(q)
    est = float(-(counts * np.log2(np.maximum(freq, 1) / PROB_SCALE)).sum()) / 8 + 4 * -(-n // DEFAULT_STEPS)
    plans = [StreamPlan(CODER_RANS, alphabet, n, q.tobytes(), b"\0" * int(est), RansStream(n, q, symbols), est)]
    packed = deflate((np.diff(np.concatenate([[0], q.astype(np.int64)])) % 256).astype(np.uint8).tobytes())
    header = struct.pack("<H", len(packed)) + packed
    if len(header) < len(q):
        plans.append(StreamPlan(CODER_RANS_Z, alphabet, n, header, b"\0" * int(est), RansStream(n, q, symbols), est))
    return plans


def _smallest(plans: list[StreamPlan]) -> StreamPlan:
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
    check(coder in CODER_NAMES, f"unknown coder {coder}")
    check(alphabet <= MAX_ALPHABET, f"alphabet of {alphabet} symbols is out of range")
    check(n <= max_n, f"stream claims {n} symbols, at most {max_n} possible")
    if coder == CODER_RAW:
        bits = r.u8()
        check(1 <= bits <= 16 and (1 << bits) >= alphabet, f"bad raw bit width {bits}")
        payload = r.take(r.u32())
        sym = unpack_bits(payload, bits, n)
        check(bool(np.all(sym < alphabet)), "raw symbol outside the alphabet")
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
    check(len(payload) == 0, "rANS stream with inline data")
    check(n == 0 or bool(np.any(table)), "rANS table has no symbol")
    rans.append(RansStream(n, table.copy() if n else np.ones(1, np.uint8)))
    return coder, alphabet, len(rans) - 1
