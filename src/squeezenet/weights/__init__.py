"""Weights: every supported file format, the catalogue of pretrained weights, one loader."""

from squeezenet.weights.catalog import CATALOG, PretrainedWeights, data_root, list_pretrained
from squeezenet.weights.imagenet import imagenet_class_names, imagenet_wnids, read_class_list
from squeezenet.weights.info import LoadedWeights, WeightsInfo
from squeezenet.weights.loader import build_model_from_weights, create_model, detect_format, load_weights
from squeezenet.weights.project_format import read_safetensors, state_dict_to_loaded, write_safetensors

__all__ = [
    "CATALOG",
    "LoadedWeights",
    "PretrainedWeights",
    "WeightsInfo",
    "build_model_from_weights",
    "create_model",
    "data_root",
    "detect_format",
    "imagenet_class_names",
    "imagenet_wnids",
    "list_pretrained",
    "load_weights",
    "read_class_list",
    "read_safetensors",
    "state_dict_to_loaded",
    "write_safetensors",
]
