"""The export formats and their fixed facts, importable without PyTorch (the CLI's parser reads them)."""

FORMATS = ("onnx", "torchscript", "c")
MIN_OPSET = 17  # ceil-mode MaxPool and the ops the exporters write need opset 17
DEFAULT_OPSET = 17
