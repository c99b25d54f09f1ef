"""The API's bodies as pydantic models: one description of each, which the routes build their
answers from, the conversion child writes the model card through, and FastAPI turns into
``/openapi.json`` (no schema is written out by hand beside them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from squeezenet.serving.problems import RequestProblem

MULTIPART = "multipart/form-data"


# ---------------------------------------------------------------- problems
class Problem(BaseModel):
    kind: str = Field(description="a short stable label; the `kind` label of squeezenet_errors_total")
    message: str = Field(description="what was wrong, in one line")
    status: int = Field(description="the HTTP status, repeated")


class ProblemBody(BaseModel):
    """Every refusal (4xx) and failure (500) has this body."""

    error: Problem

    @classmethod
    def of(cls, problem: RequestProblem) -> dict:
        return cls(error=Problem(kind=problem.kind, message=problem.message, status=problem.status)).model_dump()


def problem_responses(*tables: dict[int | str, str]) -> dict:
    """FastAPI ``responses=``: each status with its meanings (joined where tables share a status),
    all with the problem body."""
    meanings: dict[int | str, list[str]] = {}
    for table in tables:
        for status, text in table.items():
            meanings.setdefault(status, []).append(text)
    return {status: {"model": ProblemBody, "description": "; ".join(texts)} for status, texts in meanings.items()}


def _upload_problems(what: str, accepted: tuple[str, ...], limit: str) -> dict[int, str]:
    """The refusals of reading an uploaded file (``bodies``), for ``problem_responses``."""
    return {
        400: f"an empty or unreadable {what}, or a multipart body without a file",
        408: f"the {what} did not arrive within --read-timeout",
        413: f"a {what} over {limit}",
        415: f"a content type other than {' or '.join(map(media_range, accepted))} or {MULTIPART}",
    }


def content_response(media_type: str, description: str, schema: dict | None = None) -> dict:
    """FastAPI ``responses=`` entry of a 200 that is not JSON. The route's ``response_class`` must
    be the plain ``Response`` (no media type of its own): FastAPI documents the other responses'
    models under the route's media type, and only then falls back to JSON for the problems."""
    return {200: {"description": description, "content": {media_type: {"schema": schema or {"type": "string"}}}}}


# ---------------------------------------------------------------- uploads
class FileUpload(BaseModel):
    """A multipart upload: the file is read from its first file part, whatever the field's name."""

    file: bytes = Field(description="the file's bytes")


def media_range(accepted: str) -> str:
    """How HTTP and OpenAPI write an accepted type: the prefix ``image/`` as ``image/*``."""
    return accepted + "*" if accepted.endswith("/") else accepted


def _upload_body(accepted: tuple[str, ...], what: str) -> dict:
    """The OpenAPI request body of a route that reads its own body (``bodies.file_from_body``):
    ``what`` raw under each ``accepted`` type (a prefix such as ``image/`` as its range), or a
    multipart upload; for ``openapi_extra``."""
    binary = TypeAdapter(bytes).json_schema()
    content = {media_range(a): {"schema": binary} for a in accepted}
    content[MULTIPART] = {"schema": FileUpload.model_json_schema()}
    return {"requestBody": {"required": True, "description": f"the {what}", "content": content}}


def upload_route(what: str, accepted: tuple[str, ...], limit: str, *problems: dict[int | str, str]) -> dict:
    """The OpenAPI of a route that reads an uploaded ``what`` itself: its request body and its
    refusals (those of reading the upload, then ``problems``); keywords for the route's decorator."""
    return {
        "responses": problem_responses(_upload_problems(what, accepted, limit), *problems),
        "openapi_extra": _upload_body(accepted, what),
    }


# ---------------------------------------------------------------- classification
class ModelRef(BaseModel):
    id: str = Field(description="the first 12 hex digits of the weights' SHA-256 (also the X-Model-Id header)")
    sha256: str
    arch: str


class TopClass(BaseModel):
    rank: int = Field(ge=1)
    index: int = Field(ge=0, description="the class's output index")
    name: str
    wnid: str | None = Field(None, description="the WordNet id, for ImageNet classes")
    probability: float = Field(ge=0, le=1, description="softmax of the logits, 6 decimals")


class Timing(BaseModel):
    total_ms: float
    read_ms: float = Field(description="receiving the body")
    decode_ms: float = Field(description="decoding and preprocessing, with any wait for decoding memory")
    queue_ms: float = Field(description="waiting for the model")
    inference_ms: float = Field(description="the batch's run")
    batch_size: int = Field(description="images in the batch this one ran in")


class ClassMap(BaseModel):
    """The class-activation map of the top class, and where the model's crop lies in the image."""

    class_index: int
    size: list[int] = Field(description="(height, width) of the map")
    values: list[list[int]] = Field(description="the map scaled by its maximum to 0-255, row by row")
    box: list[float] = Field(description="the crop as (left, top, right, bottom), fractions of the image")


class Classification(BaseModel):
    model: ModelRef = Field(description="the model that produced this answer")
    top: list[TopClass]
    timing: Timing
    cam: ClassMap | None = Field(None, description="with cam=true only")


class Health(BaseModel):
    status: Literal["ok"]
    model: str = Field(description="the id of the model being served")
    uptime_s: float


# ---------------------------------------------------------------- the model card
class BrowserModel(BaseModel):
    format: str = Field(description="wasm, w8a32, int8, fp32 or none (--browser-model)")
    bytes: int | None = Field(None, description="of the file the page downloads (wasm: the SIMD build)")
    sha256: str | None = None
    weights: str | None = Field(None, description="wasm: the C export's weights, compressed or int8")
    files: dict[str, int] | None = Field(None, description="wasm: the folder's files and their bytes")
    builds: dict[str, dict[str, Any]] | None = Field(
        None,
        description="wasm: each build (relaxed, simd, portable) with its file, bytes and sha256; the "
        "page's loader takes the first its engine runs",
    )
    table: dict[str, Any] | None = Field(
        None,
        description="wasm: the weight table the module binds (file, bytes, sha256, layout): a model of the same "
        "code (one made by train --update-of) is a new table for the module a page holds",
    )
    max_logit_difference: float | None = Field(None, description="against the served graph, on the probe input")


class ModelCard(BaseModel):
    """What the conversion child learns about a weights file (``card.json``)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="the first 12 hex digits of sha256")
    sha256: str = Field(description="of the weights file's bytes")
    file: str
    file_bytes: int
    format: str = Field(description="the weights file's format")
    arch: str
    parameters: int
    num_classes: int
    in_chans: int
    input_size: int
    classes: list[str]
    wnids: list[str]
    preprocessing: dict[str, Any] = Field(description="the weights' own preprocessing")
    license: str
    provenance: dict[str, Any]
    engine: str
    onnx_bytes: int
    cam_size: list[int]
    browser: BrowserModel
    convert_seconds: float


class LoadedModelCard(ModelCard):
    loaded_at: str = Field(description="UTC, ISO 8601")


class ServedModelCard(LoadedModelCard):
    swaps: int = Field(description="live updates since the server started")


class Swapped(BaseModel):
    model: LoadedModelCard = Field(description="the model now serving")
    previous: str = Field(description="the id of the model it replaced (its own id when unchanged)")
    result: Literal["swapped", "unchanged"] = Field(
        description="unchanged: these weights (the same SHA-256) were already served, nothing was loaded"
    )


# ---------------------------------------------------------------- in-browser inference
class BrowserRuntime(BaseModel):
    available: bool
    name: Literal["onnxruntime-web"]
    version: str | None
    base: str = Field(description="where the server serves the runtime's files")
    files: dict[str, int] = Field(description="file name -> bytes")
    hint: str | None = Field(description="how to install the runtime, when it is missing")


class BrowserModelLink(BrowserModel):
    url: str
    id: str = Field(description="the id of the model the file belongs to")


class BrowserInfo(BaseModel):
    runtime: BrowserRuntime
    model: BrowserModelLink = Field(description="what the page runs by default (wasm: url is the folder's)")
    onnx: BrowserModelLink | None = Field(
        None, description="with a wasm model: the served fp32 graph, for onnxruntime-web instead"
    )
