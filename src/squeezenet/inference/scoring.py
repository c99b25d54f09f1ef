"""The one scoring loop: top-1, top-5, loss, per-class accuracy, confusion and mistakes over batches.

``squeezenet eval`` and the training loop's validation both score through ``score_batches``,
so a figure means the same in a training log and in an evaluation. Top-5 is reported only
for more than five classes: with five or fewer, every label is in the top five.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

TOP_K = 5


@dataclass(frozen=True)
class Mistake:
    """A misclassified image: where to look when accuracy stalls (a wrong label, a look-alike)."""

    path: str
    true: int
    predicted: int
    confidence: float  # the model's probability for its (wrong) answer
    true_probability: float


@dataclass
class Scores:
    """Running sums over scored batches; ``reduce`` adds up the shares of several processes."""

    num_classes: int
    device: torch.device | str = "cpu"
    keep_mistakes: bool = False
    sums: torch.Tensor = field(init=False)  # loss, top-1 hits, top-5 hits, images
    confusion: torch.Tensor = field(init=False)  # rows: true class, columns: predicted class
    skipped: list[str] = field(default_factory=list)
    mistakes: list[Mistake] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64, device=self.device)

    @property
    def has_top5(self) -> bool:
        return self.num_classes > TOP_K

    def update(self, logits: torch.Tensor, targets: torch.Tensor, paths: list[str] | None = None) -> None:
        logits = logits.float()
        targets = targets.to(logits.device)
        top = logits.topk(min(TOP_K, self.num_classes), dim=1).indices
        self.sums[0] += F.cross_entropy(logits, targets, reduction="sum").double()
        self.sums[1] += (top[:, 0] == targets).sum()
        self.sums[2] += (top == targets[:, None]).any(1).sum()
        self.sums[3] += len(targets)
        ones = torch.ones_like(targets, dtype=torch.float64)
        self.confusion.index_put_((targets, top[:, 0]), ones, accumulate=True)
        if self.keep_mistakes and paths is not None:
            self.mistakes += _mistakes(paths, targets, logits)

    def reduce(self, all_reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the counts over processes (``training.distributed.all_reduce_sum``)."""
        all_reduce(self.sums)
        all_reduce(self.confusion)

    @property
    def n(self) -> int:
        return int(self.sums[3].item())

    def _mean(self, i: int) -> float:
        return float(self.sums[i] / max(self.n, 1))

    @property
    def top1(self) -> float:
        return self._mean(1)

    @property
    def top5(self) -> float | None:
        return self._mean(2) if self.has_top5 else None

    @property
    def loss(self) -> float:
        return self._mean(0)

    def confusion_matrix(self) -> torch.Tensor:
        return self.confusion.cpu().round().long()

    def per_class(self) -> list[float | None]:
        """Top-1 of every class (None for a class with no image)."""
        matrix = self.confusion_matrix()
        totals = matrix.sum(1)
        return [float(matrix[i, i] / totals[i]) if totals[i] else None for i in range(self.num_classes)]

    def sorted_mistakes(self) -> list[Mistake]:
        return sorted(self.mistakes, key=lambda m: -m.confidence)


def score_batches(
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable,
    num_classes: int,
    device: torch.device | str = "cpu",
    on_skip: Callable[[str], None] | None = None,
    progress: bool = False,
    keep_mistakes: bool = False,
) -> Scores:
    """Score ``forward(images) -> logits`` on ``batches`` (``data.folders.Batch``: images,
    targets, paths, skipped); unreadable images are counted, reported and left out."""
    scores = Scores(num_classes, device, keep_mistakes)
    for batch in tqdm(batches, disable=not progress, desc="eval", unit="batch", leave=False):
        for message in batch.skipped:
            scores.skipped.append(message)
            if on_skip:
                on_skip(message)
        if batch.paths:
            scores.update(forward(batch.images), batch.targets, batch.paths)
    return scores


def _mistakes(paths: list[str], targets: torch.Tensor, logits: torch.Tensor) -> list[Mistake]:
    probs = logits.softmax(dim=1)
    confidence, predicted = probs.max(dim=1)
    true_probability = probs.gather(1, targets[:, None])[:, 0]
    return [
        Mistake(str(paths[i]), int(targets[i]), int(predicted[i]), float(confidence[i]), float(true_probability[i]))
        for i in (predicted != targets).nonzero()[:, 0].tolist()
    ]
