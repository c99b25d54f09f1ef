"""``squeezenet convert``: any supported weights to the project's safetensors format."""

from __future__ import annotations

import argparse
from pathlib import Path

from squeezenet.cli.common import output_file, wrote
from squeezenet.errors import WeightsError


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert weights to the project's .safetensors format")
    p.add_argument("weights", help="input weights file or catalogue tag")
    p.add_argument(
        "--output", "-o", type=output_file, required=True, help="output .safetensors file (- for standard output)"
    )
    p.add_argument("--arch", help="registered model to check the weights against")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from squeezenet.weights import build_model_from_weights, state_dict_to_loaded, write_safetensors

    out = Path(args.output)
    if Path(args.weights).exists() and out.exists() and out.resolve() == Path(args.weights).resolve():
        raise WeightsError(f"{out}: output would overwrite the input")
    if out.is_dir():
        raise WeightsError(f"{out}: is a directory; give a file name")
    model = build_model_from_weights(args.weights, arch=args.arch)
    write_safetensors(state_dict_to_loaded(model, model.weights_info), out)
    wrote(out, f"{model.weights_info.arch}, {model.num_classes} classes")
    return 0
