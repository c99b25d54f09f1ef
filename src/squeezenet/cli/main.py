"""``squeezenet`` command line: each sub-command is a thin layer over a library function.

Every error a user can cause ends as one line on stderr and a non-zero exit status;
``SQUEEZENET_DEBUG=1`` shows the traceback of unexpected errors.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from squeezenet.errors import SqueezeNetError

# Sub-command modules, in the order `--help` lists them; each has add_parser() and run().
COMMANDS = ("info", "predict", "evaluate", "convert", "train", "plot", "compress", "delta", "export", "bench", "serve")


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + error; we print one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="squeezenet", description=__doc__.splitlines()[0])
    from squeezenet import __version__

    parser.add_argument("--version", action="version", version=f"squeezenet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    for name in COMMANDS:
        module = importlib.import_module(f"squeezenet.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except SqueezeNetError as exc:
        print(f"squeezenet: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("squeezenet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()  # output piped into `head`: not an error
        return 0
    except Exception as exc:  # last resort: still one line, never a traceback
        if os.environ.get("SQUEEZENET_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"squeezenet: error: {type(exc).__name__}: {message} (set SQUEEZENET_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
