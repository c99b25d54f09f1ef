"""The caller's half of the preprocessing: resize and centre-crop to the model's input, as uint8.

The generated C takes the pixels of the crop (H x W x C bytes, RGB or grayscale); the
normalisation is folded into it. Both halves are ``squeezenet.data.pixels``, the code
``build_transform`` runs, so the fp32 model and the C code see the same pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from squeezenet.data.images import load_image
from squeezenet.data.pixels import geometry, normalize, settings


def input_settings(pre, size: int | None = None) -> dict:
    """The complete preprocessing of an exported model whose input side is ``size``: another side
    than the weights' crop scales the resize with it (the WebAssembly export's model card carries
    this, so that its loader crops as ``crop_pixels`` does)."""
    full = settings(pre)
    size = size or int(full["crop"])
    if size != full["crop"]:
        squash = isinstance(full["resize"], list | tuple)
        scaled = [round(r * size / full["crop"]) for r in (full["resize"] if squash else [full["resize"]])]
        full.update(resize=scaled if squash else scaled[0], crop=size)
    return full


def crop_pixels(pre, path: str | Path, size: int | None = None) -> np.ndarray:
    """An image file -> uint8 [size, size, C] pixels (C = 1 for grayscale models)."""
    return geometry(load_image(path, pre.image_mode), input_settings(pre, size))[0]


def normalized(pre, pixels: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] pixels -> the fp32 model's input [N, C, H, W] (exactly ``build_transform``'s)."""
    return normalize(pixels, pre)
