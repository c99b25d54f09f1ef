"""The caller's half of the preprocessing: resize and centre-crop to the model's input, as uint8.

The generated C takes the pixels of the crop (H x W x C bytes, RGB or grayscale); the
normalisation is folded into it. This is the geometry of ``build_transform`` (same resize,
same crop, on the same 8-bit image), so the fp32 model and the C code see the same pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def crop_pixels(pre, path: str | Path, size: int | None = None) -> np.ndarray:
    """An image file -> uint8 [size, size, C] pixels (C = 1 for grayscale models)."""
    from torchvision.transforms import InterpolationMode, v2

    from squeezenet.data import load_image

    size = size or pre.crop
    resize = list(pre.resize) if isinstance(pre.resize, tuple) else pre.resize
    if size != pre.crop:  # another input side: scale the resize with it
        resize = (
            [round(r * size / pre.crop) for r in resize]
            if isinstance(resize, list)
            else round(resize * size / pre.crop)
        )
    geometry = v2.Compose(
        [v2.Resize(resize, interpolation=InterpolationMode(pre.interpolation), antialias=True), v2.CenterCrop(size)]
    )
    pixels = np.asarray(geometry(load_image(path, pre.image_mode)), dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def normalized(pre, pixels: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] pixels -> the fp32 model's input [N, C, H, W] (exactly ``build_transform``'s)."""
    x = pixels.astype(np.float32).transpose(0, 3, 1, 2)
    if pre.pixel_range == 1.0:
        x = x / np.float32(255.0)
    if pre.channel_order == "BGR":
        x = x[:, ::-1]
    mean = np.array(pre.mean, np.float32)[None, :, None, None]
    std = np.array(pre.std, np.float32)[None, :, None, None]
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)
