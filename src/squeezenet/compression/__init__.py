"""Deep Compression (Han et al.): pruning, trained quantization, entropy coding, ``.sqz`` files.

``sqz_codec`` is pure numpy (loadable without torch, for the PyTorch-free runtime); the
rest wraps it for models and state dicts. Names load lazily (``squeezenet._lazy``), so that
the command line's parser reads ``choices`` without importing torch.

Besides ``compress`` and its config, the output-aware method's parts are public for studies
that vary one of them and keep the rest as the command runs it (``benchmarks/studies``):
statistics (``collect_stats``), one layer's codes (``prepare_layer``, ``quantize_layer``), a
budget's choice among layers (``candidates_for``, ``fit_budget``) and the tensors a fit
starts from (``initial_tensors``). ``compress_update`` compresses a fine-tuned model against
the ``.sqz`` it was fine-tuned from (what ``train --update-of`` writes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squeezenet._lazy import lazy_exports

_EXPORTS = {
    "CompressedModel": "squeezenet.compression.pipeline",
    "CompressionConfig": "squeezenet.compression.pipeline",
    "compress": "squeezenet.compression.pipeline",
    "initial_tensors": "squeezenet.compression.pipeline",
    "layer_table": "squeezenet.compression.pipeline",
    "PAPER_DENSITIES": "squeezenet.compression.pruning",
    "MaskKeeper": "squeezenet.compression.pruning",
    "apply_masks": "squeezenet.compression.pruning",
    "iterative_prune": "squeezenet.compression.pruning",
    "magnitude_masks": "squeezenet.compression.pruning",
    "baselines": "squeezenet.compression.report",
    "paper_tables": "squeezenet.compression.report",
    "compact": "squeezenet.compression.weight_sharing",
    "kmeans_1d": "squeezenet.compression.weight_sharing",
    "requantize": "squeezenet.compression.weight_sharing",
    "train_codebooks": "squeezenet.compression.weight_sharing",
    "LayerStats": "squeezenet.compression.layer_statistics",
    "calibration_copy": "squeezenet.compression.layer_statistics",
    "collect_stats": "squeezenet.compression.layer_statistics",
    "conv_layers": "squeezenet.compression.layer_statistics",
    "patch_columns": "squeezenet.compression.layer_statistics",
    "prepare_layer": "squeezenet.compression.output_aware",
    "quantize_layer": "squeezenet.compression.output_aware",
    "candidates_for": "squeezenet.compression.budget",
    "CALIBRATION_BATCH": "squeezenet.compression.output_aware_fit",
    "DAMP": "squeezenet.compression.output_aware_fit",
    "OWN_CURVATURE": "squeezenet.compression.output_aware_fit",
    "fit_budget": "squeezenet.compression.output_aware_fit",
    "compress_update": "squeezenet.compression.updates",
}

__all__ = [
    "CALIBRATION_BATCH",
    "DAMP",
    "OWN_CURVATURE",
    "PAPER_DENSITIES",
    "CompressedModel",
    "CompressionConfig",
    "LayerStats",
    "MaskKeeper",
    "apply_masks",
    "baselines",
    "calibration_copy",
    "candidates_for",
    "collect_stats",
    "compact",
    "compress",
    "compress_update",
    "conv_layers",
    "fit_budget",
    "initial_tensors",
    "iterative_prune",
    "kmeans_1d",
    "layer_table",
    "magnitude_masks",
    "paper_tables",
    "patch_columns",
    "prepare_layer",
    "quantize_layer",
    "requantize",
    "train_codebooks",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from squeezenet.compression.budget import candidates_for
    from squeezenet.compression.layer_statistics import (
        LayerStats,
        calibration_copy,
        collect_stats,
        conv_layers,
        patch_columns,
    )
    from squeezenet.compression.output_aware import prepare_layer, quantize_layer
    from squeezenet.compression.output_aware_fit import CALIBRATION_BATCH, DAMP, OWN_CURVATURE, fit_budget
    from squeezenet.compression.pipeline import (
        CompressedModel,
        CompressionConfig,
        compress,
        initial_tensors,
        layer_table,
    )
    from squeezenet.compression.pruning import (
        PAPER_DENSITIES,
        MaskKeeper,
        apply_masks,
        iterative_prune,
        magnitude_masks,
    )
    from squeezenet.compression.report import baselines, paper_tables
    from squeezenet.compression.updates import compress_update
    from squeezenet.compression.weight_sharing import compact, kmeans_1d, requantize, train_codebooks
