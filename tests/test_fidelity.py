"""Paired fidelity figures: agreement, KL and the top-1 change counted image by image."""

from __future__ import annotations

import pytest
import torch

from squeezenet.data.folders import Batch
from squeezenet.inference.fidelity import compare, sign_test_p


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
