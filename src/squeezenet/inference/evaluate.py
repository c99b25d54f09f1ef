"""Top-1/top-5 evaluation of a model on any dataset the trainer reads, decoding in parallel with the model."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from squeezenet.data import ImageListDataset, build_transform, collate_skipping_bad, scan_class_folders
from squeezenet.data.sources import dataset_splits, has_split_layout
from squeezenet.errors import DataError
from squeezenet.inference.labels import folder_targets
from squeezenet.inference.runner import InferenceRunner
from squeezenet.inference.scoring import Mistake, score_batches
from squeezenet.weights.info import WeightsInfo


@dataclass
class EvalResult:
    top1: float
    top5: float | None  # None for five classes or fewer: every label is then in the top five
    n: int
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    per_class: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] | None = None
    mistakes: list[Mistake] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "n": self.n,
            "skipped": len(self.skipped),
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            **({"per_class": self.per_class} if self.per_class else {}),
        }


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def open_eval_dataset(data: str | Path, info: WeightsInfo, split: str = "val") -> torch.utils.data.Dataset:
    """The images of ``data`` to score, labelled with the model's own class indices.

    A plain tree of class folders is scored whole; ImageNet-validation ``<wnid>/`` folders map
    through the model's wnid list, so any subset of the 1000 classes scores right. A dataset
    that comes with splits (a folder with ``train/`` and ``val/`` or ``test/``, a tar archive
    of one, ``elpv:4`` / ``elpv:2``) is scored on ``split``, by default the held-out one: the
    same images the training run validated on.
    """
    pre = info.preprocessing
    path = Path(str(data))
    if path.is_dir() and not has_split_layout(path):
        if split != "val":
            raise DataError(f"{data}: a tree of class folders has no {split!r} split; it is scored whole")
        folders, samples = scan_class_folders(path)
        targets = folder_targets(folders, info, path)
        return ImageListDataset([(p, targets[name]) for p, name in samples], build_transform(pre), pre.image_mode)
    if not info.classes:
        raise DataError(f"{data}: the model carries no class names to match the dataset's classes against")
    parts = dataset_splits(data, info.classes)
    if "all" in parts:
        part = parts["all"]
    elif split in parts:
        part = parts[split]
    else:
        raise DataError(f"{data}: has no {split!r} split (it has: {', '.join(sorted(parts))})")
    return part.with_transform(build_transform(pre), pre.image_mode)


def evaluate_dataset(
    model: torch.nn.Module,
    data: str | Path,
    split: str = "val",
    batch_size: int = 50,
    workers: int | None = None,
    progress: bool = False,
    on_skip: Callable[[str], None] | None = None,
    per_class: bool = False,
) -> EvalResult:
    """Score ``model`` (which carries ``weights_info``) on ``data`` (see ``open_eval_dataset``).

    The images are scored by ``squeezenet.inference.scoring`` (the loop training validates
    with). ``per_class`` also fills ``EvalResult.per_class`` (class name -> top-1, for the classes
    present), ``EvalResult.confusion`` (rows: true class, columns: predicted class) and
    ``EvalResult.mistakes`` (every misclassified image, most confident first).
    """
    info = model.weights_info
    dataset = open_eval_dataset(data, info, split)
    workers = default_workers() if workers is None else workers
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_skipping_bad,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    runner = InferenceRunner(model)
    start = time.perf_counter()
    scores = score_batches(
        runner, loader, info.num_classes, on_skip=on_skip, progress=progress, keep_mistakes=per_class
    )
    seconds = time.perf_counter() - start
    accuracies = scores.per_class() if per_class else []
    return EvalResult(
        top1=scores.top1,
        top5=scores.top5,
        n=scores.n,
        skipped=scores.skipped,
        seconds=seconds,
        per_class={info.class_name(i): acc for i, acc in enumerate(accuracies) if acc is not None},
        confusion=scores.confusion_matrix().tolist() if per_class else None,
        mistakes=scores.sorted_mistakes(),
    )
