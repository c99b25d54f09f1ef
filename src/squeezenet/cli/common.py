"""Arguments and output helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from squeezenet.bounds import FRACTION_OPEN_CLOSED, Bounds


def ranged(bounds: Bounds, keywords: tuple[str, ...] = ()):
    """argparse type: a number within ``bounds`` (``squeezenet.bounds``), or one of ``keywords``
    as given. A value out of range is a usage line at parse time, not a silent default
    (``if args.threads:`` once read 0 as "not given") nor an error from deep inside PyTorch."""

    def parse(text: str) -> int | float | str:
        if text in keywords:
            return text
        try:
            return bounds.parse(text, keywords)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "number"
    parse.bounds = bounds  # read by the usage tests, which try a value outside
    return parse


def count(minimum: int):
    """argparse type: a whole number >= ``minimum``."""
    return ranged(Bounds(minimum, integer=True))


def fraction(keywords: tuple[str, ...] = ()):
    """argparse type: a number in (0, 1], or one of ``keywords``."""
    return ranged(FRACTION_OPEN_CLOSED, keywords)


def _bits_range() -> tuple[int, int]:
    """Codebook bits the .sqz format stores: 1 up to its largest codebook (2**12 entries)."""
    from squeezenet.weights.sqz_codec import MAX_ALPHABET  # NumPy only: no torch for a usage error

    return 1, MAX_ALPHABET.bit_length() - 1


def _one_bits(text: str, layer: str = "") -> int:
    low, high = _bits_range()
    where = f"{layer}: " if layer else ""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{where}expected a whole number of bits, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{where}bits must lie in [{low}, {high}], got {value}")
    return value


def bits(text: str) -> int:
    """argparse type: codebook bits of every layer (``--large-bits``)."""
    return _one_bits(text)


def bits_per_layer(text: str) -> int | dict[str, int]:
    """argparse type of ``--bits``: ``N`` for every layer, or ``LAYER=N,LAYER=N,...``."""
    if "=" not in text:
        return _one_bits(text)
    out = {}
    for part in text.split(","):
        layer, sep, value = part.partition("=")
        if not sep or not layer.strip():
            raise argparse.ArgumentTypeError(f"expected N or LAYER=N,..., got {part!r}")
        out[layer.strip()] = _one_bits(value, layer.strip())
    return out


bits_per_layer.__name__ = "bits"


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


STDOUT = Path("/dev/stdout")


def output_file(text: str) -> Path:
    """An ``--output`` file; ``-`` is standard output. Standard output on a terminal is refused
    (before any work): a binary file would only garble the screen."""
    path = STDOUT if text == "-" else Path(text)
    if _is_stdout(path) and sys.stdout.isatty():
        raise argparse.ArgumentTypeError("standard output is a terminal; redirect it (> FILE or | ...) or name a file")
    return path


def _is_stdout(path: Path) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):  # no such file, or stdout replaced by one without a descriptor
        return False


def status_stream(out: Path) -> TextIO:
    """Where the lines about a written file go: standard output, unless the file *is* standard
    output (``-o - | ssh ...``), where they would be mixed into the file's bytes."""
    return sys.stderr if _is_stdout(out) else sys.stdout


def wrote(out: Path, details: str, size: int | None = None) -> None:
    """``wrote OUT (N bytes, details)``: N is ``size`` or the file's own (a pipe or a device has
    none, and then no size is named)."""
    if size is None and out.is_file():
        size = out.stat().st_size
    sized = "" if size is None else f"{size:,} bytes, "
    print(f"wrote {out} ({sized}{details})", file=status_stream(out))
