"""The one error type of a request that cannot be served: an HTTP status, a kind, a message.

Every problem a client can cause (a bad image, a body too large, a wrong token) is raised as a
``RequestProblem`` and answered with its 4xx status and the body ``schemas.ProblemBody``
(``{"error": {"kind", "message", "status"}}``); the kind labels the ``squeezenet_errors_total``
metric. No web framework here: preprocessing and batching raise these without importing one.
"""

from __future__ import annotations

from squeezenet.errors import SqueezeNetError


class RequestProblem(SqueezeNetError):
    """A request the server refuses; ``status`` is the HTTP status, ``kind`` a short stable label."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
