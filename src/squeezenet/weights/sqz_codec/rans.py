"""rANS: 32-bit states in [2^16, 2^32), 16-bit renormalisation words, probabilities in units of
2^-prob_bits.

One coder for two users. The ``.sqz`` bundle codes every stream of a file at once in many
interleaved lanes with 15-bit probabilities (NumPy decodes all lanes in one pass); the C export
codes each layer as one lane with 12-bit probabilities (its decoder walks a layer front to
back). The encoder takes each symbol as its slot range (frequency, cumulative frequency), so a
lane may mix alphabets, as the C export's gap symbols and codebook indices do. With 16-bit words
and 32-bit states one renormalisation step per symbol is always enough, both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import DEFAULT_STEPS, PROB_BITS
from .freqs import normalize_freqs
from .reader import Reader, check

RANS_L = 1 << 16  # lower bound of a normalised state; every encoder starts from it, every decoder ends on it


@dataclass
class Lanes:
    """Lane l holds symbols start[l] + t * stride[l] for t < count[l], at its step t. Lanes are
    ordered by count, descending: at every step the active lanes come first, and they take their
    words in lane order."""

    start: np.ndarray
    stride: np.ndarray
    count: np.ndarray

    @classmethod
    def single(cls, n: int) -> Lanes:
        one = np.ones(1, np.int64)
        return cls(np.zeros(1, np.int64), one, one * n)


def cumulative(freqs: np.ndarray) -> np.ndarray:
    """Start of each symbol's slot range."""
    freqs = np.asarray(freqs, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(freqs)[:-1]]).astype(np.int64)


def slot_symbols(freqs: np.ndarray) -> np.ndarray:
    """The decoder's lookup table: slot -> symbol."""
    freqs = np.asarray(freqs, dtype=np.int64)
    return np.repeat(np.arange(len(freqs)), freqs)


def rans_push(x, f, c, prob_bits: int):
    """Put one symbol (slot range [c, c + f)) into state x: -> (new state, whether a word left the
    state first, that word). x, f, c: Python integers, or int64 arrays (one element per lane)."""
    out = x >= f << (32 - prob_bits)
    word = x & 0xFFFF
    x = x >> (16 * out)
    return ((x // f) << prob_bits) + x % f + c, out, word


def rans_pop(x, lut, freq, cum, prob_bits: int, lut_base=0):
    """Take one symbol out of state x, before renormalisation: -> (the symbol's index into freq and
    cum, new state). ``lut_base`` selects each lane's table in a flat ``lut``."""
    slot = x & ((1 << prob_bits) - 1)
    i = lut[lut_base + slot]
    return i, freq[i] * (x >> prob_bits) + slot - cum[i]


def rans_encode_slots(freq: np.ndarray, cum: np.ndarray, lanes: Lanes, prob_bits: int) -> bytes:
    """Symbol i as the slot range [cum[i], cum[i] + freq[i]) -> each lane's final state (u32),
    then the 16-bit words in the order the decoder takes them."""
    freq = np.asarray(freq, dtype=np.int64)
    cum = np.asarray(cum, dtype=np.int64)
    if len(lanes.count) == 1:  # one sequential lane: plain integers are far faster than arrays of one
        states, words = _encode_one_lane(freq, cum, lanes, prob_bits)
    else:
        states, words = _encode_lanes(freq, cum, lanes, prob_bits)
    return np.asarray(states, "<u4").tobytes() + np.asarray(words, "<u2").tobytes()


def _encode_one_lane(freq, cum, lanes: Lanes, prob_bits: int):
    take = slice(int(lanes.start[0]), None, int(lanes.stride[0]))
    n = int(lanes.count[0])
    x, words = RANS_L, []
    for f, c in zip(reversed(freq[take][:n].tolist()), reversed(cum[take][:n].tolist()), strict=True):
        x, out, word = rans_push(x, f, c, prob_bits)
        if out:
            words.append(word)
    return [x], words[::-1]


def _encode_lanes(freq, cum, lanes: Lanes, prob_bits: int):
    x = np.full(len(lanes.count), RANS_L, dtype=np.int64)
    chunks = []
    max_t = int(lanes.count[0]) if len(x) else 0
    active_by_t = np.searchsorted(-lanes.count, -np.arange(max_t), side="left")  # lanes with count > t
    for t in range(max_t - 1, -1, -1):
        a = int(active_by_t[t])
        idx = lanes.start[:a] + t * lanes.stride[:a]
        x[:a], out, word = rans_push(x[:a], freq[idx], cum[idx], prob_bits)
        chunks.append(word[out])
    return x, np.concatenate(chunks[::-1]) if chunks else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------- the .sqz bundle


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
    cum = np.concatenate([cumulative(f) for f in freqs]) if freqs else freq
    return freqs, freq, cum, offsets


def _stream_starts(ns: list[int]) -> np.ndarray:
    base = np.zeros(len(ns) + 1, dtype=np.int64)
    base[1:] = np.cumsum(ns)
    return base


def _checked_symbols(streams: list[RansStream]) -> np.ndarray:
    syms = []
    for s in streams:
        sym = np.asarray(s.symbols, dtype=np.int64)
        check(len(sym) == s.n, "stream length mismatch")
        if s.n:
            check(int(sym.min()) >= 0 and int(sym.max()) < len(s.table), "symbol outside the alphabet")
            check(bool(np.all(s.table[sym] > 0)), "symbol with zero frequency")
        syms.append(sym)
    return np.concatenate(syms) if syms else np.zeros(0, np.int64)


def rans_encode(streams: list[RansStream], steps: int = DEFAULT_STEPS) -> bytes:
    """Encode all streams into one interleaved bundle: lane states (u32) then 16-bit words."""
    check(steps >= 1, "steps must be positive")
    ns = [s.n for s in streams]
    _, freq, cum, offsets = _tables(streams)
    flat = _checked_symbols(streams)
    stream_of = np.repeat(np.arange(len(streams)), ns)
    tab = offsets[stream_of] + flat
    lane_stream, lane_local, lane_count, lane_stride = _lane_plan(ns, steps)
    lanes = Lanes(_stream_starts(ns)[lane_stream] + lane_local, lane_stride, lane_count)
    return rans_encode_slots(freq[tab], cum[tab], lanes, PROB_BITS)


def rans_decode(blob: bytes | memoryview, streams: list[RansStream], steps: int = DEFAULT_STEPS) -> list[np.ndarray]:
    """Inverse of ``rans_encode``; every stream's ``n`` must already be bounds-checked."""
    check(steps >= 1, "rANS steps must be positive")
    ns = [s.n for s in streams]
    freqs, freq, cum, offsets = _tables(streams)
    lane_stream, lane_local, lane_count, lane_stride = _lane_plan(ns, steps)
    nl = len(lane_stream)
    r = Reader(blob, "rANS data")
    x = r.array("<u4", nl).astype(np.int64)
    check(bool(np.all(x >= RANS_L)), "corrupted rANS data (lane state out of range)")
    total = int(sum(ns))
    nwords = r.left // 2
    check(r.left % 2 == 0, "corrupted rANS data (odd length)")
    words = np.zeros(nwords + total + 1, dtype=np.int64)  # padded: every step reads at most one word per lane
    words[:nwords] = r.array("<u2", nwords)
    # slot -> index into the flat tables, one block of slots per stream
    lut = np.concatenate([o + slot_symbols(f) for o, f in zip(offsets[:-1], freqs, strict=True)]) if freqs else freq
    base = _stream_starts(ns)
    out = np.zeros(total, dtype=np.int64)
    pos = base[lane_stream] + lane_local
    lanes_lut = lane_stream * (1 << PROB_BITS)
    lanes_off = offsets[lane_stream]
    ptr = 0
    a = nl
    for t in range(int(lane_count[0]) if nl else 0):
        while a and lane_count[a - 1] <= t:
            a -= 1
        tab, xa = rans_pop(x[:a], lut, freq, cum, PROB_BITS, lanes_lut[:a])
        m = xa < RANS_L
        k = int(np.count_nonzero(m))
        if k:
            xa[m] = (xa[m] << 16) | words[ptr : ptr + k]
            ptr += k
        x[:a] = xa
        out[pos[:a]] = tab - lanes_off[:a]
        pos[:a] += lane_stride[:a]
    check(ptr == nwords, "corrupted rANS data (word count does not match)")
    check(bool(np.all(x == RANS_L)), "corrupted rANS data (final lane state is wrong)")
    return [out[base[i] : base[i + 1]] for i in range(len(streams))]
