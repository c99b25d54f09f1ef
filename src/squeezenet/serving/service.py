"""What every route shares: the options, the model holder, metrics, thread pools, a work folder.

One ``Service`` per app, kept in ``app.state``; routes reach it through the ``ServiceDep``
dependency rather than a closure, so that each router can live in a module of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from squeezenet.errors import WeightsError
from squeezenet.serving.batching import Batcher
from squeezenet.serving.config import ORT_WEB_DIST, ServeConfig
from squeezenet.serving.metrics import Metrics
from squeezenet.serving.model import ModelHolder, ServedModel, load_model

ORT_WEB_FILES = {  # what the page needs from onnxruntime-web's dist/ folder: the WebAssembly build only
    "ort.wasm.min.js": "text/javascript",
    "ort-wasm-simd-threaded.mjs": "text/javascript",
    "ort-wasm-simd-threaded.wasm": "application/wasm",
}
ORT_WEB_BASE = "/vendor/onnxruntime-web/"  # where the server serves those files (routes.page)
ORT_WEB_HINT = "npm install --no-save onnxruntime-web (in the folder you start the server from)"


def find_ort_web(configured: Path | None) -> Path | None:
    """onnxruntime-web's ``dist/`` folder where npm put it: ``--ort-web``, ``$SQUEEZENET_ORT_WEB``,
    else ``ORT_WEB_DIST`` in the current folder or above the package."""
    if configured is not None:
        return configured if (configured / "ort.wasm.min.js").is_file() else None
    candidates = [Path(os.environ["SQUEEZENET_ORT_WEB"])] if os.environ.get("SQUEEZENET_ORT_WEB") else []
    for base in [Path.cwd(), *Path(__file__).resolve().parents[1:5]]:
        candidates.append(base / ORT_WEB_DIST)
    return next((c for c in candidates if (c / "ort.wasm.min.js").is_file()), None)


def ort_web_version(dist: Path | None) -> str | None:
    if dist is None:
        return None
    try:
        return json.loads((dist.parent / "package.json").read_text()).get("version")
    except (OSError, ValueError):
        return None


class Service:
    """What the routes share: options, the model holder, metrics, thread pools, a work folder."""

    def __init__(self, config: ServeConfig, initial: ServedModel, workdir: Path) -> None:
        self.config, self.initial, self.workdir = config, initial, Path(workdir)
        self.metrics = Metrics()
        self.decode_pool = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="decode")
        self.infer_pool = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.holder: ModelHolder | None = None
        self.ort_web = find_ort_web(config.ort_web)
        self.started = time.time()
        self._gzipped: dict[str, bytes] = {}
        self._tasks: set[asyncio.Task] = set()

    def make_batcher(self, model: ServedModel) -> Batcher:
        c = self.config
        return Batcher(model.infer, self.infer_pool, c.max_batch, c.max_wait_ms, c.max_queue, self.metrics.on_batch)

    async def start(self) -> None:
        self.holder = ModelHolder(self.initial, self.make_batcher)
        self.metrics.set_model(self.initial.id, self.initial.card["arch"])
        self.metrics.queue.set_function(lambda: self.holder.current.batcher.queued if self.holder else 0)
        if self.config.watch:
            from squeezenet.serving.watch import watch_file

            self._spawn(watch_file(self.config.weights, self.config.watch_interval, self.reload_from_watch))

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.holder is not None:
            await self.holder.close()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.infer_pool.shutdown(wait=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def load_and_swap(self, weights: Path, source: str, name: str | None = None) -> tuple[ServedModel, str]:
        """Load ``weights`` aside (the current model keeps serving), then swap it in; -> (new, old id).
        One load at a time; a failure leaves the current model in place and raises ``WeightsError``."""
        c = self.config
        async with self.holder.swap_lock:
            try:
                new = await asyncio.to_thread(
                    load_model,
                    weights,
                    self.workdir,
                    c.threads,
                    c.browser_model,
                    c.calibration,
                    c.calibration_limit,
                    c.convert_timeout,
                    name,
                )
            except WeightsError:
                self.metrics.swaps.labels(source=source, result="refused").inc()
                raise
            old = self.holder.swap(new)
        self.metrics.swaps.labels(source=source, result="swapped").inc()
        self.metrics.set_model(new.id, new.card["arch"])
        print(f"squeezenet serve: model {old.id} -> {new.id} ({source})", flush=True)
        return new, old.id

    async def reload_from_watch(self, path: Path) -> None:
        try:
            await self.load_and_swap(path, "watch")
        except WeightsError as exc:
            print(f"squeezenet serve: kept model {self.holder.current.id}: {exc}", flush=True)

    def gzipped(self, path: Path) -> bytes:
        """A file's gzip encoding, made once per file (the 14 MB WebAssembly runtime shrinks about
        4x; a pruned model's 8-bit weights, mostly the index of zero, about 2x)."""
        key = str(path)
        for stale in [k for k in self._gzipped if not Path(k).exists()]:  # swapped-out models' files
            del self._gzipped[stale]
        if key not in self._gzipped:
            self._gzipped[key] = gzip.compress(path.read_bytes(), compresslevel=6, mtime=0)
        return self._gzipped[key]

    async def gzipped_if_accepted(self, request: Request, path: Path, headers: dict) -> bytes | None:
        """The gzip encoding of ``path`` when the client takes it (``headers`` then say so), else None."""
        if "gzip" not in request.headers.get("accept-encoding", ""):
            return None
        headers.update({"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        return await asyncio.to_thread(self.gzipped, path)


async def current_service(request: Request) -> Service:
    # async: FastAPI would run a plain function in its thread pool, a hop on every request
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(current_service)]
