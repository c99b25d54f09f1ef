"""Top-1/top-5 evaluation of a model on an image folder, decoding in parallel with the model."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from squeezenet.data import ImageListDataset, build_transform, collate_skipping_bad, scan_class_folders
from squeezenet.inference.labels import folder_targets
from squeezenet.inference.runner import InferenceRunner


@dataclass
class EvalResult:
    top1: float
    top5: float
    n: int
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    per_class: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] | None = None

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


def evaluate_folder(
    model: torch.nn.Module,
    data_dir: str | Path,
    batch_size: int = 50,
    workers: int | None = None,
    progress: bool = False,
    on_skip: Callable[[str], None] | None = None,
    per_class: bool = False,
) -> EvalResult:
    """Score ``model`` (which carries ``weights_info``) on ``data_dir/<class>/<image>``.

    ``per_class`` also fills ``EvalResult.per_class`` (class name -> top-1, for the classes
    present) and ``EvalResult.confusion`` (rows: true class, columns: predicted class).
    """
    import time

    info = model.weights_info
    folders, samples = scan_class_folders(data_dir)
    targets = folder_targets(folders, info, data_dir)
    dataset = ImageListDataset(
        [(path, targets[name]) for path, name in samples],
        build_transform(info.preprocessing),
        info.preprocessing.image_mode,
    )
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
    )
