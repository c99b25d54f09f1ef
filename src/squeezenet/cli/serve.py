"""``squeezenet serve``: an HTTP service and a web page for one model, with live updates (docs/serving.md)."""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from squeezenet.bounds import Bounds
from squeezenet.cli.common import ranged
from squeezenet.errors import MissingExtraError
from squeezenet.serving.config import BOUNDS, BROWSER_MODELS, MEBIBYTE, ServeConfig

TOKEN_ENV = "SQUEEZENET_SERVE_TOKEN"
SERVE_MODULES = ("fastapi", "uvicorn", "prometheus_client", "multipart", "onnxruntime", "onnx")


def add_parser(sub) -> None:
    defaults = ServeConfig(weights=Path("-"))
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
    p.add_argument("--host", default=defaults.host, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=ranged(BOUNDS["port"]), default=defaults.port, help="port (default 8000)")
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"allow PUT /v1/model with 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV}; none: updates off)",
    )
    p.add_argument("--watch", action="store_true", help="swap in the weights file when it is replaced on disk")
    p.add_argument(
        "--watch-interval",
        type=ranged(BOUNDS["watch_interval"]),
        default=defaults.watch_interval,
        help="seconds between checks of the watched file (default 1)",
    )
    p.add_argument(
        "--max-batch",
        type=ranged(BOUNDS["max_batch"]),
        default=defaults.max_batch,
        help=f"most images per batch (default {defaults.max_batch}: batching off, measured no faster on a CPU)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=ranged(BOUNDS["max_wait_ms"]),
        default=defaults.max_wait_ms,
        help="longest wait for a batch to fill, in ms (default 0: take what is queued)",
    )
    p.add_argument(
        "--threads", type=ranged(BOUNDS["threads"]), default=None, help="ONNX Runtime threads (default: all cores)"
    )
    p.add_argument(
        "--decode-threads",
        type=ranged(BOUNDS["decode_threads"]),
        default=None,
        help="threads decoding images (default: all cores)",
    )
    p.add_argument(
        "--max-body-mb",
        type=ranged(Bounds(0, low_open=True)),
        default=defaults.max_body_bytes / MEBIBYTE,
        help="largest image upload in MiB (default 16)",
    )
    p.add_argument(
        "--max-weights-mb",
        type=ranged(Bounds(0, low_open=True)),
        default=defaults.max_weights_bytes / MEBIBYTE,
        help="largest weights upload in MiB (default 64)",
    )
    p.add_argument(
        "--max-pixels",
        type=ranged(BOUNDS["max_pixels"]),
        default=defaults.max_pixels,
        help=f"largest image in pixels, checked before decoding (default {defaults.max_pixels:,})",
    )
    p.add_argument(
        "--read-timeout",
        type=ranged(BOUNDS["read_timeout"]),
        default=defaults.read_timeout,
        help="seconds a client may take to send its body (default 10)",
    )
    p.add_argument(
        "--keep-alive",
        type=ranged(BOUNDS["keep_alive"]),
        default=defaults.keep_alive,
        help="seconds an idle connection stays open; keep it above the idle timeout of the clients or "
        "proxy in front (default 75)",
    )
    p.add_argument(
        "--max-queue",
        type=ranged(BOUNDS["max_queue"]),
        default=defaults.max_queue,
        help="images waiting for the model before new ones get 503 (default 256)",
    )
    p.add_argument(
        "--max-connections",
        type=ranged(BOUNDS["max_connections"]),
        default=defaults.max_connections,
        help="open connections before new ones get 503 (default 512)",
    )
    p.add_argument(
        "--browser-model",
        choices=BROWSER_MODELS,
        default=defaults.browser_model,
        help="what the page runs in the browser: w8a32 (default: 8-bit weights, fp32 arithmetic, the "
        "server's answers from a 4x smaller file), int8 (needs --calibration), fp32, none",
    )
    p.add_argument(
        "--calibration",
        nargs="+",
        default=[],
        help="images or folders to calibrate --browser-model int8 on",
    )
    p.add_argument(
        "--calibration-limit",
        type=ranged(BOUNDS["calibration_limit"]),
        default=defaults.calibration_limit,
        help="most calibration images used (default 32)",
    )
    p.add_argument(
        "--ort-web",
        default=None,
        help="onnxruntime-web's dist/ folder (default: node_modules/onnxruntime-web/dist here or above)",
    )
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    extra = {}
    if args.threads is not None:
        extra["threads"] = args.threads
    if args.decode_threads is not None:
        extra["decode_threads"] = args.decode_threads
    return ServeConfig(
        weights=Path(args.weights),
        host=args.host,
        port=args.port,
        token=args.token or None,
        watch=args.watch,
        watch_interval=args.watch_interval,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_body_bytes=int(args.max_body_mb * MEBIBYTE),
        max_weights_bytes=int(args.max_weights_mb * MEBIBYTE),
        max_pixels=args.max_pixels,
        read_timeout=args.read_timeout,
        keep_alive=args.keep_alive,
        max_queue=args.max_queue,
        max_connections=args.max_connections,
        browser_model=args.browser_model,
        calibration=tuple(Path(p) for p in args.calibration),
        calibration_limit=args.calibration_limit,
        ort_web=Path(args.ort_web) if args.ort_web else None,
        **extra,
    )


def run(args: argparse.Namespace) -> int:
    missing = [m for m in SERVE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(f"serve needs {', '.join(missing)}: pip install 'squeezenet[serve]'")
    config = config_from_args(args)
    from squeezenet.serving.server import serve

    serve(config)
    return 0
