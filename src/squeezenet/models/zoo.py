"""The published SqueezeNet variants, one builder each (the names of the registry)."""

from __future__ import annotations

import inspect
from typing import Any

from squeezenet.errors import ModelError
from squeezenet.models.registry import register_model
from squeezenet.models.spec import V1_0, V1_0_CAFFE, V1_1, V1_1_CIFAR, SqueezeNetSpec, design_space
from squeezenet.models.squeezenet import SqueezeNet

# the options every builder passes on to SqueezeNet, and the design-space metaparameters
_MODEL_OPTIONS = tuple(name for name in inspect.signature(SqueezeNet).parameters if name != "spec")
_DESIGN_KEYS = tuple(inspect.signature(design_space).parameters)


def _build(spec: SqueezeNetSpec, bypass: str = "none", accepted: tuple[str, ...] = (), **kwargs: Any) -> SqueezeNet:
    """``accepted``: the builder's own options, named beside SqueezeNet's when an unknown
    one is given (``--model-arg`` is free text)."""
    unknown = sorted(set(kwargs) - set(_MODEL_OPTIONS))
    if unknown:
        options = ", ".join((*_MODEL_OPTIONS, *accepted))
        raise ModelError(f"unknown model option(s) {', '.join(unknown)}; this model takes: {options}")
    return SqueezeNet(spec.with_bypass(bypass) if bypass != "none" else spec, **kwargs)


@register_model
def squeezenet1_0(**kwargs: Any) -> SqueezeNet:
    """SqueezeNet v1.0 as in torchvision (paper Table 1; 1,248,424 parameters)."""
    return _build(V1_0, **kwargs)


@register_model
def squeezenet1_1(**kwargs: Any) -> SqueezeNet:
    """SqueezeNet v1.1: 3x3 conv1 with 64 filters and earlier pooling, 2.4x fewer MACs."""
    return _build(V1_1, **kwargs)


@register_model(input_size=227)
def squeezenet1_0_caffe(**kwargs: Any) -> SqueezeNet:
    """v1.0 exactly as the original Caffe prototxt: conv10 has ``pad: 1``."""
    return _build(V1_0_CAFFE, **kwargs)


@register_model
def squeezenet1_0_simple_bypass(**kwargs: Any) -> SqueezeNet:
    """v1.0 with identity shortcuts around fire3, 5, 7, 9 (paper Fig. 2, middle)."""
    return _build(V1_0, bypass="simple", **kwargs)


@register_model
def squeezenet1_0_complex_bypass(**kwargs: Any) -> SqueezeNet:
    """v1.0 with simple bypass plus 1x1-conv shortcuts around fire2, 4, 6, 8 (Fig. 2, right)."""
    return _build(V1_0, bypass="complex", **kwargs)


@register_model
def squeezenet1_1_simple_bypass(**kwargs: Any) -> SqueezeNet:
    """v1.1 with identity shortcuts around fire3, 5, 7, 9 (the paper's simple bypass on v1.1)."""
    return _build(V1_1, bypass="simple", **kwargs)


@register_model
def squeezenet1_1_complex_bypass(**kwargs: Any) -> SqueezeNet:
    """v1.1 with simple bypass plus 1x1-conv shortcuts around fire2, 4, 6, 8."""
    return _build(V1_1, bypass="complex", **kwargs)


@register_model(input_size=32)
def squeezenet_cifar(**kwargs: Any) -> SqueezeNet:
    """v1.1 for 32-pixel images (CIFAR-10): stride-1 stem, no stem pool, BatchNorm, simple bypass.

    Pools after fire2 and fire5 (32 -> 16 -> 8 px); ``spec.V1_1_CIFAR`` says why."""
    return _build(V1_1_CIFAR, **kwargs)


@register_model
def squeezenet_design(bypass: str = "none", **kwargs: Any) -> SqueezeNet:
    """Any point of the paper's design space: base_e, incr_e, pct3x3, freq, sr (Section 5)."""
    design = {k: kwargs.pop(k) for k in _DESIGN_KEYS if k in kwargs}
    return _build(design_space(**design), bypass=bypass, accepted=("bypass", *_DESIGN_KEYS), **kwargs)


def from_spec(spec: SqueezeNetSpec | dict, **kwargs: Any) -> SqueezeNet:
    """Rebuild a model from the spec stored in a weights file."""
    if isinstance(spec, dict):
        spec = SqueezeNetSpec.from_dict(spec)
    return SqueezeNet(spec, **kwargs)
