"""The ImageNet-1k label space: 1000 wnids and class names in head order, shipped with the package.

The wnids are public WordNet identifiers and their sorted order is the class order of every
ImageNet head (Caffe, torchvision), so an ImageNet-validation folder (``<wnid>/*.JPEG``)
scores right anywhere, with no class list beside it. ``imagenet1k.tsv`` (index, wnid, name)
is written by ``scripts/make_imagenet_classes.py``; ``$SQUEEZENET_IMAGENET_CLASSES`` names
another class list (``index<TAB>wnid<TAB>name`` or one wnid per line) to use instead.
"""

from __future__ import annotations

import os
from functools import cache
from importlib.resources import files
from pathlib import Path

from squeezenet.errors import DataError

PACKAGE_LIST = "imagenet1k.tsv"
ENV_OVERRIDE = "SQUEEZENET_IMAGENET_CLASSES"
NUM_CLASSES = 1000


def parse_class_list(text: str, source: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """-> (wnids, names) from a TSV (index, wnid, name; header optional) or a wnid-per-line text."""
    wnids, names = [], []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split(maxsplit=1)
        if not fields or not fields[0] or fields[0].lower() in ("index", "wnid"):
            continue
        if fields[0].isdigit() and len(fields) >= 2:
            fields = fields[1:]
        wnids.append(fields[0])
        names.append(fields[1] if len(fields) > 1 else fields[0])
    if not wnids:
        raise DataError(f"{source}: class list is empty")
    return tuple(wnids), tuple(names)


def read_class_list(path: str | Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read class list ({exc})") from None
    return parse_class_list(text, str(path))


@cache
def _package_list() -> tuple[tuple[str, ...], tuple[str, ...]]:
    return parse_class_list(files(__package__).joinpath(PACKAGE_LIST).read_text(encoding="utf-8"), PACKAGE_LIST)


def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 class names (torchvision's) in head order."""
    return _package_list()[1]


def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 wnids in head order: ``$SQUEEZENET_IMAGENET_CLASSES`` if set, else the package's."""
    override = os.environ.get(ENV_OVERRIDE)
    if not override:
        return _package_list()[0]
    wnids, _ = read_class_list(override)
    if len(wnids) != NUM_CLASSES:
        raise DataError(f"{override} (${ENV_OVERRIDE}): expected {NUM_CLASSES} ImageNet classes, found {len(wnids)}")
    return wnids
