"""``POST /v1/classify``: one image in, the top classes (and on request the top class's map) out."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import numpy as np
from annotated_types import Interval
from fastapi import APIRouter, Query, Request, Response
from pydantic import BeforeValidator

from squeezenet.bounds import Bounds
from squeezenet.serving.batching import Result
from squeezenet.serving.bodies import IMAGE_TYPES, file_from_body, read_body
from squeezenet.serving.preprocess import prepare
from squeezenet.serving.problems import RequestProblem
from squeezenet.serving.schemas import (
    Classification,
    ClassMap,
    ModelRef,
    Timing,
    TopClass,
    upload_route,
)
from squeezenet.serving.service import ServiceDep

TOPK = Bounds(1, 100_000, integer=True)
DEFAULT_TOPK = 5
TRUE_WORDS = ("1", "true", "yes", "on")


def _whole_number(name: str, bounds: Bounds):
    """A query value as a number in ``bounds``, or a 400 problem naming the parameter. Raised from
    inside pydantic's validation, which lets any exception but a ValueError or AssertionError
    through untouched: so the answer is the API's own problem body, not FastAPI's 422."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise RequestProblem(400, "bad_parameter", f"{name} must be a whole number, got {text!r}") from None
        if not bounds.contains(value):
            raise RequestProblem(400, "bad_parameter", f"{name} must {bounds.describe()}, got {value}")
        return value

    return BeforeValidator(parse)


def _flag(text) -> bool:
    return str(text).lower() in TRUE_WORDS  # anything else is off, never an error


TopK = Annotated[
    int,
    Interval(ge=TOPK.low, le=TOPK.high),  # for OpenAPI: applied first, it stays a plain integer's bounds
    _whole_number("topk", TOPK),
    Query(description="how many classes, best first (at most the model's classes)"),
]
Cam = Annotated[
    bool,
    BeforeValidator(_flag),
    Query(description=f"the class-activation map of the top class ({', '.join(TRUE_WORDS)}: on)"),
]

PROBLEMS = {  # besides those of reading the upload
    400: "a bad parameter; not an image, or one that does not decode",
    413: "an image over --max-pixels",
    503: "too many images waiting for the model (--max-queue)",
}

router = APIRouter(tags=["classify"])


@router.post(
    "/v1/classify",
    summary="Classify one image",
    description=(
        "The image as the raw body (Content-Type image/* or application/octet-stream) or as a multipart "
        "upload. The response names the model that produced it."
    ),
    response_model=Classification,
    response_model_exclude_unset=True,
    **upload_route("image", IMAGE_TYPES, "--max-body-mb", PROBLEMS),
)
async def classify(
    request: Request, response: Response, service: ServiceDep, topk: TopK = DEFAULT_TOPK, cam: Cam = False
) -> Classification:
    start = time.perf_counter()
    config = service.config
    body = await read_body(request, config.max_body_bytes, config.read_timeout, "image")
    data, _ = await file_from_body(request, body, IMAGE_TYPES, "image")
    read = time.perf_counter()
    model = service.holder.acquire()
    try:
        prepared = await asyncio.get_running_loop().run_in_executor(
            service.decode_pool, prepare, data, model.preprocessing, config.max_pixels
        )
        decoded = time.perf_counter()
        result = await model.batcher.submit(prepared.array, cam)
    finally:
        service.holder.release(model)
    response.headers["X-Model-Id"] = model.id
    card = model.card
    top = top_classes(result.logits, card, min(topk, card["num_classes"]))
    maps = {"cam": class_map(result.cam, top[0].index, prepared.box)} if cam and result.cam is not None else {}
    return Classification(
        model=ModelRef(id=model.id, sha256=card["sha256"], arch=card["arch"]),
        top=top,
        timing=_timing(start, read, decoded, result),
        **maps,
    )


def _timing(start: float, read: float, decoded: float, result: Result) -> Timing:
    def ms(seconds: float) -> float:
        return round(seconds * 1000, 2)

    return Timing(
        total_ms=ms(time.perf_counter() - start),
        read_ms=ms(read - start),
        decode_ms=ms(decoded - read),
        queue_ms=ms(result.queued_seconds),
        inference_ms=ms(result.inference_seconds),
        batch_size=result.batch_size,
    )


def top_classes(logits: np.ndarray, card: dict, k: int) -> list[TopClass]:
    shifted = np.exp(logits - logits.max())
    probs = shifted / shifted.sum()
    best = np.argsort(-probs, kind="stable")[:k]
    classes, wnids = card.get("classes") or [], card.get("wnids") or []
    out = []
    for rank, i in enumerate(best, 1):
        name = classes[i] if i < len(classes) else f"class {i}"
        wnid = {"wnid": wnids[i]} if i < len(wnids) else {}  # unset, not null: left out of the answer
        out.append(TopClass(rank=rank, index=int(i), name=name, **wnid, probability=round(float(probs[i]), 6)))
    return out


def class_map(cam: np.ndarray, index: int, box: tuple[float, ...]) -> ClassMap:
    """The map of class ``index`` as 0-255 integers (scaled by its maximum), and where the crop lies."""
    heat = cam[index]
    peak = float(heat.max())
    scaled = np.zeros_like(heat) if peak <= 0 else heat / peak
    return ClassMap(
        class_index=index,
        size=list(heat.shape),
        values=np.rint(scaled * 255).astype(np.uint8).tolist(),
        box=[round(v, 5) for v in box],
    )
