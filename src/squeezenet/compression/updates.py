"""Compress a fine-tuned model *against* the ``.sqz`` it was fine-tuned from, so that the update
(``.sqzd``) carries only what the fine-tuning changed (docs/sqz-delta.md).

Levels (``UPDATE_LEVELS``), as ``squeezenet train --update-of`` trains them:

- ``head``: only the classifier trained; every other tensor is the base's, as stored.
- ``codebooks``: masks and indices frozen, the shared values trained (their gradients pooled,
  Deep Compression's trained quantization), biases and the classifier free: each quantized layer
  is the base's entries with the values the training reached, stored in the base's precision and
  kept in the base codebook's order (``in_base_order``), so that no code is renumbered.
- ``full``: everything trained; each quantized layer is then compressed against the base's mask
  and codebook (every weight to its nearest base value, the values refitted as the means of their
  weights) or afresh (k-means at the base's size), whichever update is smaller.

A tensor the base does not have in this shape (a classifier for new classes) is quantized afresh
with the pipeline's own ``quantize_weight``: at ``head_bits`` when given (``squeezenet train``
chooses them on its validation images, ``HEAD_BITS``), else at the bits of the base's tensor of that
name.
"""

from __future__ import annotations

import numpy as np

from squeezenet.compression.choices import UPDATE_LEVELS
from squeezenet.compression.pipeline import quantize_weight
from squeezenet.errors import WeightsError
from squeezenet.weights.info import LoadedWeights
from squeezenet.weights.sqz_codec import SparseTensor, SqzError, TensorPlan
from squeezenet.weights.sqz_codec.delta import tensor_update_cost
from squeezenet.weights.sqz_codec.layout import SqzLayout, choices_of, plan_with, read_layout, write_layout
from squeezenet.weights.sqz_codec.values import float_keys

FRESH_DTYPE = "float16"  # values of tensors the base does not have, as the pipeline's default
HEAD_BITS = (4, 5, 6, 8)  # the codebook sizes a new classifier may get, fewest bits first


def base_layout(base: bytes, what: str = "base") -> SqzLayout:
    try:
        return read_layout(base)
    except SqzError as exc:
        raise WeightsError(f"{what}: {exc}") from None


def shared_value_of(t: SparseTensor, dense: np.ndarray) -> np.ndarray:
    """The value each code holds in ``dense`` (trained with pooled gradients, every weight of a code
    holds the same one; the first is taken and the rest checked)."""
    flat = np.asarray(dense, np.float32).ravel()[t.positions]
    values = t.codebook.astype(np.float32).copy()
    first = np.full(len(values), -1, np.int64)
    first[t.codes[::-1]] = np.arange(len(t.codes))[::-1]
    used = first >= 0
    values[used] = flat[first[used]]
    if not np.allclose(values[t.codes], flat, rtol=1e-6, atol=1e-8):
        raise WeightsError("the trained weights are not shared per code (were gradients pooled?)")
    return values


def in_base_order(old: TensorPlan, values: np.ndarray) -> np.ndarray:
    """The trained shared values of ``old``'s codes, moved the least (each by the share of weights
    its code holds) so that they keep the order of the base codebook. A packed codebook is stored
    sorted: two values that crossed while training would renumber the codes, and a tensor whose
    codes change is re-coded whole by an update (its rANS group decoded and coded again: hundreds of
    milliseconds of patching) where a change of values alone is spliced in. Values that are zero
    stay zero (a zero-valued code marks entries as pruned); where the order cannot then be kept,
    the values are returned as trained and the writer renumbers."""
    t, dtype = old.tensor, np.dtype(old.codebook_dtype)
    order = np.argsort(float_keys(t.codebook.astype(dtype), dtype), kind="stable")
    if _non_decreasing(values[order], dtype):
        return values
    counts = np.bincount(t.codes, minlength=len(values)).astype(np.float64)
    zero = values[order] == 0
    weights = np.where(zero, 1e12, np.maximum(counts[order], 1e-9))  # zeros pinned, unused values free
    fitted = np.where(zero, 0.0, _pool_adjacent_violators(values[order].astype(np.float64), weights))
    if not _non_decreasing(fitted, dtype):
        return values
    out = np.empty_like(values)
    out[order] = fitted.astype(values.dtype)
    return out


def _non_decreasing(values: np.ndarray, dtype) -> bool:
    return bool(np.all(np.diff(float_keys(values.astype(dtype), dtype)) >= 0))


def _pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence nearest to ``values`` in weighted least squares (isotonic
    regression; no library the project depends on has it): neighbours out of order are pooled
    into their weighted mean until none is."""
    means: list[float] = []
    totals: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        means.append(value)
        totals.append(weight)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            value, weight, size = means.pop(), totals.pop(), sizes.pop()
            means[-1] = (means[-1] * totals[-1] + value * weight) / (totals[-1] + weight)
            totals[-1] += weight
            sizes[-1] += size
    return np.repeat(np.array(means), sizes)


def _bits(t: SparseTensor) -> int:
    return max(1, int(np.ceil(np.log2(max(2, len(t.codebook))))))


def against_base(t: SparseTensor, dense: np.ndarray) -> SparseTensor:
    """The base's mask and codebook: each kept weight to its nearest base value, then every value
    refitted as the mean of its weights (unused values stay)."""
    flat = np.asarray(dense, np.float32).ravel()[t.positions]
    order = np.argsort(t.codebook, kind="stable")
    sorted_cb = t.codebook[order]
    idx = np.clip(np.searchsorted((sorted_cb[1:] + sorted_cb[:-1]) / 2, flat), 0, len(order) - 1)
    codes = order[idx]
    sums = np.bincount(codes, flat, len(t.codebook))
    counts = np.bincount(codes, minlength=len(t.codebook))
    codebook = np.where(counts > 0, sums / np.maximum(counts, 1), t.codebook).astype(np.float32)
    return SparseTensor(t.shape, codebook, codes, t.positions, t.bits)


def _fresh_like(t: SparseTensor, dense: np.ndarray) -> SparseTensor:
    """A fresh compression at the base's density (largest magnitudes kept) and codebook size."""
    flat = np.asarray(dense, np.float32).ravel().copy()
    keep = len(t.positions)
    if keep < flat.size:
        drop = np.argsort(np.abs(flat), kind="stable")[: flat.size - keep]
        flat[drop] = 0
    return quantize_weight(flat.reshape(t.shape), _bits(t))


def is_new(old: TensorPlan | None, value: np.ndarray) -> bool:
    """Not in the base, or in another shape (a classifier for new classes): quantized afresh."""
    return old is None or tuple(old.tensor.shape) != tuple(value.shape)


def _updated(level: str, old: TensorPlan | None, name: str, value: np.ndarray, head: set[str],
             head_bits: int | None) -> TensorPlan:  # fmt: skip
    base = None if old is None else old.tensor
    if is_new(old, value):
        return _fresh(name, value, old, head_bits)
    if level == "head" and name not in head:
        return old
    if isinstance(base, np.ndarray):
        return _with(old, value.astype(np.float32))
    if level == "codebooks" and name not in head:
        values = in_base_order(old, shared_value_of(base, value))
        return _with(old, SparseTensor(base.shape, values, base.codes, base.positions, base.bits))
    options = [_with(old, against_base(base, value)), _with(old, _fresh_like(base, value))]
    return min(options, key=lambda plan: tensor_update_cost(old, plan))


def _with(old: TensorPlan, tensor) -> TensorPlan:
    """``tensor`` written with the base's choices for it."""
    return plan_with(old.name, tensor, choices_of(old))


def fresh_bits(old: TensorPlan | None) -> int:
    """A new tensor's bits when nothing chose them: the base tensor's of that name, else 8."""
    return _bits(old.tensor) if old is not None and isinstance(old.tensor, SparseTensor) else 8


def _fresh(name: str, value: np.ndarray, old: TensorPlan | None, bits: int | None) -> TensorPlan:
    if value.ndim > 1:
        tensor = quantize_weight(value, bits or fresh_bits(old))
        return TensorPlan(name, tensor, codebook_dtype=FRESH_DTYPE, dense_dtype=FRESH_DTYPE)
    return TensorPlan(name, value.astype(np.float32), dense_dtype=FRESH_DTYPE, codebook_dtype=FRESH_DTYPE)


def compress_update(base: bytes, tuned: LoadedWeights, level: str, head: set[str] | None = None,
                    head_bits: int | None = None) -> bytes:  # fmt: skip
    """The ``.sqz`` of ``tuned`` written against ``base`` at ``level``; ``head``: the tensors that
    trained freely at every level (default: the classifier's); ``head_bits``: the bits of the
    weights the base does not have (default ``fresh_bits``)."""
    if level not in UPDATE_LEVELS:
        raise WeightsError(f"unknown update level {level!r}: expected {', '.join(UPDATE_LEVELS)}")
    layout = base_layout(base)
    head = head if head is not None else {k for k in tuned.state_dict if k.startswith("classifier.")}
    plans = []
    for name, tensor in tuned.state_dict.items():
        value = tensor.detach().float().cpu().numpy()
        plans.append(_updated(level, layout.plan(name), name, value, head, head_bits))
    meta = tuned.info.to_metadata()
    out = SqzLayout(meta, plans, layout.steps, layout.shared_metadata, layout.version)
    try:
        return write_layout(out)
    except SqzError as exc:
        raise WeightsError(f"cannot encode the update: {exc}") from None
