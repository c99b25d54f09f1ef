"""The model: its card, live updates by PUT (behind the token), and the copy the page runs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Query, Request, Response
from pydantic import TypeAdapter

from squeezenet.errors import WeightsError
from squeezenet.serving.auth import TOKEN_REQUIRED
from squeezenet.serving.bodies import WEIGHTS_TYPES, file_from_body, read_body
from squeezenet.serving.problems import RequestProblem
from squeezenet.serving.schemas import (
    BrowserInfo,
    BrowserModelLink,
    BrowserRuntime,
    ServedModelCard,
    Swapped,
    content_response,
    problem_responses,
    upload_route,
)
from squeezenet.serving.service import ORT_WEB_BASE, ORT_WEB_FILES, ORT_WEB_HINT, ServiceDep, ort_web_version
from squeezenet.weights.deltas import patch_bytes
from squeezenet.weights.sqz_codec.delta_file import DELTA_MAGIC

BROWSER_MODEL_URL = "/v1/model/browser.onnx"
# the WebAssembly folder of one model, by its id: the files never change under a URL, so browsers
# keep them (immutable) and a swapped model is a new URL
WASM_BASE = "/v1/model/wasm/"
WASM_TYPES = {
    ".wasm": "application/wasm",
    ".js": "text/javascript",
    ".json": "application/json",
    ".bin": "application/octet-stream",  # the weight table
}
ONNX_TYPE = "application/octet-stream"
DELTA_TYPE = "application/octet-stream"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

PUT_PROBLEMS = {  # besides those of reading the upload
    401: "a missing or wrong token",
    403: "live updates are off (the server was started without a token)",
    422: "a broken or foreign weights file: the current model keeps serving",
}

router = APIRouter(tags=["model"])


@router.get(
    "/v1/model",
    summary="The model card of the model being served",
    response_model=ServedModelCard,
    response_model_exclude_unset=True,
)
async def model_card(response: Response, service: ServiceDep) -> dict:
    model = service.holder.current
    response.headers["X-Model-Id"] = model.id
    return {**model.public_card(), "swaps": service.holder.swaps}


@router.put(
    "/v1/model",
    summary="Replace the model (live update)",
    description=(
        "A weights file of any format the loader reads (.sqz, .safetensors, .pth, Deep Compression .net), "
        "or a .sqzd delta against the .sqz served now (squeezenet delta), as the raw body or a multipart "
        "upload, with 'Authorization: Bearer TOKEN' (the token given at "
        "start; without one, updates over HTTP are off). The file is converted and checked aside while "
        "the current model keeps serving, then swapped in: requests already in flight finish on the "
        "old model. The weights already served (same SHA-256) answer at once with result 'unchanged'; "
        "weights converted before are not converted again. A broken or foreign file is refused (422) and "
        "the old model stays; if the client disconnects before the swap, it is abandoned. Query: name, "
        "the file name the card shows when the body is raw (default: the multipart file's name, else "
        "'uploaded')."
    ),
    dependencies=[TOKEN_REQUIRED],
    response_model=Swapped,
    response_model_exclude_unset=True,
    **upload_route("weights file", WEIGHTS_TYPES, "--max-weights-mb", PUT_PROBLEMS),
)
async def put_model(request: Request, response: Response, service: ServiceDep) -> dict:
    name, tried = "", False
    try:
        data, name = await _upload(request, service)
        if data[:4] == DELTA_MAGIC:
            data, name = await _patched(data, name, service)
        digest = await asyncio.to_thread(_sha256, data)
        upload_dir = Path(tempfile.mkdtemp(prefix="upload-", dir=service.workdir))
        try:
            path = upload_dir / (name or "uploaded")
            path.write_bytes(data)
            tried = True  # from here on load_and_swap logs every outcome itself
            done = await _unless_disconnected(request, service.load_and_swap(path, "put", name, digest))
        finally:
            shutil.rmtree(upload_dir, ignore_errors=True)
    except WeightsError as exc:
        current = service.holder.current.id
        raise RequestProblem(422, "bad_weights", f"refused, the model {current} keeps serving: {exc}") from None
    except RequestProblem as problem:
        if not tried:  # the upload itself was refused
            service.log_swap(
                f"put, {name or 'upload'}", "put", "refused", f"{problem.status} {problem.kind}: {problem}"
            )
        raise
    response.headers["X-Model-Id"] = done.model.id
    return {"model": done.model.public_card(), "previous": done.previous, "result": done.result}


async def _patched(delta: bytes, name: str, service: ServiceDep) -> tuple[bytes, str]:
    """A ``.sqzd`` upload applied to the model served now: the file it names, or a 422."""
    base = service.sqz_of(service.holder.current)
    if base is None:
        raise WeightsError("a .sqzd delta applies to a .sqz, and the model served was not loaded from one")
    result = await asyncio.to_thread(patch_bytes, base, delta, name or "delta")
    return result.data, f"{Path(name).stem or 'patched'}.sqz" if name and name != "uploaded" else "patched.sqz"


@router.get(
    "/v1/model/delta",
    summary="The update from an earlier model to the one served now (.sqzd)",
    description=(
        "from: the id of the model the client holds. The body is the .sqzd delta (docs/sqz-delta.md) "
        "that turns that model's .sqz into the current one's, byte for byte; X-Model-Id names the "
        "result and X-Delta-From the base. 404 when there is none (the model is not among the last few "
        "served, either is not a .sqz, or it is the current one): the client then fetches the whole file."
    ),
    response_class=Response,
    responses={
        **content_response(DELTA_TYPE, "the .sqzd delta", TypeAdapter(bytes).json_schema()),
        **problem_responses({404: "no delta from that model: fetch the whole model"}),
    },
)
async def model_delta(service: ServiceDep, from_: str = Query(alias="from", max_length=64)) -> Response:
    current = service.holder.current
    try:
        data = await service.delta_from(from_)
    except WeightsError as exc:
        raise RequestProblem(404, "no_delta", f"no delta from model {from_}: {exc}") from None
    if data is None:
        why = "it is the model served" if from_ == current.id else "it is not a recent .sqz model of this server"
        raise RequestProblem(404, "no_delta", f"no delta from model {from_} to {current.id}: {why}")
    headers = {"X-Model-Id": current.id, "X-Delta-From": from_, "Cache-Control": "no-cache"}
    return Response(data, media_type=DELTA_TYPE, headers=headers)


@router.get(
    "/v1/model/wasm-delta",
    summary="The page's update: a byte delta of its weight table or module (--browser-model wasm)",
    description=(
        "from: the id of the model whose WebAssembly build the page holds; file: the file it holds "
        "(squeezenet_weights.bin, the weight table, or a module: squeezenet.wasm, squeezenet-relaxed.wasm, "
        "squeezenet-portable.wasm). The body turns that file into the same file of the model served now "
        "(format in serving/bytedelta.py; the page checks the result's SHA-256 against the new model card). "
        "A model of the same code (made by train --update-of) changes the table alone: the page keeps its "
        "module. 404 when there is none: the page then downloads the whole file."
    ),
    response_class=Response,
    responses={
        **content_response(DELTA_TYPE, "the byte delta", TypeAdapter(bytes).json_schema()),
        **problem_responses({404: "no delta from that model's module: download the whole module"}),
    },
)
async def wasm_delta(
    service: ServiceDep,
    from_: str = Query(alias="from", max_length=64),
    file: str = Query("squeezenet.wasm", max_length=100),
) -> Response:
    current = service.holder.current
    data = await service.wasm_delta_from(from_, file)
    if data is None:
        raise RequestProblem(404, "no_delta", f"no delta from the {file} of model {from_} to model {current.id}")
    headers = {"X-Model-Id": current.id, "X-Delta-From": from_, "Cache-Control": "no-cache"}
    return Response(data, media_type=DELTA_TYPE, headers=headers)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _upload(request: Request, service: ServiceDep) -> tuple[bytes, str]:
    """(the weights file's bytes, the name the card will show) from the body, under the limits."""
    config = service.config
    body = await read_body(request, config.max_weights_bytes, config.read_timeout, "weights file")
    data, filename = await file_from_body(request, body, WEIGHTS_TYPES, "weights file")
    if not data:
        raise RequestProblem(400, "empty_body", "empty body: send the weights file's bytes")
    name = _SAFE_NAME.sub("_", Path(filename or request.query_params.get("name", "") or "uploaded").name)[:100]
    return data, name


async def _unless_disconnected(request: Request, work):
    """``work`` (a coroutine) to its end, unless the client disconnects first: then it is cancelled
    (a swap nobody waits for is abandoned, its conversion killed) and the request ends as a 400."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise RequestProblem(400, "client_disconnected", "the client closed the connection: swap abandoned")
    return task.result()


async def _disconnect(request: Request) -> None:
    """Returns when the client has gone (the body is read by now: the next message can only be that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


@router.get(
    "/v1/browser",
    summary="What in-browser inference needs: the runtime and the model file",
    response_model=BrowserInfo,
    response_model_exclude_unset=True,
)
async def browser_info(service: ServiceDep) -> BrowserInfo:
    model, dist = service.holder.current, service.ort_web
    present = [dist / name for name in ORT_WEB_FILES if dist is not None and (dist / name).is_file()]
    files = {path.name: path.stat().st_size for path in present}
    runtime = BrowserRuntime(
        available=dist is not None,
        name="onnxruntime-web",
        version=ort_web_version(dist),
        base=ORT_WEB_BASE,
        files=files,
        hint=None if dist else f"onnxruntime-web is not installed: {ORT_WEB_HINT}",
    )
    browser = model.card.get("browser", {})
    if model.wasm_folder is None:
        return BrowserInfo(runtime=runtime, model=BrowserModelLink(**browser, url=BROWSER_MODEL_URL, id=model.id))
    onnx = BrowserModelLink(format="fp32", bytes=model.card["onnx_bytes"], url=BROWSER_MODEL_URL, id=model.id)
    wasm = BrowserModelLink(**browser, url=f"{WASM_BASE}{model.id}/", id=model.id)
    return BrowserInfo(runtime=runtime, model=wasm, onnx=onnx)


@router.get(
    BROWSER_MODEL_URL,
    summary="The model file the page runs in the browser",
    response_class=Response,
    responses={
        **content_response(ONNX_TYPE, "the ONNX file (gzip-encoded when accepted)", TypeAdapter(bytes).json_schema()),
        **problem_responses({404: "this server offers no in-browser model (--browser-model none)"}),
    },
)
async def browser_model(request: Request, service: ServiceDep) -> Response:
    model = service.holder.current
    path = model.browser_path
    if path is None or not path.is_file():
        raise RequestProblem(404, "no_browser_model", "this server offers no in-browser model (--browser-model none)")
    headers = {"X-Model-Id": model.id, "Cache-Control": "no-cache"}
    data = await service.gzipped_if_accepted(request, path, headers)
    return Response(path.read_bytes() if data is None else data, media_type=ONNX_TYPE, headers=headers)


@router.get(
    WASM_BASE + "{model_id}/{name}",
    summary="A file of the WebAssembly build the page runs (--browser-model wasm)",
    response_class=Response,
    responses={
        **content_response("application/wasm", "the module, its weight table, card (JSON) or loader (JavaScript)"),
        **problem_responses({404: "no such file, a model no longer served, or no WebAssembly build"}),
    },
)
async def wasm_file(model_id: str, name: str, request: Request, service: ServiceDep) -> Response:
    model = service.holder.current
    folder = model.wasm_folder
    if folder is None:
        raise RequestProblem(404, "no_browser_model", "this server offers no WebAssembly model (--browser-model)")
    if model_id != model.id:
        raise RequestProblem(404, "not_found", f"model {model_id} is no longer served (now {model.id})")
    path = folder / name
    if name not in model.card["browser"].get("files", {}) or not path.is_file():
        raise RequestProblem(404, "not_found", f"{name}: not a file of the WebAssembly build")
    headers = {"X-Model-Id": model.id, "Cache-Control": "public, max-age=31536000, immutable"}
    data = await service.gzipped_if_accepted(request, path, headers)
    return Response(path.read_bytes() if data is None else data, media_type=WASM_TYPES[path.suffix], headers=headers)
