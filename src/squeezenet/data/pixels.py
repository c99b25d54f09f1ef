"""Preprocessing in NumPy and Pillow alone: the one implementation of resize, crop, scale,
channel order and normalisation, and the home of ImageNet's constants.

This module imports nothing of the package (only NumPy and Pillow), so that the torch-free
runtime can load it by file path, as it loads the ``.sqz`` codec.
"""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_RESIZE = 256  # the shorter side before the centre crop
IMAGENET_CROP = 224
