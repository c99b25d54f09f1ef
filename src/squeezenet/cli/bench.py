"""``squeezenet bench``: latency, throughput, size and memory of every deployment engine."""

from __future__ import annotations

import argparse
import sys

from squeezenet.benchmarking.names import BENCH_ARCHS, ENGINES
from squeezenet.bounds import Bounds
from squeezenet.cli.common import count, ranged


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark the CPU inference engines (random weights)")
    p.add_argument("--arch", nargs="+", choices=BENCH_ARCHS, default=None, help="models to measure (default: all)")
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=None, help="subset of engines (default all)")
    p.add_argument("--size", type=count(1), help="input side (default: the model's, 224)")
    p.add_argument("--threads", type=count(1), help="threads per engine (default: PyTorch's default)")
    p.add_argument("--quick", action="store_true", help="few iterations: a smoke test, not a measurement")
    p.add_argument(
        "--compile-budget",
        type=ranged(Bounds(0.0, low_open=True)),
        help="seconds allowed for torch.compile (default 300, quick 120)",
    )
    p.add_argument(
        "--rounds",
        type=count(1),
        default=1,
        help="measure each engine and each paired comparison this many times, interleaved; figures are medians",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from squeezenet.benchmarking.engines import format_markdown, run_bench
    from squeezenet.cli.common import print_json

    result = run_bench(
        archs=tuple(args.arch or BENCH_ARCHS),
        engines=tuple(args.engines or ENGINES),
        quick=args.quick,
        size=args.size,
        threads=args.threads,
        compile_budget=args.compile_budget,
        rounds=args.rounds,
        progress=lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True),
    )
    if args.json:
        print_json(result)
    else:
        print(format_markdown(result))
    return 0
