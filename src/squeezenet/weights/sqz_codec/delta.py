"""``.sqzd`` deltas: the difference between two ``.sqz`` files, so that a client holding BASE
receives only what changed and rebuilds NEW byte for byte (docs/sqz-delta.md).

A delta lists NEW's tensors in order, each as the cheapest of: ``same`` (BASE's as it is),
``values`` (the same entries with new codebook or dense values, stored as differences of their
ordered bit patterns), ``entries`` (a sparse change of the masks and indices, plus the codebook)
or ``whole``; the metadata as the keys that changed. The patcher rebuilds NEW's content and
writes it with the ``.sqz`` writer, which is a function of the content (``layout``); sections
that did not change are copied from BASE, and the rANS bundle is copied too when no stream in it
changed, so that a codebook update never touches the entropy coder. A NEW that its own content
does not reproduce (another writer, version 1) travels whole (``literal``).

Reading a delta is as guarded as reading a ``.sqz``: lengths, checksums, decompressed sizes and
every reference into the data are checked before use, and the result must have the SHA-256 the
delta names. Any defect is ``SqzError``.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .constants import DTYPE_CODES, DTYPES, MAX_META_BYTES, MAX_NDIM, MAX_TENSOR_NUMEL, MAX_TOTAL_NUMEL
from .container import ParsedSqz, assemble_sqz, parse_sqz
from .layout import choices_of, plan_with, read_layout, same_tensor, stored_choices, tensor_plan
from .metadata import LZMA_RAW, pack_metadata
from .rans import rans_encode
from .reader import Reader, SqzError, check
from .tensors import SparseTensor, TensorPlan, _store_codebook, encode_tensor
from .values import float_keys, keys_to_floats

DELTA_MAGIC = b"SQZD"
DELTA_VERSION = 1
SEC_PLAN, SEC_DATA = b"PLAN", b"DATA"
STORED, LZMA2 = 0, 1  # a section's method: as is, or raw LZMA2 (``LZMA_RAW``)
MAX_DATA_BYTES = 1 << 28  # a section's decoded size, at most
OPS = ("same", "values", "entries", "whole")
CHOICE_KEYS = ("dtype", "positions", "codes_coder", "gaps_coder")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------- writing


class _Data:
    """The DATA section being written: arrays stored as byte planes (all first bytes, then all
    second bytes, ...), which LZMA compresses far better for small differences."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.size = 0

    def put(self, values: np.ndarray, dtype: str) -> list:
        """Store integers (``dtype`` '<i8': signed, zigzag-coded; else unsigned) in the fewest bytes
        that hold them all, after the op's earlier arrays -> the reference [count, bytes per value, signed]."""
        signed = dtype == "<i8"
        ints = np.asarray(values, np.int64)
        if signed:
            ints = (ints << 1) ^ (ints >> 63)  # zigzag: 0, -1, 1, -2 -> 0, 1, 2, 3
        top = int(ints.max()) if len(ints) else 0
        width = next(w for w in (1, 2, 4, 8) if top < 1 << (8 * w) or w == 8)
        raw = ints.astype(np.dtype(f"<u{width}"))
        planes = raw.view(np.uint8).reshape(-1, width).T.tobytes()
        ref = [len(raw), width, int(signed)]
        self.chunks.append(planes)
        self.size += len(planes)
        return ref


def _keys(values: np.ndarray, dtype: str) -> np.ndarray:
    return float_keys(np.asarray(values, np.float32).astype(DTYPES[DTYPE_CODES[dtype]]), DTYPES[DTYPE_CODES[dtype]])


def _code_map(base: SparseTensor, new: SparseTensor) -> np.ndarray | None:
    """The renumbering m with new.codes == m[base.codes], if the entries are the same and the
    codebooks have the same size (a values-only change); else None."""
    if len(base.codebook) != len(new.codebook) or not np.array_equal(base.positions, new.positions):
        return None
    m = np.full(len(base.codebook), -1, np.int64)
    m[base.codes] = new.codes
    if not np.array_equal(m[base.codes], new.codes):
        return None
    unused = np.flatnonzero(m < 0)
    m[unused] = np.setdiff1d(np.arange(len(m)), m[m >= 0])[: len(unused)] if len(unused) else m[unused]
    return m if len(np.unique(m)) == len(m) and (m >= 0).all() else None


def _op_values(name: str, base: TensorPlan, new: TensorPlan, data: _Data) -> dict | None:
    op = {"name": name, "op": "values", "choices": choices_of(new)}
    dtype = op["choices"]["dtype"]
    if isinstance(new.tensor, np.ndarray):
        if not isinstance(base.tensor, np.ndarray) or base.tensor.shape != new.tensor.shape:
            return None
        diff = _keys(new.tensor.ravel(), dtype) - _keys(base.tensor.ravel(), dtype)
        return {**op, "diff": data.put(diff, "<i8")}
    if not isinstance(base.tensor, SparseTensor) or tuple(base.tensor.shape) != tuple(new.tensor.shape):
        return None
    m = _code_map(base.tensor, new.tensor)
    if m is None:
        return None
    diff = _keys(new.tensor.codebook[m], dtype) - _keys(base.tensor.codebook, dtype)
    identity = np.array_equal(m, np.arange(len(m)))
    return {**op, "diff": data.put(diff, "<i8"), "map": None if identity else data.put(m, "<u2")}


def _code_grid(t: SparseTensor) -> np.ndarray:
    grid = np.zeros(int(np.prod(t.shape)), np.int64)
    grid[t.positions] = np.asarray(t.codes, np.int64) + 1
    return grid


def _op_entries(name: str, base: TensorPlan, new: TensorPlan, data: _Data) -> dict | None:
    b, n = base.tensor, new.tensor
    if not (isinstance(b, SparseTensor) and isinstance(n, SparseTensor)) or tuple(b.shape) != tuple(n.shape):
        return None
    old, grid = _code_grid(b), _code_grid(n)
    changed = np.flatnonzero(old != grid)
    dtype = choices_of(new)["dtype"]
    return {
        "name": name,
        "op": "entries",
        "choices": choices_of(new),
        "changed": data.put(np.diff(np.concatenate([[-1], changed])) - 1, "<u4"),
        "symbols": data.put(grid[changed], "<u2"),
        "codebook": data.put(_keys(n.codebook, dtype), "<u4"),
    }


def _op_whole(name: str, new: TensorPlan, data: _Data) -> dict:
    t = new.tensor
    op = {"name": name, "op": "whole", "choices": choices_of(new), "shape": [int(d) for d in np.shape(t)]}
    dtype = op["choices"]["dtype"]
    if isinstance(t, np.ndarray):
        return {**op, "values": data.put(_keys(t.ravel(), dtype), "<u4")}
    op["shape"] = [int(d) for d in t.shape]
    return {
        **op,
        "gaps": data.put(np.diff(np.concatenate([[-1], t.positions])) - 1, "<u4"),
        "codes": data.put(t.codes, "<u2"),
        "codebook": data.put(_keys(t.codebook, dtype), "<u4"),
    }


def tensor_update_cost(base: TensorPlan | None, new: TensorPlan) -> int:
    """Bytes (about) that a delta spends on turning ``base`` into ``new``: 0 when they are the same."""
    if base is not None and same_tensor(base.tensor, new.tensor) and choices_of(base) == choices_of(new):
        return 0
    return _cheapest_op(new.name, base, new)[2]


def _cheapest_op(name: str, base: TensorPlan | None, new: TensorPlan) -> tuple[dict, bytes, int]:
    """-> (op, its data, its cost): of the ops that apply, the one whose data compresses smallest."""
    options = []
    builders = [lambda d: _op_whole(name, new, d)]
    if base is not None:
        builders += [lambda d: _op_values(name, base, new, d), lambda d: _op_entries(name, base, new, d)]
    for build in builders:
        data = _Data()
        op = build(data)
        if op is not None:
            blob = b"".join(data.chunks)
            cost = len(lzma.compress(blob, format=lzma.FORMAT_RAW, filters=LZMA_RAW)) + len(json.dumps(op))
            options.append((cost, op, blob))
    cost, op, blob = min(options, key=lambda o: o[0])
    return op, blob, cost


def _compact(op: dict, names: dict[str, int], base: TensorPlan | None, at: int) -> dict:
    """The op as the plan stores it: the base tensor by its index, the choices only where they
    differ from the base's, and where its data starts."""
    out = {k: v for k, v in op.items() if k != "name"}
    if op["name"] in names:
        out["b"] = names[op["name"]]
    else:
        out["name"] = op["name"]
    if base is not None and out.get("choices") == choices_of(base):
        del out["choices"]
    return {**out, "at": at}


def _meta_diff(base: dict, new: dict) -> dict:
    changed = {k: v for k, v in new.items() if base.get(k, object()) != v}
    diff = {"set": changed, "drop": [k for k in base if k not in new]}
    if list(_merged(base, diff)) != list(new):
        diff["order"] = list(new)
    return diff


def _merged(base: dict, diff: dict) -> dict:
    return {**{k: v for k, v in base.items() if k not in diff["drop"]}, **diff["set"]}


def make_delta(base: bytes, new: bytes) -> tuple[bytes, dict]:
    """-> (the .sqzd bytes, a report: the op of each tensor, section sizes, whether NEW went whole).

    Raises SqzError when either file is not a valid ``.sqz``."""
    base, new = bytes(base), bytes(new)
    base_layout = read_layout(base)
    new_layout = read_layout(new)
    ops, blobs, size = [], [], 0
    names = {p.name: i for i, p in enumerate(base_layout.tensors)}
    for plan in new_layout.tensors:
        old = base_layout.plan(plan.name)
        if old is not None and same_tensor(old.tensor, plan.tensor) and choices_of(old) == choices_of(plan):
            ops.append(names[plan.name])  # the base's tensor as it is
            continue
        op, blob, _ = _cheapest_op(plan.name, old, plan)
        ops.append(_compact(op, names, old, size))
        blobs.append(blob)
        size += len(blob)
    plan = {
        "steps": new_layout.steps,
        "shared_metadata": new_layout.shared_metadata,
        "meta": _meta_diff(base_layout.meta, new_layout.meta),
        "tensors": ops,
    }
    delta = _container(base, new, plan, b"".join(blobs))
    literal = False
    try:
        ok = apply_delta(base, delta) == new
    except SqzError:
        ok = False
    if not ok:  # NEW is not what its own content writes: it travels whole
        delta, literal = _container(base, new, {"literal": True}, new), True
    kinds = ["same" if isinstance(op, int) else op["op"] for op in ops]
    counts = {name: kinds.count(name) for name in OPS}
    return delta, {"bytes": len(delta), "literal": literal, "ops": counts, "tensors": ops}


def _container(base: bytes, new: bytes, plan: dict, data: bytes) -> bytes:
    text = json.dumps(plan, separators=(",", ":"), ensure_ascii=False).encode()
    sections = [_delta_section(SEC_PLAN, text), _delta_section(SEC_DATA, data)]
    head = DELTA_MAGIC + struct.pack("<HH", DELTA_VERSION, 0)
    head += bytes.fromhex(sha256(base)) + bytes.fromhex(sha256(new)) + struct.pack("<II", len(new), len(sections))
    body = head + b"".join(sections)
    body += struct.pack("<I", len(body) + 8)
    return body + struct.pack("<I", zlib.crc32(body))


def _delta_section(tag: bytes, raw: bytes) -> bytes:
    packed = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=LZMA_RAW)
    method, payload = (LZMA2, packed) if len(packed) < len(raw) else (STORED, raw)
    header = tag + struct.pack("<BII", method, len(raw), len(payload))
    return header + payload + struct.pack("<I", zlib.crc32(payload))


# ---------------------------------------------------------------------------------------- reading


@dataclass
class DeltaHeader:
    base_sha256: str
    result_sha256: str
    result_bytes: int
    plan: dict
    data: bytes


def read_delta(delta: bytes) -> DeltaHeader:
    """The delta's header, plan and data, every length and checksum checked; SqzError otherwise."""
    delta = bytes(delta)
    check(len(delta) >= 84, f"truncated .sqzd file ({len(delta)} bytes)")
    check(delta[:4] == DELTA_MAGIC, "not a .sqzd delta (bad magic)")
    total, crc = struct.unpack("<II", delta[-8:])
    check(total == len(delta), f"truncated or padded .sqzd file ({len(delta):,} bytes, not its recorded length)")
    check(zlib.crc32(delta[:-4]) == crc, "corrupted .sqzd file (file CRC32 mismatch)")
    r = Reader(memoryview(delta)[:-8], ".sqzd file")
    r.take(4)
    version, _flags = r.unpack("HH")
    check(version == DELTA_VERSION, f"unsupported .sqzd version {version} (this reader knows {DELTA_VERSION})")
    base_hash, result_hash = bytes(r.take(32)).hex(), bytes(r.take(32)).hex()
    result_bytes, nsec = r.unpack("II")
    check(nsec == 2, f"bad .sqzd section count {nsec}")
    sections = [_read_section(r, tag) for tag in (SEC_PLAN, SEC_DATA)]
    r.done()
    check(len(sections[0]) <= MAX_META_BYTES, "delta plan too large")
    try:
        plan = json.loads(sections[0].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SqzError(f"corrupted delta plan ({exc})") from None
    check(isinstance(plan, dict), "corrupted delta plan (not an object)")
    return DeltaHeader(base_hash, result_hash, result_bytes, plan, sections[1])


def _read_section(r: Reader, tag: bytes) -> bytes:
    got = bytes(r.take(4))
    check(got == tag, f"expected section {tag.decode()}, found {got!r}")
    method, size, length = r.unpack("BII")
    payload = bytes(r.take(length))
    check(zlib.crc32(payload) == r.u32(), f"corrupted .sqzd section {tag.decode()} (CRC32 mismatch)")
    check(size <= MAX_DATA_BYTES, f"section {tag.decode()} claims {size:,} bytes")
    if method == STORED:
        check(length == size, f"section {tag.decode()}: stored length differs from its size")
        return payload
    check(method == LZMA2, f"section {tag.decode()}: unknown method {method}")
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=LZMA_RAW)
    try:
        raw = dec.decompress(payload, max_length=size + 1)
    except lzma.LZMAError as exc:
        raise SqzError(f"corrupted .sqzd section {tag.decode()} ({exc})") from None
    check(len(raw) == size and dec.eof and not dec.unused_data, f"section {tag.decode()}: wrong decompressed size")
    return raw


class _DataReader:
    """The arrays of one op, read in the order they were stored from where the op's data starts;
    every reference is checked against the DATA section and against the counts expected."""

    def __init__(self, data: bytes, at: int = 0):
        self.data, self.pos = data, at

    def at(self, op: dict) -> _DataReader:
        at = op.get("at")
        check(isinstance(at, int) and 0 <= at <= len(self.data), "bad data offset")
        return _DataReader(self.data, at)

    def get(self, ref, dtype: str, count: int | None = None, limit: int = MAX_TENSOR_NUMEL) -> np.ndarray:
        """The integers ``ref`` points at (``dtype`` '<i8': signed), as int64, every count checked."""
        check(isinstance(ref, list) and len(ref) == 3 and all(isinstance(v, int) for v in ref), "bad data reference")
        n, width, signed = ref
        check(width in (1, 2, 4, 8) and signed == int(dtype == "<i8"), "bad data reference")
        check(0 <= n <= limit and (count is None or n == count), f"data reference of {n} values where {count} fit")
        offset = self.pos
        check(offset + n * width <= len(self.data), "data reference outside the delta")
        self.pos += n * width
        planes = np.frombuffer(self.data, np.uint8, n * width, offset).reshape(width, n)
        ints = planes.T.copy().view(np.dtype(f"<u{width}")).reshape(n).astype(np.uint64)
        if signed:
            return ((ints >> np.uint64(1)).astype(np.int64)) ^ -((ints & np.uint64(1)).astype(np.int64))
        check(n == 0 or int(ints.max()) < 1 << 62, "value out of range")
        return ints.astype(np.int64)


def _choice_plan(name: str, tensor, choices) -> TensorPlan:
    check(isinstance(choices, dict) and choices.get("dtype") in DTYPE_CODES, f"{name}: bad choices")
    if not isinstance(tensor, np.ndarray):
        check(all(isinstance(choices.get(k), str) for k in CHOICE_KEYS), f"{name}: bad choices")
    return plan_with(name, tensor, choices)


def _floats(keys: np.ndarray, dtype: str) -> np.ndarray:
    np_dtype = DTYPES[DTYPE_CODES[dtype]]
    limit = 1 << (8 * np_dtype.itemsize)
    check(bool(np.all((keys >= 0) & (keys < limit))), "value outside its type")
    values = keys_to_floats(keys, np_dtype).astype(np.float32)
    check(bool(np.all(np.isfinite(values))), "non-finite value")
    return values


def _shape(op: dict, budget: list[int]) -> tuple[int, ...]:
    shape = op.get("shape")
    check(isinstance(shape, list) and len(shape) <= MAX_NDIM and all(isinstance(d, int) and d >= 0 for d in shape),
          f"{op.get('name')}: bad shape")  # fmt: skip
    numel = int(np.prod(shape)) if shape else 1
    check(numel <= MAX_TENSOR_NUMEL, f"{op.get('name')}: {numel} elements is above the limit")
    budget[0] -= numel
    check(budget[0] >= 0, "tensors hold more elements than the limit")
    return tuple(shape)


def _positions_from_gaps(gaps: np.ndarray, numel: int, name: str) -> np.ndarray:
    check(len(gaps) == 0 or int(gaps.max()) < numel, f"{name}: position outside the tensor")
    positions = np.cumsum(gaps + 1) - 1
    check(len(positions) == 0 or int(positions[-1]) < numel, f"{name}: position outside the tensor")
    return positions


def _sparse(name: str, shape, positions, codes, codebook) -> SparseTensor:
    check(len(codebook) >= 1, f"{name}: empty codebook")
    check(len(codes) == len(positions), f"{name}: codes and positions differ in number")
    check(len(codes) == 0 or int(codes.max()) < len(codebook), f"{name}: code outside the codebook")
    return SparseTensor(shape, codebook, codes, positions)


def _rebuild(op: dict, base: TensorPlan | None, data: _DataReader, budget: list[int]) -> TensorPlan:
    """NEW's tensor (and its choices) from one op."""
    name, kind = op.get("name"), op.get("op")
    check(isinstance(name, str) and kind in OPS, "bad tensor op")
    if kind == "same":
        check(base is not None, f"{name}: not in the base")
        return base
    choices = op.get("choices")
    dtype = choices.get("dtype") if isinstance(choices, dict) else None
    check(dtype in DTYPE_CODES, f"{name}: bad choices")
    if kind == "whole":
        shape = _shape(op, budget)
        numel = int(np.prod(shape)) if shape else 1
        if "values" in op:
            values = _floats(data.get(op["values"], "<u4", numel), dtype).reshape(shape)
            return _choice_plan(name, values, choices)
        gaps = data.get(op.get("gaps"), "<u4", limit=numel)
        codes = data.get(op.get("codes"), "<u2", len(gaps))
        codebook = _floats(data.get(op.get("codebook"), "<u4", limit=4096), dtype)
        tensor = _sparse(name, shape, _positions_from_gaps(gaps, numel, name), codes, codebook)
        return _choice_plan(name, tensor, choices)
    check(base is not None, f"{name}: not in the base")
    b = base.tensor
    if kind == "values" and isinstance(b, np.ndarray):
        diff = data.get(op.get("diff"), "<i8", b.size)
        return _choice_plan(name, _floats(_keys(b.ravel(), dtype) + diff, dtype).reshape(b.shape), choices)
    check(isinstance(b, SparseTensor), f"{name}: base tensor is not quantized")
    k = len(b.codebook)
    if kind == "values":
        diff = data.get(op.get("diff"), "<i8", k)
        m = np.arange(k) if op.get("map") is None else data.get(op.get("map"), "<u2", k)
        check(np.array_equal(np.sort(m), np.arange(k)), f"{name}: renumbering is no permutation")
        codebook = np.empty(k, np.float32)
        codebook[m] = _floats(_keys(b.codebook, dtype) + diff, dtype)
        return _choice_plan(name, SparseTensor(b.shape, codebook, m[b.codes], b.positions), choices)
    grid = _code_grid(b)
    gaps = data.get(op.get("changed"), "<u4", limit=len(grid))
    changed = _positions_from_gaps(gaps, len(grid), name)
    grid[changed] = data.get(op.get("symbols"), "<u2", len(changed))
    codebook = _floats(data.get(op.get("codebook"), "<u4", limit=4096), dtype)
    positions = np.flatnonzero(grid)
    return _choice_plan(name, _sparse(name, b.shape, positions, grid[positions] - 1, codebook), choices)


def apply_delta(base: bytes, delta: bytes) -> bytes:
    """NEW from BASE and the delta: byte for byte, or SqzError (a wrong base names both hashes)."""
    base = bytes(base)
    head = read_delta(delta)
    have = sha256(base)
    check(have == head.base_sha256,
          f"this delta applies to the base with SHA-256 {head.base_sha256[:16]}..., not to this file "
          f"({have[:16]}...)")  # fmt: skip
    if head.plan.get("literal") is True:
        out = head.data
    else:
        out = _patch(parse_sqz(base, decode_bundle=False), head.plan, _DataReader(head.data))
    check(len(out) == head.result_bytes and sha256(out) == head.result_sha256,
          f"the patched file is not the one the delta names (SHA-256 {head.result_sha256[:16]}...)")  # fmt: skip
    return out


def _patch(base: ParsedSqz, plan: dict, data: _DataReader) -> bytes:
    ops, meta_diff, steps = plan.get("tensors"), plan.get("meta"), plan.get("steps")
    check(isinstance(ops, list) and isinstance(meta_diff, dict), "corrupted delta plan")
    check(isinstance(steps, int) and 1 <= steps <= 1 << 24, "corrupted delta plan (rANS steps)")
    meta = _patched_meta(base.meta, meta_diff)
    shared = plan.get("shared_metadata")
    check(isinstance(shared, bool), "corrupted delta plan (shared metadata)")
    expanded = [_expanded(entry, base) for entry in ops]
    names = [op["name"] for _, op in expanded]
    check(len(set(names)) == len(names), "corrupted delta plan (tensor names)")
    sections, streams, budget = [], [], [MAX_TOTAL_NUMEL]
    for i, op in expanded:
        section, op_streams = _section_of(base, i, op, data.at(op) if "at" in op else data, budget)
        sections.append(section)
        streams.extend(op_streams)
    same_streams = steps == base.steps and [id(s) for s in streams] == [id(s) for s in base.streams]
    if same_streams:
        bundle = base.bundle
    else:
        symbols = base.decode_bundle()
        for i, s in enumerate(base.streams):
            s.symbols = symbols[i]
        bundle = struct.pack("<I", steps) + (rans_encode(streams, steps) if streams else b"")
    return assemble_sqz(pack_metadata(meta, shared), sections, bundle)


def _expanded(entry, base: ParsedSqz) -> tuple[int | None, dict]:
    """(the base tensor's index or None, the op with its name and choices) from the plan's entry."""
    count = len(base.tensors)
    if isinstance(entry, int) and not isinstance(entry, bool):
        check(0 <= entry < count, "corrupted delta plan (tensor index)")
        return entry, {"name": base.tensors[entry].name, "op": "same"}
    check(isinstance(entry, dict), "corrupted delta plan (tensor op)")
    i = entry.get("b")
    if i is None:
        check(isinstance(entry.get("name"), str), "corrupted delta plan (tensor name)")
        check(all(p.name != entry["name"] for p in base.tensors), "corrupted delta plan (tensor name)")
        return None, entry
    check(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count, "corrupted delta plan (tensor index)")
    op = {"name": base.tensors[i].name, "choices": stored_choices(base.tensors[i]), **entry}
    return i, op


def _patched_meta(base: dict, diff: dict) -> dict:
    changed, dropped = diff.get("set"), diff.get("drop")
    check(isinstance(changed, dict) and isinstance(dropped, list), "corrupted delta plan (metadata)")
    merged = _merged(base, diff)
    order = diff.get("order", list(merged))
    check(isinstance(order, list) and sorted(order, key=str) == sorted(merged, key=str), "corrupted delta plan (keys)")
    return {k: merged[k] for k in order}  # the writer keeps the keys' order: so must the patch


def _section_of(base: ParsedSqz, i: int | None, op: dict, data: _DataReader, budget: list[int]):
    """-> (NEW's tensor section payload, its rANS streams): BASE's own where nothing changed."""
    if op.get("op") == "same" and i is not None:
        p = base.tensors[i]
        budget[0] -= int(np.prod(p.shape)) if p.shape else 1
        check(budget[0] >= 0, "tensors hold more elements than the limit")
        return base.sections[i], [base.streams[s] for s in p.streams]
    spliced = _spliced_codebook(base, i, op, data) if op.get("op") == "values" else None
    if spliced is not None:
        return spliced
    data = data.at(op)  # from the op's start again (a splice that gave up has read some of it)
    plan = _rebuild(op, None if i is None else tensor_plan(base.tensors[i], base.decode_bundle()), data, budget)
    try:
        body, rs, _ = encode_tensor(plan)
    except (KeyError, ValueError) as exc:
        raise SqzError(f"{plan.name}: cannot be written ({exc})") from None
    return body, rs


def _spliced_codebook(base: ParsedSqz, i: int | None, op: dict, data: _DataReader):
    """A codebook-only change whose codes stay as they are: BASE's section with the new codebook
    bytes in place, and BASE's streams (no entropy decoding). None when the codes would move."""
    if i is None or op.get("map") is not None:
        return None
    p = base.tensors[i]
    if p.dense is not None or p.codebook is None:
        return None
    choices = op.get("choices")
    dtype = choices.get("dtype") if isinstance(choices, dict) else None
    check(dtype in DTYPE_CODES, f"{p.name}: bad choices")
    diff = data.get(op.get("diff"), "<i8", len(p.codebook))
    codebook = _floats(_keys(p.codebook, dtype) + diff, dtype)
    probe = TensorPlan(p.name, None, codebook_dtype=dtype)
    codes = np.arange(len(codebook))
    cb_dt, cb_raw, renumbered, _ = _store_codebook(probe, codes, codebook)
    if not np.array_equal(renumbered, codes):
        return None
    start, end = p.codebook_span
    section = base.sections[i]
    body = section[:start] + struct.pack("<BH", cb_dt, len(codebook) - 1) + cb_raw + section[end:]
    return body, [base.streams[s] for s in p.streams]


__all__ = [
    "DELTA_MAGIC",
    "DELTA_VERSION",
    "DeltaHeader",
    "apply_delta",
    "make_delta",
    "read_delta",
    "sha256",
    "tensor_update_cost",
]
