"""The export formats and their fixed facts, importable without PyTorch (the CLI's parser reads them)."""

FORMATS = ("onnx", "torchscript", "c")
MIN_OPSET = 17  # ceil-mode MaxPool and the ops the exporters write need opset 17
DEFAULT_OPSET = 17
WIDE_BITS = (8, 12)  # --format c --stem-bits / --squeeze-bits: uint8, or 12 bits in uint16
DEFAULT_STEM_BITS = 12
DEFAULT_SQUEEZE_BITS = 12
