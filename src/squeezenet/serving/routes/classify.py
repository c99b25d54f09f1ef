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
from squeezenet.serving.config import MEBIBYTE
from squeezenet.serving.preprocess import Prepared, decoding_bytes, prepare
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
FALSE_WORDS = ("0", "false", "no", "off")


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


def _flag(name: str):
    """A query value as a yes or no, or a 400 problem naming the parameter (``cam=maybe`` was once
    taken for off without a word)."""

    def parse(text) -> bool:
        word = str(text).lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            words = f"{', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)}"
            raise RequestProblem(400, "bad_parameter", f"{name} must be one of {words}, got {text!r}")
        return word in TRUE_WORDS

    return BeforeValidator(parse)


TopK = Annotated[
    int,
    Interval(ge=TOPK.low, le=TOPK.high),  # for OpenAPI: applied first, it stays a plain integer's bounds
    _whole_number("topk", TOPK),
    Query(
        description=f"how many classes, best first (at most the model's classes: more is a 400; not given: "
        f"{DEFAULT_TOPK}, or all of a model with fewer)"
    ),
]
Cam = Annotated[
    bool,
    _flag("cam"),
    Query(
        description=f"the class-activation map of the top class ({', '.join(TRUE_WORDS)}: on; "
        f"{', '.join(FALSE_WORDS)}: off; anything else: 400)"
    ),
]

PROBLEMS = {  # besides those of reading the upload
    400: "a bad parameter; not an image, or one that does not decode",
    413: "an image over --max-pixels, or one whose decoding alone needs more than --image-memory-mb",
    503: "too many images waiting for the model or for decoding memory (--max-queue); Retry-After says when to retry",
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
    request: Request, response: Response, service: ServiceDep, topk: TopK | None = None, cam: Cam = False
) -> Classification:
    start = time.perf_counter()
    config = service.config
    body = await read_body(request, config.max_body_bytes, config.read_timeout, "image")
    data, _ = await file_from_body(request, body, IMAGE_TYPES, "image")
    read = time.perf_counter()
    model = service.holder.acquire()
    try:
        classes = model.card["num_classes"]
        topk = min(DEFAULT_TOPK, classes) if topk is None else topk  # a page holds no stale count of classes
        if topk > classes:
            message = f"topk must be at most {classes}, the model's classes, got {topk}"
            raise RequestProblem(400, "bad_parameter", message)
        prepared, result, decoded = await _decoded_and_run(service, model, data, cam)
    finally:
        service.holder.release(model)
    response.headers["X-Model-Id"] = model.id
    card = model.card
    top = top_classes(result.logits, card, topk)
    maps = {"cam": class_map(result.cam, top[0].index, prepared.box)} if cam and result.cam is not None else {}
    return Classification(
        model=ModelRef(id=model.id, sha256=card["sha256"], arch=card["arch"]),
        top=top,
        timing=_timing(start, read, decoded, result),
        **maps,
    )


async def _decoded_and_run(service, model, data: bytes, cam: bool) -> tuple[Prepared, Result, float]:
    """Decode under the memory budget (the image's cost, read from its header, is held while it
    decodes, then only its model input's until its batch has run); -> (input, result, decode end)."""
    loop, pre, max_pixels = asyncio.get_running_loop(), model.preprocessing, service.config.max_pixels
    cost, described = await loop.run_in_executor(service.decode_pool, decoding_bytes, data, pre, max_pixels)
    budget = service.memory
    if cost > budget.capacity:
        raise RequestProblem(
            413,
            "too_many_pixels",
            f"a {described} needs about {cost / MEBIBYTE:.0f} MiB to decode, over the "
            f"{budget.capacity / MEBIBYTE:.0f} MiB for images in flight (--image-memory-mb)",
        )
    async with budget.reserve(cost) as held:
        prepared = await loop.run_in_executor(service.decode_pool, prepare, data, pre, max_pixels)
        held.shrink(prepared.array.nbytes)
        decoded = time.perf_counter()
        result = await model.batcher.submit(prepared.array, cam)
    return prepared, result, decoded


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
