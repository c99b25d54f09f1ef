"""End-to-end evaluation throughput (JPEG decoding included) and accuracy on imagenet-samples.

Target (foundation issue): >= 35 images/s for v1.0 at 227 px on the 2-core machine, with
top-1 >= 0.640 and top-5 >= 0.840 for the Deep Compression weights.

    python benchmarks/bench_eval.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from _common import DATA, machine, write_results
from squeezenet.inference import evaluate_dataset
from squeezenet.weights import build_model_from_weights

TARGET_IMAGES_PER_SECOND = 35.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    weights = DATA / "deepcompression" / "compressed_SqueezeNet.net"
    samples = DATA / "imagenet-samples"
    model = build_model_from_weights(weights)
    runs = [evaluate_dataset(model, samples, workers=args.workers) for _ in range(args.repeats)]
    speeds = [r.images_per_second for r in runs]
    result = runs[0]
    payload = {
        "weights": weights.name,
        "arch": model.weights_info.arch,
        "input": model.weights_info.preprocessing.crop,
        "n": result.n,
        "top1": result.top1,
        "top5": result.top5,
        "images_per_second_runs": [round(s, 2) for s in speeds],
        "images_per_second_median": round(statistics.median(speeds), 2),
        "target_images_per_second": TARGET_IMAGES_PER_SECOND,
        "machine": machine(),
    }
    met = payload["images_per_second_median"] >= TARGET_IMAGES_PER_SECOND
    markdown = f"""# Evaluation throughput and accuracy (imagenet-samples)

Command: `python benchmarks/bench_eval.py --repeats {args.repeats}`
Machine: {payload["machine"]["cpu"]}, {payload["machine"]["cores"]} cores, torch {payload["machine"]["torch"]}, \
{payload["machine"]["date"]}

| weights | arch | input | images | top-1 | top-5 | images/s (median of {args.repeats}, decoding included) | target |
|---|---|---|---|---|---|---|---|
| {weights.name} | {payload["arch"]} | {payload["input"]} px | {result.n} | {result.top1:.3f} | {result.top5:.3f} \
| {payload["images_per_second_median"]} (runs: {", ".join(f"{s:.1f}" for s in speeds)}) \
| >= {TARGET_IMAGES_PER_SECOND:.0f}: {"met" if met else "MISSED"} |
"""
    write_results("eval", payload, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
