"""Deep Compression (Han et al.): pruning, trained quantization, entropy coding, ``.sqz`` files.

``sqz_codec`` is pure numpy (loadable without torch, for the PyTorch-free runtime); the
rest wraps it for models and state dicts.
"""

from squeezenet.compression.pipeline import CompressedModel, CompressionConfig, compress, layer_table
from squeezenet.compression.pruning import (
    PAPER_DENSITIES,
    MaskKeeper,
    apply_masks,
    iterative_prune,
    magnitude_masks,
    sensitivity_scan,
)
from squeezenet.compression.report import baselines, paper_tables
from squeezenet.compression.weight_sharing import kmeans_1d, requantize, train_codebooks

__all__ = [
    "PAPER_DENSITIES",
    "CompressedModel",
    "CompressionConfig",
    "MaskKeeper",
    "apply_masks",
    "baselines",
    "compress",
    "iterative_prune",
    "kmeans_1d",
    "layer_table",
    "magnitude_masks",
    "paper_tables",
    "requantize",
    "sensitivity_scan",
    "train_codebooks",
]
