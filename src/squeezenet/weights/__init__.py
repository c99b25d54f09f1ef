"""Weights: every supported file format (read and written, ``.sqz`` included), the catalogue
of pretrained weights, one loader that dispatches on content.

Names load lazily (``squeezenet._lazy``): the torch-free parts (``sqz_codec``, ``imagenet``)
can then be imported without PyTorch, by the command line's parser and by the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squeezenet._lazy import lazy_exports

_EXPORTS = {
    "CATALOG": "squeezenet.weights.catalog",
    "PretrainedWeights": "squeezenet.weights.catalog",
    "imagenet_class_names": "squeezenet.weights.imagenet",
    "imagenet_wnids": "squeezenet.weights.imagenet",
    "read_class_list": "squeezenet.weights.imagenet",
    "LoadedWeights": "squeezenet.weights.info",
    "WeightsInfo": "squeezenet.weights.info",
    "build_model_from_weights": "squeezenet.weights.loader",
    "create_model": "squeezenet.weights.loader",
    "detect_format": "squeezenet.weights.loader",
    "load_weights": "squeezenet.weights.loader",
    "read_safetensors": "squeezenet.weights.project_format",
    "state_dict_to_loaded": "squeezenet.weights.project_format",
    "write_safetensors": "squeezenet.weights.project_format",
}

__all__ = [
    "CATALOG",
    "LoadedWeights",
    "PretrainedWeights",
    "WeightsInfo",
    "build_model_from_weights",
    "create_model",
    "detect_format",
    "imagenet_class_names",
    "imagenet_wnids",
    "load_weights",
    "read_class_list",
    "read_safetensors",
    "state_dict_to_loaded",
    "write_safetensors",
]

if TYPE_CHECKING:
    from squeezenet.weights.catalog import CATALOG, PretrainedWeights
    from squeezenet.weights.imagenet import imagenet_class_names, imagenet_wnids, read_class_list
    from squeezenet.weights.info import LoadedWeights, WeightsInfo
    from squeezenet.weights.loader import build_model_from_weights, create_model, detect_format, load_weights
    from squeezenet.weights.project_format import read_safetensors, state_dict_to_loaded, write_safetensors

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
