"""The project's weights file: safetensors tensors plus self-describing metadata.

The header carries the architecture spec, class names and wnids, preprocessing,
provenance and licence, so the file alone rebuilds a ready classifier. safetensors
never executes code on load and checks every offset before reading.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from squeezenet.atomic import atomic_path
from squeezenet.errors import SqueezeNetError, WeightsError
from squeezenet.weights.info import LoadedWeights, WeightsInfo
from squeezenet.weights.spec_from_shapes import info_from_state_dict

FORMAT_NAME = "squeezenet.weights"
FORMAT_VERSION = "1"


def looks_like_safetensors(head: bytes, file_size: int) -> bool:
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 2 <= header_len <= file_size - 8 and head[8:9] == b"{"


def write_safetensors(weights: LoadedWeights, path: str | Path) -> Path:
    """Written atomically: a half-written file never replaces a good one."""
    path = Path(path)
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **weights.info.to_metadata()}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.state_dict.items()}
    with atomic_path(path, WeightsError) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_safetensors(path: str | Path) -> LoadedWeights:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: corrupted or truncated safetensors file ({exc})") from None
    if metadata.get("format") == FORMAT_NAME:
        try:
            info = WeightsInfo.from_metadata(metadata)
        except (KeyError, ValueError, TypeError, json.JSONDecodeError, SqueezeNetError) as exc:
            raise WeightsError(f"{path}: damaged squeezenet metadata ({exc})") from None
    else:  # a bare safetensors state dict (e.g. converted elsewhere): infer what we can
        info = info_from_state_dict(state, {"source": "safetensors state dict", "file": path.name})
    return LoadedWeights(info, state)


def state_dict_to_loaded(model: torch.nn.Module, info: WeightsInfo) -> LoadedWeights:
    return LoadedWeights(info, {k: v.detach().cpu() for k, v in model.state_dict().items()})
