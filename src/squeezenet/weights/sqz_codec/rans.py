"""rANS: 32-bit states in [2^16, 2^32), 16-bit renormalisation words, probabilities in units of
2^-prob_bits.

One coder for two users. The ``.sqz`` bundle (``bundle``) codes every stream of a file at once in
many interleaved lanes with 15-bit probabilities (NumPy decodes all lanes in one pass); the C export
codes each layer as one lane with 12-bit probabilities (its decoder walks a layer front to
back). The encoder takes each symbol as its slot range (frequency, cumulative frequency), so a
lane may mix alphabets, as the C export's gap symbols and codebook indices do. With 16-bit words
and 32-bit states one renormalisation step per symbol is always enough, both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    states, words, _ = encode_lanes(freq, cum, lanes, prob_bits)
    return np.asarray(states, "<u4").tobytes() + np.asarray(words, "<u2").tobytes()


FEW_LANES = 24  # up to this many lanes, plain integers lane by lane beat one NumPy step for all


def _encode_each_lane(freq, cum, lanes: Lanes, prob_bits: int):
    """Lane by lane with plain integers, then the words in the decoder's order (step, then lane)."""
    states, words, steps, owners = [], [], [], []
    for lane in range(len(lanes.count)):
        idx = lanes.start[lane] + lanes.stride[lane] * np.arange(int(lanes.count[lane]))
        x = RANS_L
        for t, f, c in zip(range(len(idx) - 1, -1, -1), freq[idx][::-1].tolist(), cum[idx][::-1].tolist(), strict=True):
            x, out, word = rans_push(x, f, c, prob_bits)
            if out:
                words.append(word), steps.append(t), owners.append(lane)
        states.append(x)
    order = np.lexsort((owners, steps))
    return np.asarray(states, np.int64), np.asarray(words, np.int64)[order], np.asarray(owners, np.int64)[order]


def encode_lanes(freq, cum, lanes: Lanes, prob_bits: int):
    """-> (each lane's final state, the words in the decoder's order, the lane of each word)."""
    freq, cum = np.asarray(freq, dtype=np.int64), np.asarray(cum, dtype=np.int64)
    if len(lanes.count) <= FEW_LANES:
        return _encode_each_lane(freq, cum, lanes, prob_bits)
    x = np.full(len(lanes.count), RANS_L, dtype=np.int64)
    chunks, emitted = [], []
    max_t = int(lanes.count[0]) if len(x) else 0
    active_by_t = np.searchsorted(-lanes.count, -np.arange(max_t), side="left")  # lanes with count > t
    for t in range(max_t - 1, -1, -1):
        a = int(active_by_t[t])
        idx = lanes.start[:a] + t * lanes.stride[:a]
        x[:a], out, word = rans_push(x[:a], freq[idx], cum[idx], prob_bits)
        chunks.append(word[out])
        emitted.append(out)
    if not chunks:
        return x, np.zeros(0, np.int64), np.zeros(0, np.int64)
    # each word's lane, from the steps' masks laid end to end (one pass, not one call a step)
    emitted = emitted[::-1]
    starts = np.cumsum([0] + [len(m) for m in emitted])
    hits = np.flatnonzero(np.concatenate(emitted))
    owners = hits - starts[np.searchsorted(starts, hits, side="right") - 1]
    return x, np.concatenate(chunks[::-1]), owners
