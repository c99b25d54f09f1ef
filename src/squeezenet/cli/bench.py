"""``squeezenet bench``: latency, throughput, size and memory of every deployment engine."""

from __future__ import annotations

import argparse
import sys

from squeezenet.cli.common import count


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark the CPU inference engines (random weights)")
    p.add_argument("--arch", nargs="+", default=None, help="squeezenet1_0 and/or squeezenet1_1 (default both)")
    p.add_argument("--engines", nargs="+", default=None, help="subset of engines (default all)")
    p.add_argument("--size", type=count(1), help="input side (default 227 for v1.0, 224 for v1.1)")
    p.add_argument("--threads", type=count(1), help="threads per engine (default: PyTorch's default)")
    p.add_argument("--quick", action="store_true", help="few iterations: a smoke test, not a measurement")
    p.add_argument("--compile-budget", type=float, help="seconds allowed for torch.compile (default 300, quick 120)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure each engine and each paired comparison this many times, interleaved; figures are medians",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from squeezenet.benchmarking.engines import ARCH_SIZES, ENGINES, format_markdown, run_bench
    from squeezenet.cli.common import print_json

    result = run_bench(
        archs=tuple(args.arch or ARCH_SIZES),
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
