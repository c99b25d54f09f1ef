"""The server's options and limits, with safe defaults (every one is a ``squeezenet serve`` option).

The limits bound what one request can cost: the bytes of a body, the pixels an image may
decode to (a 2 KB PNG can claim 50,000 x 50,000 pixels: a decompression bomb), the time a
client may take to send its body, the images waiting for the model. The defaults of the
batching options were chosen by ``benchmarks/bench_serve.py`` (docs/serving.md says why).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from squeezenet.bounds import Bounds
from squeezenet.errors import DeployError, ModelError
from squeezenet.export.formats import find_clang

# auto: wasm (the C export as WebAssembly, no runtime to download) where --calibration images are
# given and clang can build it, else w8a32 (onnxruntime-web)
BROWSER_MODELS = ("auto", "wasm", "w8a32", "int8", "fp32", "none")
MEBIBYTE = 1 << 20
# where npm puts onnxruntime-web's files, looked for in the current folder and above the package
ORT_WEB_DIST = Path("node_modules", "onnxruntime-web", "dist")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# name -> allowed range: the CLI's argparse types and ServeConfig's own check read the same table
BOUNDS = {
    "port": Bounds(0, 65535, integer=True),
    "max_batch": Bounds(1, 256, integer=True),
    "max_wait_ms": Bounds(0, 1000),
    "decode_threads": Bounds(1, 64, integer=True),
    "threads": Bounds(1, 256, integer=True),
    "max_body_bytes": Bounds(1, integer=True),
    "max_weights_bytes": Bounds(1, integer=True),
    "max_pixels": Bounds(1, integer=True),
    "read_timeout": Bounds(0, low_open=True),
    "keep_alive": Bounds(0, low_open=True),
    "header_timeout": Bounds(0, low_open=True),
    "max_queue": Bounds(1, integer=True),
    "max_connections": Bounds(1, integer=True),
    "max_client_connections": Bounds(1, integer=True),
    "image_memory_bytes": Bounds(1, integer=True),
    "convert_cores": Bounds(0, 256, integer=True),
    "watch_interval": Bounds(0, low_open=True),
    "calibration_limit": Bounds(1, integer=True),
    "convert_timeout": Bounds(0, low_open=True),
}


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``squeezenet serve`` can be told. ``token`` None: live updates over HTTP are off."""

    weights: Path
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    watch: bool = False
    watch_interval: float = 1.0
    max_batch: int = 1  # batching off: measured no faster on a CPU (benchmarks/results/serve.md)
    max_wait_ms: float = 0.0
    decode_threads: int = field(default_factory=usable_cores)
    threads: int = field(default_factory=usable_cores)
    max_body_bytes: int = 16 * MEBIBYTE
    max_weights_bytes: int = 64 * MEBIBYTE
    max_pixels: int = 24_000_000
    read_timeout: float = 10.0
    # An idle connection is closed after this many seconds. Longer than clients keep theirs (httpx 5 s,
    # aiohttp 15 s, a proxy's upstream pool often 60 s): a server that closes first races a client
    # reusing the connection, and the request sent into the closing socket is lost (docs/serving.md)
    keep_alive: float = 75.0
    # A connection must send a whole request head this soon after it opens (or after the first byte
    # of a later request): idle and stalled connections cannot pile up (serving/connections.py)
    header_timeout: float = 10.0
    max_queue: int = 256
    max_connections: int = 512
    # One address may hold this many: a browser opens 6, the load benchmark 32 (behind a proxy every
    # client has the proxy's address: raise it there, and limit clients in the proxy)
    max_client_connections: int = 64
    # Images in flight, decoding and waiting for the model (serving/memory.py): the largest image at
    # --max-pixels in the costliest common kind (24 Mpx with transparency or rotated, 8 bytes a pixel)
    # fits, and the server's worst case, about 140 MB besides, stays under 400 MB (docs/serving.md)
    image_memory_bytes: int = 208 * MEBIBYTE
    # cores kept for the conversion child while it runs, the server's threads keeping to the others:
    # at a lower priority instead, a swap under load took 52-55 s against 8 s on an idle server
    convert_cores: int = 1
    browser_model: str = "auto"
    calibration: tuple[Path, ...] = ()
    calibration_limit: int = 32
    ort_web: Path | None = None
    convert_timeout: float = 600.0

    def __post_init__(self) -> None:
        for name, bounds in BOUNDS.items():
            value = getattr(self, name)
            if not bounds.contains(value):
                raise ModelError(f"{name.replace('_', '-')} must {bounds.describe()}, got {value}")
        if self.browser_model not in BROWSER_MODELS:
            raise ModelError(f"browser-model must be one of {', '.join(BROWSER_MODELS)}, got {self.browser_model!r}")
        if self.browser_model in ("int8", "wasm") and not self.calibration:
            raise ModelError(
                f"browser-model {self.browser_model} needs --calibration images (int8 is calibrated on real images)"
            )
        if self.browser_model == "wasm":
            self.browser_format  # noqa: B018 (wasm without its toolchain: one error, at start-up)
        if self.token is not None and len(self.token) < 8:
            raise ModelError("the token must have at least 8 characters")

    @property
    def browser_format(self) -> str:
        """What the conversion child builds: auto is wasm where it can be built, else w8a32; wasm
        without its toolchain is one error."""
        if self.browser_model not in ("auto", "wasm"):
            return self.browser_model
        try:
            find_clang()
        except DeployError as exc:
            if self.browser_model == "wasm":
                raise ModelError(f"browser-model wasm: {exc}") from None
            return "w8a32"
        return "wasm" if self.calibration else "w8a32"
