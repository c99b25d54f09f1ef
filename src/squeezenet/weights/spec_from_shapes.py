"""Recover a ``SqueezeNetSpec`` from the tensor shapes of a bare state dict.

torchvision checkpoints carry no architecture description; the shapes and the
``features.<i>`` indices (pools have no parameters, so they show as gaps) are enough.
"""

from __future__ import annotations

import re

import torch

from squeezenet.data.preprocessing import IMAGENET_DEFAULT
from squeezenet.errors import WeightsError
from squeezenet.models.spec import V1_0, V1_0_CAFFE, V1_1, FireSpec, SqueezeNetSpec
from squeezenet.weights.imagenet import imagenet_class_names, imagenet_wnids
from squeezenet.weights.info import WeightsInfo

KNOWN_SPECS = {"squeezenet1_0": V1_0, "squeezenet1_1": V1_1, "squeezenet1_0_caffe": V1_0_CAFFE}
_FIRE_KEY = re.compile(r"features\.(\d+)\.squeeze\.weight")


def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise WeightsError(f"not a SqueezeNet state dict: key {key!r} is missing")
    return tuple(state[key].shape)


def spec_from_state_dict(state: dict[str, torch.Tensor]) -> tuple[SqueezeNetSpec, int, int]:
    """-> (spec, num_classes, in_chans) read from ``state``'s keys and shapes."""
    stem = _shape(state, "features.0.weight")
    head = _shape(state, "classifier.1.weight")
    if len(stem) != 4 or len(head) != 4:
        raise WeightsError("not a SqueezeNet state dict: conv1 or conv10 is not a 4-D convolution")
    fire_indices = sorted(int(m.group(1)) for k in state if (m := _FIRE_KEY.fullmatch(k)))
    if not fire_indices:
        raise WeightsError("not a SqueezeNet state dict: no Fire modules found")
    fires, shortcuts, pool_after = [], [], []
    previous = 2  # conv1, relu, pool1 occupy features.0-2
    for number, index in enumerate(fire_indices):
        if index - previous == 2:
            pool_after.append(number - 1)
        elif index - previous != 1:
            raise WeightsError(f"not a SqueezeNet state dict: unexpected layer layout at features.{index}")
        prefix = f"features.{index}."
        squeeze = _shape(state, prefix + "squeeze.weight")[0]
        e1 = _shape(state, prefix + "expand1x1.weight")[0]
        e3 = _shape(state, prefix + "expand3x3.weight")[0]
        fires.append(FireSpec(squeeze, e1, e3))
        shortcuts.append("conv" if prefix + "shortcut.weight" in state else "")
        previous = index
    spec = SqueezeNetSpec(
        stem_channels=stem[0],
        stem_kernel=stem[2],
        stem_stride=2,
        fires=tuple(fires),
        pool_after=tuple(pool_after),
        shortcuts=tuple(shortcuts) if any(shortcuts) else (),
    )
    return spec, head[0], stem[1]


def info_from_state_dict(state: dict[str, torch.Tensor], provenance: dict):
    """What a bare state dict implies: its architecture, ImageNet preprocessing and, for
    1000 classes, the ImageNet class names (the only head such files normally have)."""
    spec, num_classes, in_chans = spec_from_state_dict(state)
    return WeightsInfo(
        arch=arch_name(spec),
        spec=spec,
        num_classes=num_classes,
        in_chans=in_chans,
        preprocessing=IMAGENET_DEFAULT,
        classes=imagenet_class_names() if num_classes == 1000 else (),
        wnids=imagenet_wnids() if num_classes == 1000 else (),
        provenance=provenance,
    )


def arch_name(spec: SqueezeNetSpec) -> str:
    for name, known in KNOWN_SPECS.items():
        if spec == known:
            return name
    return "squeezenet_custom"
