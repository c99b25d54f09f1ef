"""One weights loader that dispatches on content (magic bytes), not on file extension."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from squeezenet.errors import ModelError, SqueezeNetError, WeightsError
from squeezenet.models import build_architecture, from_spec, get_builder
from squeezenet.weights.catalog import CATALOG
from squeezenet.weights.deepcompression import looks_like_deepcompression, read_deepcompression
from squeezenet.weights.info import LoadedWeights, WeightsInfo
from squeezenet.weights.project_format import looks_like_safetensors, read_safetensors
from squeezenet.weights.sqz import read_sqz
from squeezenet.weights.sqz_codec import MAGIC as SQZ_MAGIC
from squeezenet.weights.torchvision_ckpt import read_torch_checkpoint

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOLS = tuple(bytes([0x80, p]) for p in range(2, 6))


def detect_format(path: Path) -> str:
    """'sqz', 'safetensors', 'pytorch' or 'deepcompression', from the file's first bytes."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(256)
    if head.startswith(SQZ_MAGIC):
        return "sqz"
    if head.startswith(_ZIP_MAGIC) or head[:2] in _PICKLE_PROTOCOLS:
        return "pytorch"
    if looks_like_safetensors(head, size):
        return "safetensors"
    if looks_like_deepcompression(head, size):
        return "deepcompression"
    raise WeightsError(
        f"{path}: unrecognised weights format (expected .sqz, safetensors, a PyTorch state dict "
        "or a Deep Compression .net file)"
    )


_READERS = {
    "sqz": read_sqz,
    "safetensors": read_safetensors,
    "pytorch": read_torch_checkpoint,
    "deepcompression": read_deepcompression,
}


def resolve_source(source: str | Path) -> Path:
    """A path as given, or the file behind a catalogue tag such as ``squeezenet1_1.tv_in1k``."""
    path = Path(source)
    if not path.exists() and str(source) in CATALOG:
        return CATALOG[str(source)].resolve()
    if not path.exists():
        raise WeightsError(f"{path}: no such weights file (and not a known tag; see 'squeezenet info --weights')")
    if path.is_dir():
        raise WeightsError(f"{path}: is a directory, not a weights file")
    return path


def load_weights(source: str | Path | LoadedWeights) -> LoadedWeights:
    if isinstance(source, LoadedWeights):
        return source
    path = resolve_source(source)
    try:
        return _READERS[detect_format(path)](path)
    except SqueezeNetError:
        raise
    except (ValueError, IndexError, OSError, RuntimeError) as exc:
        raise WeightsError(f"{path}: corrupted weights file ({exc})") from None


def _check_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise WeightsError(f"{what} do not fit this model ({detail})")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise WeightsError(
                f"{what} do not fit this model: {key} is {tuple(state[key].shape)} in the weights, "
                f"{tuple(value.shape)} in the model"
            )


def build_model_from_weights(
    weights: str | Path | LoadedWeights,
    arch: str | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    **kwargs: Any,
):
    """A ready model (eval mode) for ``weights``; ``model.weights_info`` says how to use it, and for a
    ``.sqz`` ``model.stored_codes`` how the file numbers each codebook (``LoadedWeights.stored_codes``).

    ``arch`` may name another registered model whose tensors have the same shapes (for
    example plain ``squeezenet1_0`` for the Caffe weights); anything else is a mismatch.
    """
    loaded = load_weights(weights)
    info = loaded.info
    for name, asked, have in (("classes", num_classes, info.num_classes), ("input channels", in_chans, info.in_chans)):
        if asked is not None and asked != have:
            raise WeightsError(
                f"the weights have {have} {name}, not {asked}; fine-tune to change it (squeezenet train)"
            )
    size_kwargs = {"num_classes": info.num_classes, "in_chans": info.in_chans, **kwargs}
    if arch is None or arch == info.arch:
        model = from_spec(info.spec, **size_kwargs)
    else:
        model = get_builder(arch)(**size_kwargs)
        info = WeightsInfo(**{**info.__dict__, "arch": arch, "spec": model.spec})
    _check_fits(model, loaded.state_dict, f"weights for {loaded.info.arch}")
    model.load_state_dict(loaded.state_dict)
    model.weights_info = info
    model.stored_codes = loaded.stored_codes  # how a .sqz numbers its codebooks (the C export keeps it)
    return model.eval()


def create_model(name: str | None = None, weights: Any = None, **kwargs: Any):
    """The single entry point (timm's ``create_model``): a registered model by ``name``, or a
    ready model from ``weights`` (path, tag or ``LoadedWeights``), whose own architecture is
    used when ``name`` is omitted. ``num_classes`` / ``in_chans`` given with weights must
    agree with them (fine-tuning to a new head is ``squeezenet train``'s job)."""
    if weights is None:
        if name is None:
            raise ModelError("create_model needs a model name or weights")
        return build_architecture(name, **kwargs)
    return build_model_from_weights(weights, arch=name, **kwargs)
