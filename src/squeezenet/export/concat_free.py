"""A Concat-free ONNX graph for the default inference path: the same numbers, less copying.

Every Fire module ends in ``Concat(expand1x1, expand3x3)``, and ONNX Runtime copies both
branches into the concatenated tensor (at batch 1, SqueezeNet v1.0 copies ~11 MB per image
this way). But the only readers of that tensor are convolutions (the next squeeze, conv10)
and max pools in front of them, and both are linear in the channel split:

    Conv(Concat(a, b), W, B) = Conv(a, W[:, :Ca]) + Conv(b, W[:, Ca:], B)
    MaxPool(Concat(a, b))    = Concat(MaxPool(a), MaxPool(b))

so ``split_concats`` moves each Concat past its pools and then replaces it with two
convolutions and an Add, which ONNX Runtime's blocked-layout optimiser fuses into the
second convolution ("Sum" input). A Concat read by anything else (a bypass Add, a graph
output) is left as it is. The rewritten graph gives the original logits within float
rounding (tested to 1e-5).
"""

from __future__ import annotations

from squeezenet.export.common import require


def split_concats(data: bytes) -> bytes:
    """The serialized ONNX model ``data`` with every splittable channel Concat removed."""
    onnx = require("onnx")
    model = onnx.load_from_string(data)
    inferred = onnx.shape_inference.infer_shapes(model)
    channels = {
        info.name: info.type.tensor_type.shape.dim[1].dim_value
        for info in [*inferred.graph.value_info, *inferred.graph.input]
        if len(info.type.tensor_type.shape.dim) == 4
    }
    rewriter = _Rewriter(model.graph, channels)
    while rewriter.rewrite_one():
        pass
    return model.SerializeToString()


class _Rewriter:
    """One rewrite at a time, in place on ``graph``; node order stays topological."""

    def __init__(self, graph, channels: dict[str, int]) -> None:
        self.graph, self.channels = graph, channels
        self.initializers = {init.name: init for init in graph.initializer}
        self.outputs = {out.name for out in graph.output}
        self.counter = 0

    def rewrite_one(self) -> bool:
        for node in self.graph.node:
            if not self._is_channel_concat(node):
                continue
            readers = self._readers(node.output[0])
            if node.output[0] in self.outputs or len(readers) != 1:
                continue  # a graph output, or a tensor a bypass Add also reads: the copy is needed
            reader = readers[0]
            if reader.op_type == "MaxPool" and len(reader.output) == 1:
                self._push_through_pool(node, reader)
                return True
            if self._splittable_conv(reader, node.output[0]):
                self._split_into_conv(node, reader)
                return True
        return False

    def _is_channel_concat(self, node) -> bool:
        if node.op_type != "Concat" or len(node.input) != 2:
            return False
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        return axis == 1 and all(self.channels.get(name) for name in node.input)

    def _readers(self, name: str) -> list:
        return [n for n in self.graph.node if name in n.input]

    def _splittable_conv(self, node, name: str) -> bool:
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        return (
            node.op_type == "Conv"
            and list(node.input).count(name) == 1
            and node.input[0] == name
            and groups == 1
            and node.input[1] in self.initializers
        )

    def _fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}__split{self.counter}"

    def _replace(self, old_nodes: list, new_nodes: list) -> None:
        """Put ``new_nodes`` where the last of ``old_nodes`` was (all their inputs exist by then)."""
        nodes = list(self.graph.node)
        position = max(nodes.index(n) for n in old_nodes)
        kept = [n for i, n in enumerate(nodes) if i < position and n not in old_nodes]
        after = [n for i, n in enumerate(nodes) if i > position and n not in old_nodes]
        del self.graph.node[:]
        self.graph.node.extend([*kept, *new_nodes, *after])

    def _push_through_pool(self, concat, pool) -> None:
        onnx = require("onnx")
        pooled = []
        new_nodes = []
        for name in concat.input:
            out = self._fresh(pool.output[0])
            node = onnx.helper.make_node("MaxPool", [name], [out], name=self._fresh(pool.name or "pool"))
            node.attribute.extend(pool.attribute)
            new_nodes.append(node)
            pooled.append(out)
            self.channels[out] = self.channels[name]
        new_nodes.append(onnx.helper.make_node("Concat", pooled, [pool.output[0]], axis=1, name=self._fresh("concat")))
        self._replace([concat, pool], new_nodes)

    def _split_into_conv(self, concat, conv) -> None:
        onnx = require("onnx")
        from onnx import numpy_helper

        first = self.channels[concat.input[0]]
        weight = numpy_helper.to_array(self.initializers[conv.input[1]])
        new_nodes, parts = [], []
        for k, (name, cut) in enumerate(zip(concat.input, (weight[:, :first], weight[:, first:]), strict=True)):
            w_name = self._fresh(conv.input[1])
            self._add_initializer(numpy_helper.from_array(cut.copy(), w_name))
            inputs = [name, w_name] + ([conv.input[2]] if k == 1 and len(conv.input) > 2 else [])
            out = self._fresh(conv.output[0])
            node = onnx.helper.make_node("Conv", inputs, [out], name=self._fresh(conv.name or "conv"))
            node.attribute.extend(conv.attribute)
            new_nodes.append(node)
            parts.append(out)
        new_nodes.append(onnx.helper.make_node("Add", parts, [conv.output[0]], name=self._fresh("add")))
        self._replace([concat, conv], new_nodes)
        self._drop_initializer_if_unused(conv.input[1])

    def _add_initializer(self, tensor) -> None:
        self.graph.initializer.append(tensor)
        self.initializers[tensor.name] = tensor

    def _drop_initializer_if_unused(self, name: str) -> None:
        if any(name in node.input for node in self.graph.node):
            return
        self.graph.initializer.remove(self.initializers.pop(name))
