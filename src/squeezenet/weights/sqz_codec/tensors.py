"""Tensor sections: a dense tensor's values, or a quantized tensor's codebook, positions and codes.

Decoding is in two halves: a section is read and checked when the file is parsed, while its
rANS-coded streams (placeholders until then) come out of the bundle at the end of the file."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from .bundle import RansStream
from .constants import (
    CODER_NAMES,
    CODER_RANS,
    DTYPE_CODES,
    DTYPES,
    KIND_DENSE,
    KIND_SPARSE,
    MAX_ALPHABET,
    MAX_NDIM,
    MAX_TENSOR_NUMEL,
    PACKED,
    POS_ALL,
    POS_GAPS,
    POS_NAMES,
)
from .positions import choose_positions, gaps_to_positions, read_positions
from .reader import Reader, check
from .streams import plan_stream, read_stream, stream_bytes
from .values import deflate, float_keys, inflate_exact, pack_codebook, unpack_codebook


@dataclass
class SparseTensor:
    """A quantized tensor: flat positions (increasing) hold codebook[codes]; the rest is 0."""

    shape: tuple[int, ...]
    codebook: np.ndarray
    codes: np.ndarray
    positions: np.ndarray
    bits: int = 8  # nominal bits of the codebook (for reports)

    def to_dense(self) -> np.ndarray:
        flat = np.zeros(int(np.prod(self.shape)), dtype=np.float32)
        flat[self.positions] = self.codebook.astype(np.float32)[self.codes]
        return flat.reshape(self.shape)


@dataclass
class TensorPlan:
    name: str
    tensor: np.ndarray | SparseTensor
    codebook_dtype: str = "float32"
    dense_dtype: str = "float32"
    positions: str = "auto"  # all | relidx4 | bitmask | gaps | auto
    codes_coder: str = "auto"  # raw | huffman | rans | auto
    gaps_coder: str = "auto"
    gap_alphabet: int = 0  # the gaps' alphabet a delta names (the patch); 0: the smallest, searched
    stats: dict = field(default_factory=dict)
    packed: bool = True  # version 2's packed codebooks and deflated values where they are smaller


def _shape_bytes(name: str, shape) -> bytes:
    raw = name.encode()
    check(len(raw) < 65536 and len(shape) <= MAX_NDIM, "tensor name or rank out of range")
    return struct.pack("<H", len(raw)) + raw + struct.pack(f"<B{len(shape)}I", len(shape), *shape)


def _encode_dense(plan: TensorPlan) -> tuple[bytes, list[RansStream], dict]:
    t = plan.tensor
    dt = DTYPE_CODES[plan.dense_dtype]
    raw = np.ascontiguousarray(t, dtype=DTYPES[dt]).tobytes()
    if plan.packed:
        packed = deflate(raw)
        if len(packed) + 4 < len(raw):
            dt, raw = dt + PACKED, struct.pack("<I", len(packed)) + packed
    body = _shape_bytes(plan.name, t.shape) + struct.pack("<BB", KIND_DENSE, dt) + raw
    return body, [], {"values": len(raw)}


def _checked_entries(t: SparseTensor, numel: int):
    positions = np.asarray(t.positions, dtype=np.int64)
    codes = np.asarray(t.codes, dtype=np.int64)
    codebook = np.asarray(t.codebook, dtype=np.float32)
    check(len(positions) == len(codes), "positions and codes differ in length")
    check(len(positions) == 0 or bool(np.all(np.diff(positions) > 0)), "positions must increase")
    check(len(positions) == 0 or (positions[0] >= 0 and positions[-1] < numel), "position out of range")
    check(1 <= len(codebook) <= MAX_ALPHABET, "codebook size out of range")
    return positions, codes, codebook


def _store_codebook(plan: TensorPlan, codes: np.ndarray, codebook: np.ndarray):
    """-> (dtype code, stored bytes, codes, codebook): packed only where smaller, and then sorted,
    the codes renumbered to follow their values."""
    cb_dt = DTYPE_CODES[plan.codebook_dtype]
    stored = codebook.astype(DTYPES[cb_dt])
    cb_raw = stored.tobytes()
    if plan.packed:
        order = np.argsort(float_keys(stored, DTYPES[cb_dt]), kind="stable")
        packed = pack_codebook(stored[order], DTYPES[cb_dt])
        if len(packed) + 4 < len(cb_raw):
            rank = np.empty(len(codebook), np.int64)
            rank[order] = np.arange(len(codebook))
            codes, codebook = rank[codes], codebook[order]
            cb_dt, cb_raw = cb_dt + PACKED, struct.pack("<I", len(packed)) + packed
    return cb_dt, cb_raw, codes, codebook


def encode_tensor(plan: TensorPlan) -> tuple[bytes, list[RansStream], dict]:
    """-> (section payload, rANS streams it defers to the bundle, size breakdown)."""
    t = plan.tensor
    if isinstance(t, np.ndarray):
        return _encode_dense(plan)
    numel = int(np.prod(t.shape))
    positions, codes, codebook = _checked_entries(t, numel)
    k = len(codebook)
    cb_dt, cb_raw, codes, codebook = _store_codebook(plan, codes, codebook)
    pos_method, pos_bytes, pos_rans, ecodes, pos_est = choose_positions(
        positions, codes, codebook, numel, plan.positions, plan.gaps_coder, plan.gap_alphabet
    )
    cp = plan_stream(ecodes, k, plan.codes_coder)
    code_bytes = stream_bytes(cp)
    body = (
        _shape_bytes(plan.name, t.shape)
        + struct.pack("<BIBH", KIND_SPARSE, len(ecodes), cb_dt, k - 1)
        + cb_raw
        + struct.pack("<B", pos_method)
        + pos_bytes
        + code_bytes
    )
    info = {
        "codebook": len(cb_raw),
        "positions": len(pos_bytes),
        "codes": len(code_bytes),
        "positions_method": POS_NAMES[pos_method],
        "codes_coder": CODER_NAMES[cp.coder],
        "entries": len(ecodes),
        "rans_estimate": pos_est + cp.estimate,
    }
    return body, pos_rans + ([cp.rans] if cp.rans else []), info


@dataclass
class PendingTensor:
    """A parsed, checked tensor section whose rANS streams are still placeholders in the bundle."""

    name: str
    shape: tuple[int, ...]
    dense: np.ndarray | None = None
    codebook: np.ndarray | None = None
    n: int = 0
    pos_method: int = 0
    pos: object = None  # positions array or rANS index
    pos_alphabet: int = 0
    codes: object = None  # codes array or rANS index
    # how the writer stored it (``layout`` rebuilds an identical file from these)
    dtype: int = 0  # dense values' or codebook's dtype code, PACKED added where packed
    codes_coder: str = "auto"
    gaps_coder: str = "auto"
    codebook_span: tuple[int, int] = (0, 0)  # offsets of the codebook dtype byte and of the end of the codebook
    streams: tuple[int, ...] = ()  # its rANS streams' indices in the bundle


def _read_shape(r: Reader, budget: list[int], expected_shapes) -> tuple[str, tuple[int, ...], int]:
    """-> (name, shape, elements), checked against the architecture and the element budget."""
    name = bytes(r.take(r.u16())).decode("utf-8", errors="replace")
    ndim = r.u8()
    check(ndim <= MAX_NDIM, f"{name}: rank {ndim} out of range")
    shape = tuple(r.unpack(f"{ndim}I")) if ndim else ()
    if expected_shapes is not None:
        check(name in expected_shapes, f"unexpected tensor {name!r} for this architecture")
        check(tuple(expected_shapes[name]) == shape, f"{name}: shape {shape} does not fit the architecture")
    numel = 1
    for d in shape:
        numel *= d
    check(numel <= MAX_TENSOR_NUMEL, f"{name}: {numel} elements is above the limit")
    budget[0] -= numel
    check(budget[0] >= 0, "tensors hold more elements than the limit")
    return name, shape, numel


def _read_dense(r: Reader, out: PendingTensor, numel: int) -> None:
    dt = out.dtype = r.u8()
    check(dt in DTYPES or dt - PACKED in DTYPES, f"{out.name}: unknown dtype code {dt}")
    if dt in DTYPES:
        out.dense = r.array(DTYPES[dt], numel).astype(np.float32).reshape(out.shape)
    else:
        dtype = DTYPES[dt - PACKED]
        raw = inflate_exact(r.take(r.u32()), numel * dtype.itemsize, f"{out.name}: deflated values")
        out.dense = np.frombuffer(raw, dtype).astype(np.float32).reshape(out.shape)


def _read_codebook(r: Reader, name: str, cb_dt: int, k: int) -> np.ndarray:
    check(cb_dt in DTYPES or cb_dt - PACKED in DTYPES, f"{name}: unknown codebook dtype {cb_dt}")
    if cb_dt in DTYPES:
        codebook = r.array(DTYPES[cb_dt], k).astype(np.float32)
    else:
        codebook = unpack_codebook(r.take(r.u32()), DTYPES[cb_dt - PACKED], k)
    check(bool(np.all(np.isfinite(codebook))), f"{name}: codebook holds non-finite values")
    return codebook


def _read_sparse(r: Reader, out: PendingTensor, numel: int, rans: list) -> None:
    name = out.name
    n = r.u32()
    start = r.pos
    cb_dt, k = r.unpack("BH")
    k += 1
    out.dtype = cb_dt
    out.codebook = _read_codebook(r, name, cb_dt, k)
    out.codebook_span = (start, r.pos)
    first_stream = len(rans)
    out.n = n
    out.pos, out.pos_method, out.pos_alphabet, gaps_coder = read_positions(r, name, r.u8(), n, numel, rans)
    out.gaps_coder = CODER_NAMES.get(gaps_coder, "auto")
    coder, alphabet, codes = read_stream(r, n, rans)
    out.codes_coder = CODER_NAMES[coder]
    check(alphabet == k, f"{name}: code alphabet {alphabet} differs from codebook size {k}")
    check(coder == CODER_RANS or len(codes) == n, f"{name}: code count mismatch")
    if coder == CODER_RANS:
        check(rans[codes].n == n, f"{name}: code count mismatch")
    out.codes = (coder == CODER_RANS, codes)
    out.streams = tuple(range(first_stream, len(rans)))


def decode_tensor(payload, budget: list[int], rans: list, expected_shapes=None) -> PendingTensor:
    r = Reader(payload, "tensor section")
    name, shape, numel = _read_shape(r, budget, expected_shapes)
    kind = r.u8()
    out = PendingTensor(name, shape)
    if kind == KIND_DENSE:
        _read_dense(r, out, numel)
    else:
        check(kind == KIND_SPARSE, f"{name}: unknown tensor kind {kind}")
        _read_sparse(r, out, numel, rans)
    r.done()
    return out


def _entries(p: PendingTensor, rans_out: list[np.ndarray]) -> tuple[np.ndarray | None, np.ndarray, int]:
    """-> (positions, None where every element is stored; codes; numel) once the bundle is decoded."""
    numel = 1
    for d in p.shape:
        numel *= d
    if p.pos_method == -POS_GAPS:
        positions = gaps_to_positions(rans_out[p.pos], p.pos_alphabet, p.n, numel)
    elif p.pos_method == POS_ALL:
        positions = None
    else:
        positions = p.pos
    is_rans, codes = p.codes
    if is_rans:
        codes = rans_out[codes]
    return positions, codes, numel


def finish_structure(p: PendingTensor, rans_out: list[np.ndarray]) -> np.ndarray | SparseTensor:
    """The tensor as stored: dense values, or the quantized entries exactly as the file lists them
    (relidx4's filler entries included), for a writer that must reproduce the file."""
    if p.dense is not None:
        return p.dense
    positions, codes, numel = _entries(p, rans_out)
    if positions is None:
        positions = np.arange(numel, dtype=np.int64)
    return SparseTensor(p.shape, p.codebook, np.asarray(codes, np.int64), np.asarray(positions, np.int64))


def stored_codes(p: PendingTensor, rans_out: list[np.ndarray]) -> np.ndarray:
    """A quantized tensor's codebook index per element as the file numbers them (flat int16: an
    alphabet has at most MAX_ALPHABET = 4096 symbols; -1 where no entry is stored)."""
    positions, codes, numel = _entries(p, rans_out)
    flat = np.full(numel, -1, dtype=np.int16)
    flat[slice(None) if positions is None else positions] = codes
    return flat


def finish_tensor(p: PendingTensor, rans_out: list[np.ndarray]) -> np.ndarray:
    if p.dense is not None:
        return p.dense
    positions, codes, numel = _entries(p, rans_out)
    flat = np.zeros(numel, dtype=np.float32)
    if positions is None:
        flat[:] = p.codebook[codes]
    else:
        flat[positions] = p.codebook[codes]
    return flat.reshape(p.shape)
