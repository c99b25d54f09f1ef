"""Models: the Fire module, the SqueezeNet network, its specs and the registry of variants."""

from squeezenet.models import zoo as _zoo  # noqa: F401  (registers the builders)
from squeezenet.models.fire import Fire
from squeezenet.models.fold import fold_batchnorm
from squeezenet.models.registry import build_architecture, default_input_size, get_builder, list_models, register_model
from squeezenet.models.spec import V1_0, V1_0_CAFFE, V1_1, V1_1_CIFAR, FireSpec, SqueezeNetSpec, design_space
from squeezenet.models.squeezenet import SqueezeNet
from squeezenet.models.zoo import from_spec

__all__ = [
    "V1_0",
    "V1_0_CAFFE",
    "V1_1",
    "V1_1_CIFAR",
    "Fire",
    "FireSpec",
    "SqueezeNet",
    "SqueezeNetSpec",
    "build_architecture",
    "default_input_size",
    "design_space",
    "fold_batchnorm",
    "from_spec",
    "get_builder",
    "list_models",
    "register_model",
]
