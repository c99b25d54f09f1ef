"""Decode a dataset once and keep its pixels in memory (small-image datasets such as CIFAR-10).

Decoding 50,000 CIFAR JPEGs every epoch costs a 2-core machine about as much CPU as the
training step itself; decoded, the whole train set is 150 MB of uint8. The cached dataset
is an ordinary ``LabeledImages`` whose reader returns ``uint8`` tensors, so the same
torchvision transforms (which take tensors as well as PIL images) augment it per sample,
and bad images are still counted and skipped, with the message of the first decode.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from squeezenet.data.labeled import LabeledImages
from squeezenet.errors import DataError, ImageError


class _Decode(Dataset):
    """(index, pixels or None, error or None): ``LabeledImages`` decodes and names the errors."""

    def __init__(self, ds: LabeledImages) -> None:
        self.ds = ds.with_transform(None)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int):
        image, _, _, error = self.ds[index]
        # a NumPy array, pickled: tensors would cross processes as one file descriptor each
        return index, None if error else np.asarray(image), error


class CachedReader:
    """``reader(key, mode)`` over decoded images: key = position; raises the stored error."""

    def __init__(self, pixels, errors: dict[int, str]) -> None:
        self.pixels = pixels  # one (N, C, H, W) uint8 tensor when all sizes agree, else a list
        self.errors = errors

    def __call__(self, key: int, mode: str) -> torch.Tensor:
        if key in self.errors:
            raise ImageError(self.errors[key])
        return self.pixels[key]


def _stack_if_uniform(images: list[torch.Tensor | None]):
    shapes = {tuple(t.shape) for t in images if t is not None}
    if len(shapes) != 1:
        return images
    (shape,) = shapes
    stacked = torch.zeros((len(images), *shape), dtype=torch.uint8)
    for i, t in enumerate(images):
        if t is not None:
            stacked[i] = t
    return stacked


def cache_in_memory(ds: LabeledImages, workers: int = 2, max_bytes: int = 8 << 30) -> LabeledImages:
    """``ds`` decoded once (in ``workers`` processes) into memory; fails beyond ``max_bytes``."""
    images: list[torch.Tensor | None] = [None] * len(ds)
    errors: dict[int, str] = {}
    loader = DataLoader(_Decode(ds), batch_size=256, num_workers=workers, collate_fn=list)
    total = 0
    for batch in loader:
        for index, pixels, error in batch:
            if error is not None:
                errors[index] = error
                continue
            pixels = torch.from_numpy(pixels.copy()).reshape(*pixels.shape[:2], -1).permute(2, 0, 1).contiguous()
            images[index] = pixels
            total += pixels.numel()
            if total > max_bytes:
                raise DataError(
                    f"{ds.description or 'dataset'}: over {max_bytes >> 20} MiB decoded; "
                    "too large for --cache-images (drop the option)"
                )
    reader = CachedReader(_stack_if_uniform(images), errors)
    items = [(i, target) for i, (_, target) in enumerate(ds.items)]
    return LabeledImages(ds.classes, items, reader, ds.names, ds.mode, ds.transform, ds.description)
