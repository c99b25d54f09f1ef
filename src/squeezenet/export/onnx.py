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
from squeezenet.export.formats import DEFAULT_OPSET, MIN_OPSET

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
CAM_NAME = "cam"  # optional second output: conv10 after its ReLU, one map per class (Zhou et al. 2016)


def onnx_bytes(
    model: nn.Module,
    size: int | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_hw: bool = False,
    dynamo: bool = False,
    metadata: bool = True,
    cam: bool = False,
) -> bytes:
    """The serialized ONNX model (batch always dynamic; height and width with ``dynamic_hw``);
    ``cam`` adds the class-activation maps as a second output (``add_cam_output``)."""
    onnx = require("onnx")
    if opset < MIN_OPSET:
        raise DeployError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
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
    if cam:
        add_cam_output(proto)
    return proto.SerializeToString()


def add_cam_output(proto):
    """Expose the input of the final GlobalAveragePool (conv10 after its ReLU, (N, classes, h, w))
    as a graph output named ``cam``, in place; the logits stay the first output.

    SqueezeNet's head is a class-activation-map head: the logit of class c is the mean of that
    map's channel c, so the map needs no gradient. Working on the graph (not the PyTorch
    module) serves any ONNX form of the model: fp32, the concat-free rewrite, int8 QDQ.
    """
    onnx = require("onnx")
    pools = [node for node in proto.graph.node if node.op_type == "GlobalAveragePool"]
    if not pools:
        raise DeployError("the ONNX graph has no GlobalAveragePool: no class-activation map to expose")
    old = pools[-1].input[0]
    if any(out.name in (old, CAM_NAME) for out in proto.graph.output):
        return proto
    for node in proto.graph.node:
        node.input[:] = [CAM_NAME if name == old else name for name in node.input]
        node.output[:] = [CAM_NAME if name == old else name for name in node.output]
    for info in proto.graph.value_info:
        if info.name == old:
            info.name = CAM_NAME
    batch, classes = proto.graph.output[0].type.tensor_type.shape.dim[:2]
    dims = [batch.dim_param or batch.dim_value, classes.dim_value or "classes", "height", "width"]
    proto.graph.output.append(onnx.helper.make_tensor_value_info(CAM_NAME, onnx.TensorProto.FLOAT, dims))
    return proto


def export_onnx(model: nn.Module, path: str | Path, **kwargs) -> Path:
    """Write ``model`` (eval mode, carrying ``weights_info``) as an ONNX file."""
    path = check_output_path(path)
    return atomic_write_bytes(path, onnx_bytes(model, **kwargs), DeployError)


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
