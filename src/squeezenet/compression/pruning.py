"""Magnitude pruning (Deep Compression, stage 1): masks and per-layer densities.

Training is not done here: ``iterative_prune`` raises the sparsity in rounds and calls a
``train_fn(model, masks)`` callback after each (for example the project's training engine),
while ``MaskKeeper`` holds pruned weights at zero through the optimiser's steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from squeezenet.errors import ModelError

# Densities measured on the Deep Compression release (shared README), in convolution order:
# conv1; fire2..fire9 (squeeze 1x1, expand 1x1, expand 3x3); conv_final.
PAPER_DENSITIES: tuple[float, ...] = (
    13902 / 14112,
    1528 / 1536, 1020 / 1024, 3039 / 9216,
    2038 / 2048, 1023 / 1024, 3039 / 9216,
    4085 / 4096, 4071 / 4096, 12156 / 36864,
    8160 / 8192, 4067 / 4096, 12147 / 36864,
    12161 / 12288, 4602 / 9216, 27325 / 82944,
    9205 / 18432, 9129 / 9216, 27336 / 82944,
    24388 / 24576, 8187 / 16384, 44144 / 147456,
    16370 / 32768, 16303 / 16384, 44173 / 147456,
    102323 / 512000,
)  # fmt: skip


def prunable(model_or_state) -> list[str]:
    """Names of the convolution / linear weights (rank >= 2) in state-dict order."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    return [k for k, v in state.items() if k.endswith("weight") and v.dim() >= 2]


def resolve_densities(model_or_state, densities) -> dict[str, float]:
    """``densities``: None (1.0), a float for all layers, 'paper', a dict or a sequence in layer order."""
    names = prunable(model_or_state)
    if densities is None:
        return dict.fromkeys(names, 1.0)
    if isinstance(densities, str):
        if densities != "paper":
            raise ModelError(f"unknown density preset {densities!r} (expected 'paper')")
        densities = PAPER_DENSITIES
        if len(names) != len(densities):
            raise ModelError(f"the paper densities fit 26 convolutions, this model has {len(names)}")
    if isinstance(densities, int | float):
        densities = dict.fromkeys(names, float(densities))
    if not isinstance(densities, dict):
        densities = dict(zip(names, densities, strict=True))
    unknown = [k for k in densities if k not in names]
    if unknown:
        raise ModelError(f"no prunable layer named {unknown[0]!r}")
    out = {k: float(densities.get(k, 1.0)) for k in names}
    for k, d in out.items():
        if not 0.0 < d <= 1.0:
            raise ModelError(f"density of {k} must be in (0, 1], got {d}")
    return out


def magnitude_mask(weight: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (at least one)."""
    n = weight.numel()
    keep = max(1, round(density * n))
    if keep >= n:
        return weight != 0 if density < 1.0 else torch.ones_like(weight, dtype=torch.bool)
    threshold = weight.abs().flatten().kthvalue(n - keep).values
    return weight.abs() > threshold


def magnitude_masks(model: torch.nn.Module, densities) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    return {k: magnitude_mask(state[k], d) for k, d in resolve_densities(model, densities).items() if d < 1.0}


@torch.no_grad()
def apply_masks(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for k, m in masks.items():
        params[k].mul_(m.to(params[k].dtype))


class MaskKeeper:
    """Keeps pruned weights at zero while a training loop runs (fixed masks, as in the paper).

    Zeroes the gradients of pruned entries (hook) and re-applies the masks after each
    optimiser step (call ``keeper.step()``, or use ``keeper.wrap(optimizer)``). ``remove()``
    detaches the hooks.
    """

    def __init__(self, model: torch.nn.Module, masks: dict[str, torch.Tensor]):
        self.model = model
        self.masks = masks
        params = dict(model.named_parameters())
        self._handles = [params[k].register_hook(lambda g, m=m: g * m.to(g.dtype)) for k, m in masks.items()]
        apply_masks(model, masks)

    def step(self) -> None:
        apply_masks(self.model, self.masks)

    def wrap(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        optimizer.register_step_post_hook(lambda *_: self.step())
        return optimizer

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def iterative_prune(
    model: torch.nn.Module,
    densities,
    train_fn: Callable[[torch.nn.Module, MaskKeeper], None] | None = None,
    rounds: int = 3,
) -> dict[str, torch.Tensor]:
    """Prune to ``densities`` in ``rounds`` geometric steps, retraining with fixed masks in between.

    ``train_fn(model, keeper)`` is the hook for a training engine: it must keep the masks
    (call ``keeper.step()`` after optimiser steps or ``keeper.wrap(optimizer)``). Without it
    this is one-shot magnitude pruning. Returns the final masks.
    """
    target = resolve_densities(model, densities)
    masks: dict[str, torch.Tensor] = {}
    for r in range(1, max(1, rounds) + 1):
        step = {k: d ** (r / max(1, rounds)) for k, d in target.items()}
        masks = magnitude_masks(model, step)
        keeper = MaskKeeper(model, masks)
        try:
            if train_fn is not None:
                train_fn(model, keeper)
                keeper.step()
        finally:
            keeper.remove()
    return masks
