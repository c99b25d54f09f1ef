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

import json
import lzma

import numpy as np

from .container import parse_sqz
from .delta_file import OPS, ArrayWriter, code_grid, value_keys, write_delta_file
from .layout import choices_of, gap_alphabets, layout_of, read_layout, same_tensor
from .metadata import LZMA_RAW
from .patch import apply_delta, merged_meta
from .reader import SqzError
from .tensors import SparseTensor, TensorPlan


def _code_map(base: SparseTensor, new: SparseTensor) -> np.ndarray | None:
    """The renumbering m with new.codes == m[base.codes], if the entries are the same and the
    codebooks have the same size (a values-only change); else None."""
    if len(base.codebook) != len(new.codebook) or not np.array_equal(base.positions, new.positions):
        return None
    m = np.full(len(base.codebook), -1, np.int64)
    m[base.codes] = new.codes
    if not np.array_equal(m[base.codes], new.codes):
        return None
    unused = m < 0  # codes no weight uses: given the new numbers no weight uses, in order
    m[unused] = np.setdiff1d(np.arange(len(m)), m[~unused])[: int(unused.sum())]
    return m if len(np.unique(m)) == len(m) and (m >= 0).all() else None


def _op_values(name: str, base: TensorPlan, new: TensorPlan, data: ArrayWriter) -> dict | None:
    op = {"name": name, "op": "values", "choices": choices_of(new)}
    dtype = op["choices"]["dtype"]
    if isinstance(new.tensor, np.ndarray):
        if not isinstance(base.tensor, np.ndarray) or base.tensor.shape != new.tensor.shape:
            return None
        diff = value_keys(new.tensor.ravel(), dtype) - value_keys(base.tensor.ravel(), dtype)
        return {**op, "diff": data.put(diff, "<i8")}
    if not isinstance(base.tensor, SparseTensor) or tuple(base.tensor.shape) != tuple(new.tensor.shape):
        return None
    m = _code_map(base.tensor, new.tensor)
    if m is None:
        return None
    diff = value_keys(new.tensor.codebook[m], dtype) - value_keys(base.tensor.codebook, dtype)
    identity = np.array_equal(m, np.arange(len(m)))
    return {**op, "diff": data.put(diff, "<i8"), "map": None if identity else data.put(m, "<u2")}


def _op_entries(name: str, base: TensorPlan, new: TensorPlan, data: ArrayWriter, alphabet: int = 0) -> dict | None:
    b, n = base.tensor, new.tensor
    if not (isinstance(b, SparseTensor) and isinstance(n, SparseTensor)) or tuple(b.shape) != tuple(n.shape):
        return None
    old, grid = code_grid(b), code_grid(n)
    changed = np.flatnonzero(old != grid)
    dtype = choices_of(new)["dtype"]
    return {
        "name": name,
        "op": "entries",
        "choices": choices_of(new),
        "changed": data.put(np.diff(np.concatenate([[-1], changed])) - 1, "<u4"),
        "symbols": data.put(grid[changed], "<u2"),
        "codebook": data.put(value_keys(n.codebook, dtype), "<u4"),
        **({"alphabet": alphabet} if alphabet else {}),  # NEW's gap alphabet: spares the patch the writer's search
    }


def _op_whole(name: str, new: TensorPlan, data: ArrayWriter) -> dict:
    t = new.tensor
    op = {"name": name, "op": "whole", "choices": choices_of(new), "shape": [int(d) for d in t.shape]}
    dtype = op["choices"]["dtype"]
    if isinstance(t, np.ndarray):
        return {**op, "values": data.put(value_keys(t.ravel(), dtype), "<u4")}
    return {
        **op,
        "gaps": data.put(np.diff(np.concatenate([[-1], t.positions])) - 1, "<u4"),
        "codes": data.put(t.codes, "<u2"),
        "codebook": data.put(value_keys(t.codebook, dtype), "<u4"),
    }


def _unchanged(base: TensorPlan | None, new: TensorPlan) -> bool:
    """The same content written with the same choices: the same section."""
    return base is not None and same_tensor(base.tensor, new.tensor) and choices_of(base) == choices_of(new)


def tensor_update_cost(base: TensorPlan | None, new: TensorPlan) -> int:
    """Bytes (about) that a delta spends on turning ``base`` into ``new``: 0 when they are the same."""
    return 0 if _unchanged(base, new) else _cheapest_op(new.name, base, new)[2]


def _cheapest_op(name: str, base: TensorPlan | None, new: TensorPlan, alphabet: int = 0) -> tuple[dict, bytes, int]:
    """-> (op, its data, its cost): of the ops that apply, the one whose data compresses smallest;
    ``alphabet``: the gap alphabet NEW's file uses for this tensor (0: none)."""
    options = []
    builders = [lambda d: _op_whole(name, new, d)]
    if base is not None:
        builders += [lambda d: _op_values(name, base, new, d), lambda d: _op_entries(name, base, new, d, alphabet)]
    for build in builders:
        data = ArrayWriter()
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
    if list(merged_meta(base, diff)) != list(new):
        diff["order"] = list(new)
    return diff


def make_delta(base: bytes, new: bytes) -> tuple[bytes, dict]:
    """-> (the .sqzd bytes, a report: the op of each tensor, section sizes, whether NEW went whole).

    Raises SqzError when either file is not a valid ``.sqz``."""
    base, new = bytes(base), bytes(new)
    base_layout = read_layout(base)
    parsed = parse_sqz(new)
    new_layout, alphabets = layout_of(parsed), gap_alphabets(parsed)
    ops, blobs, size = [], [], 0
    names = {p.name: i for i, p in enumerate(base_layout.tensors)}
    for plan in new_layout.tensors:
        old = base_layout.plan(plan.name)
        if _unchanged(old, plan):
            ops.append(names[plan.name])  # the base's tensor as it is
            continue
        op, blob, _ = _cheapest_op(plan.name, old, plan, alphabets.get(plan.name, 0))
        ops.append(_compact(op, names, old, size))
        blobs.append(blob)
        size += len(blob)
    plan = {
        "steps": new_layout.steps,
        "shared_metadata": new_layout.shared_metadata,
        "meta": _meta_diff(base_layout.meta, new_layout.meta),
        "tensors": ops,
    }
    delta = write_delta_file(base, new, plan, b"".join(blobs))
    literal = False
    try:
        ok = apply_delta(base, delta) == new
    except SqzError:
        ok = False
    if not ok:  # NEW is not what its own content writes: it travels whole
        delta, literal = write_delta_file(base, new, {"literal": True}, new), True
    kinds = ["same" if isinstance(op, int) else op["op"] for op in ops]
    counts = {name: kinds.count(name) for name in OPS}
    return delta, {"bytes": len(delta), "literal": literal, "ops": counts, "tensors": ops}
