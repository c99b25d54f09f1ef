"""The CPU inference path used by ``predict`` and ``eval``.

channels_last memory format lets oneDNN pick its fastest convolution kernels for
SqueezeNet's many 1x1 convolutions; ``benchmarks/bench_eval.py`` measures it.
"""

from __future__ import annotations

import torch


class InferenceRunner:
    """Callable: a batch of preprocessed images -> logits, on the fastest measured path."""

    def __init__(self, model: torch.nn.Module, channels_last: bool = True) -> None:
        self.model = model.eval()
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.model.check_input(images)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images).float()
