"""Training: recipes, the loop (train_one_epoch / evaluate), checkpoints, DDP and metrics.

``train(TrainConfig(data=..., model=...))`` is the Python API; ``squeezenet train`` the CLI.
"""

from squeezenet.training.api import TrainResult, build_model, train
from squeezenet.training.config import TrainConfig
from squeezenet.training.errors import NonFiniteLossError, TrainingError

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "TrainingError", "build_model", "train"]
