"""The bearer token that guards live updates, as a FastAPI dependency (``dependencies=[TOKEN_REQUIRED]``).

The scheme is ``HTTPBearer`` without its own errors: a refusal is then a problem body like every
other (401 with ``WWW-Authenticate: Bearer``, from ``app.problem_response``), and OpenAPI still
shows the route as needing a bearer token.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from squeezenet.serving.problems import RequestProblem
from squeezenet.serving.service import ServiceDep

bearer = HTTPBearer(auto_error=False, description="the token given at start (--token or $SQUEEZENET_SERVE_TOKEN)")


async def require_token(
    request: Request, service: ServiceDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> None:
    """403 when the server has no token (updates off), 401 for a missing or wrong one; the
    comparison takes the same time wherever the given token differs. A refusal is a swap refused:
    counted and logged like one (from the client's address)."""
    problem = _token_problem(service.config.token, credentials)
    if problem is not None:
        client = request.client.host if request.client else "?"
        service.log_swap(f"put from {client}", "put", "refused", f"{problem.status} {problem.kind}: {problem}")
        raise problem


def _token_problem(token: str | None, credentials: HTTPAuthorizationCredentials | None) -> RequestProblem | None:
    if token is None:
        return RequestProblem(
            403, "updates_disabled", "live updates are off: start the server with --token to allow them"
        )
    if credentials is None:
        return RequestProblem(401, "unauthorized", "missing token: send 'Authorization: Bearer TOKEN'")
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        return RequestProblem(401, "unauthorized", "wrong token")
    return None


TOKEN_REQUIRED = Security(require_token)
