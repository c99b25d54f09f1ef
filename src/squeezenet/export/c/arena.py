"""The static arena, planned at export time: every buffer's offset, from its size and lifetime.

The plan is TensorFlow Lite Micro's greedy one: buffers sorted by size, largest first,
each placed at the lowest offset where it overlaps (in bytes) no already placed buffer
that is live at the same time. Steps: 0 is the stem; Fire i (0-based) squeezes at step
2i + 1 and expands at 2i + 2; the classifier runs at the last step. A buffer is live from
the step that writes it to the last step that reads it.

What the runtime keeps is small because nothing big is held whole when it need not be:
conv1's output is pooled as its rows come (three rows per channel are kept), a pooled
Fire pools each output channel as it is computed, the classifier sums its outputs, and
the expand branches write their channel slices of one buffer (no concatenation copy).
"""

from __future__ import annotations

from dataclasses import dataclass

from squeezenet.export.c.arithmetic import QuantNet, conv_out, element_bytes, pool_out
from squeezenet.export.c.streams import PROB_SCALE

ALIGN = 16
BLOCK = 32  # the runtime's SQN_BLOCK: accumulator runs are whole blocks
FAST_TILE = 64  # the VNNI path's SQN_TILE: pixels per register tile
SLACK = 2 * BLOCK  # bytes after the last buffer: reads of up to a block (of uint16 too) past a plane stay in it
ENTRY_BYTES = 8  # sqn_entry: int32 offset, int32 weight
TABLES_BYTES = 2 * PROB_SCALE + 5 * 256 * 2  # sqn_tables: two lookup tables, four u16[256], the int16 codebook


@dataclass
class Buffer:
    name: str
    size: int
    first: int
    last: int
    offset: int = -1

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


def plan(buffers: list[Buffer]) -> int:
    """Assign offsets in place (greedy, largest first); returns the arena size."""
    placed: list[Buffer] = []
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        offset = 0
        for other in sorted((b for b in placed if b.overlaps_in_time(buf)), key=lambda b: b.offset):
            if offset + buf.size <= other.offset:
                break  # fits in the gap below ``other``
            offset = max(offset, _aligned(other.offset + other.size))
        buf.offset = offset
        placed.append(buf)
    return max((b.offset + b.size for b in buffers), default=0)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def stem_geometry(net: QuantNet) -> dict[str, int]:
    stem = net.stem
    conv = conv_out(net.size, stem.kernel, stem.stride, stem.padding)
    pitch = conv + (stem.kernel - 1) // stem.stride
    return {
        "conv_size": conv,
        "out_size": pool_out(conv) if net.stem_pool else conv,
        "row_pitch": pitch,
        "rows_bytes": 2 * stem.cin * stem.kernel * stem.stride * pitch,
        "ring_bytes": 3 * stem.cout * conv * element_bytes(net.stem_max) if net.stem_pool else 0,
    }


def buffers(net: QuantNet) -> list[Buffer]:
    """Every arena buffer of ``net`` with its size and lifetime."""
    geo = stem_geometry(net)
    last = 2 * len(net.fires) + 1  # the classifier's step
    out: list[Buffer] = [Buffer("stem.rows", geo["rows_bytes"], 0, 0)]
    compressed = net.storage == "compressed"
    stem_packed = compressed and net.stem.codebook is not None  # conv1 decoded once per image
    if stem_packed:
        stem = net.stem
        out += [
            Buffer("stem.weights", stem.weight.nbytes, 0, 0),  # int16: the codebook's values
            Buffer("stem.mult", 4 * stem.cout, 0, 0),
            Buffer("stem.shift", stem.cout, 0, 0),
        ]
    if geo["ring_bytes"]:
        out.append(Buffer("stem.ring", geo["ring_bytes"], 0, 0))
    side = geo["out_size"]
    kernels = [net.stem.weight[0].size] if stem_packed else []
    inputs = Buffer("stem.out", element_bytes(net.stem_max) * net.stem.cout * side * side, 0, 1)
    out.append(inputs)
    for i, fire in enumerate(net.fires):
        squeeze_step, expand_step = 2 * i + 1, 2 * i + 2
        if fire.bypass is not None:
            inputs.last = expand_step
        squeezed = Buffer(
            f"fire{i + 2}.squeeze",
            element_bytes(net.squeeze_max) * fire.squeeze.cout * (side + 2) ** 2,
            squeeze_step,
            expand_step,
        )
        after = pool_out(side) if fire.pool else side
        channels = fire.expand1x1.cout + fire.expand3x3.cout
        inputs = Buffer(f"fire{i + 2}.out", channels * after * after, expand_step, expand_step + 1)
        out += [squeezed, inputs]
        kernels += [fire.squeeze.cin, fire.expand1x1.cin, fire.expand3x3.cin * 9]
        if fire.pool:  # one output channel before its pool, only while the Fire expands
            out.append(Buffer(f"fire{i + 2}.plane", side * side, expand_step, expand_step))
        side = after
    kernels.append(net.classifier.cin)
    grids = [geo["conv_size"], *(acc for _, _, acc, _ in _conv_inputs(net))]
    out.append(Buffer("acc", 4 * _blocks(max(grids)), 0, last))
    out.append(Buffer("entries", ENTRY_BYTES * max(kernels), 0 if stem_packed else 1, last))
    if compressed:
        out.append(Buffer("tables", TABLES_BYTES, 0 if stem_packed else 1, last))
    return out


def _conv_inputs(net: QuantNet) -> list[tuple[int, int, int, int]]:
    """(channels, pixels per input plane, accumulators per output channel, bytes per element) of
    every convolution past conv1, as the runtime reads them: a squeeze reads its Fire's input; both
    expands read the zero-bordered squeeze output, their accumulator rows at its pitch; conv10 the
    last Fire's output."""
    side = stem_geometry(net)["out_size"]
    out = []
    for i, fire in enumerate(net.fires):
        out += [
            (fire.squeeze.cin, side * side, side * side, element_bytes(net.fire_input_max(i))),
            (fire.squeeze.cout, (side + 2) ** 2, side * (side + 2) - 2, element_bytes(net.squeeze_max)),
        ]
        side = pool_out(side) if fire.pool else side
    return [*out, (net.classifier.cin, side * side, side * side, 1)]


def _wide_readers(net: QuantNet):
    """(convolution, whether its input is uint16) for the convolutions past conv1."""
    for i, fire in enumerate(net.fires):
        yield fire.squeeze, element_bytes(net.fire_input_max(i)) > 1
        yield fire.expand1x1, element_bytes(net.squeeze_max) > 1
        yield fire.expand3x3, element_bytes(net.squeeze_max) > 1


def _blocks(n: int, block: int = BLOCK) -> int:
    return -(-n // block) * block


def fast_path_scratch(net: QuantNet) -> dict[str, int]:
    """Sizes of the static buffers of the runtime's AVX-512 VNNI path (int8 builds for x86 CPUs
    that have it), kept outside the arena so that the arena stays what a microcontroller needs:
    the largest layer input as quads (conv1's is the padded image split into stride phases), four
    output channels of accumulators, conv1's unpooled output plane and, where the squeeze outputs
    are uint16, four output channels of the weights of a layer with uint16 inputs, widened to int16."""
    geo = stem_geometry(net)
    stride, pitch, conv = net.stem.stride, geo["row_pitch"], geo["conv_size"]
    # conv1's taps reach (k - 1) // stride quads past its last phase image
    layers = _conv_inputs(net)
    quads = [4 * (stride * stride * pitch * pitch + pitch - conv), *(c * plane * e for c, plane, _, e in layers)]
    grids = [conv * pitch, *(acc for _, _, acc, _ in layers)]
    sizes = {
        "quad_bytes": max(quads) + 4 * FAST_TILE,  # a tile may read past the last quad plane
        "acc_pitch": _blocks(max(grids), FAST_TILE),
        "plane_bytes": conv * conv * element_bytes(net.stem_max) if net.stem_pool else 2,
        "stem_taps": net.stem.kernel**2,
        "w16": max((c.weight[0].size for c, wide in _wide_readers(net) if wide), default=0),
    }
    # the WebAssembly SIMD128 path reads every layer past conv1 as int16 channel pairs, with slack for
    # a tile read past the last plane, and one output channel's weights widened to int16
    # (conv1's image: four channels, two pairs, per pixel of its stride phases); the relaxed SIMD
    # kernels read the same buffer as bytes, one piece of a layer's input in each half (kernels_relaxed.c)
    stem_pairs = 4 * (stride * stride * pitch * pitch + pitch)
    sizes["pair_elements"] = max(stem_pairs, *(c * plane for c, plane, _, _ in layers)) + 4 * FAST_TILE
    sizes["weights_per_channel"] = max(4 * net.stem.kernel**2, *(conv.weight[0].size for conv in net.convs()[1:]))
    # int32 accumulators, int8 conv1 weight quads and int16 expand weights, each for four output channels
    per_channel = 4 * sizes["acc_pitch"] + 4 * sizes["stem_taps"] + 2 * sizes["w16"]
    sizes["total_bytes"] = sizes["quad_bytes"] + sizes["plane_bytes"] + 4 * per_channel
    return sizes


def plan_arena(net: QuantNet) -> tuple[int, dict[str, Buffer]]:
    bufs = buffers(net)
    size = _aligned(plan(bufs) + SLACK)
    return size, {b.name: b for b in bufs}


def describe(size: int, bufs: dict[str, Buffer]) -> str:
    lines = [f"arena: {size:,} bytes"]
    for b in sorted(bufs.values(), key=lambda b: (b.offset, b.name)):
        lines.append(f"  {b.name:16s} offset {b.offset:>9,}  {b.size:>9,} bytes  steps {b.first}-{b.last}")
    return "\n".join(lines)
