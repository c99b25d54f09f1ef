"""Training: recipes, the loop (train_one_epoch / evaluate), checkpoints, DDP and metrics.

``train(TrainConfig(data=..., model=...))`` is the Python API; ``squeezenet train`` the CLI.
The names load lazily, so that ``squeezenet.training.config`` (plain data, read by the
command line's parser) comes without PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squeezenet._lazy import lazy_exports

_EXPORTS = {
    "NonFiniteLossError": "squeezenet.errors",
    "TrainingError": "squeezenet.errors",
    "TrainConfig": "squeezenet.training.config",
    "TrainResult": "squeezenet.training.api",
    "train": "squeezenet.training.api",
    "rewrite_update": "squeezenet.training.api",
    "build_model": "squeezenet.training.model_setup",
    "cpu_has_native_bf16": "squeezenet.training.device",
    "find_resume_checkpoint": "squeezenet.training.resume",
}

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "build_model",
    "cpu_has_native_bf16",
    "find_resume_checkpoint",
    "rewrite_update",
    "train",
]

if TYPE_CHECKING:
    from squeezenet.errors import NonFiniteLossError, TrainingError
    from squeezenet.training.api import TrainResult, rewrite_update, train
    from squeezenet.training.config import TrainConfig
    from squeezenet.training.device import cpu_has_native_bf16
    from squeezenet.training.model_setup import build_model
    from squeezenet.training.resume import find_resume_checkpoint


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
