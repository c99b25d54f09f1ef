"""Training throughput: the project's training step vs a plain torchvision-style loop, side by side.

Same model, batch, data (pre-made in-memory batches, so decoding is out of the picture)
and optimizer (SGD momentum). Baseline: fp32, NCHW, eager, ``loss.backward(); opt.step()``.
Project: ``squeezenet.training.engine.train_one_epoch`` with channels_last and bf16 autocast
(the options ``squeezenet train`` uses: ``--amp bf16``; channels_last is its default).
The two configurations alternate over several rounds and the median is reported.

    python benchmarks/bench_train_throughput.py [--model squeezenet1_1] [--size 224] [--batch 32]
    python benchmarks/bench_train_throughput.py --tiny OUT   # CI's smoke test: 64 px, batch 4, one round

Target: >= 1.5x the baseline's images/s. Writes benchmarks/results/train_throughput.{json,md}.
The engine's allocator setting (``squeezenet.training.allocator``) is left out: it is
process-wide, so it would speed up the baseline rounds too; the ratio is therefore a
lower bound for ``squeezenet train``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from _common import add_tiny_option, machine, write_results
from squeezenet.data.folders import Batch
from squeezenet.models import build_architecture
from squeezenet.training.engine import TrainContext, train_one_epoch


def make_batches(n: int, batch: int, size: int, classes: int) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    return [
        Batch(torch.randn(batch, 3, size, size, generator=g), torch.randint(0, classes, (batch,), generator=g),
              [f"img{i}" for i in range(batch)])
        for _ in range(n)
    ]  # fmt: skip


def baseline_run(model: nn.Module, batches: list[Batch]) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    crit = nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    for b in batches:
        opt.zero_grad(set_to_none=True)
        loss = crit(model(b.images), b.targets)
        loss.backward()
        opt.step()
    return sum(len(b.paths) for b in batches) / (time.perf_counter() - start)


def project_run(model: nn.Module, batches: list[Batch], amp: torch.dtype | None, channels_last: bool) -> float:
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ctx = TrainContext(
        model=model, net=model, criterion=nn.CrossEntropyLoss(), optimizer=opt, scheduler=sched,
        device=torch.device("cpu"), amp_dtype=amp, channels_last=channels_last,
    )  # fmt: skip
    start = time.perf_counter()
    train_one_epoch(ctx, batches, epoch=0)
    return sum(len(b.paths) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="squeezenet1_1")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=6, help="timed batches per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    add_tiny_option(ap)
    args = ap.parse_args()
    if args.tiny:
        args.size, args.batch, args.batches, args.rounds = 64, 4, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = make_batches(args.batches, args.batch, args.size, 1000)
    warm = batches[:2]
    configs = {
        "baseline fp32 NCHW eager": lambda m, b: baseline_run(m, b),
        "project channels_last": lambda m, b: project_run(m, b, None, True),
        "project channels_last + bf16 autocast": lambda m, b: project_run(m, b, torch.bfloat16, True),
    }
    results: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.rounds):
        for name, fn in configs.items():
            torch.manual_seed(0)
            model = build_architecture(args.model, num_classes=1000, dropout=0.0)
            fn(model, warm)  # warm-up (oneDNN primitive caches, allocator)
            results[name].append(fn(model, batches))
    median = {k: statistics.median(v) for k, v in results.items()}
    base = median["baseline fp32 NCHW eager"]
    report = {
        "model": args.model,
        "image_size": args.size,
        "batch": args.batch,
        "timed_batches": args.batches,
        "rounds_alternated": args.rounds,
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "images_per_s": {k: round(v, 2) for k, v in median.items()},
        "speedup_vs_baseline": {k: round(v / base, 3) for k, v in median.items()},
        "target_speedup": 1.5,
        "rounds": {k: [round(x, 2) for x in v] for k, v in results.items()},
        "argv": " ".join(sys.argv[1:]),
    }
    write_results("train_throughput", report, markdown(report), args.tiny)


def _where(report: dict) -> str:
    """The CPU and date; a record from before the machine was recorded names only the CPU type."""
    if "machine" in report:
        return f"{report['machine']['cpu']}, {report['machine']['date']}"
    return f"{report.get('cpu', 'CPU not recorded')}, date not recorded"


def markdown(report: dict) -> str:
    argv = report.get("argv", "")
    best = max(report["speedup_vs_baseline"].values())
    lines = [
        "# Training throughput: the project's step vs a plain loop",
        "",
        f"Command: `python benchmarks/bench_train_throughput.py {argv}`".rstrip()
        + f"; {report['model']} at {report['image_size']} px, batch {report['batch']}, {report['threads']} threads, "
        f"median of {report['rounds_alternated']} alternated rounds; {_where(report)}.",
        "",
        "| configuration | images/s | vs baseline |",
        "|---|---:|---:|",
    ]
    for name, ips in report["images_per_s"].items():
        lines.append(f"| {name} | {ips:.1f} | {report['speedup_vs_baseline'][name]:.2f}x |")
    verdict = "met" if best >= report["target_speedup"] else "MISSED"
    lines += ["", f"Target >= {report['target_speedup']}x: {verdict} ({best:.2f}x)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
