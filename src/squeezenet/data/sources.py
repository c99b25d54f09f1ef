"""One dataset interface for training: class folders, tar archives and ELPV.

``open_dataset(spec, split)`` turns a spec into a ``LabeledImages``:

- a folder ``root/<split>/<class>/<image>`` (``train``, ``val``; ``val`` falls back to
  ``validation`` then ``test``), or a flat ``root/<class>/<image>`` tree split
  ``val_fraction`` per class with ``seed`` (the engine keeps the default, 0, for every run);
- a ``.tar`` / ``.tar.gz`` / ``.tgz`` / ``.tar.bz2`` / ``.tar.xz`` archive of such a tree,
  read in place (see ``squeezenet.data.archives``);
- ``elpv`` / ``elpv:4`` (four defect levels) or ``elpv:2`` (functional / defective), from
  the optional ``elpv-dataset`` package (see ``squeezenet.data.elpv``).

Every ``LabeledImages`` yields the same ``(tensor | None, target, name, error | None)``
tuples as ``ImageListDataset``, so ``collate_skipping_bad`` counts and drops bad images.
Indices may come as ``(index, seed)`` pairs: the transform's random draws are then seeded
per sample, which makes augmentation independent of worker count and of resuming.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from squeezenet.data.images import load_image
from squeezenet.errors import DataError, ImageError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
VAL_SPLIT_NAMES = ("val", "validation", "test")

Reader = Callable[[object, str], object]  # (key, PIL mode) -> PIL image; raises ImageError


def _read_file(key: object, mode: str):
    return load_image(key, mode)


class LabeledImages(Dataset):
    """Samples ``(key, target)`` decoded by ``reader`` and transformed in the worker."""

    def __init__(
        self,
        classes: Sequence[str],
        items: Sequence[tuple[object, int]],
        reader: Reader = _read_file,
        names: Sequence[str] | None = None,
        mode: str = "RGB",
        transform: Callable | None = None,
        description: str = "",
    ) -> None:
        self.classes = tuple(classes)
        self.items = list(items)
        self.reader = reader
        self.names = list(names) if names is not None else [str(k) for k, _ in self.items]
        self.mode = mode
        self.transform = transform
        self.description = description

    def __len__(self) -> int:
        return len(self.items)

    @property
    def targets(self) -> list[int]:
        return [t for _, t in self.items]

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for t in self.targets:
            counts[t] += 1
        return counts

    def _clone(self, items, names, **changes) -> LabeledImages:
        new = LabeledImages(self.classes, items, self.reader, names, self.mode, self.transform, self.description)
        new.__dict__.update(changes)
        return new

    def subset(self, indices: Sequence[int]) -> LabeledImages:
        return self._clone([self.items[i] for i in indices], [self.names[i] for i in indices])

    def with_transform(self, transform: Callable | None, mode: str | None = None) -> LabeledImages:
        return self._clone(self.items, self.names, transform=transform, mode=mode or self.mode)

    def load(self, index: int):
        """The decoded PIL image of sample ``index`` (raises ``ImageError``)."""
        return self.reader(self.items[index][0], self.mode)

    def __getitem__(self, index):
        seed = None
        if isinstance(index, tuple | list):
            index, seed = index
        key, target = self.items[index]
        name = self.names[index]
        try:
            image = self.reader(key, self.mode)
            if self.transform is not None:
                if seed is None:
                    image = self.transform(image)
                else:
                    with torch.random.fork_rng(devices=[]):
                        # the CPU generator only: torch.manual_seed also queues a seed for every
                        # lazy accelerator module, capturing a stack trace each (~0.8 ms a sample)
                        torch.default_generator.manual_seed(seed)
                        state = random.getstate()
                        random.seed(seed)
                        try:
                            image = self.transform(image)
                        finally:
                            random.setstate(state)
        except ImageError as exc:
            return None, target, name, str(exc)
        except (OSError, ValueError, SyntaxError) as exc:  # e.g. a truncated archive member
            return None, target, name, f"{name}: cannot decode image ({exc})"
        return image, target, name, None


def stratified_split(groups: Sequence[object], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (keep, held_out): ``fraction`` of every group held out, exactly round(fraction * n) in all."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"the validation fraction must lie in (0, 1), got {fraction}")
    by_group: dict[object, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    rng = random.Random(seed)
    keys = sorted(by_group, key=str)
    wanted = {k: len(by_group[k]) * fraction for k in keys}
    take = {k: int(wanted[k]) for k in keys}
    missing = round(len(groups) * fraction) - sum(take.values())
    for k in sorted(keys, key=lambda k: (-(wanted[k] - take[k]), str(k)))[: max(0, missing)]:
        take[k] += 1
    keep: list[int] = []
    held: list[int] = []
    for k in keys:
        members = by_group[k][:]
        rng.shuffle(members)
        held += members[: take[k]]
        keep += members[take[k] :]
    return sorted(keep), sorted(held)


def _folder_dataset(root: Path, classes: Sequence[str] | None, description: str) -> LabeledImages:
    from squeezenet.data.folders import scan_class_folders

    found, samples = scan_class_folders(root)
    classes = tuple(classes) if classes is not None else tuple(found)
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in found if c not in lookup]
    if unknown:
        raise DataError(f"{root}: class folder(s) {unknown[:3]} are not among the training classes")
    items = [(str(p), lookup[c]) for p, c in samples]
    return LabeledImages(classes, items, _read_file, description=description)


def _split_dir(root: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        path = root / name
        if path.is_dir() and any(p.is_dir() for p in path.iterdir()):
            return path
    return None


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def has_split_layout(root: Path) -> bool:
    """Whether ``root`` holds ``train/<class>/`` (and maybe ``val/``) rather than class folders."""
    return _split_dir(root, ("train",)) is not None


def _folder_splits(root: Path, classes: Sequence[str] | None) -> dict[str, LabeledImages]:
    train_dir = _split_dir(root, ("train",))
    if train_dir is None:
        return {"all": _folder_dataset(root, classes, str(root))}
    splits = {"train": _folder_dataset(train_dir, classes, str(train_dir))}
    val_dir = _split_dir(root, VAL_SPLIT_NAMES)
    if val_dir is not None:
        splits["val"] = _folder_dataset(val_dir, splits["train"].classes, str(val_dir))
    return splits


def dataset_splits(spec: str | Path, classes: Sequence[str] | None = None) -> dict[str, LabeledImages]:
    """The splits a dataset comes with: {"train", "val"}, {"train"} or {"all"} (no split layout)."""
    text = str(spec)
    if text.split(":")[0].lower() == "elpv":
        from squeezenet.data.elpv import elpv_splits

        return elpv_splits(text, classes)
    path = Path(text)
    if not text or not path.exists():
        raise DataError(f"{path}: no such dataset (expected a folder, a .tar/.tar.gz archive or 'elpv')")
    if path.is_file():
        if not is_archive(path):
            raise DataError(f"{path}: not a dataset (expected a folder of class folders or a .tar/.tar.gz archive)")
        from squeezenet.data.archives import archive_splits

        return archive_splits(path, classes)
    return _folder_splits(path, classes)


def open_dataset(
    spec: str | Path,
    split: str = "train",
    val_fraction: float = 0.0,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> LabeledImages:
    """The ``split`` ("train" or "val") of the dataset named by ``spec`` (see the module doc).

    ``classes`` fixes the class order (e.g. that of a checkpoint); a class folder not among
    them is an error. Without a val/ split, ``val_fraction`` > 0 holds out that fraction of
    every class for "val" (seeded, stratified by class) and "train" is the rest.
    """
    if split == "test":
        split = "val"
    if split not in ("train", "val"):
        raise DataError(f"unknown split {split!r}: expected 'train' or 'val'")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"the validation fraction must lie in [0, 1), got {val_fraction}")
    parts = dataset_splits(spec, classes)
    if "val" in parts and val_fraction > 0:
        raise DataError(f"{spec}: has its own validation split; a validation fraction is for a tree without one")
    if "val" in parts and split == "val":
        return parts["val"]
    if "val" in parts or val_fraction <= 0:
        if split == "train":
            return parts["train"] if "train" in parts else parts["all"]
        raise DataError(f"{spec}: has no validation split (no val/ or test/ folder); give a fraction with --val-split")
    full = parts["train"] if "train" in parts else parts["all"]
    keep, held = stratified_split(full.targets, val_fraction, seed)
    if not keep or not held:
        raise DataError(f"{spec}: too few images ({len(full)}) to hold out {val_fraction:.0%} for validation")
    return full.subset(keep if split == "train" else held)


def open_splits(
    spec: str | Path,
    val_fraction: float = 0.0,
    seed: int = 0,
    val_spec: str | Path | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[LabeledImages, LabeledImages | None]:
    """(train, val) of one dataset; val is None when there is none and no fraction is given.

    ``val_spec`` names a separate validation dataset (its "val" split if it has one, else all of it).
    """
    train = open_dataset(spec, "train", val_fraction, seed, classes)
    if len(train) == 0:
        raise DataError(f"{spec}: the training split holds no images")
    if val_spec is not None:
        parts = dataset_splits(val_spec, train.classes)
        for key in ("val", "all", "train"):
            if key in parts:
                return train, parts[key]
    try:
        return train, open_dataset(spec, "val", val_fraction, seed, train.classes)
    except DataError as exc:
        if "has no validation split" in str(exc):
            return train, None
        raise
