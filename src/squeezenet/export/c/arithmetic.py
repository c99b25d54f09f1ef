"""The integer model the C export runs, as plain data, and its few integer formulas (NumPy only).

``QuantNet`` is what the exporter produces and what both the generated C and the NumPy
reference (``reference.py``) consume, so the two cannot drift apart: every integer the C
code uses is either stored here or derived by the small formulas below, which the C
runtime repeats operation for operation. docs/c-export.md states the arithmetic.

- Activations: uint8, zero point 0 (every tensor SqueezeNet stores follows a ReLU).
- Weights: int8 in [-127, 127], one scale per output channel; int32 accumulators.
- Requantization: ``out = clamp((acc * M + 2^(n-1)) >> n, 0, 255)`` for acc > 0, else 0,
  with M in [2^30, 2^31) and 1 <= n <= 62 (the product needs 64 bits).
- Codebook layers (at most 256 distinct non-zero values), compressed storage: the weights are
  the codebook itself, ``C_k = round(c_k / u)`` with u = max|c| / ``codebook_limit(...)``, as
  wide as the int32 accumulator allows (about 13 bits for a 3x3 layer on 64 channels), with one
  multiplier per layer: the compressed build runs the codebook's values, not an int8 rounding
  of them, so it loses only what the uint8 activations lose.
- Codebook layers, int8 storage: the codebook at 16 bits (u = max|c| / 32767), each output
  channel's int8 weights and multiplier derived from its largest |C_k| (``codebook_weights``,
  ``derived_multiplier``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

WEIGHT_MAX = 127
CODEBOOK_MAX = 32767
MAX_CODEBOOK = 256  # entries: the stream's code alphabet fits one byte
RECIPROCAL_BITS = 24  # q = (|C| * R + 2^23) >> 24 with R = (127 << 24) // Cmax
MAX_SHIFT = 62
BIAS_BITS = 15  # stored biases are int16 << a per-layer shift
PRODUCTS_LIMIT = (1 << 30) - 1  # |sum of w * x| stays below this; the bias (< 2^30) takes the rest of int32
ACTIVATION_MAX = 255  # largest |x| a convolution reads: a uint8 activation, or a pixel minus its zero point


@dataclass
class QuantConv:
    """One convolution in integers. ``weight``/``bias``/``mult``/``shift`` are what runs;
    ``codebook``/``codes``/``positions`` are kept for codebook layers (the compressed form)."""

    name: str
    weight: np.ndarray  # int8 [cout, cin, k, k]; int16 in a compressed codebook layer (its codebook's values)
    bias16: np.ndarray  # int16 [cout]; the accumulator starts at bias16 << bias_shift
    bias_shift: int
    mult: np.ndarray  # int64 [cout], each in [2^30, 2^31)
    shift: np.ndarray  # int64 [cout], each in [1, 62]
    stride: int = 1
    padding: int = 0
    codebook: np.ndarray | None = None  # int16 [K]
    codes: np.ndarray | None = None  # uint8 [nnz], C-order
    positions: np.ndarray | None = None  # int64 [nnz], flat C-order positions
    layer_mult: int = 0  # codebook layers: per-channel multipliers derive from these
    layer_shift: int = 0
    weight_scale: np.ndarray | None = None  # float64 [cout], documentation and checks only

    @property
    def bias(self) -> np.ndarray:
        return self.bias16.astype(np.int64) << self.bias_shift

    @property
    def cout(self) -> int:
        return self.weight.shape[0]

    @property
    def cin(self) -> int:
        return self.weight.shape[1]

    @property
    def kernel(self) -> int:
        return self.weight.shape[2]


@dataclass
class QuantFire:
    squeeze: QuantConv
    expand1x1: QuantConv
    expand3x3: QuantConv
    size: int  # input (= output) side before the optional pool
    pool: bool
    bypass: tuple[int, int] | None = None  # identity bypass: the input rescaled by (mult, shift)


@dataclass
class QuantNet:
    arch: str
    size: int  # input side
    in_chans: int
    channel_order: str  # of the image bytes the entry point takes: RGB or L
    zero_points: np.ndarray  # int64 [in_chans]: the stem reads (pixel - zero point) as int16
    stem: QuantConv
    stem_pool: bool
    fires: list[QuantFire]
    classifier: QuantConv
    scales: dict[str, float]  # activation scales (real value = scale * uint8)
    score_scale: float  # real class score = score_scale * integer score
    classes: list[str] = field(default_factory=list)
    storage: str = "int8"  # "int8" or "compressed"

    @property
    def num_classes(self) -> int:
        return self.classifier.cout

    def convs(self) -> list[QuantConv]:
        out = [self.stem]
        for fire in self.fires:
            out += [fire.squeeze, fire.expand1x1, fire.expand3x3]
        return [*out, self.classifier]


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def pool_out(size: int) -> int:
    """3x3/2 max pool, Caffe's ceil mode (a last window may hang over the edge)."""
    return -(-(size - 3) // 2) + 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """real ~= M * 2^-n with M in [2^30, 2^31), n in [1, 62]; ValueError when out of range."""
    if not real > 0 or not np.isfinite(real):
        raise ValueError(f"multiplier {real!r} is not a positive finite number")
    mantissa, exponent = np.frexp(real)  # real = mantissa * 2^exponent, mantissa in [0.5, 1)
    m = round(float(mantissa) * (1 << 31))
    n = 31 - int(exponent)
    if m == 1 << 31:
        m, n = m >> 1, n - 1
    if not 1 <= n <= MAX_SHIFT:
        raise ValueError(f"multiplier {real:.3g} needs a shift of {n}, outside 1..{MAX_SHIFT}")
    return m, n


def requantize(acc: np.ndarray, mult, shift) -> np.ndarray:
    """int32 accumulators -> uint8: ReLU, fixed-point multiply, round half up, saturate."""
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    value = (np.maximum(acc, 0) * mult + (np.int64(1) << (shift - 1))) >> shift
    return np.where(acc > 0, np.minimum(value, 255), 0).astype(np.uint8)


def codebook_limit(products: int) -> int:
    """Largest |C_k| of a compressed layer whose ``products`` (weights per output) cannot overflow
    the int32 accumulator: products * 255 * |C| < 2^30, the bias (< 2^30) taking the rest."""
    return max(WEIGHT_MAX, min(CODEBOOK_MAX, PRODUCTS_LIMIT // (ACTIVATION_MAX * max(1, products))))


def channel_max(codebook: np.ndarray, codes: np.ndarray) -> int:
    """A channel's largest |C_k| (at least 1, so that an empty channel stays defined)."""
    return max(1, int(np.abs(codebook[codes].astype(np.int64)).max(initial=0)))


def codebook_weights(values: np.ndarray, cmax: int) -> np.ndarray:
    """int16 codebook values of one channel -> its int8 weights (round half away from zero)."""
    reciprocal = (WEIGHT_MAX << RECIPROCAL_BITS) // cmax
    magnitude = (np.abs(values.astype(np.int64)) * reciprocal + (1 << (RECIPROCAL_BITS - 1))) >> RECIPROCAL_BITS
    return (np.sign(values) * magnitude).astype(np.int8)


def derived_multiplier(layer_mult: int, layer_shift: int, cmax: int) -> tuple[int, int]:
    """A codebook channel's (M, n): the layer's multiplier times its Cmax, renormalised to 31 bits."""
    product = layer_mult * cmax
    drop = max(0, product.bit_length() - 31)
    return product >> drop, layer_shift - drop
