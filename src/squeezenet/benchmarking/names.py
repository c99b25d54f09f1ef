"""What the engine benchmark can measure, importable without PyTorch (the CLI's parser offers them)."""

ENGINES = (
    "torchvision_eager",
    "default",
    "torch_channels_last",
    "torchscript_frozen",
    "torch_compile",
    "ort_fp32",
    "ort_int8",
    "numpy",
    "numpy_env_blas",
)
BENCH_ARCHS = (
    "squeezenet1_0",
    "squeezenet1_1",
)  # the architectures torchvision also has (its eager model is the reference)
