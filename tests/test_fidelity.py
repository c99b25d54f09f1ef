"""Paired fidelity figures: agreement, KL and the top-1 change counted image by image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from squeezenet.data.folders import Batch
from squeezenet.inference.fidelity import compare, fidelity_from_logits, image_divergence, sign_test_p


def _one_hot_logits(classes: list[int], num_classes: int = 10) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), num_classes).float() * 5


def test_top1_change_is_counted_per_image():
    labels = [0, 1, 2, 3, 4, 5]
    reference = [0, 1, 2, 9, 9, 5]  # right on 0, 1, 2, 5
    model = [0, 9, 2, 3, 9, 6]  # loses 1 and 5, gains 3
    batch = Batch(torch.arange(6.0)[:, None], torch.tensor(labels), [f"{i}.png" for i in range(6)])
    result = compare(
        lambda x: _one_hot_logits(model)[x[:, 0].long()],
        lambda x: _one_hot_logits(reference)[x[:, 0].long()],
        [batch],
        10,
    )
    assert (result.n, result.lost, result.gained) == (6, 2, 1)
    assert result.agreement == pytest.approx(3 / 6)
    assert result.top1 - result.reference_top1 == pytest.approx((result.gained - result.lost) / 6)
    assert result.top1_change_p == pytest.approx(1.0)
    assert "2 lost, 1 gained, McNemar p = 1.00" in result.summary()
    d = result.to_dict()
    assert (d["top1_lost"], d["top1_gained"]) == (2, 1)


def test_without_labels_there_is_no_top1_change():
    images = torch.zeros(3, 1)
    result = compare(lambda x: torch.randn(3, 4), lambda x: torch.randn(3, 4), [images], 4)
    assert result.top1 is None and result.top1_change_p is None
    assert result.to_dict()["top1_lost"] is None and "McNemar" not in result.summary()


def test_sign_test_against_hand_computed_values():
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(5, 0) == pytest.approx(2 / 32) == sign_test_p(0, 5)
    # 9 lost, 6 gained: 2 * P(X <= 6), X ~ Binomial(15, 1/2)
    assert sign_test_p(9, 6) == pytest.approx(2 * (1 + 15 + 105 + 455 + 1365 + 3003 + 5005) / 2**15)
    assert sign_test_p(7, 7) == 1.0


def test_logits_and_batches_of_images_give_the_same_figures():
    """The benchmarks' path (two arrays of logits) and the loaders' (batch by batch) are one sum."""
    gen = torch.Generator().manual_seed(0)
    reference, model = torch.randn(40, 10, generator=gen), torch.randn(40, 10, generator=gen)
    labels = torch.randint(0, 10, (40,), generator=gen)
    whole = fidelity_from_logits(reference.numpy(), model.numpy(), labels.numpy())
    batches = [Batch(torch.arange(i, i + 8.0)[:, None], labels[i : i + 8], ["x.png"] * 8) for i in range(0, 40, 8)]
    batched = compare(lambda x: model[x[:, 0].long()], lambda x: reference[x[:, 0].long()], batches, 10)
    assert whole.mean_kl == pytest.approx(batched.mean_kl, rel=1e-6)
    assert {**whole.to_dict(), "mean_kl": 0} == {**batched.to_dict(), "mean_kl": 0}
    assert whole.top5 is not None and whole.lost + whole.gained > 0
    kl, agree = image_divergence(reference.double().numpy(), model.double().numpy())
    assert kl.dtype == np.float64 and kl.mean() == pytest.approx(whole.mean_kl, rel=1e-6)
    assert agree.mean() == whole.agreement


def test_identical_logits_have_no_divergence_and_unlabelled_images_no_accuracy():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]], np.float32)
    result = fidelity_from_logits(logits, logits, np.array([-1, -1]))
    assert (result.n, result.agreement, result.mean_kl, result.top1) == (2, 1.0, 0.0, None)
