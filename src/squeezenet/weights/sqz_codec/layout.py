"""A ``.sqz`` file as its writer saw it: metadata, every tensor as stored (quantized entries, codebook,
dense values) with the choices it was written with, and the rANS step count.

The writer is a function of this content: ``write_layout(read_layout(data)) == data`` for every
file the reference writer made (version 3). That is what lets a delta (``delta``) carry only what
changed and still rebuild the new file byte for byte: the patcher rebuilds the content and writes
it again. ``reproducible`` tells whether a file has the property (older versions, or files from
another writer, do not; a delta then carries them whole).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import DTYPE_CODES, PACKED, POS_GAPS, POS_NAMES
from .container import ParsedSqz, encode_sqz, parse_sqz
from .metadata import pack_metadata
from .tensors import PendingTensor, SparseTensor, TensorPlan, finish_structure

DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}


@dataclass
class SqzLayout:
    meta: dict
    tensors: list[TensorPlan]  # in file order; each ``tensor`` as stored (SparseTensor or float32 array)
    steps: int
    shared_metadata: bool
    version: int

    def plan(self, name: str) -> TensorPlan | None:
        return next((p for p in self.tensors if p.name == name), None)


def stored_choices(p: PendingTensor) -> dict:
    """The choices that reproduce a tensor's section: its precision, and for a quantized tensor the
    scheme and coders the file names (a writer given them picks the same gap alphabet and table
    format, which it chooses by size)."""
    dtype = DTYPE_NAMES[p.dtype % PACKED]
    if p.dense is not None:
        return {"dtype": dtype}
    return {"dtype": dtype, "positions": POS_NAMES[abs(p.pos_method)], "codes_coder": p.codes_coder,
            "gaps_coder": p.gaps_coder}  # fmt: skip


def plan_with(name: str, tensor, choices: dict) -> TensorPlan:
    """A writer's plan for ``tensor`` with ``stored_choices``-style choices."""
    if isinstance(tensor, np.ndarray):
        return TensorPlan(name, tensor, dense_dtype=choices["dtype"])
    return TensorPlan(name, tensor, codebook_dtype=choices["dtype"], positions=choices["positions"],
                      codes_coder=choices["codes_coder"], gaps_coder=choices["gaps_coder"])  # fmt: skip


def choices_of(plan: TensorPlan) -> dict:
    if isinstance(plan.tensor, np.ndarray):
        return {"dtype": plan.dense_dtype}
    return {"dtype": plan.codebook_dtype, "positions": plan.positions, "codes_coder": plan.codes_coder,
            "gaps_coder": plan.gaps_coder}  # fmt: skip


def tensor_plan(p: PendingTensor, symbols: list[np.ndarray]) -> TensorPlan:
    return plan_with(p.name, finish_structure(p, symbols), stored_choices(p))


def gap_alphabets(parsed: ParsedSqz) -> dict[str, int]:
    """The gap alphabet of each tensor a file stores as gaps: the writer's pick for those positions
    (a delta names it, so that the patch need not search again)."""
    return {p.name: p.pos_alphabet for p in parsed.tensors if abs(p.pos_method) == POS_GAPS}


def read_layout(data: bytes, expected_shapes=None) -> SqzLayout:
    """Every check of ``decode_sqz``; raises SqzError on any defect."""
    return layout_of(parse_sqz(data, expected_shapes))


def layout_of(parsed: ParsedSqz) -> SqzLayout:
    symbols = parsed.decode_bundle()
    plans = [tensor_plan(p, symbols) for p in parsed.tensors]
    return SqzLayout(parsed.meta, plans, parsed.steps, shared_metadata(parsed), parsed.version)


def shared_metadata(parsed: ParsedSqz) -> bool:
    """Whether the writer stored shared lists by name (the metadata section says so by its bytes)."""
    return pack_metadata(parsed.meta, True) == parsed.meta_payload


def write_layout(layout: SqzLayout) -> bytes:
    return encode_sqz(layout.meta, layout.tensors, layout.steps, layout.shared_metadata)[0]


def reproducible(data: bytes, layout: SqzLayout | None = None) -> bool:
    """Whether writing the file's content again gives the file itself."""
    layout = layout or read_layout(data)
    return write_layout(layout) == bytes(data)


def same_tensor(a: np.ndarray | SparseTensor, b: np.ndarray | SparseTensor) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape and _equal(a, b)
    return (
        tuple(a.shape) == tuple(b.shape)
        and _equal(a.codebook, b.codebook)
        and _equal(a.codes, b.codes)
        and _equal(a.positions, b.positions)
    )


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal as stored: the same bit patterns (so -0 differs from +0, as in the file)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype.kind == b.dtype.kind and a.tobytes() == b.astype(a.dtype).tobytes()
