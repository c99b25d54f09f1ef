"""End-to-end evaluation throughput (JPEG decoding included) and accuracy on imagenet-samples.

Targets (foundation issue): >= 35 images/s for v1.0 at 227 px on the 2-core machine, with
top-1 >= 0.640 and top-5 >= 0.840 for the Deep Compression weights (all 500 images; no
setting is chosen here, the weights and their preprocessing are the release's).

    python benchmarks/bench_eval.py [--repeats 3]
    python benchmarks/bench_eval.py --tiny OUT      # CI's smoke test: 6 images, one round
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from _common import DATA, add_tiny_option, machine, write_results
from squeezenet.inference import evaluate_dataset
from squeezenet.weights import build_model_from_weights

TARGETS = {"images_per_second": 35.0, "top1": 0.640, "top5": 0.840}


def tiny_samples(source: Path, dest: Path, classes: int = 6) -> Path:
    """The first image of the first ``classes`` wnid folders, copied: the same layout, a few images."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir())[:classes]:
        (dest / folder.name).mkdir(parents=True, exist_ok=True)
        first = sorted(folder.iterdir())[0]
        shutil.copyfile(first, dest / folder.name / first.name)
    return dest


def verdicts(payload: dict) -> dict[str, bool]:
    measured = {"images_per_second": payload["images_per_second_median"], "top1": payload["top1"]}
    measured["top5"] = payload["top5"]
    return {key: measured[key] >= target for key, target in TARGETS.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    add_tiny_option(parser)
    args = parser.parse_args()
    weights = DATA / "deepcompression" / "compressed_SqueezeNet.net"
    samples = DATA / "imagenet-samples"
    if args.tiny:
        samples, args.repeats = tiny_samples(samples, args.tiny / "samples"), 1
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
        "targets": TARGETS,
        "machine": machine(),
        "command": "python benchmarks/bench_eval.py " + " ".join(sys.argv[1:]),
    }
    payload["met"] = verdicts(payload)
    write_results("eval", payload, markdown(payload), args.tiny)
    return 0


def markdown(p: dict) -> str:
    t, m = p.get("targets", TARGETS), p["machine"]  # a record from before the targets were written: today's
    met = {key: "met" if ok else "MISSED" for key, ok in _met(p, t).items()}
    speeds = ", ".join(f"{s:.1f}" for s in p["images_per_second_runs"])
    command = p.get("command", "python benchmarks/bench_eval.py").strip()
    cores, date = m.get("cores", m.get("usable_cores")), m.get("date", "date not recorded")
    return f"""# Evaluation throughput and accuracy (imagenet-samples)

Command: `{command}`
Machine: {m["cpu"]}, {cores} cores, torch {m["torch"]}, {date}

| weights | arch | input | images | top-1 | top-5 | images/s (median of {len(speeds.split(","))}, decoding included) |
|---|---|---|---|---|---|---|
| {p["weights"]} | {p["arch"]} | {p["input"]} px | {p["n"]} | {p["top1"]:.3f} | {p["top5"]:.3f} \
| {p["images_per_second_median"]} (runs: {speeds}) |

Targets: >= {t["images_per_second"]:.0f} images/s: {met["images_per_second"]}; top-1 >= {t["top1"]:.3f}: \
{met["top1"]}; top-5 >= {t["top5"]:.3f}: {met["top5"]}.
"""


def _met(p: dict, targets: dict) -> dict[str, bool]:
    if "met" in p:
        return p["met"]
    return {"images_per_second": p["images_per_second_median"] >= targets["images_per_second"],
            "top1": p["top1"] >= targets["top1"], "top5": p["top5"] >= targets["top5"]}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
