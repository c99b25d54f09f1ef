"""Size reports in the shape of the Deep Compression paper's Table 1 and Table 2, plus baselines."""

from __future__ import annotations

import bz2
import gzip
import lzma

import numpy as np

from squeezenet.weights.sqz_codec import SparseTensor

ALEXNET_BYTES = 240_000_000  # AlexNet fp32, the SqueezeNet paper's reference


def baselines(state: dict) -> dict[str, int]:
    """Generic compressors on the raw fp32 and fp16 weights (zstd when ``zstandard`` is installed)."""
    arrays = [np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float32).ravel() for v in state.values()]
    out = {}
    for name, dt in (("fp32", np.float32), ("fp16", np.float16)):
        raw = np.concatenate(arrays).astype(dt).tobytes()
        out[f"{name} raw"] = len(raw)
        out[f"{name} gzip-9"] = len(gzip.compress(raw, 9))
        out[f"{name} bz2-9"] = len(bz2.compress(raw, 9))
        out[f"{name} xz-9e"] = len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
        try:
            import zstandard

            out[f"{name} zstd-19"] = len(zstandard.ZstdCompressor(level=19).compress(raw))
        except ImportError:
            pass
    return out


def paper_tables(cm, report: dict) -> dict:
    """{'table1': per-layer rows, 'table2': fp32 -> pruned -> quantized -> coded sizes and ratios}."""
    from squeezenet.compression.pipeline import layer_table

    rows = layer_table(cm, report)
    fp32 = pruned = quantized = 0
    for t in cm.tensors.values():
        if isinstance(t, SparseTensor):
            numel = int(np.prod(t.shape))
            n = len(t.codes)
            fp32 += 4 * numel
            pruned += n * 4 + (n + 1) // 2  # fp32 values + 4-bit relative indices
            quantized += (n * t.bits + 7) // 8 + (n + 1) // 2 + 4 * len(t.codebook)
        else:
            fp32 += 4 * np.size(t)
            pruned += 4 * np.size(t)
            quantized += 4 * np.size(t)
    coded = report["total"]
    stages = {"fp32": fp32, "pruned": pruned, "pruned+quantized": quantized, "pruned+quantized+coded": coded}
    table2 = [
        {
            "stage": k,
            "bytes": v,
            "ratio_vs_fp32": round(fp32 / v, 2),
            "ratio_vs_alexnet": round(ALEXNET_BYTES / v, 1),
        }
        for k, v in stages.items()
    ]
    return {"table1": rows, "table2": table2}


def markdown(tables: dict, extra: dict | None = None) -> str:
    lines = ["| layer | params | stored | density | bits | codebook | positions | codes | bytes |", "|---" * 9 + "|"]
    for r in tables["table1"]:
        lines.append(
            f"| {r['layer']} | {r['params']:,} | {r['stored']:,} | {r['density']:.1%} | {r['bits']} | "
            f"{r.get('codebook', '')} | {r.get('positions', '') or ''} | {r.get('codes', '') or ''} | {r['bytes']:,} |"
        )
    lines += ["", "| stage | bytes | vs fp32 | vs AlexNet 240 MB |", "|---|---|---|---|"]
    for r in tables["table2"]:
        lines.append(f"| {r['stage']} | {r['bytes']:,} | {r['ratio_vs_fp32']}x | {r['ratio_vs_alexnet']}x |")
    if extra:
        lines += ["", "| baseline | bytes |", "|---|---|"] + [f"| {k} | {v:,} |" for k, v in extra.items()]
    return "\n".join(lines) + "\n"
