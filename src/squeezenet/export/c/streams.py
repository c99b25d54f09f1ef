"""Per-layer compressed weight streams: what the C runtime decodes inside its convolution loop.

The ``.sqz`` file interleaves every layer's rANS streams in one bundle (fast to decode as
a whole in NumPy, impossible to decode one layer at a time). The C export re-encodes each
codebook layer on its own: one static rANS stream (32-bit state, 16-bit words, 12-bit
probabilities) that holds, for each non-zero weight in C order, its gap symbols then its
codebook index. Output channels are contiguous in C order, so the convolution decodes the
stream front to back, one output channel at a time, into a small per-channel list.

Gap symbols (as the ``.sqz``'s "gaps" scheme): alphabet E chosen per layer; a symbol
s < E-1 ends a gap of s (plus E-1 per escape before it), symbol E-1 is an escape. A layer
without any zero weight has no gap symbols (E = 0). Frequency tables are stored as one
LEB128 varint per symbol (most fit one byte); the int16 codebook follows as zigzag varints of its
first value and successive differences (``codebook_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from squeezenet.weights.sqz_codec import (
    RANS_L,
    Lanes,
    cumulative,
    gap_symbols,
    normalize_weights,
    rans_encode_slots,
    rans_pop,
    slot_symbols,
)

PROB_BITS = 12  # the C decoder's lookup tables have 2^PROB_BITS one-byte entries (in the arena)
PROB_SCALE = 1 << PROB_BITS
GAP_ALPHABETS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


@dataclass
class LayerStream:
    words: np.ndarray  # uint16: the final state (low, high), then the renormalisation words
    gap_alphabet: int  # 0: every position holds a weight
    gap_freqs: np.ndarray  # uint16 [gap_alphabet]
    code_freqs: np.ndarray  # uint16 [K]
    entries: int

    @property
    def tables(self) -> bytes:
        return varints(self.gap_freqs) + varints(self.code_freqs)

    @property
    def nbytes(self) -> int:
        return 2 * len(self.words) + len(self.tables)


def varints(values: np.ndarray) -> bytes:
    out = bytearray()
    for v in (int(x) for x in values):
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def zigzag_varints(values: np.ndarray) -> bytes:
    """Signed integers as zigzag LEB128 varints (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...)."""
    v = np.asarray(values, dtype=np.int64)
    return varints(np.where(v < 0, -2 * v - 1, 2 * v))


def codebook_bytes(codebook: np.ndarray) -> bytes:
    """The int16 codebook as its first value then successive differences, zigzag varints: the
    codebook is sorted, so most differences take one byte where int16 takes two."""
    c = np.asarray(codebook, dtype=np.int64)
    return zigzag_varints(np.diff(np.concatenate([[0], c])))


def _entropy_bytes(symbols: np.ndarray) -> float:
    if len(symbols) == 0:
        return 0.0
    counts = np.bincount(symbols)
    p = counts[counts > 0] / len(symbols)
    return float(-(p * np.log2(p)).sum() * len(symbols) / 8)


def best_gap_alphabet(positions: np.ndarray, numel: int) -> int:
    """The alphabet with the fewest estimated bytes (symbols' entropy plus the table)."""
    if len(positions) == numel:
        return 0
    largest = int((np.diff(np.concatenate([[-1], positions])) - 1).max())
    best = None
    for alphabet in GAP_ALPHABETS:
        cost = _entropy_bytes(gap_symbols(positions, alphabet)) + alphabet * 1.2
        if best is None or cost < best[0]:
            best = (cost, alphabet)
        if alphabet > largest + 1:
            break
    return best[1]


def _slots(gaps: np.ndarray, gap_freqs: np.ndarray, codes: np.ndarray, code_freqs: np.ndarray) -> np.ndarray:
    """Every symbol of the layer as its slot range (frequency; start), in stream order: each
    entry's gap symbols, then its code."""
    code_slots = np.stack([code_freqs[codes], cumulative(code_freqs)[codes]])
    if not len(gap_freqs):
        return code_slots
    ends = gaps != len(gap_freqs) - 1  # a gap ends with its one symbol that is not an escape
    slots = np.zeros((2, len(gaps) + len(codes)), np.int64)
    slots[:, np.arange(len(gaps)) + np.cumsum(ends) - ends] = gap_freqs[gaps], cumulative(gap_freqs)[gaps]
    slots[:, np.flatnonzero(ends) + np.arange(len(codes)) + 1] = code_slots
    return slots


def encode_layer(positions: np.ndarray, codes: np.ndarray, numel: int, alphabet_size: int) -> LayerStream:
    """One layer's rANS stream of (gap symbols, code) per entry, C order."""
    positions = np.asarray(positions, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    gap_alphabet = best_gap_alphabet(positions, numel)
    gaps = gap_symbols(positions, gap_alphabet) if gap_alphabet else np.zeros(0, np.int64)
    gap_freqs = normalize_weights(np.bincount(gaps, minlength=gap_alphabet), PROB_SCALE) if gap_alphabet else gaps
    code_freqs = normalize_weights(np.bincount(codes, minlength=alphabet_size), PROB_SCALE)
    freq, cum = _slots(gaps, gap_freqs, codes, code_freqs)
    words = np.frombuffer(rans_encode_slots(freq, cum, Lanes.single(len(freq)), PROB_BITS), "<u2")
    return LayerStream(
        words.astype(np.uint16), gap_alphabet, gap_freqs.astype(np.uint16), code_freqs.astype(np.uint16), len(codes)
    )


def decode_layer(stream: LayerStream, numel: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (positions, codes): the C decoder's steps in Python (for tests)."""

    def tables(freqs):
        freqs = freqs.astype(np.int64)
        return slot_symbols(freqs).tolist(), freqs.tolist(), cumulative(freqs).tolist()

    gap_tables = tables(stream.gap_freqs)
    code_tables = tables(stream.code_freqs)
    words = stream.words.astype(np.int64).tolist()
    x, p = words[0] | words[1] << 16, 2

    def symbol(lut, freqs, cum):
        nonlocal x, p
        s, x = rans_pop(x, lut, freqs, cum, PROB_BITS)
        if x < RANS_L:
            x = (x << 16) | words[p]
            p += 1
        return s

    positions, codes, pos = [], [], -1
    esc = stream.gap_alphabet - 1
    for _ in range(stream.entries):
        gap = 0
        if stream.gap_alphabet:
            while (s := symbol(*gap_tables)) == esc:
                gap += esc
            gap += s
        pos += gap + 1
        positions.append(pos)
        codes.append(symbol(*code_tables))
    if x != RANS_L or p != len(words) or (positions and positions[-1] >= numel):
        raise ValueError("corrupted layer stream")
    return np.array(positions, np.int64), np.array(codes, np.int64)
