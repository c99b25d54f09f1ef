"""``squeezenet train --update-of BASE.sqz``: fine-tuning whose result is a small update of BASE.

The level (``compression.updates.UPDATE_LEVELS``) decides what may train: ``head`` the classifier
only (the features frozen), ``codebooks`` the shared values of every quantized layer (each
weight's gradient replaced by the sum over its code's weights, so that the weights of a code move
together and masks and indices stay as they are), the biases and the classifier; ``full``
everything. At the end the run folder gets ``update.sqz`` (the last weights compressed against
BASE), ``update.sqzd`` (the delta from BASE) and ``update.json`` (both sizes and the hashes).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from squeezenet.atomic import atomic_write_bytes, atomic_write_text
from squeezenet.compression.updates import base_layout, compress_update
from squeezenet.errors import TrainingError
from squeezenet.weights import load_weights
from squeezenet.weights.deltas import delta_bytes
from squeezenet.weights.sqz_codec import SparseTensor

UPDATE_FILES = ("update.sqz", "update.sqzd", "update.json")


def resolved(cfg):
    """The run's options with what the update implies: fine-tuning from BASE, its input channels,
    and for ``head`` the features frozen."""
    if not cfg.update_of:
        return cfg
    if cfg.weights not in (None, cfg.update_of):
        raise TrainingError("--update-of names the weights to fine-tune from; leave --weights out")
    base_chans = load_weights(cfg.update_of).info.in_chans
    freeze = cfg.freeze_features or cfg.update_level == "head"
    return replace(cfg, weights=cfg.update_of, in_chans=cfg.in_chans or base_chans, freeze_features=freeze)


def pool_gradients(model: nn.Module, base: bytes) -> int:
    """Hooks that give every weight of a quantized layer the sum of its code's gradients (zero for
    pruned weights and for codes whose value is 0): trained quantization inside the ordinary loop,
    with any optimizer, since weights that start equal and get equal gradients stay equal.
    Returns how many layers are pooled; the classifier is left free when it is new."""
    layout = base_layout(base)
    params = dict(model.named_parameters())
    pooled = 0
    for plan in layout.tensors:
        t, param = plan.tensor, params.get(plan.name)
        if not isinstance(t, SparseTensor) or param is None or tuple(param.shape) != tuple(t.shape):
            continue
        live = t.codebook[t.codes] != 0
        positions = torch.from_numpy(t.positions[live].astype(np.int64))
        codes = torch.from_numpy(t.codes[live].astype(np.int64))
        param.register_hook(_pooling_hook(positions, codes, len(t.codebook)))
        pooled += 1
    return pooled


def _pooling_hook(positions: torch.Tensor, codes: torch.Tensor, k: int):
    def pool(grad: torch.Tensor) -> torch.Tensor:
        flat = grad.reshape(-1)
        index, pos = codes.to(grad.device), positions.to(grad.device)
        sums = torch.zeros(k, dtype=grad.dtype, device=grad.device).index_add_(0, index, flat[pos])
        out = torch.zeros_like(flat)
        out[pos] = sums[index]
        out = out.view(grad.shape)
        if grad.is_contiguous(memory_format=torch.channels_last) and not grad.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    return pool


def write_update(cfg, run_dir: Path, weights: Path) -> dict:
    """``update.sqz`` / ``.sqzd`` / ``.json`` of the run's ``weights`` against ``cfg.update_of``."""
    base = Path(cfg.update_of).read_bytes()
    tuned = load_weights(weights)
    info = tuned.info
    provenance = {**info.provenance, "update_of": cfg.update_of, "update_level": cfg.update_level}
    tuned = type(tuned)(replace(info, provenance=provenance), tuned.state_dict)
    new = compress_update(base, tuned, cfg.update_level)
    delta = delta_bytes(base, new, cfg.update_of, "update.sqz")
    report = {
        "level": cfg.update_level,
        "base": cfg.update_of,
        "base_bytes": len(base),
        "sqz_bytes": len(new),
        "delta_bytes": len(delta.data),
        "base_sha256": delta.base_sha256,
        "sqz_sha256": delta.result_sha256,
        "ops": delta.report["ops"],
        "literal": delta.report["literal"],
    }
    atomic_write_bytes(run_dir / "update.sqz", new, TrainingError)
    atomic_write_bytes(run_dir / "update.sqzd", delta.data, TrainingError)
    atomic_write_text(run_dir / "update.json", json.dumps(report, indent=2) + "\n", TrainingError)
    return report
