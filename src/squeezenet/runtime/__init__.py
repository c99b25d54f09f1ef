"""Inference without PyTorch: ``numpy_runtime.py`` needs NumPy and Pillow only.

Import it as ``squeezenet.runtime.numpy_runtime`` inside the project, or copy it anywhere with
its two torch-free siblings (``data/pixels.py`` and the ``weights/sqz_codec`` folder) and run
``python numpy_runtime.py weights.safetensors image.jpg``.
"""

from squeezenet.runtime.numpy_runtime import RuntimeFailure, SqueezeNetNumpy, read_safetensors, read_weights

__all__ = ["RuntimeFailure", "SqueezeNetNumpy", "read_safetensors", "read_weights"]
