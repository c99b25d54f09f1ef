"""One name resolves to one model: ``build_architecture("squeezenet1_1", num_classes=10)``.

Builders register themselves with ``@register_model``, together with the input side they
are meant for (timm's ``pretrained_cfg`` idea, reduced to the one fact a bare model needs).
Building a model *from weights* is the weights layer's job (``squeezenet.weights``), which
sits above this one: the models never import the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from squeezenet.data.pixels import IMAGENET_CROP
from squeezenet.errors import ModelError

DEFAULT_INPUT_SIZE = IMAGENET_CROP  # what a builder registered without a size is meant for


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., Any]
    input_size: int


_MODELS: dict[str, _Entry] = {}


def register_model(fn: Callable[..., Any] | None = None, *, input_size: int = DEFAULT_INPUT_SIZE):
    """Decorator: register ``fn`` under its own name; a name registered twice is an error
    (a silent overwrite would hide a second definition, as torchvision's registry knows)."""

    def register(builder: Callable[..., Any]) -> Callable[..., Any]:
        name = builder.__name__
        if name in _MODELS:
            raise ModelError(f"model {name!r} is already registered")
        _MODELS[name] = _Entry(builder, input_size)
        return builder

    return register(fn) if fn is not None else register


def list_models() -> list[str]:
    return sorted(_MODELS)


def _entry(name: str) -> _Entry:
    try:
        return _MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def get_builder(name: str) -> Callable[..., Any]:
    return _entry(name).builder


def build_architecture(name: str, **kwargs: Any):
    """Build the registered model ``name`` (random weights; see ``squeezenet.build_architecture``
    for weights)."""
    model = get_builder(name)(**kwargs)
    model.arch = name  # read by default_input_size
    return model


def default_input_size(model_or_name: Any) -> int:
    """The input side a model is meant to run at: the crop of the weights it carries, else
    the size its builder was registered with (224; 227 for the Caffe v1.0). The one place
    that decides it, for info, export, inference and the benchmarks alike."""
    if isinstance(model_or_name, str):
        return _entry(model_or_name).input_size
    info = getattr(model_or_name, "weights_info", None)
    if info is not None:
        return info.preprocessing.crop
    arch = getattr(model_or_name, "arch", None)
    return _entry(arch).input_size if arch in _MODELS else DEFAULT_INPUT_SIZE
