"""Frequency tables: integer weights -> frequencies that sum to a power of two.

The ``.sqz`` stores one byte per symbol (a quantised log count) and every reader recomputes the
frequencies from it, so the arithmetic here is part of the format: integers only, identical on
every machine, never to be changed. The C export normalises its raw counts with the same
``normalize_weights``."""

from __future__ import annotations

import numpy as np

from .constants import PROB_SCALE
from .reader import check

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


def normalize_weights(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer frequencies proportional to ``weights``, summing to ``total``, >= 1 for every
    symbol of positive weight. The floor loses less than one unit per symbol; the rounding
    difference is spread one unit at a time in decreasing frequency order (ties by symbol),
    taking units only from frequencies above 1."""
    w = np.asarray(weights, dtype=np.int64)
    present = w > 0
    k = int(present.sum())
    check(k >= 1, "frequency table has no symbol")
    check(k <= total, "frequency table has more symbols than probability slots")
    freq = np.where(present, np.maximum(1, (w * total) // int(w.sum())), 0)
    diff = total - int(freq.sum())
    order = np.argsort(-freq, kind="stable")
    while diff > 0:  # one unit each, in that order (diff < k: the present symbols, each at most once)
        take = order[:diff]
        freq[take] += 1
        diff -= len(take)
    while diff < 0:  # one pass over that order: one unit from each frequency above 1, until none is owed
        take = order[freq[order] > 1][:-diff]
        check(len(take) > 0, "frequency table cannot be normalised")
        freq[take] -= 1
        diff += len(take)
    return freq.astype(np.int64)


def normalize_freqs(q: np.ndarray, total: int = PROB_SCALE) -> np.ndarray:
    """Frequencies of a stored table of quantised counts (``quantize_counts``)."""
    return normalize_weights(table_weights(q), total)
