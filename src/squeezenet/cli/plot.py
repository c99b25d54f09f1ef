"""``squeezenet plot RUN_DIR``: PNG curves (loss, accuracy, learning rate) of a training run."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw loss / accuracy / lr curves of a training run (PNG)")
    p.add_argument("run_dir", help="run folder holding metrics.jsonl")
    p.add_argument("--output", "-o", help="folder for the PNG files (default: RUN_DIR)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from squeezenet.training.reports import plot_run

    for path in plot_run(args.run_dir, args.output):
        print(path)
    return 0
