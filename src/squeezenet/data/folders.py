"""Image folders as datasets: class folders, ImageNet-validation layout, loose files.

Bad images never stop a run: the dataset yields a marker for them, the collate function
drops and counts them, and the caller reports which files were skipped and why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from squeezenet.data.images import is_image_path, load_image
from squeezenet.errors import DataError, ImageError


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder``, sorted; linked folders are followed (a folder of
    links to class folders is a common way to make a subset), each real folder once, so that
    a link back to a parent cannot loop."""
    return sorted(p for p in _walk_files(folder) if is_image_path(p))


def _walk_files(folder: Path) -> Iterator[Path]:
    seen: set[str] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()  # of two links to one folder, the first in name order is the one read
        yield from (Path(top) / f for f in files if os.path.isfile(os.path.join(top, f)))


STDIN = Path("/dev/stdin")  # "-": one image piped in (``curl -s URL | squeezenet predict -``)


def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of image files; ``-`` is an
    image read from standard input."""
    found: list[Path] = []
    for raw in paths:
        if str(raw) == "-":
            if not STDIN.exists():
                raise DataError("-: this system has no /dev/stdin to read an image from")
            if os.isatty(0):  # nothing piped in: reading would wait for the keyboard
                raise DataError("-: standard input is a terminal; pipe an image in (cat photo.jpg | ... -)")
            found.append(STDIN)
            continue
        path = Path(raw)
        if not path.exists():
            raise DataError(f"{path}: no such file or directory")
        if path.is_dir():
            images = image_files(path)
            if not images:
                raise DataError(f"{path}: folder holds no image files")
            found.extend(images)
        else:
            found.append(path)
    return found


def scan_class_folders(root: str | Path) -> tuple[list[str], list[tuple[Path, str]]]:
    """``root/<class>/<image>`` -> (sorted class names, [(path, class name)])."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: expected one sub-folder per class, found none")
    samples = [(p, name) for name in classes for p in image_files(root / name)]
    if not samples:
        raise DataError(f"{root}: the class folders hold no image files")
    return classes, samples


@dataclass
class Batch:
    images: torch.Tensor
    targets: torch.Tensor
    paths: list[str]
    skipped: list[str] = field(default_factory=list)


class ImageListDataset(Dataset):
    """(path, target) pairs decoded with ``load_image`` and transformed in the worker."""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        transform: Callable,
        mode: str = "RGB",
        draft_size: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.mode = mode
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            image = self.transform(load_image(path, self.mode, self.draft_size))
        except ImageError as exc:
            return None, target, str(path), str(exc)
        return image, target, str(path), None


def collate_skipping_bad(items: list) -> Batch:
    """Stack the good samples; remember the bad ones with their error message."""
    good = [item for item in items if item[0] is not None]
    skipped = [item[3] for item in items if item[0] is None]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), [], skipped)
    return Batch(
        torch.stack([item[0] for item in good]),
        torch.tensor([item[1] for item in good], dtype=torch.long),
        [item[2] for item in good],
        skipped,
    )
