"""Request bodies read under limits: a raw file or a multipart upload, never more than allowed.

The routes read their bodies themselves instead of declaring them as parameters: FastAPI would
read a whole body (any size, at any pace) before the route could refuse it.
"""

from __future__ import annotations

import asyncio

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from squeezenet.serving.problems import RequestProblem
from squeezenet.serving.schemas import MULTIPART, media_range

# content types a raw body may have; one ending in "/" is a prefix ("image/" takes image/png, image/jpeg, ...)
IMAGE_TYPES = ("image/", "application/octet-stream")
WEIGHTS_TYPES = ("application/octet-stream",)


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
    if kind == MULTIPART:
        return await _first_file_part(request, body, what)
    if not kind.startswith(accepted):  # no Content-Type at all included: the API says what it takes
        wanted = " or ".join(map(media_range, accepted))
        given = f"content type {kind!r} is not accepted" if kind else "no Content-Type"
        raise RequestProblem(415, "wrong_content_type", f"{given}: send the {what} as {wanted}, or as {MULTIPART}")
    return body, ""


async def _first_file_part(request: Request, body: bytes, what: str) -> tuple[bytes, str]:
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
