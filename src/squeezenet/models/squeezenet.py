"""The SqueezeNet network, built from a ``SqueezeNetSpec``.

The module tree (``features``, ``classifier``) and state-dict keys are those of
``torchvision.models.SqueezeNet`` for the same spec, so torchvision checkpoints load
unchanged and outputs match torchvision exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import init

from squeezenet.errors import ModelError
from squeezenet.models.fire import Fire
from squeezenet.models.spec import SqueezeNetSpec


def _max_pool() -> nn.MaxPool2d:
    # Caffe rounds pooled sizes up; torchvision follows it with ceil_mode=True.
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


class BatchNormReLU(nn.BatchNorm2d):
    """conv1's BatchNorm and ReLU in the ReLU's slot (``features.1``), so fire indices stay put."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


class SqueezeNet(nn.Module):
    """SqueezeNet for ``num_classes`` classes and ``in_chans`` input channels.

    ``forward`` returns logits of shape ``(N, num_classes)``: the class scores after
    conv10, ReLU and global average pooling, as in the paper (there is no linear layer).
    """

    def __init__(
        self,
        spec: SqueezeNetSpec,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_classes < 1 or in_chans < 1:
            raise ModelError(f"num_classes and in_chans must be positive, got {num_classes}, {in_chans}")
        if not 0.0 <= dropout < 1.0:
            raise ModelError(f"dropout must lie in [0, 1), got {dropout}")
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.min_input_size = spec.min_input_size
        self.features = self._make_features(spec, in_chans)
        final_conv = nn.Conv2d(spec.fires[-1].out_channels, num_classes, kernel_size=1, padding=spec.classifier_padding)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )
        self.reset_parameters()

    @property
    def final_conv(self) -> nn.Conv2d:
        """conv10, the classifier: one 1x1 filter per class (the paper has no linear layer)."""
        return self.classifier[1]

    @staticmethod
    def _make_features(spec: SqueezeNetSpec, in_chans: int) -> nn.Sequential:
        stem = nn.Conv2d(
            in_chans,
            spec.stem_channels,
            kernel_size=spec.stem_kernel,
            stride=spec.stem_stride,
            padding=spec.stem_padding,
            bias=not spec.batch_norm,
        )
        layers: list[nn.Module] = [
            stem,
            BatchNormReLU(spec.stem_channels) if spec.batch_norm else nn.ReLU(inplace=True),
            _max_pool() if spec.stem_pool else nn.Identity(),
        ]
        shortcuts = spec.shortcuts or ("",) * len(spec.fires)
        for i, (fire, cin, shortcut) in enumerate(zip(spec.fires, spec.fire_in_channels(), shortcuts, strict=True)):
            layers.append(
                Fire(cin, fire.squeeze, fire.expand1x1, fire.expand3x3, shortcut or None, batch_norm=spec.batch_norm)
            )
            if i in spec.pool_after:
                layers.append(_max_pool())
        return nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        """torchvision's initialisation: Kaiming-uniform convolutions, conv10 from N(0, 0.01).

        Not on the meta device (a model built only for its shapes, as a .sqz reader does): there
        it initialises nothing, and ``normal_`` on meta tensors imports torch._dynamo (2-10 s)."""
        if self.final_conv.weight.is_meta:
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if module is self.final_conv:
                    init.normal_(module.weight, mean=0.0, std=0.01)
                else:
                    init.kaiming_uniform_(module.weight)
                if module.bias is not None:
                    init.constant_(module.bias, 0)

    def check_input(self, x: torch.Tensor) -> None:
        """Fail with a clear message instead of a cryptic pooling error deep inside."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ModelError(f"expected input of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_input_size:
            raise ModelError(
                f"input {tuple(x.shape[-2:])} is smaller than this model's minimum of "
                f"{self.min_input_size}x{self.min_input_size} pixels"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.features(x)
        x = self.classifier(x)
        return torch.flatten(x, 1)
