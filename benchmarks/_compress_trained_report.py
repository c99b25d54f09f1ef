"""The Markdown record of ``bench_compress_trained``: both roads, the targets, the settings."""

from __future__ import annotations

import json

from squeezenet.compression.report import markdown


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def layer_kind(name: str, names: list[str]) -> str:
    """The kind the density presets and the settings' summary group a layer by (the first
    convolution and any other than squeeze, expand and the last count as the stem)."""
    for kind in ("squeeze", "expand1x1", "expand3x3"):
        if f".{kind}." in name:
            return kind
    return "classifier" if name == names[-1] else "stem"


def render_markdown(p: dict, tables: dict) -> str:
    s = p["settings"]
    yes = {True: "met", False: "NOT met"}
    cap = "" if s["retrain_max_steps"] is None else f" (at most {s['retrain_max_steps']} steps)"
    subset = f" (seeded subset of {p['test_subset']})" if p["test_subset"] else ""
    lines = [
        f"# Deep Compression of a trained SqueezeNet ({p.get('data', 'CIFAR-10')})",
        "",
        f"Command: `python benchmarks/bench_compress_trained.py {p.get('argv', '')}`".rstrip(),
        "",
        f"Weights: `{p['weights']}` (trained by {p['trained_by']}). Test images: {p['test_images']:,}{subset}.",
        "",
        *_road_a(p),
        "| target | value | status |",
        "|---|---|---|",
    ]
    for name, t in p["targets"].items():
        lines.append(f"| {name} | {t['value']} | {yes[t['met']]} |")
    lines += [
        "",
        "Road B: magnitude pruning in "
        f"{s['rounds']} round(s) with retraining through the training engine (masks fixed), per-layer k-means "
        "weight sharing, trained quantization, entropy coding into `.sqz`; the `.sqz` is reloaded with "
        "`build_model_from_weights` and scored.",
        "",
        "| | test top-1 | bytes |",
        "|---|---|---|",
        f"| trained (fp32 safetensors) | {pct(p['trained']['top1'])} | {p['fp32_safetensors_bytes']:,} |",
        f"| pruned + retrained (fp32) | {pct(p['pruned_retrained']['top1'])} | |",
        f"| compressed `.sqz`, reloaded | {pct(p['compressed']['top1'])} | {p['sqz_bytes']:,} |",
        "",
        f"Ratio {p['ratio']:.2f}x; top-1 points lost {p['points_lost']:+.2f} (negative: a gain); "
        f"{p['weights_nonzero']:,} of {p['weights_total']:,} conv weights non-zero "
        f"({p['weights_nonzero'] / max(1, p['weights_total']):.1%}); pruned weights non-zero after reload: "
        f"{p['pruned_weights_nonzero_in_sqz']}.",
    ]
    lines += [
        "",
        f"Retraining added {s['retrain_steps_total']:,} optimiser steps (batch {s['batch_size']}) and trained "
        f"quantization {s['quant_steps']} steps (batch {s['quant_batch']}) after the base model's training; a "
        "short, under-trained base run can gain accuracy from them, so read the points lost with that in mind.",
        "",
        "<!-- details -->",
        "## Settings",
        "",
        f"- densities (preset `{s['density_preset']}`): {_kinds(s['densities'])}",
        f"- bits: {sorted(set(s['bits'].values()))} (expand 3x3: {_e3_bits(s['bits'])})",
        f"- retraining: {s['retrain_epochs_per_round']} epoch(s) per round{cap}, "
        f"lr {s['retrain_lr']}, EMA {s['retrain_ema']}, augment {s['retrain_augment']}",
        f"- trained quantization: {s['quant_steps']} steps, Adam lr {s['quant_lr']}, autocast {s['quant_amp']}",
        f"- base training: {json.dumps(s['base_training'])}",
        "",
        "## Wall time per stage (s)",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in p["seconds"].items()]
    m = p["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"Python {m['python']}, {m['date']}.",
        "",
        "## Per layer (paper Table 1 style) and per stage (Table 2 style)",
        "",
        markdown(tables),
    ]
    return "\n".join(lines).rstrip() + "\n"


def _road_a(p: dict) -> list[str]:
    a, t = p["output_aware"], p["trained"]
    f = a["fidelity"]
    return [
        f"Test split: {p['test_images']:,} images, scored against the trained model's own predictions (agreement,"
        " mean KL) and the labels. Nothing below was chosen or calibrated on a test image.",
        "",
        "| road | bytes | vs fp32 | top-1 agreement | mean KL | test top-1 | training after the base run |",
        "|---|---|---|---|---|---|---|",
        f"| trained model (fp32 safetensors) | {p['fp32_safetensors_bytes']:,} | 1x | 100 % | 0 | {pct(t['top1'])} | |",
        f"| A. output-aware, `--max-bytes` fp32/{p['fp32_safetensors_bytes'] / a['budget']:.0f}, calibrated on "
        f"{a['calibration_images']} training images | {a['bytes']:,} | {a['ratio']:.2f}x | "
        f"{pct(f['top1_agreement'])} | {f['mean_kl']:.4f} | {pct(a['test']['top1'])} | none |",
        f"| B. pruning + retraining + trained quantization | {p['sqz_bytes']:,} | {p['ratio']:.2f}x | "
        f"{pct(p['compressed_fidelity']['top1_agreement'])} | {p['compressed_fidelity']['mean_kl']:.4f} | "
        f"{pct(p['compressed']['top1'])} | {p['settings']['retrain_steps_total']:,} + "
        f"{p['settings']['quant_steps']} steps |",
        "",
    ]


def _kinds(densities: dict[str, float]) -> str:
    """'stem 90 %, squeeze 60 %, ...' when every layer of a kind has one density, else per layer."""
    names = list(densities)
    kinds: dict[str, set] = {}
    for k, v in densities.items():
        kinds.setdefault(layer_kind(k, names), set()).add(v)
    if all(len(v) == 1 for v in kinds.values()):
        return ", ".join(f"{k} {next(iter(v)):.0%}" for k, v in kinds.items())
    return ", ".join(f"{k} {v:.1%}" for k, v in densities.items())


def _e3_bits(bits: dict[str, int]) -> str:
    e3 = sorted({b for k, b in bits.items() if ".expand3x3." in k})
    return ", ".join(map(str, e3)) or "n/a"
