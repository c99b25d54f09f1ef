"""Helpers shared by the exporters: optional imports, output checks, metadata."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeezenet.errors import DeployError
from squeezenet.models import default_input_size


def require(module: str) -> Any:
    """Import an optional dependency or fail with a one-line install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DeployError(
            f"{module} is not installed; install the deploy extra: pip install 'squeezenet[deploy]'"
        ) from None


def check_output_path(path: str | Path) -> Path:
    """Fail early (before any slow work) when ``path`` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise DeployError(f"{path}: is a directory; give a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise DeployError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DeployError(f"cannot write {path}: permission denied")
    return path


class ExportWrapper(nn.Module):
    """The model's forward without its Python input checks (which tracing cannot record)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.features = model.features
        self.classifier = model.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def model_metadata(model: nn.Module) -> dict[str, str]:
    """Flat str -> str metadata: class names, preprocessing, spec (the weights' own metadata)."""
    info = getattr(model, "weights_info", None)
    if info is not None:
        meta = info.to_metadata()
    else:
        meta = {
            "arch": "squeezenet_custom",
            "spec": json.dumps(model.spec.to_dict()),
            "num_classes": str(model.num_classes),
            "in_chans": str(model.in_chans),
        }
    meta["producer"] = "squeezenet"
    return meta


def input_size(model: nn.Module, size: int | None = None) -> int:
    """``size`` if given, else the model's own (``squeezenet.models.default_input_size``)."""
    return size or default_input_size(model)
