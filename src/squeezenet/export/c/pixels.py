"""The caller's half of the preprocessing: resize and centre-crop to the model's input, as uint8.

The generated C takes the pixels of the crop (H x W x C bytes, RGB or grayscale); the
normalisation is folded into it. Both halves are ``squeezenet.data.pixels``, the code
``build_transform`` runs, so the fp32 model and the C code see the same pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from squeezenet.data.images import load_image
from squeezenet.data.pixels import geometry, normalize


def crop_pixels(pre, path: str | Path, size: int | None = None) -> np.ndarray:
    """An image file -> uint8 [size, size, C] pixels (C = 1 for grayscale models)."""
    settings = pre.to_dict()
    size = size or pre.crop
    if size != pre.crop:  # another input side: scale the resize with it
        squash = isinstance(pre.resize, tuple)
        scaled = [round(r * size / pre.crop) for r in (pre.resize if squash else [pre.resize])]
        settings.update(resize=scaled if squash else scaled[0], crop=size)
    return geometry(load_image(path, pre.image_mode), settings)[0]


def normalized(pre, pixels: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] pixels -> the fp32 model's input [N, C, H, W] (exactly ``build_transform``'s)."""
    return normalize(pixels, pre)
