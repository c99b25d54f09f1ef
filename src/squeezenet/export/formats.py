"""The export formats and their fixed facts, importable without PyTorch (the CLI's parser reads them)."""

FORMATS = ("onnx", "torchscript", "c", "wasm")
INTEGER_FORMATS = ("c", "wasm")  # the integer C runtime: compiled by the user (c) or by the export (wasm)
MIN_OPSET = 17  # ceil-mode MaxPool and the ops the exporters write need opset 17
DEFAULT_OPSET = 17
WIDE_BITS = (8, 12)  # --format c --stem-bits / --squeeze-bits: uint8, or 12 bits in uint16
DEFAULT_STEM_BITS = 12
DEFAULT_SQUEEZE_BITS = 12
# int8 activation ranges (ONNX --int8 and --format c): ONNX Runtime's histogram collectors
# (percentile, entropy) or the plain maximum (minmax), on at most this many calibration images
CALIBRATION_METHODS = ("percentile", "minmax", "entropy")
DEFAULT_CALIBRATION_METHOD = "percentile"
DEFAULT_CALIBRATION_LIMIT = 128
