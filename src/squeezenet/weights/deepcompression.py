"""Importer for the Deep Compression release of SqueezeNet v1.0 (``compressed_SqueezeNet.net``).

Layout (little-endian): 26 uint32 stored-weight counts in Caffe parameter order, then per
convolution a 256-entry float32 codebook, the float32 biases, one uint8 code per stored
weight and ceil(n/2) bytes of 4-bit gaps (low nibble first). Stored weight i sits at flat
position sum_{j<=i}(gap_j + 1) - 1; unstored positions are codebook[0] = 0. Every length
is checked against the file size before anything is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from squeezenet.data.preprocessing import CAFFE_SQUEEZENET
from squeezenet.errors import WeightsError
from squeezenet.models.spec import V1_0_CAFFE
from squeezenet.models.squeezenet import SqueezeNet
from squeezenet.weights.imagenet import imagenet_class_names, imagenet_wnids
from squeezenet.weights.info import LoadedWeights, WeightsInfo

CODEBOOK_SIZE = 256
ARCH = "squeezenet1_0_caffe"
SOURCE = "Deep Compression release of SqueezeNet v1.0 (Han et al., ICLR 2016; Iandola et al., 2016)"
BSD_NOTICE = "BSD licence of the Deep Compression / SqueezeNet release; see its LICENSE file."


@dataclass(frozen=True)
class ConvLayout:
    weight_key: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    @property
    def bias_key(self) -> str:
        return self.weight_key.removesuffix("weight") + "bias"


def conv_layouts() -> list[ConvLayout]:
    """The 26 convolutions of Caffe v1.0 in file order (which is also state-dict order)."""
    state = SqueezeNet(V1_0_CAFFE).state_dict()
    return [ConvLayout(k, tuple(v.shape)) for k, v in state.items() if k.endswith("weight")]


def expected_size(counts: list[int], layouts: list[ConvLayout]) -> int:
    body = sum(CODEBOOK_SIZE * 4 + lay.shape[0] * 4 + n + (n + 1) // 2 for n, lay in zip(counts, layouts, strict=True))
    return 4 * len(layouts) + body


def looks_like_deepcompression(head: bytes, file_size: int) -> bool:
    """True when the counts header predicts this exact file size (the format has no magic)."""
    layouts = conv_layouts()
    if len(head) < 4 * len(layouts):
        return False
    counts = np.frombuffer(head[: 4 * len(layouts)], dtype="<u4").tolist()
    if any(n > lay.numel for n, lay in zip(counts, layouts, strict=True)):
        return False
    return expected_size(counts, layouts) == file_size


def decode_layer(blob: memoryview, offset: int, n: int, layout: ConvLayout):
    """-> (weight, bias, codebook, codes, positions, next offset) for one convolution."""
    codebook = np.frombuffer(blob, "<f4", CODEBOOK_SIZE, offset)
    offset += CODEBOOK_SIZE * 4
    bias = np.frombuffer(blob, "<f4", layout.shape[0], offset)
    offset += layout.shape[0] * 4
    codes = np.frombuffer(blob, np.uint8, n, offset)
    offset += n
    packed = np.frombuffer(blob, np.uint8, (n + 1) // 2, offset)
    offset += (n + 1) // 2
    gaps = np.empty(2 * len(packed), dtype=np.int64)
    gaps[0::2] = packed & 0x0F
    gaps[1::2] = packed >> 4
    positions = np.cumsum(gaps[:n] + 1) - 1
    if n and positions[-1] >= layout.numel:
        raise WeightsError(
            f"corrupted Deep Compression file: {layout.weight_key} indexes position {positions[-1]} of {layout.numel}"
        )
    flat = np.full(layout.numel, codebook[0], dtype=np.float32)
    flat[positions] = codebook[codes]
    return flat.reshape(layout.shape), bias.copy(), codebook, codes, positions, offset


def read_deepcompression(path: str | Path) -> LoadedWeights:
    path = Path(path)
    data = path.read_bytes()
    layouts = conv_layouts()
    if not looks_like_deepcompression(data[: 4 * len(layouts)], len(data)):
        raise WeightsError(f"{path}: not a Deep Compression SqueezeNet v1.0 file (sizes do not add up)")
    counts = np.frombuffer(data, "<u4", len(layouts)).tolist()
    blob = memoryview(data)
    offset = 4 * len(layouts)
    state: dict[str, torch.Tensor] = {}
    for n, layout in zip(counts, layouts, strict=True):
        weight, bias, *_, offset = decode_layer(blob, offset, n, layout)
        state[layout.weight_key] = torch.from_numpy(weight)
        state[layout.bias_key] = torch.from_numpy(bias)
    return LoadedWeights(_info(path), state)


def _info(path: Path) -> WeightsInfo:
    licence_file = path.parent / "LICENSE"
    licence = licence_file.read_text(encoding="utf-8", errors="replace") if licence_file.is_file() else BSD_NOTICE
    return WeightsInfo(
        arch=ARCH,
        spec=V1_0_CAFFE,
        num_classes=1000,
        in_chans=3,
        preprocessing=CAFFE_SQUEEZENET,
        classes=imagenet_class_names(),
        wnids=imagenet_wnids(),
        provenance={"source": SOURCE, "file": path.name, "format": "deepcompression"},
        license=licence,
    )
