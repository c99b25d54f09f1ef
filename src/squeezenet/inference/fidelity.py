"""How far one model is from another: top-1 agreement and mean KL divergence on the same images.

A compressed model is judged against the model it compresses, not only against labels: with
a few hundred images one point of top-1 is noise, while the share of images whose predicted
class changes (1 - agreement) and the mean KL divergence ``KL(reference || model)`` of the
predicted distributions measure the change itself, and need no labels at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

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


class _Sums:
    def __init__(self) -> None:
        self.n = self.agree = 0
        self.kl = 0.0
        self.labelled = 0
        self.hits = [0, 0, 0, 0]  # model top-1, reference top-1, model top-5, reference top-5
        self.lost = self.gained = 0

    def update(self, logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor | None) -> None:
        logits, ref_logits = logits.float(), ref_logits.float()
        log_p = ref_logits.log_softmax(1)
        log_q = logits.log_softmax(1)
        self.kl += float((log_p.exp() * (log_p - log_q)).sum(1).sum())
        self.agree += int((logits.argmax(1) == ref_logits.argmax(1)).sum())
        self.n += len(logits)
        if targets is not None and len(targets) and int(targets.min()) >= 0:
            k = min(5, logits.shape[1])
            right = []
            for i, lg in enumerate((logits, ref_logits)):
                top = lg.topk(k, dim=1).indices
                right.append(top[:, 0] == targets)
                self.hits[i] += int(right[-1].sum())
                self.hits[2 + i] += int((top == targets[:, None]).any(1).sum())
            self.lost += int((right[1] & ~right[0]).sum())
            self.gained += int((right[0] & ~right[1]).sum())
            self.labelled += len(targets)

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
    sums = _Sums()
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
            sums.update(model(images), reference(images), targets)
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
