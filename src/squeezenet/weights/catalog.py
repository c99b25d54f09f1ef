"""Known pretrained weights, one entry per tag (torchvision's ``Weights`` enum, timm's tags).

``info`` tables in the README and the CLI are generated from these entries and from the
models themselves, never written by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from torchvision.models import SqueezeNet1_0_Weights, SqueezeNet1_1_Weights

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


CATALOG: dict[str, PretrainedWeights] = {
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


def _add_torchvision_entries() -> None:
    for entry in (
        _torchvision_entry("squeezenet1_0.tv_in1k", "squeezenet1_0", SqueezeNet1_0_Weights.IMAGENET1K_V1),
        _torchvision_entry("squeezenet1_1.tv_in1k", "squeezenet1_1", SqueezeNet1_1_Weights.IMAGENET1K_V1),
    ):
        CATALOG[entry.tag] = entry


_add_torchvision_entries()
