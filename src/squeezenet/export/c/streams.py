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

PROB_BITS = 12
PROB_SCALE = 1 << PROB_BITS
RANS_LOW = 1 << 16
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


def gap_symbols(positions: np.ndarray, alphabet: int) -> list[np.ndarray]:
    """For each entry, its gap as symbols (escapes then the terminal)."""
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    esc = alphabet - 1
    return [np.array([esc] * (g // esc) + [g % esc]) for g in gaps.tolist()]


def normalize_freqs(counts: np.ndarray, total: int = PROB_SCALE) -> np.ndarray:
    """Counts -> frequencies summing to ``total``, every present symbol at least 1."""
    counts = np.asarray(counts, dtype=np.int64)
    present = counts > 0
    if present.sum() > total:
        raise ValueError(f"{int(present.sum())} symbols do not fit {total} probability slots")
    freqs = np.where(present, np.maximum(1, counts * total // max(1, counts.sum())), 0)
    order = np.argsort(-counts, kind="stable")
    diff = total - int(freqs.sum())
    i = 0
    while diff:
        s = order[i % int(present.sum())]
        step = 1 if diff > 0 else -1
        if freqs[s] + step >= 1:
            freqs[s] += step
            diff -= step
        i += 1
    return freqs.astype(np.uint16)


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
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    best = None
    for alphabet in GAP_ALPHABETS:
        esc = alphabet - 1
        reps = gaps // esc
        symbols = np.concatenate([np.full(int(reps.sum()), esc), gaps - reps * esc])
        cost = _entropy_bytes(symbols) + alphabet * 1.2
        if best is None or cost < best[0]:
            best = (cost, alphabet)
        if alphabet > gaps.max() + 1:
            break
    return best[1]


def encode_layer(positions: np.ndarray, codes: np.ndarray, numel: int, alphabet_size: int) -> LayerStream:
    """One layer's rANS stream of (gap symbols, code) per entry, C order."""
    positions = np.asarray(positions, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    gap_alphabet = best_gap_alphabet(positions, numel)
    per_entry_gaps = gap_symbols(positions, gap_alphabet) if gap_alphabet else [np.zeros(0, np.int64)] * len(codes)
    gap_counts = np.zeros(max(gap_alphabet, 1), np.int64)
    for g in per_entry_gaps:
        np.add.at(gap_counts, g, 1)
    gap_freqs = normalize_freqs(gap_counts)[:gap_alphabet] if gap_alphabet else np.zeros(0, np.uint16)
    code_freqs = normalize_freqs(np.bincount(codes, minlength=alphabet_size))
    gap_cum = np.concatenate([[0], np.cumsum(gap_freqs)]).astype(np.int64)
    code_cum = np.concatenate([[0], np.cumsum(code_freqs)]).astype(np.int64)
    # the symbol sequence, as (frequency, cumulative) pairs, then encoded back to front
    freq_seq, cum_seq = [], []
    for g, c in zip(per_entry_gaps, codes.tolist(), strict=True):
        for s in g.tolist():
            freq_seq.append(int(gap_freqs[s]))
            cum_seq.append(int(gap_cum[s]))
        freq_seq.append(int(code_freqs[c]))
        cum_seq.append(int(code_cum[c]))
    x, out = RANS_LOW, []
    for f, c in zip(reversed(freq_seq), reversed(cum_seq), strict=True):
        limit = f << (32 - PROB_BITS)
        while x >= limit:
            out.append(x & 0xFFFF)
            x >>= 16
        x = ((x // f) << PROB_BITS) + (x % f) + c
    words = np.array([x & 0xFFFF, x >> 16, *reversed(out)], dtype=np.uint16)
    return LayerStream(words, gap_alphabet, gap_freqs, code_freqs, len(codes))


def decode_layer(stream: LayerStream, numel: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (positions, codes): the C decoder's steps in Python (for tests)."""

    def tables(freqs):
        cum = np.concatenate([[0], np.cumsum(freqs)]).astype(np.int64)
        return np.repeat(np.arange(len(freqs)), freqs.astype(np.int64)), cum

    gap_lut, gap_cum = tables(stream.gap_freqs) if stream.gap_alphabet else (None, None)
    code_lut, code_cum = tables(stream.code_freqs)
    words = stream.words.astype(np.int64)
    x, p = int(words[0]) | int(words[1]) << 16, 2

    def symbol(lut, freqs, cum):
        nonlocal x, p
        slot = x & (PROB_SCALE - 1)
        s = int(lut[slot])
        x = int(freqs[s]) * (x >> PROB_BITS) + slot - int(cum[s])
        if x < RANS_LOW:
            x = (x << 16) | int(words[p])
            p += 1
        return s

    positions, codes, pos = [], [], -1
    esc = stream.gap_alphabet - 1
    for _ in range(stream.entries):
        gap = 0
        if stream.gap_alphabet:
            while (s := symbol(gap_lut, stream.gap_freqs, gap_cum)) == esc:
                gap += esc
            gap += s
        pos += gap + 1
        positions.append(pos)
        codes.append(symbol(code_lut, stream.code_freqs, code_cum))
    if x != RANS_LOW or p != len(words) or (positions and positions[-1] >= numel):
        raise ValueError("corrupted layer stream")
    return np.array(positions, np.int64), np.array(codes, np.int64)
