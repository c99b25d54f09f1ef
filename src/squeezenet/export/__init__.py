"""Deployment: ONNX and TorchScript export, int8 quantization, benchmarks.

onnx and onnxruntime are the optional ``deploy`` extra; every module here imports them
lazily and raises ``DeployError`` with an install hint when they are missing.
"""

from squeezenet.errors import DeployError
from squeezenet.export.common import require

__all__ = ["DeployError", "require"]
