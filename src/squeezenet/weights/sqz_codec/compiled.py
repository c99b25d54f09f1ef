"""The rANS bundle's two loops and the packed codebooks' exp-Golomb reader in C (``_rans.c``),
where the install could compile it.

Why: the NumPy coder takes one vectorised step per symbol of a lane, and at about 12 µs a step
(mostly the calls' own overhead) a delta that re-codes every layer patched in 190-410 ms where
the target is 100 (docs/sqz-delta.md). The same walk as a compiled loop runs each symbol in
nanoseconds. The C loops are the NumPy coder's (``bundle._decode``, ``rans.encode_lanes``) in
the same order, so they read and write the same bytes: the tests run both on the same streams,
valid and corrupted. The extension is optional (``setup.py`` builds it where a C compiler is
found); without it, or with ``SQUEEZENET_NO_COMPILED=1``, the codec is pure NumPy.
"""

from __future__ import annotations

import os

import numpy as np

from .reader import check

try:  # an optional accelerator: the codec is complete without it
    from . import _rans
except ImportError:  # pragma: no cover - exercised where no compiler was found at install
    _rans = None

AVAILABLE = _rans is not None
COMPILED = AVAILABLE and os.environ.get("SQUEEZENET_NO_COMPILED", "") != "1"


def _ints(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def decode_steps(x: np.ndarray, out: np.ndarray, words, bounds, group, count, pos, stride, stream, freq, cum, offsets,
                 prob_bits: int) -> np.ndarray:  # fmt: skip
    """``bundle._decode_spans`` compiled: ``x`` and ``out`` (int64) filled in place -> each
    group's next word. Lane l of the plan (``group``, ``count``, ``pos``, ``stride``,
    ``stream``) decodes stream ``stream[l]``, whose slot ranges are ``freq``/``cum[offsets[s]:offsets[s + 1]]``."""
    ptr = np.zeros(len(bounds) - 1, np.int64)
    words = np.append(np.asarray(words, np.int64), 0)  # the 0 a lane reads past the end (the NumPy padding)
    inputs = [_ints(a) for a in (words, bounds, group, count, pos, stride, stream, freq, cum, offsets)]
    check(_rans.decode_steps(x, out, ptr, *inputs, prob_bits) == 0, "corrupted rANS data (a lane outside its tables)")
    return ptr


GOLOMB_ERRORS = {-1: "exp-Golomb data ends early", -2: "corrupted exp-Golomb data", -3: "exp-Golomb value out of range",
                 -4: "trailing bits after exp-Golomb data"}  # fmt: skip


def exp_golomb_decode(payload, count: int, k: int, limit: int) -> np.ndarray:
    """``values.exp_golomb_decode`` compiled (a patch unpacks every packed codebook of its base)."""
    out = np.empty(count, np.int64)
    status = _rans.exp_golomb_decode(out, bytes(payload), k, limit)
    check(status == 0, GOLOMB_ERRORS.get(status, "corrupted exp-Golomb data"))
    return out


ENCODE_ERRORS = {-1: "symbol outside the alphabet", -2: "symbol with zero frequency",
                 -3: "rANS lanes outside their streams"}  # fmt: skip


def encode_steps(symbols, start, stride, count, table, alphabet, group, groups: int, freq, cum, prob_bits: int):
    """``rans.encode_lanes`` and the split of its words by group, compiled. Lanes ordered by count
    (descending): lane l codes ``symbols[start[l] + t * stride[l]]`` (t < count[l]) with the slot
    ranges ``freq``/``cum[table[l] + symbol]`` (symbols below ``alphabet[l]``) -> (final states,
    each of the ``groups`` groups' words in the decoder's order)."""
    x = np.empty(len(count), np.int64)
    words = np.empty(len(symbols) + 1, np.int64)
    per_group = np.zeros(groups, np.int64)
    inputs = [_ints(a) for a in (symbols, start, stride, count, table, alphabet, group, freq, cum)]
    n = _rans.encode_steps(x, words, per_group, *inputs, prob_bits)
    check(n >= 0, ENCODE_ERRORS.get(n, "rANS encoder failed"))
    return x, np.split(words[:n], np.cumsum(per_group)[:-1])
