"""The HTTP routes (FastAPI): classify, the model card and live updates, health, metrics, the page.

Every request a client can get wrong is answered with a 4xx JSON body
``{"error": {"kind", "message", "status"}}`` (``problems.RequestProblem``), and nothing a
request does can stop the next one: bodies are read under a byte limit and a time limit,
images are decoded in a thread pool under a pixel limit, inference runs on its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hmac
import json
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from squeezenet.errors import WeightsError
from squeezenet.serving.batching import Batcher
from squeezenet.serving.config import ServeConfig
from squeezenet.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from squeezenet.serving.metrics import Metrics
from squeezenet.serving.model import ModelHolder, ServedModel, load_model
from squeezenet.serving.preprocess import prepare
from squeezenet.serving.problems import RequestProblem

STATIC = Path(__file__).resolve().parent / "static"
ORT_WEB_FILES = {  # what the page needs from onnxruntime-web's dist/ folder: the WebAssembly build only
    "ort.wasm.min.js": "text/javascript",
    "ort-wasm-simd-threaded.mjs": "text/javascript",
    "ort-wasm-simd-threaded.wasm": "application/wasm",
}
ORT_WEB_HINT = "npm install --no-save onnxruntime-web (in the folder you start the server from)"
IMAGE_TYPES = ("image/", "application/octet-stream")
ENDPOINTS = {"/", "/healthz", "/metrics", "/v1/classify", "/v1/model", "/v1/model/browser.onnx", "/v1/browser"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

CLASSIFY_BODY = {
    "required": True,
    "content": {
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
        },
    },
}
WEIGHTS_BODY = {
    "required": True,
    "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
        },
    },
}


def find_ort_web(configured: Path | None) -> Path | None:
    """onnxruntime-web's ``dist/`` folder where npm put it: ``--ort-web``, ``$SQUEEZENET_ORT_WEB``,
    else ``node_modules/onnxruntime-web/dist`` in the current folder or above the package."""
    if configured is not None:
        return configured if (configured / "ort.wasm.min.js").is_file() else None
    candidates = [Path(os.environ["SQUEEZENET_ORT_WEB"])] if os.environ.get("SQUEEZENET_ORT_WEB") else []
    for base in [Path.cwd(), *Path(__file__).resolve().parents[1:5]]:
        candidates.append(base / "node_modules" / "onnxruntime-web" / "dist")
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


# ---------------------------------------------------------------- request bodies
async def read_body(request: Request, limit: int, timeout: float, what: str = "body") -> bytes:
    """The whole body, refused over ``limit`` bytes (before reading, when Content-Length says so)
    and when the client takes longer than ``timeout`` seconds to send it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestProblem(400, "bad_request", f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise RequestProblem(413, "body_too_large", f"{what} of {size:,} bytes is over the limit of {limit:,}")
    chunks, total = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise RequestProblem(413, "body_too_large", f"{what} is over the limit of {limit:,} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestProblem(
            408, "read_timeout", f"slow client: the {what} did not arrive within {timeout:g} s (--read-timeout)"
        ) from None
    except ClientDisconnect:
        raise RequestProblem(400, "client_disconnected", "the client closed the connection mid-body") from None
    return b"".join(chunks)


async def file_from_body(request: Request, body: bytes, accepted: tuple[str, ...], what: str) -> tuple[bytes, str]:
    """(file bytes, file name) from a raw body of an ``accepted`` type or a multipart upload."""
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    if kind == "multipart/form-data":

        async def stream():
            yield body
            yield b""

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=16).parse()
        except MultiPartException as exc:
            raise RequestProblem(400, "bad_multipart", f"unreadable multipart body ({exc.message})") from None
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise RequestProblem(400, "empty_body", f"the multipart body has no file part: upload the {what} as a file")
        data = await files[0].read()
        await form.close()
        return data, files[0].filename or ""
    if kind and not kind.startswith(accepted):
        wanted = " or ".join(a + "*" if a.endswith("/") else a for a in accepted)
        raise RequestProblem(
            415,
            "wrong_content_type",
            f"content type {kind!r} is not accepted: send the {what} as {wanted}, or as multipart/form-data",
        )
    return body, ""


# ---------------------------------------------------------------- responses
def problem_response(problem: RequestProblem, metrics: Metrics) -> JSONResponse:
    metrics.errors.labels(kind=problem.kind).inc()
    headers = {}
    if problem.status in (408, 413):
        headers["Connection"] = "close"  # the rest of the body is never read
    if problem.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(problem.to_dict(), status_code=problem.status, headers=headers)


def top_classes(logits: np.ndarray, card: dict, k: int) -> list[dict]:
    shifted = np.exp(logits - logits.max())
    probs = shifted / shifted.sum()
    best = np.argsort(-probs, kind="stable")[:k]
    classes, wnids = card.get("classes") or [], card.get("wnids") or []
    out = []
    for rank, i in enumerate(best, 1):
        entry = {"rank": rank, "index": int(i), "name": classes[i] if i < len(classes) else f"class {i}"}
        if i < len(wnids):
            entry["wnid"] = wnids[i]
        entry["probability"] = round(float(probs[i]), 6)
        out.append(entry)
    return out


def cam_payload(cam: np.ndarray, index: int, box: tuple[float, ...]) -> dict:
    """The map of class ``index`` as 0-255 integers (scaled by its maximum), and where the crop lies."""
    heat = cam[index]
    peak = float(heat.max())
    scaled = np.zeros_like(heat) if peak <= 0 else heat / peak
    return {
        "class_index": index,
        "size": list(heat.shape),
        "values": np.rint(scaled * 255).astype(np.uint8).tolist(),
        "box": [round(v, 5) for v in box],
    }


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise RequestProblem(400, "bad_parameter", f"{name} must be a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise RequestProblem(400, "bad_parameter", f"{name} must lie in [{low}, {high}], got {value}")
    return value


def _query_flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------- metrics middleware
class MetricsMiddleware:
    """Counts every HTTP request by endpoint and status and times it (plain ASGI: no per-request task)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"]
            endpoint = (
                path if path in ENDPOINTS else ("static" if path.startswith(("/static/", "/vendor/")) else "other")
            )
            self.metrics.requests.labels(endpoint=endpoint, method=scope["method"], status=str(status[0])).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - start)


# ---------------------------------------------------------------- the app
def create_app(service: Service) -> FastAPI:
    config = service.config

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
        model = service.holder.current
        print(
            f"squeezenet serve: http://{config.host}:{config.port}/ model {model.id} ({model.card['arch']}, "
            f"{model.card['file']}); max batch {config.max_batch}, max wait {config.max_wait_ms:g} ms; "
            f"live updates {'on (token)' if config.token else 'off'}{', watching the file' if config.watch else ''}",
            flush=True,
        )
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="squeezenet serve",
        summary="SqueezeNet image classification, class-activation maps and live model updates",
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestProblem)
    async def on_problem(request: Request, exc: RequestProblem):
        return problem_response(exc, service.metrics)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = {404: f"{request.url.path}: no such page or endpoint (see /docs)"}.get(exc.status_code, exc.detail)
        return problem_response(RequestProblem(exc.status_code, kind, str(detail)), service.metrics)

    @app.exception_handler(Exception)
    async def on_internal_error(request: Request, exc: Exception):
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        service.metrics.errors.labels(kind="internal").inc()
        return JSONResponse(
            {"error": {"kind": "internal", "message": f"{type(exc).__name__}: {message}", "status": 500}},
            status_code=500,
        )

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/healthz", summary="Liveness: the model being served")
    async def healthz():
        model = service.holder.current
        return {"status": "ok", "model": model.id, "uptime_s": round(time.time() - service.started, 1)}

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def metrics():
        return Response(service.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @app.post(
        "/v1/classify",
        summary="Classify one image",
        description=(
            "The image as the raw body (Content-Type image/* or application/octet-stream) or as a "
            "multipart upload. Query: topk (1..classes, default 5), cam=true for the class-activation "
            "map of the top class. The response names the model that produced it."
        ),
        openapi_extra={"requestBody": CLASSIFY_BODY},
    )
    async def classify(request: Request):
        start = time.perf_counter()
        topk = _query_int(request, "topk", 5, 1, 100_000)
        want_cam = _query_flag(request, "cam")
        body = await read_body(request, config.max_body_bytes, config.read_timeout, "image")
        data, _ = await file_from_body(request, body, IMAGE_TYPES, "image")
        read = time.perf_counter()
        model = service.holder.acquire()
        try:
            loop = asyncio.get_running_loop()
            prepared = await loop.run_in_executor(
                service.decode_pool, prepare, data, model.preprocessing, config.max_pixels
            )
            decoded = time.perf_counter()
            result = await model.batcher.submit(prepared.array, want_cam)
        finally:
            service.holder.release(model)
        card = model.card
        top = top_classes(result.logits, card, min(topk, card["num_classes"]))
        payload = {
            "model": {"id": model.id, "sha256": card["sha256"], "arch": card["arch"]},
            "top": top,
            "timing": {
                "total_ms": round((time.perf_counter() - start) * 1000, 2),
                "read_ms": round((read - start) * 1000, 2),
                "decode_ms": round((decoded - read) * 1000, 2),
                "queue_ms": round(result.queued_seconds * 1000, 2),
                "inference_ms": round(result.inference_seconds * 1000, 2),
                "batch_size": result.batch_size,
            },
        }
        if want_cam and result.cam is not None:
            payload["cam"] = cam_payload(result.cam, top[0]["index"], prepared.box)
        return JSONResponse(payload, headers={"X-Model-Id": model.id})

    @app.get("/v1/model", summary="The model card of the model being served")
    async def model_card():
        model = service.holder.current
        return JSONResponse({**model.public_card(), "swaps": service.holder.swaps}, headers={"X-Model-Id": model.id})

    @app.put(
        "/v1/model",
        summary="Replace the model (live update)",
        description=(
            "A weights file of any format the loader reads (.sqz, .safetensors, .pth, Deep Compression .net) "
            "as the raw body or a multipart upload, with 'Authorization: Bearer TOKEN' (the token given at "
            "start; without one, updates over HTTP are off). The file is converted and checked aside while "
            "the current model keeps serving, then swapped in: requests already in flight finish on the "
            "old model. A broken or foreign file is refused (422) and the old model stays."
        ),
        openapi_extra={"requestBody": WEIGHTS_BODY},
    )
    async def put_model(request: Request):
        if config.token is None:
            raise RequestProblem(
                403, "updates_disabled", "live updates are off: start the server with --token to allow them"
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise RequestProblem(401, "unauthorized", "missing token: send 'Authorization: Bearer TOKEN'")
        if not hmac.compare_digest(given.strip().encode(), config.token.encode()):
            raise RequestProblem(401, "unauthorized", "wrong token")
        body = await read_body(request, config.max_weights_bytes, config.read_timeout, "weights file")
        data, filename = await file_from_body(request, body, ("application/octet-stream",), "weights file")
        if not data:
            raise RequestProblem(400, "empty_body", "empty body: send the weights file's bytes")
        name = _SAFE_NAME.sub("_", Path(filename or request.query_params.get("name", "") or "uploaded").name)[:100]
        upload_dir = Path(tempfile.mkdtemp(prefix="upload-", dir=service.workdir))
        path = upload_dir / (name or "uploaded")
        try:
            path.write_bytes(data)
            new, previous = await service.load_and_swap(path, "put", name)
        except WeightsError as exc:
            raise RequestProblem(
                422, "bad_weights", f"refused, the model {service.holder.current.id} keeps serving: {exc}"
            ) from None
        finally:
            shutil.rmtree(upload_dir, ignore_errors=True)
        return JSONResponse({"model": new.public_card(), "previous": previous}, headers={"X-Model-Id": new.id})

    @app.get("/v1/browser", summary="What in-browser inference needs: the runtime and the model file")
    async def browser_info():
        model = service.holder.current
        files = {}
        if service.ort_web is not None:
            files = {
                name: (service.ort_web / name).stat().st_size
                for name in ORT_WEB_FILES
                if (service.ort_web / name).is_file()
            }
        return {
            "runtime": {
                "available": service.ort_web is not None,
                "name": "onnxruntime-web",
                "version": ort_web_version(service.ort_web),
                "base": "/vendor/onnxruntime-web/",
                "files": files,
                "hint": None if service.ort_web else f"onnxruntime-web is not installed: {ORT_WEB_HINT}",
            },
            "model": {**model.card.get("browser", {}), "url": "/v1/model/browser.onnx", "id": model.id},
        }

    @app.get("/v1/model/browser.onnx", summary="The model file the page runs in the browser")
    async def browser_model(request: Request):
        model = service.holder.current
        path = model.browser_path
        if path is None or not path.is_file():
            raise RequestProblem(
                404, "no_browser_model", "this server offers no in-browser model (--browser-model none)"
            )
        headers = {"X-Model-Id": model.id, "Cache-Control": "no-cache"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            data = await asyncio.to_thread(service.gzipped, path)
            headers.update({"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
            return Response(data, media_type="application/octet-stream", headers=headers)
        return Response(path.read_bytes(), media_type="application/octet-stream", headers=headers)

    @app.get("/vendor/onnxruntime-web/{name}", include_in_schema=False)
    async def ort_web(name: str, request: Request):
        if service.ort_web is None:
            raise RequestProblem(404, "no_runtime", f"onnxruntime-web is not installed: {ORT_WEB_HINT}")
        if name not in ORT_WEB_FILES or not (service.ort_web / name).is_file():
            raise RequestProblem(404, "not_found", f"{name}: not a file the page needs from onnxruntime-web")
        path = service.ort_web / name
        headers = {"Cache-Control": "public, max-age=3600"}
        if "gzip" in request.headers.get("accept-encoding", "") and path.stat().st_size > 100_000:
            data = await asyncio.to_thread(service.gzipped, path)
            headers.update({"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
            return Response(data, media_type=ORT_WEB_FILES[name], headers=headers)
        return FileResponse(path, media_type=ORT_WEB_FILES[name], headers=headers)

    return app
