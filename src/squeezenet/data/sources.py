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

from collections.abc import Sequence
from pathlib import Path

from squeezenet.data.archives import archive_splits
from squeezenet.data.elpv import elpv_splits
from squeezenet.data.folders import scan_class_folders
from squeezenet.data.labeled import VAL_SPLIT_NAMES, LabeledImages, read_file, stratified_split
from squeezenet.errors import DataError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def _folder_dataset(root: Path, classes: Sequence[str] | None, description: str, split: str = "") -> LabeledImages:
    found, samples = scan_class_folders(root)
    classes = tuple(classes) if classes is not None else tuple(found)
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in found if c not in lookup]
    if unknown:
        raise DataError(f"{root}: class folder(s) {unknown[:3]} are not among the training classes")
    items = [(str(p), lookup[c]) for p, c in samples]
    return LabeledImages(classes, items, read_file, description=description, split=split)


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
    splits = {"train": _folder_dataset(train_dir, classes, str(train_dir), "train")}
    val_dir = _split_dir(root, VAL_SPLIT_NAMES)
    if val_dir is not None:
        splits["val"] = _folder_dataset(val_dir, splits["train"].classes, str(val_dir), val_dir.name)
    return splits


def dataset_splits(spec: str | Path, classes: Sequence[str] | None = None) -> dict[str, LabeledImages]:
    """The splits a dataset comes with: {"train", "val"}, {"train"} or {"all"} (no split layout)."""
    text = str(spec)
    if text.split(":")[0].lower() == "elpv":
        return elpv_splits(text, classes)
    path = Path(text)
    if not text or not path.exists():
        raise DataError(f"{path}: no such dataset (expected a folder, a .tar/.tar.gz archive or 'elpv')")
    if path.is_file():
        if not is_archive(path):
            raise DataError(f"{path}: not a dataset (expected a folder of class folders or a .tar/.tar.gz archive)")
        return archive_splits(path, classes)
    return _folder_splits(path, classes)


def open_dataset(
    spec: str | Path,
    split: str = "train",
    val_fraction: float = 0.0,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> LabeledImages:
    """The ``split`` ("train", "val" or "test") of the dataset named by ``spec`` (see the module doc).

    ``classes`` fixes the class order (e.g. that of a checkpoint); a class folder not among
    them is an error. ``val_fraction`` > 0 holds out that fraction of every class of the
    training images (a fixed draw by ``seed``, stratified by class) as "val", and "train" is
    the rest; a dataset's own held-out split (val/, validation/ or test/, ELPV's test cells)
    is then "test" alone, untouched until the end (choose on "val", report "test" once).
    Without a fraction, "val" and "test" both name the dataset's own held-out split.
    """
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split {split!r}: expected 'train', 'val' or 'test'")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"the validation fraction must lie in [0, 1), got {val_fraction}")
    parts = dataset_splits(spec, classes)
    if split == "test" or (split == "val" and val_fraction <= 0):
        return own_held_out(parts, spec)
    full = training_part(parts)
    if val_fraction <= 0:
        return full
    train, val = hold_out(full, val_fraction, seed, spec)
    return train if split == "train" else val


def training_part(parts: dict[str, LabeledImages]) -> LabeledImages:
    """The images a dataset trains on: its train/ split, or all of a tree without splits."""
    return parts["train"] if "train" in parts else parts["all"]


def own_held_out(parts: dict[str, LabeledImages], spec: str | Path) -> LabeledImages:
    """The held-out split a dataset comes with (val/, validation/ or test/; ELPV's test cells)."""
    if "val" not in parts:
        raise DataError(f"{spec}: has no validation split (no val/ or test/ folder); give a fraction with --val-split")
    return parts["val"]


def hold_out(full: LabeledImages, fraction: float, seed: int, spec: str | Path) -> tuple[LabeledImages, LabeledImages]:
    """(the rest, the held-out images): ``fraction`` of every class, a fixed draw by ``seed``."""
    keep, held = stratified_split(full.targets, fraction, seed)
    if not keep or not held:
        raise DataError(f"{spec}: too few images ({len(full)}) to hold out {fraction:.0%} for validation")
    return full.subset(keep), full.subset(held)


def separate_validation(val_spec: str | Path, classes: Sequence[str]) -> LabeledImages:
    """The images of a separate validation dataset: its held-out split if it has one, else all of it."""
    parts = dataset_splits(val_spec, classes)
    return next(parts[key] for key in ("val", "all", "train") if key in parts)


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
        return train, separate_validation(val_spec, train.classes)
    if val_fraction > 0:
        return train, open_dataset(spec, "val", val_fraction, seed, train.classes)
    return train, dataset_splits(spec, train.classes).get("val")
