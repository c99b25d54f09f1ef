"""CIFAR-10 from scratch on CPU: a SqueezeNet adapted to 32 px, trained from the JPEG archive.

Adaptation to 32x32 inputs (ImageNet SqueezeNet would shrink 32 px to 1x1 by fire3):
- conv1 is 3x3, stride 1, padding 1, 64 filters, and no max pool follows it: 32 -> 32 px;
- v1.1's eight Fire modules unchanged (squeeze 16..64, expand 64..256 per branch), with
  max pools after fire2 and fire5: fire2 sees 32 px, fire3-5 16 px, fire6-9 8 px, and the
  paper's simple bypass (identity shortcuts around fire3, 5, 7 and 9);
- BatchNorm after every convolution but conv10, for training only: the exported weights
  have it folded into the convolutions (``squeezenet.models.fold_batchnorm``), so the
  deployed model is a plain SqueezeNet; conv10 has 10 filters. 0.73 M parameters (<= 1.3 M).
Recipe: modern (SGD Nesterov, 1 warmup epoch + cosine, label smoothing 0.1, EMA of the
weights), CIFAR augmentation (reflect-pad 4 + random 32 crop + mirror), no dropout, images
decoded once into memory (``--cache-images``), channels_last + bf16 autocast on CPU.

    python benchmarks/bench_train_cifar10.py [--epochs 50] [--output runs/cifar10]

The archive is read in place (``squeezenet.data.archives``); the test split is the
validation set. Target: >= 90 % test top-1 within 90 minutes on the 2-core CPU. Writes
benchmarks/results/train_cifar10.{json,md}. ``--resume`` continues an interrupted run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from squeezenet.models.spec import V1_1, SqueezeNetSpec
from squeezenet.training import TrainConfig, train

RESULTS = Path(__file__).parent / "results"
DATA = Path(os.environ.get("SQUEEZENET_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

CIFAR_SPEC = SqueezeNetSpec(
    stem_channels=64,
    stem_kernel=3,
    stem_stride=1,
    stem_padding=1,
    stem_pool=False,
    batch_norm=True,
    fires=V1_1.fires,
    pool_after=(0, 3),
).with_bypass("simple")


def cifar_config(augment: str = "light", **overrides) -> TrainConfig:
    """The CIFAR-10 recipe of this benchmark (also the base model of bench_compress_trained)."""
    settings = dict(
        model="squeezenet_cifar",
        spec=CIFAR_SPEC.to_dict(),
        recipe="modern",
        weight_decay=5e-4,
        warmup_epochs=1,
        ema_decay=0.999,
        dropout=0.0,
        clip_grad_norm=2.0,
        image_size=32,
        augment=augment,
        cache_images=True,
    )
    return TrainConfig(**{**settings, **overrides})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--output", default="runs/cifar10")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--amp", default="bf16")
    ap.add_argument("--max-steps", type=int, default=None, help="smoke test: stop early")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    if not Path(args.data).exists():
        raise SystemExit(f"CIFAR-10 archive not found: {args.data} (set SQUEEZENET_DATA)")
    cfg = cifar_config(
        data=args.data,
        output=args.output,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        amp=args.amp,
        max_steps=args.max_steps,
        resume="auto" if args.resume else None,
        progress=args.progress,
    )
    start = time.perf_counter()
    result = train(cfg)
    minutes = (time.perf_counter() - start) / 60
    from squeezenet.models import from_spec

    params = sum(p.numel() for p in from_spec(CIFAR_SPEC, num_classes=10).parameters())
    report = {
        "benchmark": "cifar10 from scratch, SqueezeNet adapted to 32 px",
        "params": params,
        "epochs": result.epochs,
        "steps": result.steps,
        "best_test_top1": result.best_top1,
        "last": result.last,
        "minutes": round(minutes, 1),
        "threads": torch.get_num_threads(),
        "target": {"test_top1": 0.90, "minutes": 90, "params_max": 1_300_000},
        "config": cfg.to_dict(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_cifar10.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "train_cifar10.md").write_text(markdown(report, " ".join(sys.argv[1:])))
    print(json.dumps({k: report[k] for k in ("params", "epochs", "best_test_top1", "minutes")}))


def markdown(report: dict, argv: str = "") -> str:
    """The result with its targets; the machine is the 2-core CPU unless the config says cuda."""
    target = report["target"]
    acc, minutes = report["best_test_top1"], report["minutes"]
    met = acc >= target["test_top1"] and minutes <= target["minutes"] and report["params"] <= target["params_max"]
    return "\n".join(
        [
            "# CIFAR-10 from scratch (SqueezeNet adapted to 32 px)",
            "",
            f"Command: `python benchmarks/bench_train_cifar10.py {argv}`".rstrip() + f"; {report['threads']} threads",
            "",
            "| parameters | epochs | steps | best test top-1 | wall time | target |",
            "|---|---|---|---|---|---|",
            f"| {report['params']:,} | {report['epochs']} | {report['steps']:,} | {acc:.2%} | {minutes} min "
            f"| >= {target['test_top1']:.0%} within {target['minutes']} min: {'met' if met else 'MISSED'} |",
            "",
        ]
    )


if __name__ == "__main__":
    main()
