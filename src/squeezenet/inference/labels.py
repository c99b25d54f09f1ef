"""Map dataset folder names to the model's own class indices.

An ImageNet-validation folder (``<wnid>/``) may hold any subset of classes: the label of
an image is the index of its wnid in the model's 1000-class list, never its rank among
the folders present. Folders named after classes map through the model's class names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from squeezenet.errors import DataError
from squeezenet.weights.imagenet import imagenet_wnids
from squeezenet.weights.info import WeightsInfo

_WNID = re.compile(r"n\d{8}")


def folder_targets(folders: Sequence[str], info: WeightsInfo, data_dir: str | Path) -> dict[str, int]:
    if all(_WNID.fullmatch(name) for name in folders):
        wnids = info.wnids or (imagenet_wnids() if info.num_classes == 1000 else ())
        if not wnids:
            raise DataError(
                f"{data_dir}: folders are ImageNet wnids but the model has {info.num_classes} classes and no wnid list"
            )
        lookup = {w: i for i, w in enumerate(wnids)}
    else:
        if not info.classes:
            raise DataError(f"{data_dir}: the model carries no class names to match the folder names against")
        lookup = {name: i for i, name in enumerate(info.classes)}
    unknown = [name for name in folders if name not in lookup]
    if unknown:
        raise DataError(f"{data_dir}: {len(unknown)} folder(s) name no class of this model, e.g. {unknown[:3]}")
    return {name: lookup[name] for name in folders}
