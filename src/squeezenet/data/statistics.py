"""Match new data to what pretrained weights expect: normalisation from the data's own statistics.

Pretrained filters respond to ImageNet-like brightness and contrast. Electroluminescence
images of solar cells (ELPV) have a pixel mean of ~152 and a standard deviation of ~40 on
the 0..255 scale (ImageNet: ~115 and ~58; single cells go as low as std 17), so after the
weights' own normalisation the first layer sees shifted, flattened inputs. ``adapted_preprocessing`` keeps the
weights' channel order and pixel range but sets mean and std so that the new images reach
the network with zero mean and ImageNet's spread; being part of the preprocessing, the
change travels with the exported weights to every deployment path.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np

from squeezenet.data.labeled import LabeledImages
from squeezenet.data.pixels import IMAGENET_STD
from squeezenet.data.preprocessing import Preprocessing
from squeezenet.errors import DataError


def pixel_statistics(ds: LabeledImages, limit: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (0..255 scale) of up to ``limit`` images of ``ds``, in its mode."""
    indices = list(range(len(ds)))
    random.Random(seed).shuffle(indices)
    sums, squares, count = None, None, 0
    ds = ds.with_transform(None)
    for i in indices[:limit]:
        image, _, _, error = ds[i]
        if error:  # unreadable: counted and reported by the training loop, left out here
            continue
        pixels = np.asarray(image, dtype=np.float64)
        pixels = pixels.reshape(-1, 1 if pixels.ndim == 2 else pixels.shape[-1])
        sums = pixels.sum(0) if sums is None else sums + pixels.sum(0)
        squares = (pixels**2).sum(0) if squares is None else squares + (pixels**2).sum(0)
        count += len(pixels)
    if not count:
        raise DataError("no readable image to measure the data's pixel statistics")
    mean = sums / count
    return mean, np.sqrt(np.maximum(squares / count - mean**2, 1e-6))


def adapted_preprocessing(pre: Preprocessing, mean255: np.ndarray, std255: np.ndarray) -> Preprocessing:
    """``pre`` with mean/std mapping data of the given statistics to ImageNet's spread for these weights."""
    if len(mean255) != pre.in_chans:
        raise DataError(f"statistics of {len(mean255)} channel(s) for a {pre.in_chans}-channel preprocessing")
    scale = pre.pixel_range / 255.0  # 0..255 statistics in the preprocessing's pixel units
    imagenet_std = np.array(IMAGENET_STD) * pre.pixel_range
    mean255, std255 = np.asarray(mean255, dtype=np.float64), np.asarray(std255, dtype=np.float64)
    if pre.in_chans == 1:
        imagenet_std = imagenet_std.mean(keepdims=True)
    elif pre.channel_order == "BGR":  # images are decoded RGB; the preprocessing lists BGR
        imagenet_std, mean255, std255 = imagenet_std[::-1], mean255[::-1], std255[::-1]
    std = std255 * scale * np.asarray(pre.std) / imagenet_std
    return replace(pre, mean=tuple(float(m) for m in mean255 * scale), std=tuple(float(s) for s in std))
