"""Preprocessing in NumPy and Pillow alone: the one implementation of resize, crop, scale,
channel order and normalisation, and the home of ImageNet's constants.

Eval and predict (``preprocessing.build_transform``), the server, the NumPy runtime and the C
export's pixels all call it, so they compute the same numbers by construction. The geometry is
torchvision's on a PIL image: its ``Resize`` is Pillow's own resize (antialiased when
shrinking) with the size rule of ``resized_size``, its ``CenterCrop`` the offsets of
``crop_offset``; the scale and normalisation are float32 throughout.

This module imports nothing of the package (only NumPy and Pillow), so that the torch-free
runtime can load it by file path, as it loads the ``.sqz`` codec.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_RESIZE = 256  # the shorter side before the centre crop
IMAGENET_CROP = 224

# What a setting missing from a weights file's preprocessing means: torchvision's ImageNet recipe.
DEFAULTS = MappingProxyType(
    {
        "resize": IMAGENET_RESIZE,
        "crop": IMAGENET_CROP,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "pixel_range": 1.0,
        "channel_order": "RGB",
        "interpolation": "bilinear",
    }
)
CHANNEL_ORDERS = ("RGB", "BGR", "L")
PIXEL_RANGES = (1.0, 255.0)  # [0, 1] (torchvision) or [0, 255] (Caffe)
# torchvision's InterpolationMode values -> the Pillow filter its Resize uses on a PIL image
RESAMPLING = MappingProxyType(
    {
        "nearest": Image.Resampling.NEAREST,
        "nearest-exact": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "box": Image.Resampling.BOX,
        "hamming": Image.Resampling.HAMMING,
        "lanczos": Image.Resampling.LANCZOS,
    }
)


def settings(pre) -> dict:
    """``pre`` complete and checked: a ``Preprocessing`` (anything with ``to_dict``) or the JSON
    dict of a weights file, whose missing keys take ``DEFAULTS``; ValueError names a bad value."""
    given = pre.to_dict() if hasattr(pre, "to_dict") else dict(pre or {})
    full = {**DEFAULTS, **given}
    if full["channel_order"] not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be RGB, BGR or L, got {full['channel_order']!r}")
    if float(full["pixel_range"]) not in PIXEL_RANGES:
        raise ValueError(f"pixel_range must be 1.0 or 255.0, got {full['pixel_range']}")
    if full["interpolation"] not in RESAMPLING:
        raise ValueError(f"interpolation must be one of {', '.join(RESAMPLING)}, got {full['interpolation']!r}")
    return full


def resized_size(width: int, height: int, resize) -> tuple[int, int]:
    """(new width, new height) as torchvision computes it: a pair (h, w) squashes, an int sets the shorter side."""
    if isinstance(resize, list | tuple):
        return int(resize[1]), int(resize[0])
    side = int(resize)
    if width <= height:
        return side, int(side * height / width)
    return int(side * width / height), side


def crop_offset(size: int, crop: int) -> int:
    """Where torchvision's ``CenterCrop`` starts along one side of ``size`` pixels: Python's
    rounding of the centred offset; a crop larger than the image first pads ``(crop - size) // 2``
    zeros before it, which is not the rounding (3 columns short: 1 column of padding, not 2)."""
    if crop > size:
        return -((crop - size) // 2)
    return round((size - crop) / 2.0)


def geometry(image: Image.Image | np.ndarray, pre) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Resize and centre-crop -> (uint8 crop (H, W, C), where it lies as fractions (left, top,
    right, bottom) of the resized image: the page's heat map is drawn there). ``image`` is a PIL
    image or uint8 (H, W[, C]) pixels, already in the preprocessing's mode (RGB or L)."""
    s = settings(pre)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    crop = int(s["crop"])
    new_w, new_h = resized_size(*image.size, s["resize"])
    if (new_w, new_h) != image.size:  # as torchvision: an image of the right size is left alone
        image = image.resize((new_w, new_h), RESAMPLING[s["interpolation"]])
    left, top = crop_offset(new_w, crop), crop_offset(new_h, crop)
    pixels = np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.uint8)
    box = (left / new_w, top / new_h, (left + crop) / new_w, (top + crop) / new_h)
    return (pixels[:, :, None] if pixels.ndim == 2 else pixels), box


def normalize(pixels: np.ndarray, pre) -> np.ndarray:
    """uint8 (H, W[, C]) or (N, H, W, C) pixels -> the model's float32 input, (C, H, W) or
    (N, C, H, W): scaled to [0, 1] unless the range is 255, channels reversed for BGR, then
    (x - mean) / std. Each step is one float32 operation, as torchvision's ``Normalize`` does."""
    s = settings(pre)
    x = np.asarray(pixels)
    if x.dtype != np.uint8:  # a float image would be scaled twice, silently
        raise ValueError(f"normalize takes uint8 pixels, not {x.dtype}")
    x = np.moveaxis(x[:, :, None] if x.ndim == 2 else x, -1, -3)
    if s["channel_order"] == "BGR":
        x = x[..., ::-1, :, :]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if float(s["pixel_range"]) == 1.0:
        x /= np.float32(255.0)
    x -= np.asarray(s["mean"], np.float32)[:, None, None]
    x /= np.asarray(s["std"], np.float32)[:, None, None]
    return x


def preprocess(image: Image.Image | np.ndarray, pre) -> np.ndarray:
    """An image in the preprocessing's mode -> the model's float32 (C, H, W) input."""
    return normalize(geometry(image, pre)[0], pre)
