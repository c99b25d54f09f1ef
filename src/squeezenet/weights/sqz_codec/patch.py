"""Applying a ``.sqzd`` delta (``delta`` writes them): NEW's content rebuilt from BASE and the
plan, written with the ``.sqz`` writer; BASE's sections, and each tensor's group of the rANS bundle,
copied where they did not change. Every reference is checked; the result must have the SHA-256 the
delta names."""

from __future__ import annotations

import struct

import numpy as np

from .constants import DTYPE_CODES, MAX_ALPHABET, MAX_NDIM, MAX_TENSOR_NUMEL, MAX_TOTAL_NUMEL
from .container import ParsedSqz, assemble_sqz, bundle_payload, parse_sqz
from .delta_file import CHOICE_KEYS, OPS, ArrayReader, code_grid, key_values, read_delta, sha256, value_keys
from .layout import plan_with, stored_choices, tensor_plan
from .metadata import pack_metadata
from .positions import GAP_ALPHABETS
from .reader import SqzError, check
from .tensors import SparseTensor, TensorPlan, _store_codebook, encode_tensor


def _choice_plan(name: str, tensor, choices) -> TensorPlan:
    check(isinstance(choices, dict) and choices.get("dtype") in DTYPE_CODES, f"{name}: bad choices")
    if not isinstance(tensor, np.ndarray):
        check(all(isinstance(choices.get(k), str) for k in CHOICE_KEYS), f"{name}: bad choices")
    return plan_with(name, tensor, choices)


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


def _rebuild(op: dict, base: TensorPlan | None, data: ArrayReader, budget: list[int]) -> TensorPlan:
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
            values = key_values(data.get(op["values"], "<u4", numel), dtype).reshape(shape)
            return _choice_plan(name, values, choices)
        gaps = data.get(op.get("gaps"), "<u4", limit=numel)
        codes = data.get(op.get("codes"), "<u2", len(gaps))
        codebook = key_values(data.get(op.get("codebook"), "<u4", limit=4096), dtype)
        tensor = _sparse(name, shape, _positions_from_gaps(gaps, numel, name), codes, codebook)
        return _choice_plan(name, tensor, choices)
    check(base is not None, f"{name}: not in the base")
    b = base.tensor
    if kind == "values" and isinstance(b, np.ndarray):
        diff = data.get(op.get("diff"), "<i8", b.size)
        return _choice_plan(name, key_values(value_keys(b.ravel(), dtype) + diff, dtype).reshape(b.shape), choices)
    check(isinstance(b, SparseTensor), f"{name}: base tensor is not quantized")
    k = len(b.codebook)
    if kind == "values":
        diff = data.get(op.get("diff"), "<i8", k)
        m = np.arange(k) if op.get("map") is None else data.get(op.get("map"), "<u2", k)
        check(np.array_equal(np.sort(m), np.arange(k)), f"{name}: renumbering is no permutation")
        codebook = np.empty(k, np.float32)
        codebook[m] = key_values(value_keys(b.codebook, dtype) + diff, dtype)
        return _choice_plan(name, SparseTensor(b.shape, codebook, m[b.codes], b.positions), choices)
    grid = code_grid(b)
    gaps = data.get(op.get("changed"), "<u4", limit=len(grid))
    changed = _positions_from_gaps(gaps, len(grid), name)
    symbols = data.get(op.get("symbols"), "<u2", len(changed))
    check(len(symbols) == 0 or int(symbols.max()) <= MAX_ALPHABET, f"{name}: code outside the codebook")  # uint16 grid
    grid[changed] = symbols
    codebook = key_values(data.get(op.get("codebook"), "<u4", limit=4096), dtype)
    positions = np.flatnonzero(grid)
    codes = grid[positions].astype(np.int64) - 1
    plan = _choice_plan(name, _sparse(name, b.shape, positions, codes, codebook), choices)
    alphabet = op.get("alphabet", 0)
    check(type(alphabet) is int and (alphabet == 0 or alphabet in GAP_ALPHABETS), f"{name}: bad gap alphabet")
    plan.gap_alphabet = alphabet  # the one NEW's writer chose: a wrong one fails the final SHA-256 check
    return plan


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
        out = _patch(parse_sqz(base, decode_bundle=False), head.plan, ArrayReader(head.data))
    check(len(out) == head.result_bytes and sha256(out) == head.result_sha256,
          f"the patched file is not the one the delta names (SHA-256 {head.result_sha256[:16]}...)")  # fmt: skip
    return out


def _patch(base: ParsedSqz, plan: dict, data: ArrayReader) -> bytes:
    ops, meta_diff, steps = plan.get("tensors"), plan.get("meta"), plan.get("steps")
    check(isinstance(ops, list) and isinstance(meta_diff, dict), "corrupted delta plan")
    check(isinstance(steps, int) and 1 <= steps <= 1 << 24, "corrupted delta plan (rANS steps)")
    meta = _patched_meta(base.meta, meta_diff)
    shared = plan.get("shared_metadata")
    check(isinstance(shared, bool), "corrupted delta plan (shared metadata)")
    expanded = [_expanded(entry, base) for entry in ops]
    names = [op["name"] for _, op in expanded]
    check(len(set(names)) == len(names), "corrupted delta plan (tensor names)")
    budget = [MAX_TOTAL_NUMEL]
    kept = [_kept_section(base, i, op, data, budget) for i, op in expanded]
    # the base tensors the rebuilt ones start from: their groups decoded together, in one pass
    base.prefetch([i for (i, op), k in zip(expanded, kept, strict=True) if k is None and op.get("op") != "whole"])
    sections, groups, coded = [], [], {}
    for (i, op), k in zip(expanded, kept, strict=True):
        section, op_streams, same_codes = k or _rebuilt_section(base, i, op, data, budget)
        sections.append(section)
        if op_streams:
            group = base.group_of(i) if same_codes and steps == base.steps else None
            if group is not None:
                coded[len(groups)] = bytes(group)  # the tensor's coded symbols, copied
            groups.append(op_streams)
    if any(s.symbols is None for g, streams in enumerate(groups) if g not in coded for s in streams):
        for s, symbols in zip(base.streams, base.decode_bundle(), strict=True):  # an older base, or other steps
            s.symbols = symbols
    return assemble_sqz(pack_metadata(meta, shared), sections, bundle_payload(groups, steps, coded))


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
    merged = merged_meta(base, diff)
    order = diff.get("order", list(merged))
    check(isinstance(order, list) and sorted(order, key=str) == sorted(merged, key=str), "corrupted delta plan (keys)")
    return {k: merged[k] for k in order}  # the writer keeps the keys' order: so must the patch


def _kept_section(base: ParsedSqz, i: int | None, op: dict, data: ArrayReader, budget: list[int]):
    """-> (NEW's tensor section payload, its rANS streams, True) where BASE's streams stay as they
    are: the tensor unchanged, or only its codebook values changed; else None."""
    if op.get("op") == "same" and i is not None:
        p = base.tensors[i]
        budget[0] -= int(np.prod(p.shape)) if p.shape else 1
        check(budget[0] >= 0, "tensors hold more elements than the limit")
        return base.sections[i], [base.streams[s] for s in p.streams], True
    spliced = _spliced_codebook(base, i, op, data.at(op)) if op.get("op") == "values" else None
    return None if spliced is None else (*spliced, True)


def _rebuilt_section(base: ParsedSqz, i: int | None, op: dict, data: ArrayReader, budget: list[int]):
    """-> (NEW's tensor section payload, its rANS streams with their symbols, False)."""
    reuses = i is not None and op.get("op") != "whole"
    plan = _rebuild(op, _base_plan(base, i) if reuses else None, data.at(op), budget)
    try:
        body, rs, _ = encode_tensor(plan)
    except (KeyError, ValueError) as exc:
        raise SqzError(f"{plan.name}: cannot be written ({exc})") from None
    return body, rs, False


def _base_plan(base: ParsedSqz, i: int) -> TensorPlan:
    """BASE's tensor as stored; only its own rANS group is decoded."""
    return tensor_plan(base.tensors[i], base.symbols_of(i))


def _spliced_codebook(base: ParsedSqz, i: int | None, op: dict, data: ArrayReader):
    """A codebook-only change whose codes stay as they are: BASE's section with the new codebook
    bytes in place, and BASE's streams (no entropy coding). None when the codes would move."""
    if i is None or op.get("map") is not None:
        return None
    p = base.tensors[i]
    if p.dense is not None or p.codebook is None:
        return None
    choices = op.get("choices")
    dtype = choices.get("dtype") if isinstance(choices, dict) else None
    check(dtype in DTYPE_CODES, f"{p.name}: bad choices")
    diff = data.get(op.get("diff"), "<i8", len(p.codebook))
    codebook = key_values(value_keys(p.codebook, dtype) + diff, dtype)
    probe = TensorPlan(p.name, None, codebook_dtype=dtype)
    codes = np.arange(len(codebook))
    cb_dt, cb_raw, renumbered, _ = _store_codebook(probe, codes, codebook)
    if not np.array_equal(renumbered, codes):
        return None
    start, end = p.codebook_span
    section = base.sections[i]
    body = section[:start] + struct.pack("<BH", cb_dt, len(codebook) - 1) + cb_raw + section[end:]
    return body, [base.streams[s] for s in p.streams]


def merged_meta(base: dict, diff: dict) -> dict:
    return {**{k: v for k, v in base.items() if k not in diff["drop"]}, **diff["set"]}
