"""Preprocessing that travels with the weights (timm's ``pretrained_cfg`` idea).

A ``Preprocessing`` is plain data stored in every weights file; ``build_transform`` turns
it into torchvision transforms, so no user ever hand-writes a normalisation. The Caffe
weights want BGR pixels in [0, 255] minus (104, 117, 123) after a 256x256 squash; the
torchvision weights want RGB in [0, 1] normalised with the ImageNet mean and std after a
shorter-side resize: both are one ``Preprocessing`` each.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torchvision.transforms import InterpolationMode, v2

from squeezenet.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How pixels must be prepared for one set of weights.

    resize: an int resizes the shorter side (aspect kept); a pair (h, w) squashes to it.
    crop: side of the centre crop, which is also the model's input size.
    pixel_range: 1.0 scales pixels to [0, 1]; 255.0 keeps them in [0, 255] (Caffe).
    channel_order: "RGB" or "BGR" (Caffe); grayscale models use "L".
    """

    resize: int | tuple[int, int] = 256
    crop: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    pixel_range: float = 1.0
    channel_order: str = "RGB"
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR", "L"):
            raise ModelError(f"channel_order must be RGB, BGR or L, got {self.channel_order!r}")
        if len(self.mean) != len(self.std) or len(self.mean) != self.in_chans:
            raise ModelError(f"{self.channel_order} needs {self.in_chans} mean and std values")

    @property
    def in_chans(self) -> int:
        return 1 if self.channel_order == "L" else 3

    @property
    def image_mode(self) -> str:
        """The PIL mode images are converted to before the transform."""
        return "L" if self.channel_order == "L" else "RGB"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        try:
            resize = data.get("resize", 256)
            return cls(
                resize=tuple(resize) if isinstance(resize, list | tuple) else int(resize),
                crop=int(data.get("crop", 224)),
                mean=tuple(float(v) for v in data.get("mean", IMAGENET_MEAN)),
                std=tuple(float(v) for v in data.get("std", IMAGENET_STD)),
                pixel_range=float(data.get("pixel_range", 1.0)),
                channel_order=str(data.get("channel_order", "RGB")),
                interpolation=str(data.get("interpolation", "bilinear")),
            )
        except (TypeError, ValueError) as exc:
            raise ModelError(f"invalid preprocessing settings: {exc}") from None


IMAGENET_DEFAULT = Preprocessing()
CAFFE_SQUEEZENET = Preprocessing(
    resize=(256, 256),
    crop=227,
    mean=(104.0, 117.0, 123.0),
    std=(1.0, 1.0, 1.0),
    pixel_range=255.0,
    channel_order="BGR",
)


def grayscale(pre: Preprocessing) -> Preprocessing:
    """The same geometry for a one-channel model (mean and std averaged over channels)."""
    from dataclasses import replace

    return replace(
        pre,
        mean=(sum(pre.mean) / len(pre.mean),),
        std=(sum(pre.std) / len(pre.std),),
        channel_order="L",
    )


class _ToBGR(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-3)


def to_tensor_transforms(pre: Preprocessing) -> list:
    """PIL image -> normalised float tensor, without any geometry."""
    steps: list = [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=pre.pixel_range == 1.0)]
    if pre.pixel_range not in (1.0, 255.0):
        raise ModelError(f"pixel_range must be 1.0 or 255.0, got {pre.pixel_range}")
    if pre.channel_order == "BGR":
        steps.append(_ToBGR())
    steps.append(v2.Normalize(mean=list(pre.mean), std=list(pre.std)))
    return steps


def build_transform(pre: Preprocessing) -> v2.Compose:
    """The evaluation transform of ``pre``: resize, centre crop, to tensor, normalise."""
    interpolation = InterpolationMode(pre.interpolation)
    resize = list(pre.resize) if isinstance(pre.resize, tuple) else pre.resize
    return v2.Compose(
        [
            v2.Resize(resize, interpolation=interpolation, antialias=True),
            v2.CenterCrop(pre.crop),
            *to_tensor_transforms(pre),
        ]
    )
