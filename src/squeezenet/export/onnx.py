"""Export to ONNX: opset 17+, dynamic batch, ceil-mode pooling, metadata in ``metadata_props``.

The TorchScript-based exporter (``dynamo=False``) is used by default: on torch 2.14 it is
faster, prints nothing and writes plain ``MaxPool(ceil_mode=1)`` and ``GlobalAveragePool``
nodes; the dynamo exporter (opset 18) gives the same numbers and is available with
``dynamo=True``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from squeezenet.atomic import atomic_write_bytes
from squeezenet.errors import DeployError
from squeezenet.export.common import ExportWrapper, check_output_path, input_size, model_metadata, require

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def onnx_bytes(
    model: nn.Module,
    size: int | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_hw: bool = False,
    dynamo: bool = False,
    metadata: bool = True,
) -> bytes:
    """The serialized ONNX model (batch always dynamic; height and width with ``dynamic_hw``)."""
    onnx = require("onnx")
    if opset < 17:
        raise DeployError(f"opset {opset} is too old; use 17 or newer")
    side = input_size(model, size)
    wrapper = ExportWrapper(model).eval()
    example = torch.zeros(1, model.in_chans, side, side)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1)
            shapes = {0: batch}
            if dynamic_hw:
                shapes.update({2: torch.export.Dim("height", min=model.min_input_size), 3: torch.export.Dim("width")})
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                opset_version=max(opset, 18),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": shapes},
                verbose=False,
            )
            proto = program.model_proto
        else:
            axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
            torch.onnx.export(
                wrapper,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
            proto = onnx.load_from_string(buffer.getvalue())
    if metadata:
        for key, value in model_metadata(model).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    proto.producer_name = "squeezenet"
    return proto.SerializeToString()


def export_onnx(model: nn.Module, path: str | Path, **kwargs) -> Path:
    """Write ``model`` (eval mode, carrying ``weights_info``) as an ONNX file."""
    path = check_output_path(path)
    return atomic_write_bytes(path, onnx_bytes(model, **kwargs), DeployError)


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    onnx = require("onnx")
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def ort_session(model_or_path, threads: int | None = None):
    """An ONNX Runtime CPU session with tuned options (all graph optimizations, one thread per core).

    ``model_or_path`` is a file path or serialized bytes.
    """
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model_or_path if isinstance(model_or_path, bytes) else str(model_or_path)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise DeployError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from None
