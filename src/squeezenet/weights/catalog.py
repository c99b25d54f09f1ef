"""Known pretrained weights, one entry per tag (torchvision's ``Weights`` enum, timm's tags).

``info`` tables in the README and the CLI are generated from these entries and from the
models themselves, never written by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from squeezenet.data.root import data_root
from squeezenet.errors import WeightsError
from squeezenet.weights.torchvision_ckpt import download_cached


@dataclass(frozen=True)
class PretrainedWeights:
    tag: str
    arch: str
    url: str | None = None
    sha256_prefix: str | None = None
    local_path: str | None = None  # relative to data_root()
    meta: dict = field(default_factory=dict)

    def resolve(self) -> Path:
        """A local file holding these weights: found in the data root, else downloaded."""
        if self.local_path:
            path = data_root() / self.local_path
            if path.is_file():
                return path
        if self.url:
            return download_cached(self.url, self.sha256_prefix or "")
        raise WeightsError(
            f"weights {self.tag!r} are not downloadable; put {self.local_path} under $SQUEEZENET_DATA "
            f"(now {data_root()}) or pass the file with --weights"
        )


_LOCAL_ENTRIES: dict[str, PretrainedWeights] = {
    w.tag: w
    for w in [
        PretrainedWeights(
            tag="squeezenet1_0_caffe.deepcompression_in1k",
            arch="squeezenet1_0_caffe",
            local_path="deepcompression/compressed_SqueezeNet.net",
            meta={
                "source": "Deep Compression release (Han et al.), pruned to 33 % density, 8-bit codebooks",
                "license": "BSD (reproduce its LICENSE when redistributing derived weights)",
                "file_bytes": 675_763,
                "paper_top1": 57.5,
                "paper_top5": 80.3,
                # measured by `squeezenet eval` on the 500 imagenet-samples; tests re-measure it
                "samples_top1": 0.642,
                "samples_top5": 0.842,
            },
        ),
    ]
}


def _torchvision_entry(tag: str, arch: str, weights) -> PretrainedWeights:
    """Catalogue entry taken from torchvision's own weights metadata (URL, hash, accuracy, size)."""
    meta = weights.meta
    metrics = meta["_metrics"]["ImageNet-1K"]
    return PretrainedWeights(
        tag=tag,
        arch=arch,
        url=weights.url,
        sha256_prefix=re.search(r"-([0-9a-f]+)\.pth$", weights.url).group(1),
        meta={
            "source": f"torchvision ({meta['recipe']})",
            "license": "BSD-3-Clause (torchvision)",
            "file_bytes": round(meta["_file_size"] * 2**20),
            "published_top1": metrics["acc@1"],
            "published_top5": metrics["acc@5"],
        },
    )


def _torchvision_entries() -> dict[str, PretrainedWeights]:
    """torchvision imported here, not with the module: ``import torchvision`` costs about 3.5 s
    (its ops import torch._dynamo), paid by every command that loads a weights file otherwise."""
    from torchvision.models import SqueezeNet1_0_Weights, SqueezeNet1_1_Weights

    entries = (
        _torchvision_entry("squeezenet1_0.tv_in1k", "squeezenet1_0", SqueezeNet1_0_Weights.IMAGENET1K_V1),
        _torchvision_entry("squeezenet1_1.tv_in1k", "squeezenet1_1", SqueezeNet1_1_Weights.IMAGENET1K_V1),
    )
    return {entry.tag: entry for entry in entries}


class Catalog(Mapping):
    """Tag -> weights; torchvision's entries are read from torchvision when first looked up."""

    def __init__(self, local: dict[str, PretrainedWeights]) -> None:
        self._local = local
        self._all: dict[str, PretrainedWeights] | None = None

    def _entries(self) -> dict[str, PretrainedWeights]:
        if self._all is None:
            self._all = {**self._local, **_torchvision_entries()}
        return self._all

    def __getitem__(self, tag: str) -> PretrainedWeights:
        return self._local[tag] if tag in self._local else self._entries()[tag]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())


CATALOG = Catalog(_LOCAL_ENTRIES)
