"""``squeezenet train --update-of BASE.sqz``: fine-tuning whose result is a small update of BASE.

The level (``compression.updates.UPDATE_LEVELS``) decides what may train: ``head`` the classifier
only (the features frozen), ``codebooks`` the shared values of every quantized layer (each
weight's gradient replaced by the sum over its code's weights, so that the weights of a code move
together and masks and indices stay as they are), the biases and the classifier; ``full``
everything. At the end the run folder gets ``update.sqz`` (the last weights compressed against
BASE), ``update.sqzd`` (the delta from BASE) and ``update.json`` (both sizes and the hashes).

A classifier for new classes is quantized afresh; its bits are chosen on the run's validation
images (``choose_head_bits``), never on the test split.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from squeezenet.atomic import atomic_write_bytes, atomic_write_text
from squeezenet.compression.pipeline import quantize_weight
from squeezenet.compression.updates import HEAD_BITS, base_layout, compress_update, is_new
from squeezenet.errors import TrainingError
from squeezenet.inference.fidelity import fidelity_from_logits
from squeezenet.weights import build_model_from_weights, load_weights
from squeezenet.weights.deltas import delta_bytes
from squeezenet.weights.info import LoadedWeights
from squeezenet.weights.sqz_codec import SparseTensor

UPDATE_FILES = ("update.sqz", "update.sqzd", "update.json")
HEAD_AGREEMENT = 0.99  # share of validation images whose top-1 the quantized new classifier must keep


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


def choose_head_bits(base: bytes, tuned: LoadedWeights, val_loader, device: torch.device) -> dict | None:
    """The fewest ``HEAD_BITS`` at which a new classifier keeps the top-1 of the trained float one
    on ``HEAD_AGREEMENT`` of the validation images (a paired measure: Deep Compression's bits per
    layer, chosen where the test split is never read); the most bits when none does. None when
    the run has no validation images or no new weights outside the classifier's."""
    layout = base_layout(base)
    new = {k: v.float().numpy() for k, v in tuned.state_dict.items()
           if v.ndim > 1 and is_new(layout.plan(k), v.numpy())}  # fmt: skip
    if val_loader is None or not new or not all(k.startswith("classifier.") for k in new):
        return None
    model = build_model_from_weights(tuned).eval().to(device)
    heads = {bits: {k.removeprefix("classifier."): torch.from_numpy(quantize_weight(v, bits).to_dense()).to(device)
                    for k, v in new.items()} for bits in HEAD_BITS}  # fmt: skip
    reference, logits = [], {bits: [] for bits in HEAD_BITS}
    with torch.inference_mode():
        for batch in val_loader:
            if not batch.paths:
                continue
            features = model.features(batch.images.to(device))  # once a batch, for every candidate
            reference.append(model.classifier(features).flatten(1).cpu())
            for bits, params in heads.items():
                logits[bits].append(torch.func.functional_call(model.classifier, params, (features,)).flatten(1).cpu())
    if not reference:
        return None
    fidelity = {bits: fidelity_from_logits(torch.cat(reference), torch.cat(logits[bits])) for bits in HEAD_BITS}
    shares = {bits: fidelity[bits].agreement for bits in HEAD_BITS}
    chosen = next((bits for bits in HEAD_BITS if shares[bits] >= HEAD_AGREEMENT), HEAD_BITS[-1])
    return {"bits": chosen, "agreement": shares, "images": fidelity[chosen].n,
            "rule": f"fewest bits keeping {HEAD_AGREEMENT:.0%}"}  # fmt: skip


def write_update(cfg, run_dir: Path, weights: Path, val_loader=None, device: torch.device | None = None) -> dict:
    """``update.sqz`` / ``.sqzd`` / ``.json`` of the run's ``weights`` against ``cfg.update_of``."""
    base = Path(cfg.update_of).read_bytes()
    tuned = load_weights(weights)
    head = choose_head_bits(base, tuned, val_loader, device or torch.device("cpu"))
    info = tuned.info
    provenance = {**info.provenance, "update_of": cfg.update_of, "update_level": cfg.update_level}
    if head is not None:
        provenance["head_bits"] = {"bits": head["bits"], "chosen_on": f"{head['images']} validation images"}
    tuned = type(tuned)(replace(info, provenance=provenance), tuned.state_dict)
    new = compress_update(base, tuned, cfg.update_level, head_bits=head["bits"] if head else None)
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
        "head_bits": head,
    }
    atomic_write_bytes(run_dir / "update.sqz", new, TrainingError)
    atomic_write_bytes(run_dir / "update.sqzd", delta.data, TrainingError)
    atomic_write_text(run_dir / "update.json", json.dumps(report, indent=2) + "\n", TrainingError)
    return report
