"""NumPy reference of the generated C: exactly the same integer arithmetic, vectorised.

Convolutions run as float64 matrix products: every product is a weight (int8, or a codebook
value of at most 15 bits) times an activation (uint8, a 12-bit squeeze output, or a pixel
minus its zero point), and every sum has at most a few thousand of them, so all partial sums
stay far below 2^53 and float64 is exact.
The result is therefore bit-identical to the C code's int32 accumulation; the tests
compare the two on real images.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from squeezenet.export.c.arithmetic import ACTIVATION_MAX, QuantConv, QuantFire, QuantNet, pool_out, requantize


def _accumulate(conv: QuantConv, x: np.ndarray) -> np.ndarray:
    """int64 accumulators [cout, Ho, Wo] of ``conv`` on the integer input x [cin, H, W]."""
    k, s, p = conv.kernel, conv.stride, conv.padding
    if p:
        x = np.pad(x, ((0, 0), (p, p), (p, p)))
    if k == 1 and s == 1:
        cols = x.reshape(x.shape[0], -1).astype(np.float64)
        h, w = x.shape[1:]
    else:
        win = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]  # [cin, Ho, Wo, k, k]
        h, w = win.shape[1:3]
        cols = win.transpose(0, 3, 4, 1, 2).reshape(x.shape[0] * k * k, h * w).astype(np.float64)
    weights = conv.weight.reshape(conv.cout, -1).astype(np.float64)
    acc = (weights @ cols).astype(np.int64) + conv.bias[:, None]
    return acc.reshape(conv.cout, h, w)


def _requantize(conv: QuantConv, acc: np.ndarray, top: int = ACTIVATION_MAX) -> np.ndarray:
    return requantize(acc, conv.mult[:, None, None], conv.shift[:, None, None], top)


def max_pool(x: np.ndarray) -> np.ndarray:
    """3x3/2 max pool in ceil mode on non-negative [C, H, W]: zero padding cannot win a max."""
    ho, wo = pool_out(x.shape[1]), pool_out(x.shape[2])
    x = np.pad(x, ((0, 0), (0, 2 * ho + 1 - x.shape[1]), (0, 2 * wo + 1 - x.shape[2])))
    return sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(3, 4))


def _fire(fire: QuantFire, x: np.ndarray, squeeze_max: int) -> np.ndarray:
    squeezed = _requantize(fire.squeeze, _accumulate(fire.squeeze, x), squeeze_max)
    out = np.concatenate(
        [
            _requantize(fire.expand1x1, _accumulate(fire.expand1x1, squeezed)),
            _requantize(fire.expand3x3, _accumulate(fire.expand3x3, squeezed)),
        ]
    )
    if fire.bypass is not None:
        mult, shift = fire.bypass
        rescaled = (x.astype(np.int64) * mult + (1 << (shift - 1))) >> shift
        out = np.minimum(out.astype(np.int64) + rescaled, 255).astype(np.uint8)
    return max_pool(out) if fire.pool else out


def _scores(net: QuantNet, x: np.ndarray) -> np.ndarray:
    """conv10 + ReLU + global sum: the sum of the uint8 outputs. A padded conv10 (Caffe v1.0)
    sees only zeros on its border, where every output is the requantized bias: added apart."""
    conv = net.classifier
    inner = _requantize(conv, _accumulate(replace(conv, padding=0), x))
    border = (x.shape[1] + 2 * conv.padding) * (x.shape[2] + 2 * conv.padding) - x.shape[1] * x.shape[2]
    edge = requantize(conv.bias, conv.mult, conv.shift).astype(np.int64)
    return inner.reshape(conv.cout, -1).astype(np.int64).sum(axis=1) + border * edge


def stem(net: QuantNet, image: np.ndarray) -> np.ndarray:
    """uint8 image [H, W, C] -> the stem's output [C, H', W'] (after its pool, if any; uint16 if wide)."""
    x = image.astype(np.int64).transpose(2, 0, 1) - net.zero_points[:, None, None]
    out = _requantize(net.stem, _accumulate(net.stem, x), net.stem_max)
    return max_pool(out) if net.stem_pool else out


def features(net: QuantNet, image: np.ndarray) -> list[np.ndarray]:
    """Every stored tensor: the stem's output, then each Fire's (for debugging and tests)."""
    outs = [stem(net, image)]
    for fire in net.fires:
        outs.append(_fire(fire, outs[-1], net.squeeze_max))
    return outs


def run(net: QuantNet, image: np.ndarray) -> np.ndarray:
    """One uint8 image [H, W, C] (or [H, W] grayscale) -> int64 class scores, as the C code computes."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    expected = (net.size, net.size, net.in_chans)
    if image.shape != expected or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image of shape {expected}, got {image.dtype} {image.shape}")
    return _scores(net, features(net, image)[-1])


def run_batch(net: QuantNet, images: np.ndarray) -> np.ndarray:
    return np.stack([run(net, image) for image in images])
