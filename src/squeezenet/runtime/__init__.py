"""Inference without PyTorch: ``numpy_runtime.py`` is one self-contained file (NumPy + Pillow).

Import it as ``squeezenet.runtime.numpy_runtime`` inside the project, or copy the file
anywhere and run ``python numpy_runtime.py weights.safetensors image.jpg``.
"""

from squeezenet.runtime.numpy_runtime import RuntimeFailure, SqueezeNetNumpy, read_safetensors, read_weights

__all__ = ["RuntimeFailure", "SqueezeNetNumpy", "read_safetensors", "read_weights"]
