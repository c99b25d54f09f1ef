"""The Fire module: the building block of every SqueezeNet.

A 1x1 "squeeze" convolution cuts the channels that the 3x3 filters see (the paper's
strategy 2), then parallel 1x1 and 3x3 "expand" convolutions are concatenated. The
attribute names match torchvision's ``Fire`` so that state dicts are interchangeable.
"""

from __future__ import annotations

import torch
from torch import nn


class Fire(nn.Module):
    """squeeze 1x1 -> ReLU -> [expand 1x1, expand 3x3] -> ReLU -> concat (+ optional bypass).

    ``shortcut`` is ``None`` (plain Fire), ``"identity"`` (the paper's simple bypass, which
    needs equal input and output channels) or ``"conv"`` (complex bypass: a 1x1 convolution
    maps the input to the output channels). The bypass is added after the concatenation,
    as in the paper's Caffe models, without a ReLU after the sum.

    ``batch_norm`` adds a BatchNorm after each convolution (their biases then go), named
    ``<conv>_bn``; without it those slots are ``nn.Identity`` and the keys are torchvision's.
    """

    def __init__(
        self,
        inplanes: int,
        squeeze_planes: int,
        expand1x1_planes: int,
        expand3x3_planes: int,
        shortcut: str | None = None,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.inplanes = inplanes
        bias = not batch_norm

        def norm(channels: int) -> nn.Module:
            return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1, bias=bias)
        self.squeeze_bn = norm(squeeze_planes)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1, bias=bias)
        self.expand1x1_bn = norm(expand1x1_planes)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1, bias=bias)
        self.expand3x3_bn = norm(expand3x3_planes)
        self.expand3x3_activation = nn.ReLU(inplace=True)
        out_planes = expand1x1_planes + expand3x3_planes
        self.shortcut_kind = shortcut
        if shortcut == "identity":
            if inplanes != out_planes:
                raise ValueError(f"a simple (identity) bypass needs equal channels, got {inplanes} -> {out_planes}")
        elif shortcut == "conv":
            self.shortcut = nn.Conv2d(inplanes, out_planes, kernel_size=1, bias=bias)
            self.shortcut_bn = norm(out_planes)
        elif shortcut is not None:
            raise ValueError(f"unknown shortcut {shortcut!r}: expected None, 'identity' or 'conv'")

    @property
    def out_channels(self) -> int:
        return self.expand1x1.out_channels + self.expand3x3.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_activation(self.squeeze_bn(self.squeeze(x)))
        e1 = self.expand1x1_activation(self.expand1x1_bn(self.expand1x1(s)))
        e3 = self.expand3x3_activation(self.expand3x3_bn(self.expand3x3(s)))
        out = torch.cat([e1, e3], 1)
        if self.shortcut_kind == "identity":
            out = out + x
        elif self.shortcut_kind == "conv":
            out = out + self.shortcut_bn(self.shortcut(x))
        return out
