"""Fold BatchNorm into the convolutions before it: a trained BN model becomes a plain SqueezeNet.

BatchNorm speeds up training (the CIFAR-10 benchmark trains with it) but at inference it is
only an affine map per channel, so ``conv -> BN`` equals one convolution with scaled
filters and a new bias. Folding gives the paper's architecture back, with the same
parameter count and cost, so export, ``.sqz``, ONNX and the NumPy runtime need no BN.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from squeezenet.models.fire import Fire
from squeezenet.models.squeezenet import SqueezeNet


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d, target: nn.Conv2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    target.weight.copy_(conv.weight * scale[:, None, None, None])
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    target.bias.copy_((bias - bn.running_mean) * scale + bn.bias)


def _conv_bn_pairs(model: SqueezeNet):
    """(conv, its BatchNorm) for every normalised convolution, in module order."""
    yield model.features[0], model.features[1]
    for module in model.features:
        if isinstance(module, Fire):
            for name in ("squeeze", "expand1x1", "expand3x3", "shortcut"):
                if hasattr(module, name):
                    yield getattr(module, name), getattr(module, name + "_bn")


@torch.no_grad()
def fold_batchnorm(model: SqueezeNet) -> SqueezeNet:
    """A new eval-mode SqueezeNet without BatchNorm computing what ``model.eval()`` computes."""
    if not model.spec.batch_norm:
        return model
    plain = SqueezeNet(
        replace(model.spec, batch_norm=False),
        num_classes=model.num_classes,
        in_chans=model.in_chans,
        dropout=model.classifier[0].p,
    ).eval()
    plain.to(next(model.parameters()).device)
    for (conv, bn), (target, _) in zip(_conv_bn_pairs(model), _conv_bn_pairs(plain), strict=True):
        _fold_into(conv, bn, target)
    plain.final_conv.load_state_dict(model.final_conv.state_dict())
    return plain
