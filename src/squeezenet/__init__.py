"""squeezenet: the SqueezeNet model family, its pretrained weights, training, compression and deployment.

Data flows one way: ``data`` -> ``models`` -> ``training`` / ``compression`` -> files
(``weights``) -> ``export`` / ``runtime``; ``cli`` is a thin layer over all of them.
"""

from squeezenet.errors import SqueezeNetError
from squeezenet.models import SqueezeNet, create_model, list_models
from squeezenet.weights import load_weights

__version__ = "0.1.0"

__all__ = ["SqueezeNet", "SqueezeNetError", "__version__", "create_model", "list_models", "load_weights"]
