"""Start the service: load the first model (a bad file fails here, as one error line), then uvicorn."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from squeezenet.serving.config import ServeConfig


def serve(config: ServeConfig) -> None:
    """Run until interrupted. Binds ``config.host`` (127.0.0.1 unless told otherwise)."""
    import uvicorn
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # the pixel limit is --max-pixels, checked before decoding (preprocess.decode)

    from squeezenet.serving.app import Service, create_app
    from squeezenet.serving.model import load_model

    workdir = Path(tempfile.mkdtemp(prefix="squeezenet-serve-"))
    try:
        initial = load_model(
            config.weights,
            workdir,
            config.threads,
            config.browser_model,
            config.calibration,
            config.calibration_limit,
            config.convert_timeout,
        )
        app = create_app(Service(config, initial, workdir))
        uvicorn.run(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=config.keep_alive,
            limit_concurrency=config.max_connections,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
