"""Per-layer table like the paper's Table 1: output shape, Fire sizes, parameters, MACs.

Computed by running the real model once on a dummy input with forward hooks, so the
table can never disagree with the code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from squeezenet.models.fire import Fire
from squeezenet.models.registry import default_input_size
from squeezenet.models.squeezenet import SqueezeNet


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, int, int]
    squeeze1x1: int | None
    expand1x1: int | None
    expand3x3: int | None
    params: int
    macs: int


def _conv_macs(conv: nn.Conv2d, output: torch.Tensor) -> int:
    per_output = (conv.in_channels // conv.groups) * conv.kernel_size[0] * conv.kernel_size[1]
    return int(output.numel()) * per_output


def _layer_names(model: SqueezeNet) -> list[tuple[str, nn.Module]]:
    """Paper names: conv1, maxpool1, fire2..fire9, maxpool4/8 (after fire4/8), conv10, avgpool10."""
    named, fire_number, last = [], 1, "conv1"
    for module in model.features:
        if isinstance(module, nn.Conv2d):
            named.append(("conv1", module))
        elif isinstance(module, nn.MaxPool2d):
            named.append((f"maxpool{last.removeprefix('conv').removeprefix('fire')}", module))
        elif isinstance(module, Fire):
            fire_number += 1
            last = f"fire{fire_number}"
            named.append((last, module))
    conv10 = f"conv{fire_number + 1}"
    named.append((conv10, model.final_conv))
    named.append((f"avgpool{fire_number + 1}", model.classifier[3]))
    return named


def layer_table(model: SqueezeNet, size: int | None = None) -> list[LayerRow]:
    """One row per paper layer at input side ``size`` (default: the model's own)."""
    size = size or default_input_size(model)
    rows: list[LayerRow] = []
    macs: dict[nn.Module, int] = {}
    outputs: dict[nn.Module, torch.Tensor] = {}

    def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        macs[module] = _conv_macs(module, output)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    named = _layer_names(model)
    hooks += [m.register_forward_hook(lambda mod, _i, out: outputs.__setitem__(mod, out)) for _, m in named]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, model.in_chans, size, size))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    for name, module in named:
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        is_fire = isinstance(module, Fire)
        rows.append(
            LayerRow(
                name=name,
                kind=type(module).__name__,
                output_shape=tuple(outputs[module].shape[1:]),
                squeeze1x1=module.squeeze.out_channels if is_fire else None,
                expand1x1=module.expand1x1.out_channels if is_fire else None,
                expand3x3=module.expand3x3.out_channels if is_fire else None,
                params=sum(p.numel() for p in module.parameters()),
                macs=sum(macs.get(m, 0) for m in convs),
            )
        )
    return rows


def totals(rows: list[LayerRow]) -> dict[str, int]:
    return {"params": sum(r.params for r in rows), "macs": sum(r.macs for r in rows)}


def rows_as_dicts(rows: list[LayerRow]) -> list[dict]:
    return [asdict(r) for r in rows]
