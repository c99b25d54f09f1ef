"""The one error type of a request that cannot be served: an HTTP status, a kind, a message.

Every problem a client can cause (a bad image, a body too large, a wrong token, one connection
too many) is raised as a ``RequestProblem`` and answered with its status and the body
``schemas.ProblemBody`` (``{"error": {"kind", "message", "status"}}``), with the headers of
``problem_headers``; the kind labels the ``squeezenet_errors_total`` metric. No web framework
here: preprocessing, batching and the connection guard raise or write these without one.
"""

from __future__ import annotations

from squeezenet.errors import SqueezeNetError

RETRY_AFTER_S = 1  # a 503's default: the queue or the memory budget drains within about a second


class RequestProblem(SqueezeNetError):
    """A request the server refuses; ``status`` is the HTTP status, ``kind`` a short stable label;
    ``retry_after``: the seconds a 503 asks the client to wait before it tries again."""

    def __init__(self, status: int, kind: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.retry_after = retry_after if retry_after is not None or status != 503 else RETRY_AFTER_S


def problem_headers(problem: RequestProblem) -> dict[str, str]:
    """The headers that go with a problem body, wherever it is written (``app``, ``connections``)."""
    headers = {}
    if problem.status in (408, 413, 431):
        headers["Connection"] = "close"  # the rest of the request is never read
    if problem.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if problem.retry_after is not None:
        headers["Retry-After"] = str(problem.retry_after)
    return headers
