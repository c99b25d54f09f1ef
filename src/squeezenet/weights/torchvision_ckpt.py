"""torchvision checkpoints: ``.pth`` state dicts from disk, or downloaded, hash-checked and cached.

Nothing is unpickled beyond plain tensors: ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import torch

from squeezenet.atomic import atomic_path
from squeezenet.errors import WeightsError
from squeezenet.weights.info import LoadedWeights
from squeezenet.weights.spec_from_shapes import info_from_state_dict


def cache_dir() -> Path:
    """``$SQUEEZENET_CACHE``, else ``$XDG_CACHE_HOME/squeezenet`` (``~/.cache/squeezenet``)."""
    env = os.environ.get("SQUEEZENET_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "squeezenet"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_cached(url: str, sha256_prefix: str, folder: Path | None = None) -> Path:
    """Fetch ``url`` once into the cache; the SHA-256 must start with ``sha256_prefix``.

    The file is streamed into a temporary file beside its final name (``squeezenet.atomic``)
    and renamed only after its hash matched, so an interrupted or tampered download never
    lands in the cache.
    A cached file is re-hashed on use, so a file corrupted on disk is fetched again.
    """
    folder = folder or cache_dir()
    target = folder / Path(urllib.request.url2pathname(url.rsplit("/", 1)[-1])).name
    if target.is_file() and sha256_of(target).startswith(sha256_prefix):
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the cache folder {folder}: {exc.strerror or exc}") from None
    digest = hashlib.sha256()
    with atomic_path(target, WeightsError) as tmp:
        try:
            with tmp.open("wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            raise WeightsError(f"cannot download {url} ({exc}); are you offline? pass a local file instead") from None
        if not digest.hexdigest().startswith(sha256_prefix):
            raise WeightsError(
                f"{url}: SHA-256 {digest.hexdigest()[:16]}... does not match the expected {sha256_prefix}"
            )
    return target


def read_torch_checkpoint(path: str | Path) -> LoadedWeights:
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe pickles
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: not a loadable PyTorch state dict ({first_line})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # a training checkpoint: take its model
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    info = info_from_state_dict(state, {"source": "PyTorch state dict", "file": path.name, "format": "pytorch"})
    return LoadedWeights(info, state)
