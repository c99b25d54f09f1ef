"""The output-aware path of ``compress``: calibrate, choose every layer's codes (and, for a byte
budget, every layer's trade-off), correct the biases.

Kept apart from ``pipeline`` so that the nearest-value path stays a few lines: this one
builds the model, runs it over calibration images (the user's, or synthetic ones when there
are none) and hands each convolution to ``output_aware.quantize_layer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from squeezenet.compression.budget import Candidate, allocate, candidates_for, tensor_bytes
from squeezenet.compression.layer_statistics import collect_stats, conv_layers, synthetic_images
from squeezenet.compression.output_aware import prepare_layer, quantize_layer
from squeezenet.compression.weight_sharing import compact
from squeezenet.errors import ModelError
from squeezenet.weights.info import LoadedWeights
from squeezenet.weights.sqz_codec import SparseTensor

CALIBRATION_BATCH = 16
DAMP = 0.01  # of the mean input variance, added to every covariance (GPTQ's dampening)
SYNTHETIC_DAMP = 0.2  # synthetic images are trusted less: closer to plain weight error (chosen on half A)
OWN_CURVATURE = 0.5  # share of each last-layer row's own curvature, with real images (chosen on half A)


def calibration_batches(calibration, model, config) -> tuple[list[torch.Tensor], str]:
    """(batches of images, a note saying where they came from)."""
    if calibration is None:
        info = model.weights_info
        from squeezenet.models.registry import default_input_size

        size = default_input_size(model)
        images = synthetic_images(config.synthetic_images, size, info.in_chans, info.preprocessing)
        note = f"{len(images)} synthetic images (no data)"
    else:
        images = calibration if isinstance(calibration, torch.Tensor) else torch.cat(list(calibration))
        note = f"{len(images)} calibration image{'' if len(images) == 1 else 's'}"
    if len(images) == 0:
        raise ModelError("calibration needs at least one image")
    return [images[i : i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)], note


Encoder = Callable[[dict, dict], tuple[bytes, dict]]  # (tensors, notes) -> (file bytes, size report)


def fixed_bytes(encode: Encoder, tensors: dict, layers: Iterable[str]) -> float:
    """Bytes of the file that the chosen layers do not take (metadata, biases, other tensors)."""
    _, report = encode(tensors, {})
    return report["total"] - sum(report[k]["section"] + report[k].get("rans_estimate", 0.0) for k in layers)


def byte_floor(encode: Encoder, tensors: dict, config) -> int:
    """The smallest file without pruning further: every stored weight of every layer on one code."""
    floor = dict(tensors)
    layers = [k for k, t in tensors.items() if isinstance(t, SparseTensor)]
    for k in layers:
        t = tensors[k]
        mean = float(np.mean(t.codebook[t.codes])) if len(t.codes) else 0.0
        floor[k] = SparseTensor(t.shape, np.array([mean], np.float32), np.zeros_like(t.codes), t.positions, t.bits)
    return int(fixed_bytes(encode, floor, layers) + sum(tensor_bytes(k, floor[k], config.codebook_dtype)
                                                              for k in layers))  # fmt: skip


def check_budget(encode: Encoder, tensors: dict, config) -> None:
    """A budget below the smallest file the format reaches for this model is an error (before any work)."""
    if config.max_bytes is None:
        return
    floor = byte_floor(encode, tensors, config)
    if config.max_bytes < floor:
        raise ModelError(
            f"--max-bytes {config.max_bytes:,} is below the smallest file this model compresses to without "
            f"pruning ({floor:,} bytes: metadata, biases and the positions of every stored weight)"
        )


def output_aware(
    source: LoadedWeights,
    tensors: dict,
    bits: dict[str, int],
    config,
    calibration,
    progress: bool,
    encode: Encoder,
    notes: dict | None = None,
    reserve: int = 0,
) -> tuple[dict, dict, dict]:
    """-> (replacement tensors: quantized weights and corrected biases, notes for the metadata,
    per-layer choices). ``encode`` writes a file the way the caller will, so that ``notes``
    (the caller's, for the metadata) and ``reserve`` (bytes kept free) make a budget exact."""
    from squeezenet.weights import build_model_from_weights

    model = build_model_from_weights(source).eval()
    layers = [k for k in conv_layers(model) if k in bits and isinstance(tensors.get(k), SparseTensor)]
    check_budget(encode, tensors, config)
    batches, note = calibration_batches(calibration, model, config)
    total_images = sum(len(b) for b in batches)
    with tqdm(total=total_images, desc="calibrating", unit="image", disable=not progress, leave=False) as bar:
        # the Fisher weights rows and layers against each other: only a rate or a budget needs it
        need_fisher = config.max_bytes is not None or config.rate > 0
        # the logits' own rows need real images: synthetic ones make few classes likely
        last = layers[-1] if layers else None
        own = last if calibration is not None else None
        stats = collect_stats(model, batches, fisher=need_fisher, on_batch=bar.update, row_curvature=own)
    weights = {k: v.numpy() for k, v in source.state_dict.items()}
    chosen: dict[str, tuple[float, bool, object]] = {}
    plans = {}
    damp = SYNTHETIC_DAMP if calibration is None else DAMP
    for k in tqdm(layers, desc="preparing", unit="layer", disable=not progress, leave=False):
        plans[k] = prepare_layer(weights[k], stats[k], damp=damp, coherence=1.0 if k == last else 0.0,
                                 own_blend=OWN_CURVATURE if k == own else 0.0)  # fmt: skip
    if config.max_bytes is None:
        for k in tqdm(layers, desc="quantizing", unit="layer", disable=not progress, leave=False):
            r = quantize_layer(plans[k], tensors[k].codebook, lam=config.rate, allow_prune=config.prune,
                               storage=config.codebook_dtype, refit=config.refit, feedback=config.feedback)  # fmt: skip
            chosen[k] = (config.rate, config.prune, r)
    else:
        options: dict[str, list[Candidate]] = {}
        for k in tqdm(layers, desc="rate-distortion", unit="layer", disable=not progress, leave=False):
            options[k] = candidates_for(k, plans[k], tensors[k].codebook, bits[k], config.codebook_dtype,
                                        prune=config.prune)  # fmt: skip
        picked = fit_budget(encode, tensors, options, config, {**(notes or {}), "calibration": note}, reserve)
        chosen = {k: (c.lam, c.prune, c.result) for k, c in picked.items()}
    out: dict = {}
    for k, (_, _, r) in chosen.items():
        out[k] = compact(SparseTensor(tensors[k].shape, r.codebook, r.codes, r.positions, bits[k]))
        bias = k[: -len("weight")] + "bias"
        if config.bias_correction and bias in tensors and isinstance(tensors[bias], np.ndarray):
            out[bias] = (np.asarray(tensors[bias], np.float64) + r.bias_delta).astype(np.float32)
    layer_notes = {
        k: {"rate": lam, "pruning": pruned, "predicted_kl": r.distortion if need_fisher else None, "stored": r.kept}
        for k, (lam, pruned, r) in chosen.items()
    }
    return out, _notes(note, chosen, config, need_fisher), layer_notes


def _notes(note: str, chosen: dict, config, need_fisher: bool) -> dict:
    notes = {"calibration": note}
    if need_fisher:
        notes["predicted_kl"] = round(sum(r.distortion for _, _, r in chosen.values()), 5)
    return notes


def fit_budget(encode: Encoder, tensors: dict, options: dict[str, list[Candidate]], config, notes: dict, reserve: int):
    """Allocate, then encode for real (with the metadata the file will carry) and tighten the
    layers' budget until the whole file fits with ``reserve`` bytes to spare."""
    fixed = fixed_bytes(encode, tensors, options)
    margin = float(reserve)
    for _ in range(8):
        picked = allocate(options, config.max_bytes - fixed - margin)
        if picked is None:
            break
        trial = dict(tensors)
        for k, c in picked.items():
            trial[k] = c.tensor
            bias = k[: -len("weight")] + "bias"
            if bias in trial and isinstance(trial[bias], np.ndarray):
                trial[bias] = (np.asarray(tensors[bias], np.float64) + c.result.bias_delta).astype(np.float32)
        chosen = {k: (c.lam, c.prune, c.result) for k, c in picked.items()}
        meta = {**notes, **_notes(notes.get("calibration", ""), chosen, config, True)}
        size = len(encode(trial, meta)[0])
        if size + reserve <= config.max_bytes:
            return picked
        margin += size + reserve - config.max_bytes + 32
    raise ModelError(f"--max-bytes {config.max_bytes:,}: no setting of the layers fits (try a larger budget)")
