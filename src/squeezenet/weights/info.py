"""What a weights file says about itself, independent of its on-disk format.

Every loader (Deep Compression ``.net``, torchvision ``.pth``, the project's safetensors,
``.sqz``) produces a ``LoadedWeights``: a state dict plus a ``WeightsInfo`` that is enough
to rebuild the model, label its outputs and preprocess its inputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from squeezenet.data.preprocessing import Preprocessing
from squeezenet.models.spec import SqueezeNetSpec


@dataclass(frozen=True)
class WeightsInfo:
    arch: str
    spec: SqueezeNetSpec
    num_classes: int
    in_chans: int
    preprocessing: Preprocessing
    classes: tuple[str, ...] = ()
    wnids: tuple[str, ...] = ()
    provenance: dict = field(default_factory=dict)
    license: str = ""

    def class_name(self, index: int) -> str:
        return self.classes[index] if index < len(self.classes) else f"class {index}"

    def to_metadata(self) -> dict[str, str]:
        """Flat str -> str metadata, as safetensors headers require."""
        return {
            "arch": self.arch,
            "spec": json.dumps(self.spec.to_dict()),
            "num_classes": str(self.num_classes),
            "in_chans": str(self.in_chans),
            "preprocessing": json.dumps(self.preprocessing.to_dict()),
            "classes": json.dumps(list(self.classes)),
            "wnids": json.dumps(list(self.wnids)),
            "provenance": json.dumps(self.provenance),
            "license": self.license,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> WeightsInfo:
        """Inverse of ``to_metadata``; raises KeyError/ValueError on malformed input."""
        return cls(
            arch=meta["arch"],
            spec=SqueezeNetSpec.from_dict(json.loads(meta["spec"])),
            num_classes=int(meta["num_classes"]),
            in_chans=int(meta["in_chans"]),
            preprocessing=Preprocessing.from_dict(json.loads(meta["preprocessing"])),
            classes=tuple(json.loads(meta.get("classes", "[]"))),
            wnids=tuple(json.loads(meta.get("wnids", "[]"))),
            provenance=json.loads(meta.get("provenance", "{}")),
            license=meta.get("license", ""),
        )


@dataclass
class LoadedWeights:
    info: WeightsInfo
    state_dict: dict[str, torch.Tensor]
    # a .sqz's quantized tensors: each weight's codebook index as the file numbers it (flat, -1: none)
    stored_codes: dict[str, np.ndarray] = field(default_factory=dict)
