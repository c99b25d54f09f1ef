"""ELPV solar-cell defects: fine-tune SqueezeNet v1.0 from the Deep Compression ImageNet weights.

Both tasks of the ELPV paper's protocol (Deitsch et al. 2019): 4 defect-probability levels
and 2 classes (functional / defective), on the 75 %/25 % split stratified by level and
cell type (1,968 / 656). The images are grayscale, so conv1 is adapted to one channel
(its three colour filters summed: same response to a gray image) and conv10 is a new
4- or 2-filter head. Preprocessing follows the weights (Caffe: [0, 255] minus the mean),
at 227 px. Recipe: modern (warmup + cosine, label smoothing, EMA), bf16 autocast on CPU.
Target: >= 88.42 % test accuracy on 4 levels (the paper's fine-tuned VGG-19).

    pip install 'squeezenet[elpv]'
    python benchmarks/bench_train_elpv.py [--classes 4 2] [--epochs 30] [--image-size 227]

Writes benchmarks/results/train_elpv.json (accuracy overall, per class and per cell type).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from squeezenet.data.folders import collate_skipping_bad
from squeezenet.data.preprocessing import build_transform
from squeezenet.data.sources import open_dataset
from squeezenet.training import TrainConfig, train
from squeezenet.weights import build_model_from_weights

RESULTS = Path(__file__).parent / "results"
DATA = Path(os.environ.get("SQUEEZENET_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def per_type_accuracy(weights: Path, n: int) -> dict:
    from squeezenet.data.elpv import cell_types

    model = build_model_from_weights(weights)
    pre = model.weights_info.preprocessing
    test = open_dataset(f"elpv:{n}", "val").with_transform(build_transform(pre), pre.image_mode)
    types = cell_types(test)
    loader = DataLoader(test, batch_size=64, num_workers=2, collate_fn=collate_skipping_bad)
    preds = []
    with torch.inference_mode():
        for b in loader:
            preds += model(b.images).argmax(1).tolist()
    hits = [int(p == t) for p, t in zip(preds, test.targets, strict=True)]
    out = {"all": sum(hits) / len(hits)}
    for kind in ("mono", "poly"):
        sel = [h for h, t in zip(hits, types, strict=True) if t == kind]
        out[kind] = sum(sel) / len(sel)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(DATA / "deepcompression" / "compressed_SqueezeNet.net"))
    ap.add_argument("--classes", type=int, nargs="+", default=[4, 2], choices=(2, 4))
    ap.add_argument("--output", default="runs/elpv")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--image-size", type=int, default=227)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--amp", default="bf16")
    ap.add_argument("--max-steps", type=int, default=None, help="smoke test: stop early")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    report = {"benchmark": "ELPV fine-tuning from Deep Compression SqueezeNet v1.0", "target_4_levels": 0.8842}
    for n in args.classes:
        cfg = TrainConfig(
            data=f"elpv:{n}",
            output=f"{args.output}/elpv{n}",
            weights=args.weights,
            in_chans=1,
            recipe="modern",
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_epochs=1,
            image_size=args.image_size,
            augment="strong",
            workers=args.workers,
            amp=args.amp,
            max_steps=args.max_steps,
            resume="auto",
            progress=args.progress,
        )
        start = time.perf_counter()
        result = train(cfg)
        report[f"{n}_classes"] = {
            "best_test_top1": result.best_top1,
            "epochs": result.epochs,
            "minutes": round((time.perf_counter() - start) / 60, 1),
            "best_weights_by_type": per_type_accuracy(result.best_weights, n),
            "config": cfg.to_dict(),
        }
        print(n, "classes:", json.dumps(report[f"{n}_classes"]["best_weights_by_type"]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_elpv.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
