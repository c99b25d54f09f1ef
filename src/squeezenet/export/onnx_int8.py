"""int8 post-training static quantization with ONNX Runtime (QDQ format).

Activations are calibrated (percentile) on real images that the caller passes (never the
evaluation set, when that can be helped); weights are quantized per output channel.
Measured on imagenet-samples (``benchmarks/bench_deploy.py``), three choices matter; they were
made looking at its odd-indexed images (sorted paths), so ``benchmarking.int8_accuracy``
reports the even-indexed ones and shows the odd half apart:

- ``quant_pre_process`` first: PyTorch's exporter shares equal bias tensors through
  ``Identity`` nodes, which stop ONNX Runtime from fusing DequantizeLinear-Conv-
  QuantizeLinear into int8 kernels; without this step int8 ran slower than fp32.
- every convolution int8 (keeping conv1 or conv10 in fp32 cost 30-60 % of the speed-up);
- the final global average pool stays fp32: quantizing the averaged class scores to 8 bits
  is what cost accuracy (about 1.2 top-1 points); averaging dequantized conv10 outputs
  costs nothing measurable.

Then one graph edit (``share_concat_scales``): a Fire module's two expand branches are
calibrated apart, so their int8 scales differ from each other and from the concatenation's,
and ONNX Runtime's QLinearConcat re-quantized every element: 27 % of the int8 run time of
v1.1 at batch 1 (ORT profiler). Giving both branches the concatenation's own scale and zero
point (the union of their ranges) lets the expand convolutions write the final 8-bit values
and turns the concatenation into a copy.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from torch import nn

from squeezenet.atomic import atomic_write_bytes
from squeezenet.errors import DeployError
from squeezenet.export.common import check_output_path, model_metadata, require
from squeezenet.export.formats import CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD
from squeezenet.export.onnx import INPUT_NAME, onnx_bytes

DEFAULT_EXCLUDE = ("avgpool",)


def calibration_arrays(model: nn.Module, paths: Iterable[str | Path], limit: int | None = None) -> np.ndarray:
    """Preprocess image files exactly as the model expects -> (N, C, H, W) float32."""
    from squeezenet.data import build_transform, find_images, load_image
    from squeezenet.errors import ImageError

    pre = model.weights_info.preprocessing
    transform = build_transform(pre)
    arrays = []
    for path in find_images(list(paths)):
        try:
            arrays.append(transform(load_image(path, pre.image_mode)).numpy())
        except ImageError:
            continue
        if limit and len(arrays) >= limit:
            break
    if not arrays:
        raise DeployError("no readable calibration image")
    return np.stack(arrays).astype(np.float32)


def _named_nodes(proto) -> dict[str, str]:
    """Paper names (conv1, conv10, avgpool) -> ONNX node names."""
    convs = [node.name for node in proto.graph.node if node.op_type == "Conv"]
    pools = [node.name for node in proto.graph.node if node.op_type == "GlobalAveragePool"]
    names = {"conv1": convs[0], "conv10": convs[-1]} if convs else {}
    if pools:
        names["avgpool"] = pools[0]
    return names


class _Reader:
    """ONNX Runtime CalibrationDataReader over an array, in small batches."""

    def __init__(self, data: np.ndarray, batch: int = 1) -> None:
        self.batches = iter([data[i : i + batch] for i in range(0, len(data), batch)])

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:  # pragma: no cover - only used by some calibrators
        pass


def share_concat_scales(proto):
    """Every Concat's inputs re-quantized with the Concat output's scale and zero point.

    QDQ pattern: ``... -> Q(a) -> DQ(a) -> Concat -> Q(c) -> DQ(c)``. Pointing Q(a) and DQ(a)
    at c's scale / zero-point initializers keeps the graph valid QDQ and makes the branch
    outputs already quantized as the concatenation wants them.
    """
    producers = {out: node for node in proto.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for concat in (n for n in proto.graph.node if n.op_type == "Concat"):
        after = consumers.get(concat.output[0], [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear" or len(after[0].input) < 3:
            continue
        scale, zero_point = after[0].input[1], after[0].input[2]
        for name in concat.input:
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or len(consumers.get(q.output[0], [])) != 1:
                continue  # shared or non-QDQ inputs are left as calibrated
            for node in (q, dq):
                node.input[1], node.input[2] = scale, zero_point
    return proto


def quantize_model(
    model: nn.Module,
    path: str | Path,
    calibration: np.ndarray | Sequence[str | Path],
    per_channel: bool = True,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    method: str = DEFAULT_CALIBRATION_METHOD,
    size: int | None = None,
    extra_options: dict | None = None,
    reduce_range: bool = True,
) -> Path:
    """Export ``model`` as an int8 QDQ ONNX file calibrated on ``calibration``.

    ``reduce_range``: 7-bit weights. ONNX Runtime's u8s8 kernels on x86 CPUs without VNNI
    (AVX2 only) add pairs of 8-bit products into 16 bits, which saturate: with full 8-bit
    weights the release's int8 model kept the fp32 top-1 class on only 74 % of held-out
    imagenet-samples on an AVX2-only EPYC, with 7-bit weights on 94 % (ONNX Runtime's
    quantization guide names this limit). The file then runs right on every CPU.

    ``calibration`` is an array of preprocessed inputs or image files/folders.
    ``exclude`` names layers kept in fp32 ("conv1", "conv10", "avgpool" or raw ONNX node names).
    """
    require("onnx")
    require("onnxruntime")
    path = check_output_path(path)
    if method not in CALIBRATION_METHODS:
        raise DeployError(f"unknown calibration method {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}")
    data = calibration if isinstance(calibration, np.ndarray) else calibration_arrays(model, calibration)
    if data.ndim != 4 or len(data) == 0:
        raise DeployError(f"calibration data must be a non-empty (N, C, H, W) array, got shape {data.shape}")
    settings = {"per_channel": per_channel, "reduce_range": reduce_range, "method": method}
    quantized = _quantized_graph(model, data, exclude, size, extra_options or {}, settings)
    meta = model_metadata(model)
    meta.update(
        {
            "quantization": "int8 static QDQ",
            "per_channel": str(per_channel),
            "fp32_layers": ",".join(exclude),
            "calibration_images": str(len(data)),
            "calibration_method": method,
            "reduce_range": str(reduce_range),
        }
    )
    del quantized.metadata_props[:]
    for key, value in meta.items():
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, value
    return atomic_write_bytes(path, quantized.SerializeToString(), DeployError)


def _quantized_graph(model: nn.Module, data: np.ndarray, exclude, size, extra_options: dict, settings: dict):
    """The int8 QDQ graph (an ONNX proto): exported, pre-processed, quantized by ONNX Runtime, the
    concatenations' scales shared. ONNX Runtime's progress output and advice are kept quiet."""
    onnx = require("onnx")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    with tempfile.TemporaryDirectory() as tmp:
        raw, src, dst = Path(tmp) / "raw.onnx", Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        raw.write_bytes(onnx_bytes(model, size=size or data.shape[-1], metadata=False))
        logging.disable(logging.WARNING)  # onnxruntime.quantization logs advice on the root logger
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress
                quant_pre_process(str(raw), str(src))
                names = _named_nodes(onnx.load(str(src)))
                quantize_static(
                    str(src),
                    str(dst),
                    _Reader(data, batch=8),
                    quant_format=QuantFormat.QDQ,
                    per_channel=settings["per_channel"],
                    reduce_range=settings["reduce_range"],
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=[names.get(name, name) for name in exclude],
                    calibrate_method=methods[settings["method"]],
                    extra_options=extra_options,
                )
        except Exception as exc:  # onnxruntime raises many types here
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DeployError(f"quantization failed: {reason}") from None
        finally:
            logging.disable(logging.NOTSET)
        return share_concat_scales(onnx.load(str(dst)))
