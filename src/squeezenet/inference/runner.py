"""The CPU inference path used by ``predict`` and ``eval``.

Backends, measured by ``squeezenet bench`` / ``benchmarks/bench_deploy.py``:

- ``onnxruntime``: the model exported to ONNX in memory, with a dynamic batch and the
  input size fixed (one session per size seen, normally just the preprocessing's crop;
  fixed sizes let ONNX Runtime specialise its blocked convolution kernels), its Fire
  modules' Concat nodes rewritten away (``export.concat_free``: no copy of the expand
  outputs), run with all graph optimizations and one thread per PyTorch thread. Fastest
  of the measured paths at batch 1 and batch 32 for v1.0 and v1.1.
- ``torch``: eager PyTorch in channels_last memory format (oneDNN's fastest convolution
  kernels for SqueezeNet's many 1x1 convolutions); the fallback when onnxruntime is not
  installed. TorchScript freezing / ``optimize_for_inference`` and ``torch.compile`` were
  measured too and were not faster on CPU.

``auto`` (the default) picks ``onnxruntime`` when it is importable, else ``torch``; the
environment variable ``SQUEEZENET_BACKEND`` overrides the choice. Every backend returns
the same logits as eager PyTorch within 1e-4.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from squeezenet.errors import ModelError
from squeezenet.export.concat_free import split_concats
from squeezenet.export.onnx import onnx_bytes, ort_session
from squeezenet.models import default_input_size

BACKENDS = ("auto", "onnxruntime", "torch")


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def resolve_backend(backend: str | None = None) -> str:
    backend = backend or os.environ.get("SQUEEZENET_BACKEND") or "auto"
    if backend not in BACKENDS:
        raise ModelError(f"unknown inference backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "onnxruntime" if onnxruntime_available() else "torch"
    return backend


class InferenceRunner:
    """Callable: a batch of preprocessed images -> logits, on the fastest measured path."""

    def __init__(
        self,
        model: torch.nn.Module,
        channels_last: bool = True,
        backend: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.channels_last = channels_last
        requested = backend or os.environ.get("SQUEEZENET_BACKEND") or "auto"
        self.backend = resolve_backend(requested)
        self._threads = threads or torch.get_num_threads()
        self._sessions: dict[tuple[int, int], object] = {}
        if self.backend == "onnxruntime":
            side = default_input_size(model)
            try:
                self._session_for((side, side))
            except Exception:
                if requested != "auto":
                    raise
                self.backend = "torch"  # e.g. an exotic model the exporter cannot take
        if self.backend == "torch" and channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def _session_for(self, hw: tuple[int, int]):
        """The ONNX Runtime session for inputs of height x width ``hw``, built once."""
        if hw not in self._sessions:
            square = hw[0] == hw[1]
            data = onnx_bytes(self.model, size=hw[0] if square else None, dynamic_hw=not square, metadata=False)
            self._sessions[hw] = ort_session(split_concats(data), threads=self._threads)
        return self._sessions[hw]

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.model.check_input(images)
        if self.backend == "onnxruntime":
            session = self._session_for(tuple(images.shape[-2:]))
            array = images.detach().to("cpu", torch.float32).contiguous().numpy()
            return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: array})[0])
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images).float()
