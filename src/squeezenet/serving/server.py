"""Start the service: take the port, load the first model (a bad file or a taken port fails
here, as one error line), then uvicorn."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import tempfile
from pathlib import Path

from squeezenet.errors import DeployError
from squeezenet.serving.config import ServeConfig


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound before the model loads, so a port in use (or a host this machine does not have) is
    said at once rather than after a conversion of several seconds, and ``--port 0`` learns the
    port it got; uvicorn then serves on this very socket, with no window for another process."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DeployError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(config: ServeConfig) -> None:
    """Run until interrupted. Binds ``config.host`` (127.0.0.1 unless told otherwise)."""
    import uvicorn
    from PIL import Image

    from squeezenet.serving.app import create_app
    from squeezenet.serving.connections import ConnectionGuard, guarded_protocol
    from squeezenet.serving.memory import tune_malloc
    from squeezenet.serving.model import Conversions, load_model
    from squeezenet.serving.service import Service

    tune_malloc()  # before any thread starts: each would get a heap of its own
    # after the imports (data.images sets Pillow's limit for files read from disk): the server's
    # limit is --max-pixels, checked before decoding (preprocess.decode)
    Image.MAX_IMAGE_PIXELS = None

    sock = listening_socket(config.host, config.port)
    config = dataclasses.replace(config, port=sock.getsockname()[1])
    workdir = Path(tempfile.mkdtemp(prefix="squeezenet-serve-"))
    try:
        conversions = Conversions(workdir)
        initial, _ = asyncio.run(load_model(config.weights, conversions, config))
        service = Service(config, initial, workdir, conversions)
        limits = (config.max_connections, config.max_client_connections, config.header_timeout)
        guard = ConnectionGuard(*limits, service.metrics)
        server_config = uvicorn.Config(
            create_app(service),
            http=guarded_protocol(guard),  # its limits and header timeout replace limit_concurrency
            log_level="warning",
            access_log=False,
            timeout_keep_alive=config.keep_alive,
        )
        server = uvicorn.Server(server_config)
        server.run(sockets=[sock])
        if not server.started:  # uvicorn has logged why (its lifespan startup failed)
            raise DeployError("the service did not start")
    finally:
        sock.close()
        shutil.rmtree(workdir, ignore_errors=True)
