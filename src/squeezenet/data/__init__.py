"""Data: opening images, preprocessing configs and transforms, folder datasets.

The names load lazily, so that ``squeezenet.data.images`` and ``squeezenet.data.pixels``
(Pillow and NumPy only) serve the PyTorch-free server too: one decoder of every image mode and
one preprocessing, not a copy per layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squeezenet._lazy import lazy_exports

_EXPORTS = {
    "Batch": "squeezenet.data.folders",
    "ImageListDataset": "squeezenet.data.folders",
    "collate_skipping_bad": "squeezenet.data.folders",
    "find_images": "squeezenet.data.folders",
    "scan_class_folders": "squeezenet.data.folders",
    "is_image_path": "squeezenet.data.images",
    "load_image": "squeezenet.data.images",
    "normalize_mode": "squeezenet.data.images",
    "IMAGENET_CROP": "squeezenet.data.pixels",
    "IMAGENET_MEAN": "squeezenet.data.pixels",
    "IMAGENET_RESIZE": "squeezenet.data.pixels",
    "IMAGENET_STD": "squeezenet.data.pixels",
    "CAFFE_SQUEEZENET": "squeezenet.data.preprocessing",
    "IMAGENET_DEFAULT": "squeezenet.data.preprocessing",
    "Preprocessing": "squeezenet.data.preprocessing",
    "build_transform": "squeezenet.data.preprocessing",
    "grayscale": "squeezenet.data.preprocessing",
}

__all__ = [
    "CAFFE_SQUEEZENET",
    "IMAGENET_CROP",
    "IMAGENET_DEFAULT",
    "IMAGENET_MEAN",
    "IMAGENET_RESIZE",
    "IMAGENET_STD",
    "Batch",
    "ImageListDataset",
    "Preprocessing",
    "build_transform",
    "collate_skipping_bad",
    "find_images",
    "grayscale",
    "is_image_path",
    "load_image",
    "normalize_mode",
    "scan_class_folders",
]

if TYPE_CHECKING:
    from squeezenet.data.folders import (
        Batch,
        ImageListDataset,
        collate_skipping_bad,
        find_images,
        scan_class_folders,
    )
    from squeezenet.data.images import is_image_path, load_image, normalize_mode
    from squeezenet.data.pixels import IMAGENET_CROP, IMAGENET_MEAN, IMAGENET_RESIZE, IMAGENET_STD
    from squeezenet.data.preprocessing import (
        CAFFE_SQUEEZENET,
        IMAGENET_DEFAULT,
        Preprocessing,
        build_transform,
        grayscale,
    )


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
