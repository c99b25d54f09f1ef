"""The integer model the C export runs, as plain data, and its few integer formulas (NumPy only).

``QuantNet`` is what the exporter produces and what both the generated C and the NumPy
reference (``reference.py``) consume, so the two cannot drift apart: every integer the C
code uses is either stored here or derived by the small formulas below, which the C
runtime repeats operation for operation. docs/c-export.md states the arithmetic.

- Activations: uint8, zero point 0 (every tensor SqueezeNet stores follows a ReLU); with
  ``stem_bits`` / ``squeeze_bits`` 12, conv1's output / the squeeze outputs hold 0..4095 in uint16.
- Weights: int8 in [-127, 127], one scale per output channel; int32 accumulators.
- Requantization: ``out = clamp((acc * M + 2^(n-1)) >> n, 0, 255)`` for acc > 0, else 0,
  with M in [2^30, 2^31) and 1 <= n <= 62 (the product needs 64 bits).
- Codebook layers (at most 256 distinct non-zero values), compressed storage: the weights are
  the codebook itself, ``C_k = round(c_k / u)`` with u = max|c| / ``codebook_limit(...)``, as
  wide as the int32 accumulator allows (about 13 bits for a 3x3 layer on 64 channels), with one
  multiplier per layer: the compressed build runs the codebook's values, not an int8 rounding
  of them, so it loses only what the uint8 activations lose.
- int8 storage: every layer (codebook or not) as int8 with per-output-channel scales,
  rounded by the quantizer for the layer's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from squeezenet.export.formats import WIDE_BITS

WEIGHT_MAX = 127
CODEBOOK_MAX = 32767
MAX_CODEBOOK = 256  # entries: the stream's code alphabet fits one byte
MAX_SHIFT = 62
BIAS_BITS = 15  # stored biases are int16 << a per-layer shift
PRODUCTS_LIMIT = (1 << 30) - 1  # |sum of w * x| stays below this; the bias (< 2^30) takes the rest of int32
ACTIVATION_MAX = 255  # largest |x| a convolution reads: a uint8 activation, or a pixel minus its zero point
WIDE_MAX = {bits: (1 << bits) - 1 for bits in WIDE_BITS}  # the largest value a conv1 or squeeze output holds


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
    scales: dict[str, float]  # activation scales (real value = scale * stored integer)
    score_scale: float  # real class score = score_scale * integer score
    classes: list[str] = field(default_factory=list)
    storage: str = "int8"  # "int8" or "compressed"
    squeeze_max: int = ACTIVATION_MAX  # a squeeze output's largest value: 255 (uint8) or 4095 (uint16)
    stem_max: int = ACTIVATION_MAX  # conv1's output's largest value: 255 (uint8) or 4095 (uint16)

    @property
    def num_classes(self) -> int:
        return self.classifier.cout

    def fire_input_max(self, index: int) -> int:
        """The largest value Fire ``index`` (0 = fire2) reads (see ``fire_input_max``)."""
        return fire_input_max(index, self.stem_max)

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


def element_bytes(top: int) -> int:
    """Bytes of one stored activation whose largest value is ``top``: uint8, or uint16 (a wide one).
    The one place that maps a tensor's range to its storage (reference, arena plan and code)."""
    return 1 if top <= 255 else 2


def requantize(acc: np.ndarray, mult, shift, top: int = ACTIVATION_MAX) -> np.ndarray:
    """int32 accumulators -> uint8 (uint16 for a ``top`` above 255): ReLU, fixed-point multiply,
    round half up, saturate at ``top``."""
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    value = (np.maximum(acc, 0) * mult + (np.int64(1) << (shift - 1))) >> shift
    return np.where(acc > 0, np.minimum(value, top), 0).astype(np.uint8 if element_bytes(top) == 1 else np.uint16)


def fire_input_max(index: int, stem_max: int) -> int:
    """The largest value Fire ``index`` (0 = fire2) reads: the first reads conv1's output, which
    may be wide; the others read a Fire's uint8 output. The one place that decides which
    squeeze convolution reads 16-bit inputs (quantizer, arena and generated code ask here)."""
    return stem_max if index == 0 else ACTIVATION_MAX


def codebook_limit(products: int, activation_max: int = ACTIVATION_MAX) -> int:
    """Largest |C_k| of a compressed layer whose ``products`` (weights per output, on inputs of at
    most ``activation_max``) cannot overflow the int32 accumulator: products * activation_max * |C|
    < 2^30, the bias (< 2^30) taking the rest."""
    return max(WEIGHT_MAX, min(CODEBOOK_MAX, PRODUCTS_LIMIT // (activation_max * max(1, products))))


def products_fit(products: int, activation_max: int, weight_max: int = WEIGHT_MAX) -> bool:
    """Whether ``products`` weights of at most ``weight_max`` on inputs of at most ``activation_max``
    always sum below 2^30 (the int32 accumulator's share for them)."""
    return products * activation_max * weight_max <= PRODUCTS_LIMIT
