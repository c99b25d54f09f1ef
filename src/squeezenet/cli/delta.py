"""``squeezenet delta`` and ``squeezenet patch``: model updates as small as the change."""

from __future__ import annotations

import argparse
from pathlib import Path

from squeezenet.cli.common import output_file, wrote


def add_parser(sub) -> None:
    _add(sub, "delta", run_delta, "the update from one .sqz to another, as a small .sqzd file",
         "Write the .sqzd delta that turns BASE into NEW (see docs/sqz-delta.md).",
         ("base", "the .sqz file the client holds"), ("new", "the .sqz file it should hold"),
         "the .sqzd file (- for standard output)")  # fmt: skip
    _add(sub, "patch", run_patch, "apply a .sqzd delta to the .sqz it was made against",
         "Rebuild NEW from BASE and a .sqzd delta, byte for byte (its SHA-256 is checked).",
         ("base", "the .sqz file the delta was made against"), ("delta", "the .sqzd file"),
         "the .sqz file to write (- for standard output)")  # fmt: skip


def _add(sub, name: str, run, summary: str, description: str, first, second, output: str) -> None:
    p = sub.add_parser(name, help=summary, description=description)
    p.add_argument(first[0], help=first[1])
    p.add_argument(second[0], help=second[1])
    p.add_argument("--output", "-o", type=output_file, required=True, help=output)
    p.set_defaults(run=run)


def _refuse_overwrite(out: Path, *inputs: str) -> None:
    from squeezenet.errors import WeightsError

    for given in inputs:
        if Path(given).exists() and out.exists() and out.resolve() == Path(given).resolve():
            raise WeightsError(f"{out}: output would overwrite the input")


def run_delta(args: argparse.Namespace) -> int:
    from squeezenet.weights.deltas import delta_files

    out = Path(args.output)
    _refuse_overwrite(out, args.base, args.new)
    result = delta_files(args.base, args.new, out)
    ops = ", ".join(f"{n} {k}" for k, n in result.report["ops"].items() if n)
    kind = "NEW whole: its content does not rewrite to it" if result.report["literal"] else ops
    wrote(out, f"{kind}; base sha256 {result.base_sha256}, new sha256 {result.result_sha256}", len(result.data))
    return 0


def run_patch(args: argparse.Namespace) -> int:
    from squeezenet.weights.deltas import patch_files

    out = Path(args.output)
    _refuse_overwrite(out, args.base, args.delta)
    result = patch_files(args.base, args.delta, out)
    wrote(out, f"sha256 {result.result_sha256}, patched in {result.seconds * 1000:.0f} ms", len(result.data))
    return 0
