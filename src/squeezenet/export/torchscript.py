"""Export to TorchScript: a traced, frozen module with the metadata in ``_extra_files``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from squeezenet.atomic import atomic_path
from squeezenet.errors import DeployError
from squeezenet.export.common import ExportWrapper, check_output_path, input_size, model_metadata

METADATA_FILE = "squeezenet.json"


def to_torchscript(model: nn.Module, size: int | None = None, freeze: bool = True) -> torch.jit.ScriptModule:
    side = input_size(model, size)
    example = torch.zeros(2, model.in_chans, side, side)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(ExportWrapper(model).eval(), example)
        return torch.jit.freeze(traced.eval()) if freeze else traced


def export_torchscript(model: nn.Module, path: str | Path, size: int | None = None) -> Path:
    path = check_output_path(path)
    module = to_torchscript(model, size)
    extra = {METADATA_FILE: json.dumps(model_metadata(model))}
    with atomic_path(path, DeployError) as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                torch.jit.save(module, str(tmp), _extra_files=extra)
        except RuntimeError as exc:  # torch reports its write failures as RuntimeError
            raise DeployError(f"cannot write {path}: {exc}") from None
    return path


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """-> (module, metadata) of a file written by ``export_torchscript``."""
    extra = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates TorchScript; it still loads
        module = torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
    return module, json.loads(extra[METADATA_FILE] or "{}")
