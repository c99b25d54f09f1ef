"""Preprocessing that travels with the weights (timm's ``pretrained_cfg`` idea).

A ``Preprocessing`` is plain data stored in every weights file; ``build_transform`` turns
it into the evaluation transform, so no user ever hand-writes a normalisation. The Caffe
weights want BGR pixels in [0, 255] minus (104, 117, 123) after a 256x256 squash; the
torchvision weights want RGB in [0, 1] normalised with the ImageNet mean and std after a
shorter-side resize: both are one ``Preprocessing`` each. The arithmetic itself lives in
``squeezenet.data.pixels`` (NumPy and Pillow), which the torch-free server and runtime share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from PIL import Image

from squeezenet.data import pixels
from squeezenet.data.pixels import CHANNEL_ORDERS, DEFAULTS, IMAGENET_CROP, IMAGENET_MEAN, IMAGENET_RESIZE, IMAGENET_STD
from squeezenet.errors import ModelError


@dataclass(frozen=True)
class Preprocessing:
    """How pixels must be prepared for one set of weights.

    resize: an int resizes the shorter side (aspect kept); a pair (h, w) squashes to it.
    crop: side of the centre crop, which is also the model's input size.
    pixel_range: 1.0 scales pixels to [0, 1]; 255.0 keeps them in [0, 255] (Caffe).
    channel_order: "RGB" or "BGR" (Caffe); grayscale models use "L".
    """

    resize: int | tuple[int, int] = IMAGENET_RESIZE
    crop: int = IMAGENET_CROP
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    pixel_range: float = DEFAULTS["pixel_range"]
    channel_order: str = DEFAULTS["channel_order"]
    interpolation: str = DEFAULTS["interpolation"]

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
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
        """Missing keys take ``pixels.DEFAULTS``, as in the torch-free readers of the same dict."""
        data = {**DEFAULTS, **data}
        try:
            resize = data["resize"]
            return cls(
                resize=tuple(resize) if isinstance(resize, list | tuple) else int(resize),
                crop=int(data["crop"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                pixel_range=float(data["pixel_range"]),
                channel_order=str(data["channel_order"]),
                interpolation=str(data["interpolation"]),
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
    return replace(
        pre,
        mean=(sum(pre.mean) / len(pre.mean),),
        std=(sum(pre.std) / len(pre.std),),
        channel_order="L",
    )


def _checked(pre: Preprocessing) -> dict:
    """``pre`` as the complete dict ``pixels`` takes, checked once when a transform is built (a
    bad setting is then a ``ModelError`` before the first image, not in a data-loader worker)."""
    try:
        return pixels.settings(pre)
    except ValueError as exc:
        raise ModelError(str(exc)) from None


def _hwc(image: Image.Image | torch.Tensor | np.ndarray) -> Image.Image | np.ndarray:
    """What ``pixels`` reads: PIL images and HWC arrays as they are; a torch image (the
    in-memory cache's, or torchvision's augmentation output) is (C, H, W), hence the permute."""
    if isinstance(image, torch.Tensor):
        return image.permute(*range(image.ndim - 3), -2, -1, -3).numpy()
    return image


class EvalTransform:
    """``build_transform``'s result: ``pixels.preprocess`` of one image, as a torch tensor.

    A class rather than a closure, so data-loader workers can pickle it."""

    def __init__(self, pre: Preprocessing) -> None:
        self.pre = _checked(pre)

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(pixels.preprocess(_hwc(image), self.pre))

    def __repr__(self) -> str:
        return f"EvalTransform({self.pre})"


class ToNormalizedTensor:
    """The last step of a training augmentation (``training.recipes``): ``pixels.normalize`` of
    the PIL image or uint8 (C, H, W) tensor that torchvision's random geometry left, so training
    sees the numbers eval does."""

    def __init__(self, pre: Preprocessing) -> None:
        self.pre = _checked(pre)

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(pixels.normalize(np.asarray(_hwc(image)), self.pre))

    def __repr__(self) -> str:
        return f"ToNormalizedTensor({self.pre})"


def build_transform(pre: Preprocessing) -> EvalTransform:
    """The evaluation transform of ``pre``: resize, centre crop, to tensor, normalise."""
    return EvalTransform(pre)
