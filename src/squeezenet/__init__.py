"""squeezenet: the SqueezeNet model family, its pretrained weights, training, compression and deployment.

Layers, each importing only those before it (docs/architecture.md): ``data``, ``models``,
``weights``, ``compression``, ``export``, ``inference``, ``training``, ``benchmarking``,
``serving``, ``cli``; ``runtime`` stands alone (NumPy and Pillow only).

Importing the package costs nothing: the names below load their module (and PyTorch) on
first use, so ``squeezenet --help`` and the PyTorch-free parts never pay for torch
(safetensors' lesson).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squeezenet._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "SqueezeNet": "squeezenet.models.squeezenet",
    "SqueezeNetError": "squeezenet.errors",
    "create_model": "squeezenet.weights.loader",
    "list_models": "squeezenet.models.registry",
    "load_weights": "squeezenet.weights.loader",
}

__all__ = ["SqueezeNet", "SqueezeNetError", "__version__", "create_model", "list_models", "load_weights"]

if TYPE_CHECKING:
    from squeezenet.errors import SqueezeNetError
    from squeezenet.models.registry import list_models
    from squeezenet.models.squeezenet import SqueezeNet
    from squeezenet.weights.loader import create_model, load_weights


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
