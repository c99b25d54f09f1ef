"""Data: opening images, preprocessing configs and transforms, folder datasets."""

from squeezenet.data.folders import (
    Batch,
    ImageListDataset,
    collate_skipping_bad,
    find_images,
    scan_class_folders,
)
from squeezenet.data.images import is_image_path, load_image, normalize_mode
from squeezenet.data.preprocessing import (
    CAFFE_SQUEEZENET,
    IMAGENET_DEFAULT,
    Preprocessing,
    build_transform,
    grayscale,
)

__all__ = [
    "CAFFE_SQUEEZENET",
    "IMAGENET_DEFAULT",
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
