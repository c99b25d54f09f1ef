"""Arguments and output helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import json
import sys


def count(minimum: int):
    """argparse type: a whole number >= ``minimum``. A zero or negative count is a usage
    error line, not a silent default (``if args.threads:`` read 0 as "not given") nor a
    library error from deep inside PyTorch."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"count >= {minimum}"
    return parse


def add_weights_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--weights",
        "-w",
        required=required,
        help="weights file (.sqz, .safetensors, .pth, Deep Compression .net) or a catalogue tag",
    )
    parser.add_argument("--arch", help="build this registered model instead of the one the weights name")
    parser.add_argument("--threads", type=count(1), help="CPU threads for PyTorch (default: all cores)")


def load_model_from_args(args: argparse.Namespace):
    import torch

    from squeezenet.weights import build_model_from_weights

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return build_model_from_weights(args.weights, arch=args.arch)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def warn(message: str) -> None:
    print(f"squeezenet: warning: {message}", file=sys.stderr)
