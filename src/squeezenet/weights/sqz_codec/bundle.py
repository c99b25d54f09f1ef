"""The ``.sqz`` rANS bundle: every rANS stream of a file coded at once, in lanes of at most
``steps`` symbols that one NumPy pass decodes together (docs/sqz-format.md, RANS).

Version 3 keeps the lanes and words of each tensor apart, as a *group* (its lanes' states, its
word count, its words), so that a delta re-codes only the tensors that changed and copies the
others' bytes. The decoder still walks the lanes of every group in one pass, each group taking
its own words: a group costs its file four bytes and its reader nothing measurable. Versions 1
and 2 wrote the whole file as one group, without the word count.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

import numpy as np

from . import compiled
from .constants import DEFAULT_STEPS, PROB_BITS
from .freqs import normalize_freqs
from .rans import RANS_L, Lanes, cumulative, encode_lanes, slot_symbols
from .reader import Reader, check


@dataclass
class RansStream:
    """One stream of a rANS bundle: symbols < len(table), table = quantized counts (bytes)."""

    n: int
    table: np.ndarray  # uint8 per symbol
    symbols: np.ndarray | None = None


@dataclass
class LanePlan:
    """Every lane of a bundle, group after group, each group's lanes by symbol count (descending,
    stable): lane l codes symbols ``local[l] + t * stride[l]`` (t < ``count[l]``) of ``stream[l]``."""

    stream: np.ndarray
    local: np.ndarray
    count: np.ndarray
    stride: np.ndarray
    group: np.ndarray

    def lanes_of(self, group: int) -> int:
        return int(np.count_nonzero(self.group == group))


def lane_plan(ns: list[int], group_sizes: list[int], steps: int) -> LanePlan:
    """``group_sizes``: how many consecutive streams each group holds."""
    check(sum(group_sizes) == len(ns), "rANS groups do not cover the streams")
    stream, local, count, stride, group = [], [], [], [], []
    first = 0
    for g, size in enumerate(group_sizes):
        lanes = []
        for s in range(first, first + size):
            width = -(-ns[s] // steps) if ns[s] else 0
            lanes += [(s, j, (ns[s] - j + width - 1) // width, width) for j in range(width)]
        lanes.sort(key=lambda lane: -lane[2])  # stable: by stream, then lane, within one count
        for s, j, c, w in lanes:
            stream.append(s), local.append(j), count.append(c), stride.append(w), group.append(g)
        first += size
    return LanePlan(*(np.asarray(a, dtype=np.int64) for a in (stream, local, count, stride, group)))


def _tables(streams: list[RansStream]):
    """Flat freq/cum arrays over all streams, plus each stream's offset into them."""
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


def _stream_symbols(streams: list[RansStream]) -> np.ndarray:
    """Every stream's symbols, one after another (the compiled encoder checks their values)."""
    for s in streams:
        check(s.symbols is not None and len(s.symbols) == s.n, "stream length mismatch")
    return np.concatenate([np.asarray(s.symbols, np.int64) for s in streams]) if streams else np.zeros(0, np.int64)


def _checked_symbols(streams: list[RansStream]) -> np.ndarray:
    """``_stream_symbols``, each value checked against its stream's table (the NumPy encoder's checks)."""
    symbols = _stream_symbols(streams)
    starts = _stream_starts([s.n for s in streams])
    for s, first, last in zip(streams, starts[:-1], starts[1:], strict=True):
        sym = symbols[first:last]
        if s.n:
            check(int(sym.min()) >= 0 and int(sym.max()) < len(s.table), "symbol outside the alphabet")
            check(bool(np.all(s.table[sym] > 0)), "symbol with zero frequency")
    return symbols


# ----------------------------------------------------------------------------- encoding


def _encode(streams: list[RansStream], group_sizes: list[int], steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """-> per group (its lanes' final states, its words in the order the decoder takes them).
    All lanes are coded in one pass, then each word goes to its lane's group: a group's words
    are the words a bundle of that group alone would have."""
    check(steps >= 1, "steps must be positive")
    ns = [s.n for s in streams]
    plan = lane_plan(ns, group_sizes, steps)
    _, freq, cum, offsets = _tables(streams)
    by_count = np.argsort(-plan.count, kind="stable")  # the encoder walks lanes by count
    starts = _stream_starts(ns)[plan.stream] + plan.local
    lanes = Lanes(starts[by_count], plan.stride[by_count], plan.count[by_count])
    if compiled.COMPILED:
        symbols = _stream_symbols(streams)
        stream = plan.stream[by_count]
        alphabet = np.diff(offsets)[stream]
        final, split = compiled.encode_steps(symbols, lanes.start, lanes.stride, lanes.count, offsets[stream], alphabet,
                                             plan.group[by_count], len(group_sizes), freq, cum, PROB_BITS)  # fmt: skip
    else:
        tab = offsets[np.repeat(np.arange(len(streams)), ns)] + _checked_symbols(streams)
        final, words, word_lanes = encode_lanes(freq[tab], cum[tab], lanes, PROB_BITS)
        word_groups = plan.group[by_count[word_lanes]]
        ends = np.cumsum(np.bincount(word_groups, minlength=len(group_sizes)))
        split = np.split(words[np.argsort(word_groups, kind="stable")], ends[:-1])
    states = np.empty(len(final), np.int64)
    states[by_count] = final
    return [(states[plan.group == g], split[g]) for g in range(len(group_sizes))]


def encode_groups(streams: list[RansStream], group_sizes: list[int], steps: int = DEFAULT_STEPS) -> list[bytes]:
    """Version 3: each group's bytes, ``states (u32 per lane) | word count u32 | words (u16)``."""
    return [
        states.astype("<u4").tobytes() + struct.pack("<I", len(words)) + words.astype("<u2").tobytes()
        for states, words in _encode(streams, group_sizes, steps)
    ]


def rans_encode(streams: list[RansStream], steps: int = DEFAULT_STEPS) -> bytes:
    """Versions 1 and 2: every stream in one group, ``states | words`` (the words run to the end)."""
    if not streams:
        return b""
    ((states, words),) = _encode(streams, [len(streams)], steps)
    return states.astype("<u4").tobytes() + words.astype("<u2").tobytes()


# ----------------------------------------------------------------------------- decoding


def split_groups(blob: bytes | memoryview, ns: list[int], group_sizes: list[int], steps: int) -> list[memoryview]:
    """Version 3's group bytes, each length checked against the bundle; nothing decoded."""
    plan = lane_plan(ns, group_sizes, steps)
    r = Reader(blob, "rANS data")
    out = []
    for g in range(len(group_sizes)):
        start = r.pos
        r.take(4 * plan.lanes_of(g))
        nwords = r.u32()
        check(nwords <= r.left // 2, "corrupted rANS data (word count past the end)")
        r.take(2 * nwords)
        out.append(memoryview(blob)[start : r.pos])
    r.done()
    return out


def decode_groups(groups: list[bytes | memoryview], streams: list[RansStream], group_sizes: list[int],
                  steps: int = DEFAULT_STEPS) -> list[np.ndarray]:  # fmt: skip
    """Inverse of ``encode_groups`` (``groups`` as ``split_groups`` gives them)."""
    plan = lane_plan([s.n for s in streams], group_sizes, steps)
    states, words, bounds = [], [], [0]
    for g, blob in enumerate(groups):
        r = Reader(blob, "rANS data")
        states.append(r.array("<u4", plan.lanes_of(g)))
        words.append(r.array("<u2", r.u32()))
        r.done()
        bounds.append(bounds[-1] + len(words[-1]))
    states = np.concatenate(states) if states else np.zeros(0, np.uint32)
    words = np.concatenate(words) if words else np.zeros(0, np.uint16)
    return _decode(states, words, np.asarray(bounds), plan, streams)


def rans_decode(blob: bytes | memoryview, streams: list[RansStream], steps: int = DEFAULT_STEPS) -> list[np.ndarray]:
    """Inverse of ``rans_encode``; every stream's ``n`` must already be bounds-checked."""
    check(steps >= 1, "rANS steps must be positive")
    plan = lane_plan([s.n for s in streams], [len(streams)] if streams else [], steps)
    r = Reader(blob, "rANS data")
    states = r.array("<u4", len(plan.count))
    check(r.left % 2 == 0, "corrupted rANS data (odd length)")
    words = r.array("<u2", r.left // 2)
    return _decode(states, words, np.asarray([0, len(words)]), plan, streams)


@dataclass
class _Active:
    """The lanes that still have symbols at a step, in plan order (so each group's are adjacent),
    and the groups they belong to: where each starts and ends among them."""

    lanes: np.ndarray
    groups: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    rank: np.ndarray  # each active lane's group, as an index into ``groups``

    @classmethod
    def at(cls, plan: LanePlan, t: int) -> _Active:
        lanes = np.flatnonzero(plan.count > t)
        g = plan.group[lanes]
        new_group = np.r_[True, g[1:] != g[:-1]]
        first = np.flatnonzero(new_group)
        return cls(lanes, g[first], first, np.r_[first[1:], len(g)].astype(np.int64), np.cumsum(new_group) - 1)


@dataclass
class _Coding:
    """What every step reads (the slot lookup and the flat tables, the padded words) and writes."""

    lut: np.ndarray
    freq: np.ndarray
    cum: np.ndarray
    words: np.ndarray
    out: np.ndarray


def _decode(states, words, bounds, plan: LanePlan, streams: list[RansStream]) -> list[np.ndarray]:
    """Every lane of every group, compiled (``compiled.decode_steps``) or in NumPy steps."""
    ns = [s.n for s in streams]
    total = int(sum(ns))
    x = states.astype(np.int64)
    check(bool(np.all(x >= RANS_L)), "corrupted rANS data (lane state out of range)")
    freqs, freq, cum, offsets = _tables(streams)
    pos = _stream_starts(ns)[plan.stream] + plan.local
    bounds = np.asarray(bounds, np.int64)
    out = np.zeros(total, dtype=np.int64)
    if compiled.COMPILED:
        ptr = compiled.decode_steps(x, out, words, bounds, plan.group, plan.count, pos, plan.stride, plan.stream, freq,
                                    cum, offsets, PROB_BITS)  # fmt: skip
    else:
        lut = np.concatenate([o + slot_symbols(f) for o, f in zip(offsets[:-1], freqs, strict=True)]) if freqs else freq
        padded = np.concatenate([words.astype(np.int64), np.zeros(total + 1, np.int64)])  # <= 1 word a lane a step
        ptr = _decode_spans(_Coding(lut, freq, cum, padded, out), plan, x, bounds, pos)
    check(bool(np.all(ptr == bounds[1:])), "corrupted rANS data (word count does not match)")
    check(bool(np.all(x == RANS_L)), "corrupted rANS data (final lane state is wrong)")
    starts = _stream_starts(ns)
    return [out[starts[s] : starts[s + 1]] - offsets[s] for s in range(len(streams))]


def _decode_spans(coding: _Coding, plan: LanePlan, x: np.ndarray, bounds: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The NumPy walk: every active lane in one step, in spans of steps over which no lane ends."""
    ptr = bounds[:-1].copy()
    ends = sorted(set(plan.count.tolist()) | {0})  # the steps at which some lane has no symbol left
    for t0, t1 in itertools.pairwise(ends):
        a = _Active.at(plan, t0)
        x[a.lanes], ptr[a.groups] = _span(coding, a, x[a.lanes], ptr[a.groups], pos[a.lanes], plan, t0, t1)
    return ptr


def _span(c: _Coding, a: _Active, xa, ptr, pos, plan: LanePlan, t0: int, t1: int):
    """Steps t0..t1-1 of the active lanes -> (their states, their groups' next words). The lanes
    that take a word at a step, in lane order, take the next ones of their own group: the running
    count of such lanes (one cumsum) less its value where the group starts is each one's place."""
    lb, stride = plan.stream[a.lanes] << PROB_BITS, plan.stride[a.lanes]
    pa, next_word = pos + t0 * stride, ptr - 1
    running = np.zeros(len(a.lanes) + 1, np.int64)
    mask = (1 << PROB_BITS) - 1
    for _ in range(t0, t1):
        slot = xa & mask
        i = c.lut[lb + slot]
        xa = c.freq[i] * (xa >> PROB_BITS) + slot - c.cum[i]
        takes = xa < RANS_L
        np.cumsum(takes, out=running[1:])
        at_start = running[a.starts]
        xa = np.where(takes, (xa << 16) | c.words[(next_word - at_start)[a.rank] + running[1:]], xa)
        next_word += running[a.ends] - at_start
        c.out[pa] = i
        pa += stride
    return xa, next_word + 1
