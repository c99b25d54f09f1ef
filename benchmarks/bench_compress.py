"""Deep Compression benchmark on the release weights: size vs top-1 as bits and density vary.

    python benchmarks/bench_compress.py [--quick]

Data-free throughout: nothing is trained, the 500 imagenet-samples images are only used to
score each setting (so the chosen default is selected on them; see the report). Writes
benchmarks/results/compress.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from _common import machine
from squeezenet.compression import CompressionConfig, compress, paper_tables
from squeezenet.compression.report import baselines, markdown
from squeezenet.inference.evaluate import evaluate_dataset
from squeezenet.weights import build_model_from_weights, load_weights
from squeezenet.weights.sqz import decode_sqz_bytes

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SQUEEZENET_DATA", ROOT.parent / "shared" / "data"))
DC = DATA / "deepcompression" / "compressed_SqueezeNet.net"
IMAGES = DATA / "imagenet-samples"
OUT = ROOT / "benchmarks" / "results"

LARGE = "expand3x3 layers + conv_final"
SETTINGS = [
    ("lossless (release codebooks, fp32)", CompressionConfig.lossless()),
    ("8 bit, fp16 codebooks", CompressionConfig(bits=8)),
    ("data-free default: 8 bit, 7 bit " + LARGE, CompressionConfig.data_free()),
    ("8 bit, 6 bit conv_final", CompressionConfig(bits={"classifier.1.weight": 6})),
    ("8 bit, 6 bit " + LARGE, CompressionConfig(bits=8, large_bits=6)),
    ("7 bit all", CompressionConfig(bits=7)),
    ("6 bit all", CompressionConfig(bits=6)),
    ("5 bit all", CompressionConfig(bits=5)),
    (
        "default + conv_final pruned to 15 %",
        CompressionConfig(bits=8, large_bits=7, densities={"classifier.1.weight": 0.15}),
    ),
]


SIZE_TARGET, STRETCH_TARGET, MAX_LOSS_POINTS, LOAD_TARGET_MS = 470_000, 400_000, 0.5, 200.0


def load_times_ms(path: Path, repeats: int = 9) -> dict:
    """File on disk -> ready model (decode, rebuild, load_state_dict), as every command does it."""
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        build_model_from_weights(path)
        times.append((time.perf_counter() - t0) * 1000)
    times = sorted(times[1:])  # the first load also imports and warms caches
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(times[-1], 1), "repeats": repeats}


def verdicts(rows: list[dict], ref_top1: float, load: dict) -> list[str]:
    ok = [r for r in rows if 100 * (ref_top1 - r["top1"]) <= MAX_LOSS_POINTS]
    best = min(ok, key=lambda r: r["bytes"]) if ok else None
    default = next(r for r in rows if r["setting"].startswith("data-free default"))
    lost = 100 * (ref_top1 - default["top1"])
    lines = [
        f"- data-free default (`squeezenet compress -w compressed_SqueezeNet.net -o out.sqz`): "
        f"{default['bytes']:,} bytes, top-1 {default['top1']:.1%} ({-lost:+.1f} points): size target "
        f"<= {SIZE_TARGET:,} {'met' if default['bytes'] <= SIZE_TARGET and lost <= MAX_LOSS_POINTS else 'MISSED'}",
        f"- stretch <= {STRETCH_TARGET:,} bytes within {MAX_LOSS_POINTS} points: "
        + (
            "met"
            if best and best["bytes"] <= STRETCH_TARGET
            else f"MISSED (smallest within {MAX_LOSS_POINTS} points: {best['bytes']:,} bytes)"
            if best
            else "MISSED"
        ),
        f"- load .sqz file -> ready model: median {load['median_ms']} ms, max {load['max_ms']} ms over "
        f"{load['repeats']} loads: target < {LOAD_TARGET_MS:.0f} ms "
        f"{'met' if load['median_ms'] < LOAD_TARGET_MS else 'MISSED'}",
    ]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only the first three settings")
    args = ap.parse_args()
    if not DC.exists():
        print(f"shared data not found: {DC}", file=sys.stderr)
        return 1
    torch.set_num_threads(2)
    ref = build_model_from_weights(DC)
    ref_eval = evaluate_dataset(ref, IMAGES, workers=1)
    rows = []
    default_tables = None
    for name, cfg in SETTINGS[: 3 if args.quick else None]:
        t0 = time.perf_counter()
        cm = compress(DC, cfg)
        data, report = cm.encode()
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = build_model_from_weights(decode_sqz_bytes(data))
        t_load = time.perf_counter() - t0
        ev = evaluate_dataset(model, IMAGES, workers=1)
        rows.append(
            {
                "setting": name,
                "bytes": len(data),
                "top1": ev.top1,
                "top5": ev.top5,
                "encode_s": round(t_enc, 2),
                "load_s": round(t_load, 3),
                "config": cfg.to_dict(),
            }
        )
        print(f"{name}: {len(data):,} bytes, top-1 {ev.top1:.1%}, top-5 {ev.top5:.1%}", flush=True)
        if cfg == CompressionConfig.data_free():
            default_tables = paper_tables(cm, report)
            default_file = OUT / "_default.sqz"
            OUT.mkdir(parents=True, exist_ok=True)
            default_file.write_bytes(data)
            load = load_times_ms(default_file)
            default_file.unlink()
    base = baselines(load_weights(DC).state_dict)
    result = {
        "source": str(DC.name),
        "images": 500,
        "data_used_for_training": None,
        "note": "settings are compared on the 500 evaluation images; nothing is trained on them",
        "reference": {"top1": ref_eval.top1, "top5": ref_eval.top5, "bytes": DC.stat().st_size},
        "settings": rows,
        "default_tables": default_tables,
        "baselines": base,
        "load": load,
        "machine": machine(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "compress.json").write_text(json.dumps(result, indent=2, default=str))
    md = ["# Deep Compression of the SqueezeNet v1.0 release", ""]
    md.append(f"Command: `python benchmarks/bench_compress.py{' --quick' if args.quick else ''}`  ")
    m = result["machine"]
    md.append(f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['date']}")
    md.append("")
    md.append(f"Release file: {DC.stat().st_size:,} bytes, top-1 {ref_eval.top1:.1%}, top-5 {ref_eval.top5:.1%}.")
    md += ["", *verdicts(rows, ref_eval.top1, load)]
    md += ["", "| setting | bytes | top-1 | top-5 | load s |", "|---|---|---|---|---|"]
    md += [f"| {r['setting']} | {r['bytes']:,} | {r['top1']:.1%} | {r['top5']:.1%} | {r['load_s']} |" for r in rows]
    if default_tables:
        md += ["", "<!-- details -->", "## Data-free default: Table 1 / Table 2", "", markdown(default_tables, base)]
    (OUT / "compress.md").write_text("\n".join(md) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in rows:
            ax.scatter(r["bytes"] / 1000, 100 * r["top1"])
            ax.annotate(r["setting"][:28], (r["bytes"] / 1000, 100 * r["top1"]), fontsize=6)
        ax.axhline(100 * ref_eval.top1 - 0.5, ls="--", c="gray", lw=0.8, label="release - 0.5 pt")
        ax.axvline(470, ls=":", c="red", lw=0.8, label="470 KB target")
        ax.set_xlabel("file size (KB)")
        ax.set_ylabel("top-1 on imagenet-samples (%)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(OUT / "compress.png", dpi=120)
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
