"""Known pretrained weights, one entry per tag (torchvision's ``Weights`` enum, timm's tags).

``info`` tables in the README and the CLI are generated from these entries and from the
models themselves, never written by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from squeezenet.errors import WeightsError


def data_root() -> Path:
    """``$SQUEEZENET_DATA``, by default ``../shared/data`` (the project's shared data folder)."""
    return Path(os.environ.get("SQUEEZENET_DATA", "../shared/data"))


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
            from squeezenet.weights.torchvision_ckpt import download_cached

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
            },
        ),
        PretrainedWeights(
            tag="squeezenet1_0.tv_in1k",
            arch="squeezenet1_0",
            url="https://download.pytorch.org/models/squeezenet1_0-b66bff10.pth",
            sha256_prefix="b66bff10",
            meta={
                "source": "torchvision",
                "license": "BSD-3-Clause (torchvision)",
                "file_bytes": 5_010_137,
                "published_top1": 58.092,
                "published_top5": 80.420,
            },
        ),
        PretrainedWeights(
            tag="squeezenet1_1.tv_in1k",
            arch="squeezenet1_1",
            url="https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
            sha256_prefix="b8a52dc0",
            meta={
                "source": "torchvision",
                "license": "BSD-3-Clause (torchvision)",
                "file_bytes": 4_958_640,
                "published_top1": 58.178,
                "published_top5": 80.624,
            },
        ),
    ]
}


def list_pretrained() -> list[str]:
    return sorted(CATALOG)
