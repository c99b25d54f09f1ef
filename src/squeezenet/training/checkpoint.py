"""Training checkpoints: atomic, loadable with ``torch.load(weights_only=True)``, bit-exact resume.

A checkpoint holds everything the next step depends on: model, optimizer, scheduler,
grad scaler and EMA states, the RNG states of every rank (python, numpy, torch, CUDA),
and the sampler position (epoch, next micro-batch). RNG states are stored as tensors and
plain Python values so that loading never unpickles arbitrary objects.

Writes are atomic: a temporary file in the same folder is written, flushed, fsynced and
renamed over the old one (then the folder is fsynced), so a crash at any moment, SIGKILL
included, leaves either the old or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from squeezenet.atomic import atomic_path
from squeezenet.errors import TrainingError

FORMAT = "squeezenet.train-checkpoint"
VERSION = 1


def capture_rng_state() -> dict:
    version, keys, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": int(version), "keys": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(k) for k in py["keys"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save through ``squeezenet.atomic``: temp file, fsync, rename, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, TrainingError) as tmp:
        torch.save(obj, tmp)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a torn or foreign file: one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"{path}: not a readable training checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise TrainingError(f"{path}: not a squeezenet training checkpoint")
    if ckpt.get("version", 0) > VERSION:
        raise TrainingError(f"{path}: checkpoint version {ckpt.get('version')} is newer than this squeezenet")
    return ckpt
