"""The web page: ``/``, its files under ``/static`` and onnxruntime-web's under ``/vendor``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.routing import Mount

from squeezenet.serving.problems import RequestProblem
from squeezenet.serving.service import ORT_WEB_BASE, ORT_WEB_FILES, ORT_WEB_HINT, ServiceDep

STATIC = Path(__file__).resolve().parents[1] / "static"
# the preprocessing in JavaScript has its home beside its Python twin (data/pixels.py): the
# WebAssembly export ships it too
PREPROCESS_JS = resources.files("squeezenet.data").joinpath("preprocess.js")
GZIP_ABOVE = 100_000  # bytes: smaller files cost more to compress than they save on a local network

router = APIRouter(include_in_schema=False)


def static_files() -> Mount:
    """``/static``: a mount, which FastAPI's ``include_router`` does not carry over."""
    return Mount("/static", StaticFiles(directory=STATIC), name="static")


@router.get("/")
async def page():
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/sw.js")
async def service_worker():
    """At the root, so that its scope is the whole page (the page works offline once loaded)."""
    return FileResponse(STATIC / "sw.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"})


@router.get("/static/preprocess.js")
async def preprocess_js():
    return Response(PREPROCESS_JS.read_bytes(), media_type="text/javascript")


@router.get(ORT_WEB_BASE + "{name}")
async def ort_web(name: str, request: Request, service: ServiceDep):
    if service.ort_web is None:
        raise RequestProblem(404, "no_runtime", f"onnxruntime-web is not installed: {ORT_WEB_HINT}")
    if name not in ORT_WEB_FILES or not (service.ort_web / name).is_file():
        raise RequestProblem(404, "not_found", f"{name}: not a file the page needs from onnxruntime-web")
    path = service.ort_web / name
    headers = {"Cache-Control": "public, max-age=3600"}
    data = await service.gzipped_if_accepted(request, path, headers) if path.stat().st_size > GZIP_ABOVE else None
    if data is not None:
        return Response(data, media_type=ORT_WEB_FILES[name], headers=headers)
    return FileResponse(path, media_type=ORT_WEB_FILES[name], headers=headers)
