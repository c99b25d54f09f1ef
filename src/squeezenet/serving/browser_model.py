"""The file the page downloads for in-browser inference: the served graph with 8-bit weights.

Measured (docs/serving.md, benchmarks/results/serve.md): the int8 QDQ graph of
``export.onnx_int8`` runs in onnxruntime-web (1.40 MB), but its top-1 class is the server's fp32
one on only 78 % of the reported imagenet-samples images on this CPU (94 % with the same graph
run in float: ONNX Runtime's u8s8 kernels saturate on CPUs without VNNI instructions). The page
must give the server's answer, so the default browser model keeps the fp32 arithmetic and
stores only the weights in 8 bits:

- a weight tensor with at most 256 distinct values (every layer of the Deep Compression
  release: 8-bit codebooks) becomes its codebook (float32) and one uint8 index per weight,
  read back by ``Gather(codebook, Cast(indices))``: the weights are bit-identical;
- any other becomes int8 with one scale per output channel, read back by
  ``DequantizeLinear`` (error at most half a step, 1/254 of the channel's largest weight).

ONNX Runtime's constant folding turns the codebook lookups back into float weights when the
session is created (its optimized graph has no Gather or Cast left), so the browser runs the
server's graph at fp32 speed from a file 3.8x smaller (1.32 MB for v1.0; most indices of a
pruned model are the codebook's zero, so gzip halves it on the wire).
"""

from __future__ import annotations

import numpy as np

PALETTE = 256


def _conv_weights(graph) -> set[str]:
    return {node.input[1] for node in graph.node if node.op_type == "Conv" and len(node.input) > 1}


def eight_bit_weights(proto):
    """``proto`` (an ONNX ModelProto) with every float32 convolution weight stored in 8 bits, in place."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    targets = _conv_weights(graph)
    kept, nodes = [], []
    for init in graph.initializer:
        if init.name not in targets or init.data_type != TensorProto.FLOAT:
            kept.append(init)
            continue
        weight = numpy_helper.to_array(init)
        values, inverse = np.unique(weight, return_inverse=True)
        if len(values) <= PALETTE:
            codebook, indices = init.name + "__codebook", init.name + "__indices"
            kept.append(numpy_helper.from_array(values.astype(np.float32), codebook))
            kept.append(numpy_helper.from_array(inverse.reshape(weight.shape).astype(np.uint8), indices))
            nodes.append(helper.make_node("Cast", [indices], [indices + "_i32"], to=TensorProto.INT32))
            nodes.append(helper.make_node("Gather", [codebook, indices + "_i32"], [init.name], axis=0))
        else:
            peak = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)
            scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
            shaped = scale.reshape(-1, *([1] * (weight.ndim - 1)))
            q = np.clip(np.rint(weight / shaped), -127, 127).astype(np.int8)
            names = [init.name + "__q", init.name + "__scale", init.name + "__zero"]
            kept.append(numpy_helper.from_array(q, names[0]))
            kept.append(numpy_helper.from_array(scale, names[1]))
            kept.append(numpy_helper.from_array(np.zeros(len(scale), np.int8), names[2]))
            nodes.append(helper.make_node("DequantizeLinear", names, [init.name], axis=0))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])
    onnx.checker.check_model(proto)
    return proto


def drop_unused_initializers(proto):
    """Initializers no node reads (``export.onnx_int8.share_concat_scales`` leaves some): fewer
    bytes to download and no warning from ONNX Runtime for each."""
    used = {name for node in proto.graph.node for name in node.input}
    kept = [init for init in proto.graph.initializer if init.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return proto
