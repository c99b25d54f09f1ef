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
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from squeezenet.errors import WeightsError
from squeezenet.export.c.table import TABLE_FILE
from squeezenet.serving.batching import Batcher
from squeezenet.serving.bytedelta import make_byte_delta
from squeezenet.serving.config import ORT_WEB_DIST, ServeConfig
from squeezenet.serving.convert import KEPT_SQZ
from squeezenet.serving.memory import MemoryBudget
from squeezenet.serving.metrics import Metrics
from squeezenet.serving.model import Conversions, ModelHolder, ServedModel, file_sha256, load_model
from squeezenet.weights.deltas import delta_bytes

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


@dataclass(frozen=True)
class SwapResult:
    """What a swap did: ``result`` swapped or unchanged (the weights already served), the model
    serving now and the id of the one before."""

    result: str
    model: ServedModel
    previous: str


def _sha256_of_file(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ({exc.strerror or exc})") from None


class Service:
    """What the routes share: options, the model holder, metrics, thread pools, the memory budget,
    the converted models and a work folder."""

    def __init__(
        self, config: ServeConfig, initial: ServedModel, workdir: Path, conversions: Conversions | None = None
    ) -> None:
        self.config, self.initial, self.workdir = config, initial, Path(workdir)
        self.conversions = conversions or Conversions(self.workdir)
        self.metrics = Metrics()
        self.decode_pool = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="decode")
        self.infer_pool = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.memory = MemoryBudget(config.image_memory_bytes, config.max_queue)
        self.metrics.image_memory.set_function(lambda: self.memory.in_use)
        self.metrics.memory_waiting.set_function(lambda: self.memory.waiting)
        self.holder: ModelHolder | None = None
        self.ort_web = find_ort_web(config.ort_web)
        self.started = time.time()
        self._gzipped: dict[str, bytes] = {}
        self._deltas: dict[tuple[str, str], bytes] = {}  # (from SHA-256, to SHA-256) -> .sqzd
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

    async def load_and_swap(
        self, weights: Path, source: str, name: str | None = None, sha256: str | None = None
    ) -> SwapResult:
        """Load ``weights`` aside (the current model keeps serving), then swap it in. The weights
        already served (same SHA-256) are not loaded again; weights converted before are not
        converted again. One load at a time; a failure leaves the current model in place and
        raises ``WeightsError``; cancelled (the uploader went away), nothing changes. Every
        outcome is counted and logged in one line."""
        started, what = time.perf_counter(), f"{source}, {name or weights}"
        try:
            async with self.holder.swap_lock:
                current = self.holder.current
                try:
                    sha256 = sha256 or await asyncio.to_thread(_sha256_of_file, weights)
                    if sha256 == current.card["sha256"]:
                        self.log_swap(what, source, "unchanged", f"{current.id} is the model served", started)
                        return SwapResult("unchanged", current, current.id)
                    new, converted = await load_model(weights, self.conversions, self.config, name, sha256)
                except WeightsError as exc:
                    self.log_swap(what, source, "refused", f"kept model {current.id}: {exc}", started)
                    raise
                old = self.holder.swap(new)
        except asyncio.CancelledError:
            self.log_swap(what, source, "abandoned", f"cancelled; kept model {self.holder.current.id}", started)
            raise
        self.metrics.set_model(new.id, new.card["arch"])
        how = "converted" if converted else "converted before: session only"
        self.log_swap(what, source, "swapped", f"model {old.id} -> {new.id} ({how})", started)
        return SwapResult("swapped", new, old.id)

    def sqz_of(self, model: ServedModel) -> bytes | None:
        """The ``.sqz`` bytes a model was loaded from (its converted folder keeps them), or None."""
        path = model.folder / KEPT_SQZ
        return path.read_bytes() if path.is_file() else None

    def _kept_folder(self, model_id: str) -> tuple[str, Path] | None:
        """(SHA-256, converted folder) of a recent model by id: the folders ``Conversions`` keeps."""
        return next(((sha, folder) for sha, folder in list(self.conversions.folders.items()) if sha[:12] == model_id),
                    None)  # fmt: skip

    async def _delta(self, key: tuple, make, old: bytes, new: bytes) -> bytes:
        """``make(old, new)`` in a thread, kept under ``key`` (the last few only)."""
        if key not in self._deltas:
            data = await asyncio.to_thread(make, old, new)
            while len(self._deltas) >= 2 * self.conversions.keep:
                self._deltas.pop(next(iter(self._deltas)))
            self._deltas[key] = data
        return self._deltas[key]

    async def delta_from(self, model_id: str) -> bytes | None:
        """The ``.sqzd`` that turns the recent model ``model_id`` into the one served now; None when
        either is not a kept ``.sqz`` (the client then fetches the whole file). Kept once made."""
        current, kept = self.holder.current, self._kept_folder(model_id)
        new = self.sqz_of(current)
        if kept is None or new is None or model_id == current.id or not (kept[1] / KEPT_SQZ).is_file():
            return None
        old = (kept[1] / KEPT_SQZ).read_bytes()
        make = lambda a, b: delta_bytes(a, b, f"model {model_id}", f"model {current.id}").data  # noqa: E731
        return await self._delta((kept[0], current.card["sha256"], "sqzd"), make, old, new)

    async def wasm_delta_from(self, model_id: str, name: str) -> bytes | None:
        """The byte delta (``bytedelta``) from the WebAssembly file ``name`` (a module, or the weight
        table) of the recent model ``model_id`` to the same file of the one served now; None when either
        has no such file."""
        current, kept = self.holder.current, self._kept_folder(model_id)
        folder = current.wasm_folder
        if kept is None or folder is None or model_id == current.id or not name.endswith((".wasm", TABLE_FILE)):
            return None
        old_path, new_path = kept[1] / "wasm" / name, folder / name
        if name not in current.card["browser"].get("files", {}) or not old_path.is_file() or not new_path.is_file():
            return None
        key = (kept[0], current.card["sha256"], name)
        return await self._delta(key, make_byte_delta, old_path.read_bytes(), new_path.read_bytes())

    def log_swap(self, what: str, source: str, result: str, detail: str, started: float | None = None) -> None:
        """Count a swap by result and say it in one line of the log (refused PUTs included)."""
        self.metrics.swaps.labels(source=source, result=result).inc()
        took = f" in {time.perf_counter() - started:.1f} s" if started is not None else ""
        print(f"squeezenet serve: swap ({what}): {result}{took}: {detail}", flush=True)

    async def reload_from_watch(self, path: Path) -> None:
        with contextlib.suppress(WeightsError):  # said in the log; the old model keeps serving
            await self.load_and_swap(path, "watch")

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
