"""``squeezenet predict``: top-k classes of image files or folders."""

from __future__ import annotations

import argparse
import json

from squeezenet.cli.common import add_weights_args, count, load_model_from_args, warn
from squeezenet.errors import ImageError


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="classify images (files or folders)")
    p.add_argument(
        "paths", nargs="+", help="image files or folders (searched recursively); - reads an image from standard input"
    )
    add_weights_args(p)
    p.add_argument("--topk", "-k", type=count(1), default=5, help="classes to show per image (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from squeezenet.inference import predict_paths

    model = load_model_from_args(args)
    failures = total = 0
    pending: list[str] = []  # warnings held back until one image succeeds
    for prediction in predict_paths(model, args.paths, topk=args.topk):
        total += 1
        if prediction.error:
            failures += 1
            if failures == total:
                pending.append(prediction.error)
            else:
                warn(f"skipped {prediction.error}")
            if args.json:
                print(json.dumps(prediction.to_dict()))
            continue
        for message in pending:
            warn(f"skipped {message}")
        pending.clear()
        if args.json:
            print(json.dumps(prediction.to_dict()))
        else:
            print(prediction.path)
            for rank, (name, index, prob) in enumerate(prediction.top, 1):
                print(f"  {rank}. {prob:7.2%}  {name} ({index})")
    if failures == total:  # nothing could be classified: one error line, not warnings
        if total == 1:
            raise ImageError(pending[0])
        raise ImageError(f"none of the {total} images could be read (first: {pending[0]})")
    return 0
