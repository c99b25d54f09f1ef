"""A PyTorch SqueezeNet -> ``QuantNet``: support checks, calibration, integer weights.

Calibration runs the fp32 model on the caller's images and records the range of every
tensor the C code stores: conv1's ReLU output (= its max pool's), each Fire's squeeze
output and its output (both expand branches share it: they write their channel slices
of one buffer), and conv10's ReLU output. Ranges come from ONNX Runtime's histogram
collector (percentile, entropy) or the plain maximum (minmax): the same methods as the
int8 ONNX export.

Preprocessing is folded into the stem: the entry point takes uint8 pixels; the stem
reads ``pixel - z_c`` (z_c the channel's mean in pixel units, rounded) and its weights
absorb the 1/std scale, the BGR order and the mean's rounding remainder (in the bias:
exact wherever conv1's window lies inside the image; a padded stem sees pixel z_c
where the fp32 model sees the exact mean).

int8 weights are rounded for what each layer outputs (``round_to_grid``: GPTQ-style error
feedback through the covariance of the layer's inputs on the calibration images), not each
to its nearest level: on the v1.0 release, nearest rounding alone changed about 5 % of the
top-1 answers, error feedback under 2 % (docs/c-export.md).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import torch

from squeezenet.compression.layer_statistics import LayerStats, collect_stats
from squeezenet.compression.output_aware import round_to_grid
from squeezenet.errors import DeployError
from squeezenet.export.c.arithmetic import (
    ACTIVATION_MAX,
    BIAS_BITS,
    MAX_CODEBOOK,
    PRODUCTS_LIMIT,
    WEIGHT_MAX,
    WIDE_MAX,
    QuantConv,
    QuantFire,
    QuantNet,
    codebook_limit,
    fire_input_max,
    products_fit,
    quantize_multiplier,
)
from squeezenet.export.formats import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_METHOD,
    DEFAULT_SQUEEZE_BITS,
    DEFAULT_STEM_BITS,
)

STORAGES = ("auto", "compressed", "int8")


@dataclass
class FloatConv:
    name: str
    weight: np.ndarray  # float64 [cout, cin, k, k]
    bias: np.ndarray  # float64 [cout]
    stride: int = 1
    padding: int = 0
    stored_codes: np.ndarray | None = None  # a .sqz's codebook index per weight (flat, -1: none), or None


def _conv(model, name: str, module: torch.nn.Conv2d) -> FloatConv:
    bias = module.bias.detach().double().numpy() if module.bias is not None else np.zeros(module.out_channels)
    weight = module.weight.detach().double().numpy()
    codes = getattr(model, "stored_codes", {}).get(f"{name}.weight")
    codes = codes if codes is not None and codes.size == weight.size else None
    return FloatConv(name, weight, bias, module.stride[0], module.padding[0], codes)


def check_supported(model) -> None:
    """What the C runtime computes: plain or identity-bypass Fires, 3x3/2 ceil-mode pools."""
    spec = getattr(model, "spec", None)
    if spec is None or not hasattr(model, "features"):
        raise DeployError(f"the C export takes a SqueezeNet, not a {type(model).__name__}")
    if "conv" in spec.shortcuts:
        raise DeployError(
            "the C export supports plain Fires and the simple (identity) bypass, not the complex bypass's "
            "1x1-convolution shortcuts (their sum can be negative, which uint8 activations cannot hold)"
        )
    if spec.stem_kernel * spec.stem_kernel * model.in_chans > 4096:
        raise DeployError(f"conv1 of {spec.stem_kernel}x{spec.stem_kernel} pixels is larger than the C runtime takes")


def _plain(model):
    """The model without BatchNorm (folded), in eval mode, on the CPU."""
    from squeezenet.models.fold import fold_batchnorm

    model = model.float().cpu().eval()
    if model.spec.batch_norm:
        folded = fold_batchnorm(model)
        folded.weights_info = getattr(model, "weights_info", None)  # folding changes the values: no stored codes
        model = folded
    return model


def _fires(model):
    from squeezenet.models.fire import Fire

    return [m for m in model.features if isinstance(m, Fire)]


@torch.no_grad()
def activation_ranges(
    model, data: np.ndarray, method: str = DEFAULT_CALIBRATION_METHOD, batch: int = 8
) -> dict[str, float]:
    """{tensor: calibrated maximum} for "stem", "fireN.squeeze", "fireN" and "classifier"."""
    if method not in CALIBRATION_METHODS:
        raise DeployError(f"unknown calibration method {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}")
    model = _plain(model)
    seen: dict[str, list[np.ndarray]] = {}

    def keep(name):
        def hook(_module, _inputs, output):
            seen.setdefault(name, []).append(output.detach().float().numpy())

        return hook

    hooks = [model.features[1].register_forward_hook(keep("stem"))]
    for i, fire in enumerate(_fires(model)):
        hooks.append(fire.squeeze_activation.register_forward_hook(keep(f"fire{i + 2}.squeeze")))
        hooks.append(fire.register_forward_hook(keep(f"fire{i + 2}")))
    hooks.append(model.classifier[2].register_forward_hook(keep("classifier")))
    collector = None
    if method != "minmax":
        from squeezenet.export.common import require

        require("onnxruntime")
        from onnxruntime.quantization.calibrate import HistogramCollector

        bins = 2048 if method == "percentile" else 128
        collector = HistogramCollector(method, False, bins, 128, 99.999, "same")
    maxima: dict[str, float] = {}
    try:
        for start in range(0, len(data), batch):
            seen.clear()
            model(torch.from_numpy(np.ascontiguousarray(data[start : start + batch])))
            for name, arrays in seen.items():
                maxima[name] = max(maxima.get(name, 0.0), max(float(a.max()) for a in arrays))
            if collector is not None:
                with contextlib.redirect_stdout(io.StringIO()):  # the collector prints progress
                    collector.collect(
                        {name: [np.concatenate([a.ravel() for a in arrays])] for name, arrays in seen.items()}
                    )
    finally:
        for hook in hooks:
            hook.remove()
    if collector is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            result = collector.compute_collection_result()
        ranges = {name: float(np.asarray(result[name][1]).ravel()[0]) for name in maxima}
    else:
        ranges = dict(maxima)
    # a tensor that stays zero on every calibration image still needs a valid scale
    return {name: value if value > 0 else 1.0 for name, value in ranges.items()}


def layer_statistics(model, data: np.ndarray, batch: int = 8) -> dict[str, LayerStats]:
    """{convolution name: statistics of its inputs} over the calibration images, for rounding
    int8 weights for what each layer outputs (``quantize_net``'s ``stats``)."""
    model = _plain(model)
    batches = (torch.from_numpy(np.ascontiguousarray(data[i : i + batch])) for i in range(0, len(data), batch))
    return {key.removesuffix(".weight"): s for key, s in collect_stats(model, batches, fisher=False).items()}


# ----------------------------------------------------------------------------- weights


def _bias16(bias_int: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """Accumulator-unit biases as int16 << shift: exact when they fit 16 bits, else rounded."""
    largest = int(np.abs(bias_int).max(initial=0))
    shift = max(0, largest.bit_length() - BIAS_BITS)
    if largest > PRODUCTS_LIMIT:  # the bias and the sum of products share int32: each below 2^30
        raise DeployError(f"{name}: a bias of {largest} accumulator units does not fit the int32 accumulator")
    return np.clip(np.round(bias_int / (1 << shift)), -32767, 32767).astype(np.int16), shift


def _multipliers(real: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        pairs = [quantize_multiplier(float(r)) for r in real]
    except ValueError as exc:
        raise DeployError(f"{name}: {exc}; the layer does not fit the integer scheme") from None
    return np.array([m for m, _ in pairs], dtype=np.int64), np.array([n for _, n in pairs], dtype=np.int64)


def _check_products(conv: FloatConv, in_max: int, weight_max: int) -> None:
    """Refuse a layer whose sum of products could leave its share of the int32 accumulator."""
    if not products_fit(conv.weight[0].size, in_max, weight_max):
        raise DeployError(
            f"{conv.name}: {conv.weight[0].size} weights per output on inputs up to {in_max} can overflow the int32 "
            "accumulator; use --squeeze-bits 8 (or --stem-bits 8)"
        )


def _dense(conv: FloatConv, s_in: float, s_out: float, covariance: np.ndarray | None, in_max: int) -> QuantConv:
    """Plain int8: per-output-channel scale max|w| / 127; rounded for the layer's outputs when
    the covariance of its inputs is known, else each weight to its nearest level."""
    w = conv.weight
    _check_products(conv, in_max, WEIGHT_MAX)
    scale = np.abs(w).reshape(len(w), -1).max(axis=1) / WEIGHT_MAX
    scale = np.where(scale > 0, scale, 1.0)
    if covariance is None:
        q = np.clip(np.round(w / scale[:, None, None, None]), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
    else:
        q = round_to_grid(w, scale, WEIGHT_MAX, covariance).astype(np.int8)
    mult, shift = _multipliers(s_in * scale / s_out, conv.name)
    bias16, bias_shift = _bias16(np.round(conv.bias / (s_in * scale)), conv.name)
    return QuantConv(conv.name, q, bias16, bias_shift, mult, shift, conv.stride, conv.padding, weight_scale=scale)


def distinct_values(weight: np.ndarray) -> np.ndarray:
    return np.unique(weight[weight != 0])


def _codes(conv: FloatConv, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, positions): each non-zero weight's codebook index and flat C-order position."""
    flat = conv.weight.reshape(-1)
    positions = np.flatnonzero(flat)
    return np.searchsorted(values, flat[positions]).astype(np.uint8), positions


def file_numbering(conv: FloatConv) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(values, codes, positions) of the non-zero weights numbered as the ``.sqz`` numbers them, where
    the layer came from one (else None: numbered by value, ``_codes``).

    A model fine-tuned with its masks and indices frozen (``train --update-of --update-level
    codebooks``) keeps its base's indices while its shared values move: two may cross, or meet on the
    grid a packed codebook stores. Numbered by value, the layer's codes, and with them its whole rANS
    stream, would change at any such crossing; numbered as the file does, only the codebook's values
    change, and an update of the weight table stays about the size of the change. A fresh ``.sqz``
    numbers by value, so its export is the same either way."""
    if conv.stored_codes is None:
        return None
    flat = conv.weight.reshape(-1)
    positions = np.flatnonzero(flat)
    stored = conv.stored_codes[positions]
    if len(stored) == 0 or stored.min() < 0:
        return None  # a weight the file does not list: not the file's tensor
    used, codes = np.unique(stored, return_inverse=True)  # the file's order, without indices no weight uses
    values = np.zeros(len(used))
    values[codes] = flat[positions]
    if len(used) > MAX_CODEBOOK or not np.array_equal(values[codes], flat[positions]):
        return None  # one stored index, two values: conv1 folded with unequal channel scales
    return values, codes.astype(np.uint8), positions


def _layer_multiplier(conv: FloatConv, real: float) -> tuple[int, int]:
    try:
        return quantize_multiplier(real)
    except ValueError as exc:
        raise DeployError(f"{conv.name}: {exc}; its codebook does not fit the integer scheme") from None


def _exact_codebook(conv: FloatConv, values: np.ndarray, s_in: float, s_out: float, in_max: int) -> QuantConv:
    """A codebook layer of a compressed build: the weights are the codebook's values at the widest
    precision the accumulator allows, one multiplier for the layer."""
    limit = codebook_limit(conv.weight[0].size, in_max)
    _check_products(conv, in_max, limit)
    largest_bias = float(np.abs(conv.bias).max(initial=0.0))
    if largest_bias > 0:  # the bias too must stay below 2^29 accumulator units (a finer unit makes it larger)
        limit = max(WEIGHT_MAX, min(limit, int(np.abs(values).max() * s_in * (1 << 29) / largest_bias)))
    unit = np.abs(values).max() / limit
    numbered = file_numbering(conv)
    values, codes, positions = numbered if numbered is not None else (values, *_codes(conv, values))
    codebook = np.clip(np.round(values / unit), -limit, limit).astype(np.int16)
    q = np.zeros(conv.weight.size, np.int16)
    q[positions] = codebook[codes]
    layer = _layer_multiplier(conv, s_in * unit / s_out)
    cout = conv.weight.shape[0]
    mult, shift = np.full(cout, layer[0], np.int64), np.full(cout, layer[1], np.int64)
    return _codebook_conv(conv, q, codebook, codes, positions, layer, mult, shift, np.full(cout, unit), s_in)


def _codebook_conv(conv, q, codebook, codes, positions, layer, mult, shift, scale, s_in) -> QuantConv:
    bias16, bias_shift = _bias16(np.round(conv.bias / (s_in * scale)), conv.name)
    return QuantConv(
        conv.name,
        q.reshape(conv.weight.shape),
        bias16,
        bias_shift,
        mult,
        shift,
        conv.stride,
        conv.padding,
        codebook=codebook,
        codes=codes,
        positions=positions,
        layer_mult=layer[0],
        layer_shift=layer[1],
        weight_scale=scale,
    )


def _layer(
    conv: FloatConv,
    s_in: float,
    s_out: float,
    compressed: bool,
    stats: dict[str, LayerStats],
    in_max: int = ACTIVATION_MAX,
) -> QuantConv:
    """One convolution whose inputs are integers up to ``in_max``."""
    values = distinct_values(conv.weight)
    if len(values) == 0:
        raise DeployError(f"{conv.name}: every weight is zero")
    if compressed and len(values) <= MAX_CODEBOOK:
        return _exact_codebook(conv, values, s_in, s_out, in_max)
    if compressed:
        raise DeployError(
            f"{conv.name} holds {len(values):,} distinct weight values; compressed C weights need a codebook of "
            f"at most {MAX_CODEBOOK} per layer (a .sqz of up to 8 bits from squeezenet compress), "
            "or use --c-weights int8"
        )
    return _dense(conv, s_in, s_out, _covariance(stats.get(conv.name)), in_max)


def _covariance(stats: LayerStats | None) -> np.ndarray | None:
    return None if stats is None else stats.xx / max(stats.n, 1.0)


def _stem_covariance(stats: LayerStats | None, scale: np.ndarray, offset: np.ndarray, taps: int, reverse: bool):
    """E[u u^T] of the columns the folded stem reads, u = scale_c * x + offset_c (pixels minus
    zero points), from the fp32 model's statistics of its input x; channels reversed for BGR."""
    if stats is None:
        return None
    d, b = np.repeat(scale, taps), np.repeat(offset, taps)
    dm = d * stats.mean
    cov = d[:, None] * _covariance(stats) * d[None, :] + np.outer(dm, b) + np.outer(b, dm) + np.outer(b, b)
    if reverse:
        order = (np.arange(len(scale))[::-1, None] * taps + np.arange(taps)[None, :]).ravel()
        cov = cov[np.ix_(order, order)]
    return cov


def _stem(model, pre, s_out: float, compressed: bool, stats: LayerStats | None) -> tuple[QuantConv, np.ndarray]:
    """conv1 with the normalisation folded in; returns it and the per-channel pixel zero points.

    Folding scales each input channel by 1/std: with equal stds (the Caffe weights) a codebook
    stays a codebook and a compressed build stores conv1 compressed too; otherwise it is int8."""
    conv = _conv(model, "features.0", model.features[0])
    rng = 1.0 / 255.0 if pre.pixel_range == 1.0 else 1.0
    mean, std = np.array(pre.mean, np.float64), np.array(pre.std, np.float64)
    weight = conv.weight * (rng / std)[None, :, None, None]  # per model input channel
    centre = mean / rng  # the mean in pixel units
    zero = np.clip(np.round(centre), 0, 255)
    bias = conv.bias - (weight * (centre - zero)[None, :, None, None]).sum(axis=(1, 2, 3))
    codes = None if conv.stored_codes is None else conv.stored_codes.reshape(weight.shape)
    if pre.channel_order == "BGR":  # the entry point takes RGB bytes
        weight, zero = weight[:, ::-1], zero[::-1]
        codes = None if codes is None else codes[:, ::-1]
    codes = None if codes is None else np.ascontiguousarray(codes).reshape(-1)
    folded = FloatConv(conv.name, np.ascontiguousarray(weight), bias, conv.stride, conv.padding, codes)
    values = distinct_values(folded.weight)
    if compressed and 0 < len(values) <= MAX_CODEBOOK:  # a codebook survives folding when the stds are equal
        return _exact_codebook(folded, values, 1.0, s_out, ACTIVATION_MAX), zero.astype(np.int64)
    taps = weight.shape[2] * weight.shape[3]
    covariance = _stem_covariance(stats, std / rng, centre - zero, taps, pre.channel_order == "BGR")
    return _dense(folded, 1.0, s_out, covariance, ACTIVATION_MAX), zero.astype(np.int64)


def _check_options(storage: str, squeeze_bits: int, stem_bits: int) -> None:
    if storage not in STORAGES:
        raise DeployError(f"unknown C weight storage {storage!r}; expected one of {', '.join(STORAGES)}")
    for what, bits in (("squeeze", squeeze_bits), ("stem", stem_bits)):
        if bits not in WIDE_MAX:
            raise DeployError(f"{what} bits must be one of {', '.join(map(str, WIDE_MAX))}, not {bits}")


def _bypass(tag: str, in_max: int, s_in: float, s_out: float) -> tuple[int, int]:
    """The identity bypass's multiplier: the Fire's input rescaled to its output's scale, where
    both are uint8 (the runtime adds the bypass to uint8 outputs)."""
    if in_max != ACTIVATION_MAX:
        raise DeployError(f"{tag}: a bypass on conv1's wide output is not supported; use --stem-bits 8")
    try:
        return quantize_multiplier(s_in / s_out)
    except ValueError as exc:
        raise DeployError(f"{tag}: bypass {exc}") from None


def _quant_fires(model, scale, side: int, compressed: bool, stats, stem_max: int, sq_max: int):
    """-> (the integer Fires, the side after the last, the last one's output scale); ``side``:
    the stem's output side."""
    fires, s_in = [], scale["stem"]
    for i, fire in enumerate(_fires(model)):
        tag = f"fire{i + 2}"
        in_max = fire_input_max(i, stem_max)
        prefix = f"features.{list(model.features).index(fire)}"
        s_sq, s_out = scale[f"{tag}.squeeze"], scale[tag]
        bypass = _bypass(tag, in_max, s_in, s_out) if fire.shortcut_kind == "identity" else None
        pooled = i in model.spec.pool_after
        fires.append(
            QuantFire(
                _layer(_conv(model, f"{prefix}.squeeze", fire.squeeze), s_in, s_sq, compressed, stats, in_max),
                _layer(_conv(model, f"{prefix}.expand1x1", fire.expand1x1), s_sq, s_out, compressed, stats, sq_max),
                _layer(_conv(model, f"{prefix}.expand3x3", fire.expand3x3), s_sq, s_out, compressed, stats, sq_max),
                side,
                pooled,
                bypass,
            )
        )
        if pooled:
            side = -(-(side - 3) // 2) + 1
        s_in = s_out
    return fires, side, s_in


def quantize_net(
    model,
    ranges: dict[str, float],
    storage: str = "int8",
    weights_are_compressed: bool = False,
    size: int | None = None,
    stats: dict[str, LayerStats] | None = None,
    squeeze_bits: int = DEFAULT_SQUEEZE_BITS,
    stem_bits: int = DEFAULT_STEM_BITS,
) -> QuantNet:
    """The integer model. ``storage``: "int8", "compressed" or "auto" (compressed for a .sqz);
    ``stats`` (``layer_statistics``): int8 weights rounded for the layers' outputs;
    ``squeeze_bits`` / ``stem_bits``: 8, or 12 to keep the squeeze outputs / conv1's output
    (uint16) 16 times finer."""
    from squeezenet.models import default_input_size

    _check_options(storage, squeeze_bits, stem_bits)
    sq_max, stem_max = WIDE_MAX[squeeze_bits], WIDE_MAX[stem_bits]
    check_supported(model)
    info = getattr(model, "weights_info", None)
    model = _plain(model)
    if storage == "auto":
        storage = "compressed" if weights_are_compressed else "int8"
    compressed = storage == "compressed"
    from squeezenet.data.preprocessing import Preprocessing

    pre = info.preprocessing if info is not None else Preprocessing()
    spec = model.spec
    size = size or default_input_size(model)
    if size < model.min_input_size:
        raise DeployError(f"input size {size} is below the model's minimum of {model.min_input_size} pixels")
    top = {"stem": stem_max, **{name: sq_max for name in ranges if name.endswith(".squeeze")}}
    scale = {name: value / top.get(name, ACTIVATION_MAX) for name, value in ranges.items()}
    stats = stats or {}
    stem, zero = _stem(model, pre, scale["stem"], compressed, stats.get("features.0"))
    side = (size + 2 * spec.stem_padding - spec.stem_kernel) // spec.stem_stride + 1
    if spec.stem_pool:
        side = -(-(side - 3) // 2) + 1
    fires, side, s_in = _quant_fires(model, scale, side, compressed, stats, stem_max, sq_max)
    classifier = _layer(_conv(model, "classifier.1", model.final_conv), s_in, scale["classifier"], compressed, stats)
    pixels = (side + 2 * classifier.padding) ** 2
    return QuantNet(
        arch=info.arch if info is not None else getattr(model, "arch", "squeezenet"),
        size=size,
        in_chans=model.in_chans,
        channel_order="L" if model.in_chans == 1 else "RGB",
        zero_points=zero,
        stem=stem,
        stem_pool=spec.stem_pool,
        fires=fires,
        classifier=classifier,
        scales=scale,
        score_scale=scale["classifier"] / pixels,
        classes=list(info.classes) if info is not None and info.classes else [],
        storage=storage,
        squeeze_max=sq_max,
        stem_max=stem_max,
    )
