"""Top-1/top-5 evaluation of a model on any dataset the trainer reads, decoding in parallel with the model."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from squeezenet.data import ImageListDataset, build_transform, collate_skipping_bad, scan_class_folders
from squeezenet.data.sources import dataset_splits, has_split_layout
from squeezenet.errors import DataError
from squeezenet.inference.labels import folder_targets
from squeezenet.inference.runner import InferenceRunner
from squeezenet.weights.info import WeightsInfo


@dataclass(frozen=True)
class Mistake:
    """A misclassified image: where to look when accuracy stalls (a wrong label, a look-alike)."""

    path: str
    true: int
    predicted: int
    confidence: float  # the model's probability for its (wrong) answer
    true_probability: float


@dataclass
class EvalResult:
    top1: float
    top5: float
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

    ``per_class`` also fills ``EvalResult.per_class`` (class name -> top-1, for the classes
    present), ``EvalResult.confusion`` (rows: true class, columns: predicted class) and
    ``EvalResult.mistakes`` (every misclassified image, most confident first).
    """
    import time

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
    correct1 = correct5 = seen = 0
    skipped: list[str] = []
    hits = torch.zeros(info.num_classes, dtype=torch.long)
    totals = torch.zeros(info.num_classes, dtype=torch.long)
    confusion = torch.zeros(info.num_classes, info.num_classes, dtype=torch.long) if per_class else None
    mistakes: list[Mistake] = []
    start = time.perf_counter()
    for batch in tqdm(loader, disable=not progress, unit="batch", desc="eval"):
        for message in batch.skipped:
            skipped.append(message)
            if on_skip:
                on_skip(message)
        if not batch.paths:
            continue
        logits = runner(batch.images)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        first = top[:, 0] == batch.targets
        correct1 += int(first.sum())
        correct5 += int((top == batch.targets[:, None]).any(dim=1).sum())
        seen += len(batch.paths)
        totals.index_add_(0, batch.targets, torch.ones_like(batch.targets))
        hits.index_add_(0, batch.targets, first.long())
        if confusion is not None:
            confusion.index_put_((batch.targets, top[:, 0]), torch.ones_like(batch.targets), accumulate=True)
            mistakes += _mistakes(batch.paths, batch.targets, logits)
    seconds = time.perf_counter() - start
    return EvalResult(
        top1=correct1 / seen if seen else 0.0,
        top5=correct5 / seen if seen else 0.0,
        n=seen,
        skipped=skipped,
        seconds=seconds,
        per_class={info.class_name(i): int(hits[i]) / int(totals[i]) for i in range(info.num_classes) if totals[i]}
        if per_class
        else {},
        confusion=confusion.tolist() if confusion is not None else None,
        mistakes=sorted(mistakes, key=lambda m: -m.confidence),
    )


def _mistakes(paths: list[str], targets: torch.Tensor, logits: torch.Tensor) -> list[Mistake]:
    probs = logits.float().softmax(dim=1)
    confidence, predicted = probs.max(dim=1)
    true_probability = probs.gather(1, targets[:, None])[:, 0]
    return [
        Mistake(str(paths[i]), int(targets[i]), int(predicted[i]), float(confidence[i]), float(true_probability[i]))
        for i in (predicted != targets).nonzero()[:, 0].tolist()
    ]
