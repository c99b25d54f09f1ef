"""``squeezenet serve``: an HTTP service and a web page for one model, with live updates (docs/serving.md)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
from pathlib import Path

from squeezenet.bounds import Bounds
from squeezenet.cli.common import ranged
from squeezenet.errors import MissingExtraError
from squeezenet.serving.config import BOUNDS, BROWSER_MODELS, MEBIBYTE, ORT_WEB_DIST, ServeConfig

TOKEN_ENV = "SQUEEZENET_SERVE_TOKEN"
SERVE_MODULES = ("fastapi", "uvicorn", "prometheus_client", "multipart", "onnxruntime", "onnx")
BROWSER_MODEL_NOTES = {
    "auto": "wasm with --calibration and clang, else w8a32",
    "wasm": "the integer C export as WebAssembly, about the .sqz's size, no runtime to download; needs --calibration",
    "w8a32": "8-bit weights, fp32 arithmetic: the server's answers from a 4x smaller file",
    "int8": "needs --calibration",
    "fp32": "the served graph itself",
    "none": "no in-browser inference",
}
POSITIVE = Bounds(0, low_open=True)


def _defaults() -> ServeConfig:
    """The library's defaults: every help string below names its default from here."""
    return ServeConfig(weights=Path("-"))


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:,}" if isinstance(value, int) and value >= 10_000 else str(value)


def _number(group, option: str, text: str, default, note: str = "", bounds: Bounds | None = None) -> None:
    """A numeric option whose range is ``BOUNDS`` (the one ServeConfig checks) unless told, and
    whose help ends with its default."""
    name = option.removeprefix("--").replace("-", "_")
    shown = _shown(default) + (f": {note}" if note else "")
    group.add_argument(option, type=ranged(bounds or BOUNDS[name]), default=default, help=f"{text} (default {shown})")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP service and web page: classify, class-activation maps, live model updates",
        description=(
            "Serve a model over HTTP (POST /v1/classify, GET/PUT /v1/model, /healthz, /metrics, /docs) "
            "with a web page at /. The server process never imports PyTorch; each weights file is "
            "converted and checked in a child process."
        ),
    )
    p.add_argument("--weights", "-w", required=True, help="weights file (.sqz, .safetensors, .pth, .net) or tag")
    defaults = _defaults()
    _network_options(p.add_argument_group("network"), defaults)
    _update_options(p.add_argument_group("live updates"), defaults)
    _batching_options(p.add_argument_group("batching and threads"), defaults)
    _limit_options(p.add_argument_group("limits on a request"), defaults)
    _browser_options(p.add_argument_group("the page's in-browser model"), defaults)
    p.set_defaults(run=run)


def _network_options(g, d: ServeConfig) -> None:
    g.add_argument("--host", default=d.host, help=f"address to bind (default {d.host}: this machine only)")
    _number(g, "--port", "port", d.port)
    _number(
        g,
        "--keep-alive",
        "seconds an idle connection stays open; keep it above the idle timeout of the clients or proxy in front",
        d.keep_alive,
    )
    _number(
        g,
        "--header-timeout",
        "seconds a connection may take to send a request's line and headers (from its start, or from a "
        "later request's first byte); then it is closed",
        d.header_timeout,
    )
    _number(g, "--max-connections", "open connections before new ones get a JSON 503", d.max_connections)
    _number(
        g,
        "--max-client-connections",
        "open connections from one address before its next gets a JSON 503 (behind a proxy: every client "
        "has the proxy's address; limit clients there)",
        d.max_client_connections,
    )


def _update_options(g, d: ServeConfig) -> None:
    g.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"allow PUT /v1/model with 'Authorization: Bearer TOKEN', at least 8 characters (default: ${TOKEN_ENV}; "
        "none: updates off)",
    )
    g.add_argument("--watch", action="store_true", help="swap in the weights file when it is replaced on disk")
    _number(g, "--watch-interval", "seconds between checks of the watched file", d.watch_interval)
    _number(g, "--convert-timeout", "seconds a weights file's conversion may take", d.convert_timeout)
    _number(
        g,
        "--convert-cores",
        "cores the server's threads leave to a conversion while it runs (0: share them, at a lower priority)",
        d.convert_cores,
    )


def _batching_options(g, d: ServeConfig) -> None:
    _number(g, "--max-batch", "most images per batch", d.max_batch, "batching off, measured no faster on a CPU")
    _number(g, "--max-wait-ms", "longest wait for a batch to fill, in ms", d.max_wait_ms, "take what is queued")
    _number(g, "--max-queue", "images waiting for the model before new ones get 503", d.max_queue)
    _number(g, "--threads", "ONNX Runtime threads", d.threads, "the usable cores")
    _number(g, "--decode-threads", "threads decoding images", d.decode_threads, "the usable cores")


def _limit_options(g, d: ServeConfig) -> None:
    _number(g, "--max-body-mb", "largest image upload in MiB", d.max_body_bytes / MEBIBYTE, bounds=POSITIVE)
    _number(g, "--max-weights-mb", "largest weights upload in MiB", d.max_weights_bytes / MEBIBYTE, bounds=POSITIVE)
    _number(g, "--max-pixels", "largest image in pixels, checked before decoding", d.max_pixels)
    _number(
        g,
        "--image-memory-mb",
        "MiB for images in flight (decoding, and decoded waiting for the model); more wait, an image "
        "needing more alone gets 413",
        d.image_memory_bytes / MEBIBYTE,
        bounds=POSITIVE,
    )
    _number(g, "--read-timeout", "seconds a client may take to send its body", d.read_timeout)


def _browser_options(g, d: ServeConfig) -> None:
    choices = ", ".join(f"{name} ({note})" for name, note in BROWSER_MODEL_NOTES.items())
    g.add_argument(
        "--browser-model",
        choices=BROWSER_MODELS,
        default=d.browser_model,
        help=f"what the page runs in the browser: {choices} (default {d.browser_model})",
    )
    g.add_argument(
        "--calibration", nargs="+", default=[], help="images or folders to calibrate --browser-model wasm or int8 on"
    )
    _number(g, "--calibration-limit", "most calibration images used", d.calibration_limit)
    g.add_argument(
        "--ort-web", default=None, help=f"onnxruntime-web's dist/ folder (default: {ORT_WEB_DIST} here or above)"
    )


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """Each option is the ServeConfig field of its name, but for the few given in other units or types."""
    same = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig) if hasattr(args, f.name)}
    return ServeConfig(
        **{
            **same,
            "weights": Path(args.weights),
            "token": args.token or None,
            "max_body_bytes": int(args.max_body_mb * MEBIBYTE),
            "max_weights_bytes": int(args.max_weights_mb * MEBIBYTE),
            "image_memory_bytes": int(args.image_memory_mb * MEBIBYTE),
            "calibration": tuple(Path(p) for p in args.calibration),
            "ort_web": Path(args.ort_web) if args.ort_web else None,
        }
    )


def run(args: argparse.Namespace) -> int:
    missing = [m for m in SERVE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(f"serve needs {', '.join(missing)}: pip install 'squeezenet[serve]'")
    config = config_from_args(args)
    from squeezenet.serving.server import serve

    serve(config)
    return 0
