"""Deep Compression pipeline: prune -> quantize -> entropy-code into a ``.sqz`` file.

``compress(weights, config)`` takes any weights the loader reads (or a model that carries
``weights_info``) and returns a ``CompressedModel``; ``.save(path)`` writes a ``.sqz`` file
and returns its size report. Two quantizers (``CompressionConfig.method``; ``choices`` holds
the names and the default, the same for the library and the command):

- ``nearest``: per-layer k-means of the weight values, every weight to its nearest centroid
  (Deep Compression's weight sharing, optionally followed by trained quantization);
- ``output-aware`` (``output_aware``; the default): codes chosen for what each layer outputs on
  calibration images, with error feedback, rate-distortion choice and bias correction, and
  with ``max_bytes`` the bits of every layer chosen for the budget (``budget``). Calibration
  images come from ``calibration=`` (the user's images) or, without any, are synthesized
  (``layer_statistics.synthetic_images``): the data-free default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from squeezenet.atomic import atomic_write_bytes
from squeezenet.compression.choices import (
    AUTO,
    DATA_FREE_KIND_BITS,
    DEFAULT_BITS,
    DEFAULT_METHOD,
    METHODS,
    NEAREST,
    NEAREST_LARGE_BITS,
    OUTPUT_AWARE,
    SYNTHETIC_IMAGES,
)
from squeezenet.compression.output_aware_fit import check_budget, output_aware
from squeezenet.compression.pruning import magnitude_mask, prunable, resolve_densities
from squeezenet.compression.weight_sharing import compact, kmeans_1d
from squeezenet.errors import ModelError, WeightsError
from squeezenet.weights.info import LoadedWeights, WeightsInfo
from squeezenet.weights.sqz_codec import DEFAULT_STEPS, SparseTensor, SqzError, TensorPlan, encode_sqz


@dataclass
class CompressionConfig:
    """``bits``: int for all layers or {layer: bits} (the codebook's size, 2**bits at most);
    'large' layers may get ``large_bits``.

    ``densities``: None keeps the weights' own zeros; a float, 'paper', a dict or a sequence
    prunes by magnitude first. ``large_bits`` applies to fire expand 3x3 layers and the last
    prunable layer when set. ``method``: 'nearest' (k-means, each weight to its nearest
    centroid) or 'output-aware' (see ``output_aware``; the default, as the command's); for the
    latter ``rate`` is the price of a bit in nats of KL divergence, ``max_bytes`` replaces it by
    a file-size budget (the bits and densities of every layer are then chosen), ``prune`` lets
    it zero weights whose position and code cost more than they are worth, and
    ``synthetic_images`` is how many synthesized images calibrate it when no image is given.
    """

    bits: int | dict = DEFAULT_BITS
    large_bits: int | None = None
    densities: object = None
    codebook_dtype: str = "float16"
    dense_dtype: str = "float16"
    positions: str = AUTO
    codes_coder: str = AUTO
    gaps_coder: str = AUTO
    steps: int = DEFAULT_STEPS
    method: str = DEFAULT_METHOD
    rate: float = 0.0
    max_bytes: int | None = None
    prune: bool = False
    synthetic_images: int = SYNTHETIC_IMAGES
    kind_bits: dict = field(default_factory=dict)  # {layer kind: bits}, see ``layer_kind``
    # the output-aware method's parts, each switchable for the ablation in docs/compression.md
    feedback: bool = True  # error feedback through the input covariance (GPTQ/OBQ)
    refit: bool = True  # centroids refitted to the layer's output error
    bias_correction: bool = True  # the mean output shift moved into the bias

    @classmethod
    def data_free(cls, method: str = DEFAULT_METHOD) -> CompressionConfig:
        """The default without images (``choices``): 8-bit codebooks, 7-bit for the stem and the
        fire expand 3x3 layers, codes chosen output-aware on synthetic images (the layers and the
        method chosen on one half of imagenet-samples; benchmarks/results/compress.md has the
        figures). With ``method='nearest'`` the default of format version 1 instead: 7 bits for
        the fire expand 3x3 layers and the last layer."""
        if method == NEAREST:
            return cls(method=NEAREST, large_bits=NEAREST_LARGE_BITS)
        return cls(method=method, kind_bits=dict(DATA_FREE_KIND_BITS))

    @classmethod
    def lossless(cls) -> CompressionConfig:
        """Every value exactly: up to 12-bit codebooks hold all of them, and only the nearest method
        keeps each weight on its own value."""
        return cls(bits=12, codebook_dtype="float32", dense_dtype="float32", method=NEAREST)

    def layer_bits(self, names: list[str]) -> dict[str, int]:
        out = {}
        for i, k in enumerate(names):
            b = self.bits.get(k, DEFAULT_BITS) if isinstance(self.bits, dict) else int(self.bits)
            large = "expand3x3" in k or i == len(names) - 1
            named = isinstance(self.bits, dict) and k in self.bits
            if self.large_bits is not None and large and not named:
                b = self.large_bits
            kind = layer_kind(k, names)
            if kind in self.kind_bits and not named:
                b = self.kind_bits[kind]
            if not 1 <= b <= 12:
                raise ModelError(f"bits of {k} must be between 1 and 12, got {b}")
            out[k] = b
        return out

    def check(self) -> None:
        if self.method not in METHODS:
            raise ModelError(f"unknown quantization method {self.method!r} (expected {' or '.join(METHODS)})")
        if self.max_bytes is not None and self.method != OUTPUT_AWARE:
            raise ModelError("a byte budget needs the output-aware method")
        if self.rate < 0:
            raise ModelError(f"rate must be >= 0, got {self.rate}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["densities"] = self.densities if isinstance(self.densities, str | float | int | type(None)) else "custom"
        return d


TRAINING_RESERVE = 256  # bytes a budget keeps free for codebook training to move values (packing varies)


def layer_kind(name: str, names: list[str]) -> str:
    """'stem' (the first convolution), 'squeeze', 'expand1x1', 'expand3x3', 'classifier' (the
    last) or 'other' (bypass convolutions)."""
    for kind in ("squeeze", "expand1x1", "expand3x3"):
        if f".{kind}." in name:
            return kind
    if name == names[-1]:
        return "classifier"
    return "stem" if name == names[0] else "other"


@dataclass
class CompressedModel:
    info: WeightsInfo
    tensors: dict[str, SparseTensor | np.ndarray]
    config: CompressionConfig
    notes: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)  # per-layer choices of the output-aware path (for reports)

    def metadata(self) -> dict:
        info = self.info
        prov = {**info.provenance, "compression": {"config": self.config.to_dict(), **self.notes}}
        meta = WeightsInfo(**{**info.__dict__, "provenance": prov}).to_metadata()
        return meta

    def encode(self) -> tuple[bytes, dict]:
        plans = []
        for k, t in self.tensors.items():
            plans.append(
                TensorPlan(
                    k,
                    t,
                    codebook_dtype=self.config.codebook_dtype,
                    dense_dtype=self.config.dense_dtype,
                    positions=self.config.positions,
                    codes_coder=self.config.codes_coder,
                    gaps_coder=self.config.gaps_coder,
                )
            )
        try:
            return encode_sqz(self.metadata(), plans, self.config.steps)
        except SqzError as exc:
            raise WeightsError(f"cannot encode .sqz: {exc}") from None

    def to_bytes(self) -> bytes:
        return self.encode()[0]

    def save(self, path: str | Path) -> dict:
        data, report = self.encode()
        atomic_write_bytes(path, data, WeightsError)
        return report

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights exactly as a reader of the .sqz file will see them."""
        from squeezenet.weights.sqz import decode_sqz_bytes

        return decode_sqz_bytes(self.to_bytes()).state_dict

    def build_model(self):
        from squeezenet.weights import build_model_from_weights
        from squeezenet.weights.sqz import decode_sqz_bytes

        return build_model_from_weights(decode_sqz_bytes(self.to_bytes()))


def _as_loaded(source) -> LoadedWeights:
    from squeezenet.weights import load_weights

    if isinstance(source, torch.nn.Module):
        info = getattr(source, "weights_info", None)
        if info is None:
            raise ModelError("the model carries no weights_info; load it with build_model_from_weights")
        return LoadedWeights(info, {k: v.detach().clone() for k, v in source.state_dict().items()})
    return load_weights(source)


def quantize_weight(w: np.ndarray, bits: int) -> SparseTensor:
    """Non-zero entries -> codebook of at most 2**bits values (exact when they already fit)."""
    flat = np.asarray(w, dtype=np.float32).ravel()
    positions = np.flatnonzero(flat)
    vals, inv, counts = np.unique(flat[positions], return_inverse=True, return_counts=True)
    if len(vals) <= 1 << bits:
        return compact(SparseTensor(tuple(w.shape), vals.astype(np.float32), inv.astype(np.int64), positions, bits))
    centroids, assign = kmeans_1d(vals, 1 << bits, counts, iters=30)
    return compact(SparseTensor(tuple(w.shape), centroids.astype(np.float32), assign[inv], positions, bits))


def initial_tensors(source, config: CompressionConfig):
    """(loaded weights, float state after pruning, tensors with k-means codebooks, bits per layer)."""
    config.check()
    loaded = _as_loaded(source)
    state = {k: v.detach().float() for k, v in loaded.state_dict.items()}
    names = prunable(state)
    densities = resolve_densities(state, config.densities) if config.densities is not None else {}
    bits = config.layer_bits(names)
    tensors: dict[str, SparseTensor | np.ndarray] = {}
    for k, v in state.items():
        if k in bits:
            if densities.get(k, 1.0) < 1.0:
                state[k] = v = v * magnitude_mask(v, densities[k])
            tensors[k] = quantize_weight(v.numpy(), bits[k])
        else:
            tensors[k] = v.numpy()
    return loaded, state, tensors, bits


def check_budget_for(source, config: CompressionConfig) -> None:
    """A ``max_bytes`` below the smallest file this model compresses to is a ``ModelError`` now,
    before calibration or any other long work."""
    loaded, _, tensors, _ = initial_tensors(source, config)
    check_budget(_encoder(loaded.info, config), tensors, config)


def _encoder(info: WeightsInfo, config: CompressionConfig):
    """(tensors, notes) -> what ``CompressedModel.encode`` gives: how the output-aware path sizes
    a candidate file exactly as it will be written."""
    return lambda tensors, notes: CompressedModel(info, tensors, config, notes).encode()


def compress(
    source,
    config: CompressionConfig | None = None,
    data=None,
    calibration=None,
    progress: bool = False,
    **train_kwargs,
) -> CompressedModel:
    """Compress ``source`` (path, tag, LoadedWeights or model with weights_info).

    ``calibration`` (output-aware method): image tensors (N, C, H, W), or a list of such
    batches, preprocessed for the model; without them synthetic images stand in. ``data``
    (optional): an iterable of image batches or (images, labels) for trained quantization of
    the codebooks and biases afterwards (see ``weight_sharing.train_codebooks``; ``teacher=`` for
    distillation). ``progress`` shows progress bars.
    """
    config = config or CompressionConfig.data_free()
    loaded, state, tensors, bits = initial_tensors(source, config)
    notes: dict = {"data": None, "method": config.method, "bits": bits}
    layers: dict = {}
    if config.method == OUTPUT_AWARE:
        reserve = TRAINING_RESERVE if data is not None else 0
        encode = _encoder(loaded.info, config)
        found, extra, layers = output_aware(
            LoadedWeights(loaded.info, state), tensors, bits, config, calibration, progress, encode, notes, reserve
        )
        tensors.update(found)
        notes.update(extra)
    if data is not None:
        from squeezenet.compression.weight_sharing import train_codebooks
        from squeezenet.weights import build_model_from_weights

        model = build_model_from_weights(
            LoadedWeights(loaded.info, {k: torch.from_numpy(_dense(t)) for k, t in tensors.items()})
        )
        trained = train_codebooks(model, {k: tensors[k] for k in bits}, data, **train_kwargs)
        kind = "trained quantization" + (" (distillation)" if train_kwargs.get("teacher") is not None else "")
        candidate = CompressedModel(loaded.info, {**tensors, **trained}, config, {**notes, "data": kind})
        if config.max_bytes is None or len(candidate.to_bytes()) <= config.max_bytes:
            tensors, notes = candidate.tensors, candidate.notes
        else:  # the trained values pack a few bytes larger than the budget allows: keep the fitted ones
            notes["data"] = "trained quantization skipped (it would not fit --max-bytes)"
    return CompressedModel(loaded.info, tensors, config, notes, layers)


def _dense(t) -> np.ndarray:
    return t.to_dense() if isinstance(t, SparseTensor) else np.asarray(t, dtype=np.float32)


def layer_table(cm: CompressedModel, report: dict) -> list[dict]:
    """Per-layer rows like the paper's Table 1 (bytes include the layer's share of the rANS data)."""
    rows = []
    bundle = report.get("rans_bundle", 0)
    est_total = sum(v.get("rans_estimate", 0) for v in report.values() if isinstance(v, dict)) or 1
    for k, t in cm.tensors.items():
        r = report.get(k, {})
        size = r.get("section", 0) + bundle * r.get("rans_estimate", 0) / est_total
        if isinstance(t, SparseTensor):
            numel = int(np.prod(t.shape))
            rows.append(
                {
                    "layer": k,
                    "params": numel,
                    "stored": len(t.codes),
                    "density": len(t.codes) / numel if numel else 0.0,
                    "bits": t.bits,
                    "codebook": len(t.codebook),
                    "positions": r.get("positions_method"),
                    "codes": r.get("codes_coder"),
                    "bytes": round(size),
                }
            )
        else:
            rows.append(
                {
                    "layer": k,
                    "params": int(np.size(t)),
                    "stored": int(np.size(t)),
                    "density": 1.0,
                    "bits": 16 if cm.config.dense_dtype == "float16" else 32,
                    "bytes": round(size),
                }
            )
    return rows
