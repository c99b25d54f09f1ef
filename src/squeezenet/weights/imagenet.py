"""The ImageNet-1k label space: class names (shipped by torchvision) and wnids.

The wnids are not shipped with the package; they come from a class list file
(``index<TAB>wnid<TAB>name`` or one wnid per line). ``find_class_list`` looks for
``imagenet_classes.tsv`` where a data set usually keeps it, so that evaluation on an
ImageNet-validation folder works without extra flags.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from squeezenet.errors import DataError

CLASS_LIST_NAME = "imagenet_classes.tsv"


def imagenet_class_names() -> tuple[str, ...]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)


def read_class_list(path: str | Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """-> (wnids, names) from a TSV (index, wnid, name; header optional) or a wnid-per-line file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read class list ({exc})") from None
    wnids, names = [], []
    for line in lines:
        fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split(maxsplit=1)
        if not fields or not fields[0] or fields[0].lower() in ("index", "wnid"):
            continue
        if fields[0].isdigit() and len(fields) >= 2:
            fields = fields[1:]
        wnids.append(fields[0])
        names.append(fields[1] if len(fields) > 1 else fields[0])
    if not wnids:
        raise DataError(f"{path}: class list is empty")
    return tuple(wnids), tuple(names)


def find_class_list(near: Iterable[str | Path] = ()) -> Path | None:
    """``$SQUEEZENET_IMAGENET_CLASSES``, else ``imagenet_classes.tsv`` beside or above ``near``."""
    env = os.environ.get("SQUEEZENET_IMAGENET_CLASSES")
    if env:
        return Path(env)
    for raw in near:
        path = Path(raw).resolve()
        for folder in (path, path.parent, path.parent.parent):
            candidate = folder / CLASS_LIST_NAME
            if candidate.is_file():
                return candidate
    return None


def imagenet_wnids(near: Iterable[str | Path] = ()) -> tuple[str, ...]:
    """The 1000 wnids in class-index order, or () when no class list can be found."""
    found = find_class_list(near)
    if found is None:
        return ()
    wnids, _ = read_class_list(found)
    if len(wnids) != 1000:
        raise DataError(f"{found}: expected 1000 ImageNet classes, found {len(wnids)}")
    return wnids
