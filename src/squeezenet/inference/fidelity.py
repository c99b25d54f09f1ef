"""How far one model is from another: top-1 agreement and mean KL divergence on the same images.

A compressed model is judged against the model it compresses, not only against labels: with
a few hundred images one point of top-1 is noise, while the share of images whose predicted
class changes (1 - agreement) and the mean KL divergence ``KL(reference || model)`` of the
predicted distributions measure the change itself, and need no labels at all.

The arithmetic lives in one place: ``fidelity_from_logits`` takes two arrays of logits (and
labels); ``compare`` and ``fidelity_on_dataset`` add up the same sums batch by batch, and the
benchmarks call it (or ``image_divergence``, per image) instead of computing their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from squeezenet.data import collate_skipping_bad
from squeezenet.errors import DataError, ModelError
from squeezenet.inference.evaluate import default_workers, open_eval_dataset
from squeezenet.inference.runner import InferenceRunner


@dataclass
class Fidelity:
    n: int = 0
    agreement: float = 0.0  # share of images whose top-1 class is the reference's
    mean_kl: float = 0.0  # mean KL(reference || model) in nats
    top1: float | None = None  # against labels, when the images have them
    reference_top1: float | None = None
    top5: float | None = None
    reference_top5: float | None = None
    lost: int = 0  # labelled images the reference gets right and the model wrong
    gained: int = 0  # and the other way round: the top-1 change is (gained - lost) / n
    skipped: list[str] = field(default_factory=list)

    @property
    def top1_change_p(self) -> float | None:
        """Two-sided exact McNemar p-value of the top-1 change (with labels): how often a
        model whose changed predictions land right or wrong by a coin toss would differ
        from the reference at least this much on these images."""
        if self.top1 is None:
            return None
        return sign_test_p(self.lost, self.gained)

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "top1_agreement": self.agreement,
            "mean_kl": self.mean_kl,
            "top1": self.top1,
            "reference_top1": self.reference_top1,
            "top5": self.top5,
            "reference_top5": self.reference_top5,
            "top1_lost": self.lost if self.top1 is not None else None,
            "top1_gained": self.gained if self.top1 is not None else None,
            "top1_change_p": self.top1_change_p,
            "skipped": len(self.skipped),
        }

    def summary(self) -> str:
        line = f"top-1 agreement {self.agreement:.2%}, mean KL {self.mean_kl:.4f} nats on {self.n} images"
        if self.top1 is not None and self.reference_top1 is not None:
            line += (f" (top-1 {self.top1:.2%} vs reference {self.reference_top1:.2%}: {self.lost} lost, "
                     f"{self.gained} gained, McNemar p = {self.top1_change_p:.2f})")  # fmt: skip
        return line


def sign_test_p(lost: int, gained: int) -> float:
    """Two-sided exact binomial (sign) test of ``lost`` against ``gained`` at one half each."""
    n = lost + gained
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(lost, gained) + 1)) / 2**n
    return min(1.0, 2 * tail)


def image_divergence(reference_logits, logits) -> tuple[np.ndarray, np.ndarray]:
    """Per image: KL(reference || model) of the softmax predictions in nats, and whether the top-1
    classes agree; for studies that pair images or bootstrap them (``fidelity_from_logits`` gives
    the means)."""
    kl, agree = _divergence(*_logits_pair(reference_logits, logits))
    return kl.cpu().numpy(), agree.cpu().numpy()


def fidelity_from_logits(reference_logits, logits, labels=None) -> Fidelity:
    """Fidelity of ``logits`` to ``reference_logits`` ((images, classes) arrays or tensors) and,
    with ``labels`` (-1: none), the accuracy of both and the images lost and gained."""
    return _Tally.of(reference_logits, logits, labels).result(torch.as_tensor(logits).shape[1], [])


def _logits_pair(reference_logits, logits) -> tuple[torch.Tensor, torch.Tensor]:
    """Both in float64 when either comes so (a study's exact figures), else in float32: what models
    give, and what every loader-scored figure of this project was computed in."""
    reference, model = torch.as_tensor(reference_logits), torch.as_tensor(logits)
    dtype = torch.float64 if torch.float64 in (reference.dtype, model.dtype) else torch.float32
    return reference.to(dtype), model.to(dtype)


def _divergence(reference: torch.Tensor, model: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    log_p, log_q = reference.log_softmax(1), model.log_softmax(1)
    return (log_p.exp() * (log_p - log_q)).sum(1), model.argmax(1) == reference.argmax(1)


@dataclass
class _Tally:
    """Sums over images, so that batches scored one at a time add up to the figures of one array."""

    n: int = 0
    agree: int = 0
    kl: float = 0.0
    labelled: int = 0
    hits: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # top-1 model, reference; top-5 model, reference
    lost: int = 0
    gained: int = 0

    @classmethod
    def of(cls, reference_logits, logits, labels=None) -> _Tally:
        reference, model = _logits_pair(reference_logits, logits)
        kl, agree = _divergence(reference, model)
        out = cls(len(model), int(agree.sum()), float(kl.sum()))
        labels = None if labels is None else torch.as_tensor(labels, device=model.device)
        if labels is not None and len(labels) and int(labels.min()) >= 0:
            out._count_labels(reference, model, labels)
        return out

    def _count_labels(self, reference: torch.Tensor, model: torch.Tensor, labels: torch.Tensor) -> None:
        """Top-1 by ``argmax``, as agreement: tied scores (integer C scores) count alike in both."""
        right = [logits.argmax(1) == labels for logits in (model, reference)]
        k = min(5, model.shape[1])
        top5 = [(logits.topk(k, dim=1).indices == labels[:, None]).any(1) for logits in (model, reference)]
        self.hits = [int(hit.sum()) for hit in (*right, *top5)]
        self.lost, self.gained = int((right[1] & ~right[0]).sum()), int((right[0] & ~right[1]).sum())
        self.labelled = len(labels)

    def __add__(self, other: _Tally) -> _Tally:
        return _Tally(
            self.n + other.n,
            self.agree + other.agree,
            self.kl + other.kl,
            self.labelled + other.labelled,
            [a + b for a, b in zip(self.hits, other.hits, strict=True)],
            self.lost + other.lost,
            self.gained + other.gained,
        )

    def result(self, num_classes: int, skipped: list[str]) -> Fidelity:
        n = max(self.n, 1)
        out = Fidelity(self.n, self.agree / n, self.kl / n, skipped=skipped)
        if self.labelled:
            out.top1, out.reference_top1 = self.hits[0] / self.labelled, self.hits[1] / self.labelled
            out.lost, out.gained = self.lost, self.gained
            if num_classes > 5:
                out.top5, out.reference_top5 = self.hits[2] / self.labelled, self.hits[3] / self.labelled
        return out


def compare(
    model: Callable[[torch.Tensor], torch.Tensor],
    reference: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable,
    num_classes: int,
    progress: bool = False,
) -> Fidelity:
    """Agreement and KL of ``model`` against ``reference`` over ``batches``: image tensors, or
    ``data.folders.Batch`` objects (their labels also give both top-1 and top-5)."""
    sums = _Tally()
    skipped: list[str] = []
    for batch in tqdm(batches, disable=not progress, desc="fidelity", unit="batch", leave=False):
        if isinstance(batch, torch.Tensor):
            images, targets = batch, None
        else:
            skipped += batch.skipped
            if not batch.paths:
                continue
            images, targets = batch.images, batch.targets
        with torch.inference_mode():
            sums += _Tally.of(reference(images), model(images), targets)
    return sums.result(num_classes, skipped)


def check_comparable(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    a, b = model.weights_info, reference.weights_info
    if a.num_classes != b.num_classes:
        raise ModelError(f"the reference has {b.num_classes} classes, the model {a.num_classes}: nothing to compare")
    if a.preprocessing != b.preprocessing:
        raise ModelError("the reference expects other preprocessing than the model: compare models of one input")


def load_reference(source: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    """The model to compare against, checked before any image is scored."""
    from squeezenet.weights import build_model_from_weights

    reference = build_model_from_weights(source)
    check_comparable(model, reference)
    return reference


def fidelity_on_dataset(
    model: torch.nn.Module,
    reference: torch.nn.Module | str | Path,
    data: str | Path,
    split: str = "val",
    batch_size: int = 50,
    workers: int | None = None,
    progress: bool = False,
) -> Fidelity:
    """``compare`` on a dataset that ``squeezenet eval`` reads (the same dataset opening)."""
    if not isinstance(reference, torch.nn.Module):
        reference = load_reference(reference, model)
    check_comparable(model, reference)
    dataset = open_eval_dataset(data, model.weights_info, split)
    workers = default_workers() if workers is None else workers
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skipping_bad)
    result = compare(
        InferenceRunner(model), InferenceRunner(reference), loader, model.weights_info.num_classes, progress
    )
    if result.n == 0:
        raise DataError(f"{data}: no image could be read ({len(result.skipped)} skipped)")
    return result
