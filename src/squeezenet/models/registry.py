"""One name resolves to one model: ``create_model("squeezenet1_1", num_classes=10)``.

Builders register themselves with ``@register_model``; ``create_model`` also accepts
weights (a path or a catalogue tag) and then takes architecture and class count from
them, checking them against what the caller asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from squeezenet.errors import ModelError

_MODELS: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_builder(name: str) -> Callable[..., Any]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def create_model(name: str | None = None, weights: Any = None, **kwargs: Any):
    """Build a registered model, optionally with weights (path, tag or ``LoadedWeights``).

    With weights and no name, the weights' own architecture is used. ``num_classes`` and
    ``in_chans`` given together with weights must agree with them (fine-tuning with a new
    head is the training engine's job, which replaces the head explicitly).
    """
    if weights is None:
        if name is None:
            raise ModelError("create_model needs a model name or weights")
        return get_builder(name)(**kwargs)
    from squeezenet.weights import build_model_from_weights

    return build_model_from_weights(weights, arch=name, **kwargs)
