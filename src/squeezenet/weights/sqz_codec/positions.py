"""Sparse-position schemes: where a tensor's stored entries are. All positions (a dense tensor),
Deep Compression's 4-bit relative indices (with filler entries for longer runs), a bitmask, or
entropy-coded gaps; the writer keeps the smallest.

Gap symbols are shared with the C export: with an alphabet of E symbols, a symbol s < E-1 ends a
gap of s (plus E-1 for each escape before it), symbol E-1 is an escape."""

from __future__ import annotations

import struct

import numpy as np

from .constants import CODER_RANS, POS_ALL, POS_BITMASK, POS_GAPS, POS_RELIDX4
from .reader import Reader, SqzError, check
from .streams import plan_rans_counts, plan_stream, read_stream, stream_bytes

GAP_ALPHABETS = (2, 4, 8, 16, 32, 64, 128, 256)
SCHEMES = {"all": POS_ALL, "relidx4": POS_RELIDX4, "bitmask": POS_BITMASK, "gaps": POS_GAPS}


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
    check(int(is_term.sum()) == n, "gap stream does not hold the stated number of entries")
    check(n == 0 or bool(is_term[-1]), "gap stream ends inside a gap")
    cum_esc = np.cumsum(~is_term)
    term = np.flatnonzero(is_term)
    esc_before = cum_esc[term]
    esc_count = np.diff(np.concatenate([[0], esc_before]))
    gaps = sym[term] + esc * esc_count
    positions = np.cumsum(gaps + 1) - 1
    check(n == 0 or int(positions[-1]) < numel, "gap stream points past the end of the tensor")
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


def _with_length(packed: bytes) -> bytes:
    return struct.pack("<I", len(packed)) + packed


def gap_counts(gaps: np.ndarray, alphabet: int, times: np.ndarray | None = None) -> np.ndarray:
    """How often each symbol of ``gap_symbols`` occurs for ``gaps`` (each counted ``times`` over
    when given: a histogram): a gap g is g // (alphabet-1) escapes, then the symbol g % (alphabet-1)."""
    esc = alphabet - 1
    counts = np.bincount(gaps % esc, weights=times, minlength=alphabet).astype(np.int64)
    escapes = gaps // esc if times is None else (gaps // esc) * times
    counts[esc] += int(escapes.sum())
    return counts


def _gaps_candidate(positions: np.ndarray, codes: np.ndarray, coder: str, known: int = 0):
    """The gap alphabet whose stream is smallest (bytes plus the rANS estimate); alphabets past
    the largest gap cannot do better. A rANS stream's size follows from its symbol counts, which
    the gaps' histogram gives for every alphabet: only the kept alphabet's symbols are built.
    ``known``: the alphabet this search chose before (a file read back, a delta's hint), taken
    without searching again."""
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    max_gap = int(gaps.max())
    # each gap length once, with how often it occurs, unless the lengths outnumber the gaps
    lengths, times = (np.arange(max_gap + 1), np.bincount(gaps)) if max_gap < len(gaps) else (gaps, None)
    best = None
    for alphabet in [known] if known in GAP_ALPHABETS else GAP_ALPHABETS:
        if coder == "rans":
            sp = plan_rans_counts(gap_counts(lengths, alphabet, times), alphabet)
        else:
            sp = plan_stream(gap_symbols(positions, alphabet), alphabet, coder)
        cost = len(stream_bytes(sp)) + sp.estimate
        if best is None or cost < best[0]:
            best = (cost, sp)
        if alphabet > max_gap + 1:
            break
    sp = best[1]
    if sp.rans is not None and sp.rans.symbols is None:
        sp.rans.symbols = gap_symbols(positions, sp.alphabet)
    return POS_GAPS, stream_bytes(sp), [sp.rans] if sp.rans else [], codes, sp.estimate


def _candidates(positions, codes, codebook, numel: int, choice: str, gaps_coder: str, gap_alphabet: int) -> list[tuple]:
    candidates = []
    if len(positions) == numel:
        candidates.append((POS_ALL, b"", [], codes, 0.0))
    if choice in ("relidx4", "auto"):
        zero = np.flatnonzero(codebook == 0)
        if len(zero):
            packed, rcodes, _ = _relidx4(positions, codes, int(zero[0]))
            candidates.append((POS_RELIDX4, _with_length(packed), [], rcodes, 0.0))
    if choice in ("bitmask", "auto"):
        mask = np.zeros(numel, np.uint8)
        mask[positions] = 1
        candidates.append((POS_BITMASK, _with_length(np.packbits(mask).tobytes()), [], codes, 0.0))
    if choice in ("gaps", "auto") and len(positions):
        candidates.append(_gaps_candidate(positions, codes, gaps_coder, gap_alphabet))
    return candidates


def choose_positions(positions, codes, codebook, numel: int, choice: str = "auto", gaps_coder: str = "auto",
                     gap_alphabet: int = 0):  # fmt: skip
    """-> (scheme, its bytes, its deferred rANS streams, the codes it stores, its rANS estimate):
    the named scheme where it applies, else (and for 'auto') the smallest."""
    candidates = _candidates(positions, codes, codebook, numel, choice, gaps_coder, gap_alphabet)
    if choice == "all":
        check(len(positions) == numel, "positions 'all' needs a dense tensor")
    if choice != "auto":
        candidates = [c for c in candidates if c[0] == SCHEMES[choice]] or candidates
    check(bool(candidates), "no position scheme fits this tensor")
    return min(candidates, key=lambda c: len(c[1]) + c[4])


def _read_relidx4(r: Reader, name: str, n: int, numel: int) -> np.ndarray:
    check(n <= 16 * numel + 16, f"{name}: {n} entries is too many")
    nb = r.u32()
    check(nb == (n + 1) // 2, f"{name}: relative-index data has the wrong length")
    packed = r.array(np.uint8, nb)
    nib = np.empty(2 * nb, dtype=np.int64)
    nib[0::2] = packed & 15
    nib[1::2] = packed >> 4
    pos = np.cumsum(nib[:n] + 1) - 1
    check(n == 0 or int(pos[-1]) < numel, f"{name}: relative index points past the end")
    return pos


def _read_bitmask(r: Reader, name: str, n: int, numel: int) -> np.ndarray:
    check(n <= numel, f"{name}: {n} entries for {numel} elements")
    nb = r.u32()
    check(nb == (numel + 7) // 8, f"{name}: bitmask has the wrong length")
    pos = np.flatnonzero(np.unpackbits(r.array(np.uint8, nb))[:numel])
    check(len(pos) == n, f"{name}: bitmask holds {len(pos)} entries, header says {n}")
    return pos


def read_positions(r: Reader, name: str, method: int, n: int, numel: int, rans: list):
    """-> (positions, or None for all, or a rANS placeholder index; the method, negative where the
    gaps wait for the rANS bundle; the gap alphabet; the gap stream's coder, -1 without one)."""
    if method == POS_ALL:
        check(n == numel, f"{name}: dense positions but {n} entries for {numel} elements")
        return None, method, 0, -1
    if method == POS_RELIDX4:
        return _read_relidx4(r, name, n, numel), method, 0, -1
    if method == POS_BITMASK:
        return _read_bitmask(r, name, n, numel), method, 0, -1
    if method == POS_GAPS:
        check(n <= numel, f"{name}: {n} entries for {numel} elements")
        coder, alphabet, sym = read_stream(r, numel + n, rans)
        check(alphabet >= 2, f"{name}: gap alphabet too small")
        if coder == CODER_RANS:
            return sym, -POS_GAPS, alphabet, coder
        return gaps_to_positions(sym, alphabet, n, numel), POS_GAPS, alphabet, coder
    raise SqzError(f"{name}: unknown position scheme {method}")
