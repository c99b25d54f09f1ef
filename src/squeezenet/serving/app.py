"""The FastAPI app: the routers of ``serving.routes``, the problem bodies, the metrics middleware.

Every request a client can get wrong is answered with a 4xx JSON body
``{"error": {"kind", "message", "status"}}`` (``schemas.ProblemBody``), and nothing a request
does can stop the next one: bodies are read under a byte limit and a time limit
(``bodies``), images are decoded in a thread pool under a pixel limit, inference runs on its
own thread (``batching``).
"""

from __future__ import annotations

import contextlib

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from squeezenet.serving.metrics import EndpointLabels, Metrics, MetricsMiddleware
from squeezenet.serving.problems import RequestProblem, problem_headers
from squeezenet.serving.routes import ROUTERS
from squeezenet.serving.routes.page import static_files
from squeezenet.serving.schemas import ProblemBody, problem_responses
from squeezenet.serving.service import Service

__all__ = ["Service", "create_app"]

# what any route may answer besides its own problems (documenting 4XX also keeps FastAPI from
# listing its 422 validation body, which this API never sends)
COMMON_RESPONSES = problem_responses(
    {"4XX": "a request the server refuses (the kind says why)", 500: "a failure of the server (kind internal)"}
)


def problem_response(problem: RequestProblem, metrics: Metrics) -> JSONResponse:
    metrics.errors.labels(kind=problem.kind).inc()
    return JSONResponse(ProblemBody.of(problem), status_code=problem.status, headers=problem_headers(problem))


def _problem_of_http_error(request: Request, exc: StarletteHTTPException) -> RequestProblem:
    """Starlette's own refusals (no route, wrong method) as problems."""
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    detail = {404: f"{request.url.path}: no such page or endpoint (see /docs)"}.get(exc.status_code, exc.detail)
    return RequestProblem(exc.status_code, kind, str(detail))


def _problem_of_validation(exc: RequestValidationError) -> RequestProblem:
    """FastAPI's checks of declared parameters; the routes check their own first (``routes.classify``),
    so this answers only what slips past them, in the same shape."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
    return RequestProblem(400, "bad_parameter", f"{where}: {first.get('msg', 'invalid')}")


def _internal_error(exc: Exception) -> RequestProblem:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RequestProblem(500, "internal", f"{type(exc).__name__}: {message}")


def add_problem_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Every refusal and failure, whoever raises it, as a problem body counted by kind."""

    async def on_problem(request: Request, exc: RequestProblem):
        return problem_response(exc, metrics)

    async def on_http_error(request: Request, exc: StarletteHTTPException):
        return problem_response(_problem_of_http_error(request, exc), metrics)

    async def on_validation(request: Request, exc: RequestValidationError):
        return problem_response(_problem_of_validation(exc), metrics)

    async def on_internal_error(request: Request, exc: Exception):
        return problem_response(_internal_error(exc), metrics)

    app.add_exception_handler(RequestProblem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_internal_error)


def _start_line(service: Service) -> str:
    """The line the tests and scripts read the port from."""
    config, model = service.config, service.holder.current
    return (
        f"squeezenet serve: http://{config.host}:{config.port}/ model {model.id} ({model.card['arch']}, "
        f"{model.card['file']}); max batch {config.max_batch}, max wait {config.max_wait_ms:g} ms; "
        f"live updates {'on (token)' if config.token else 'off'}{', watching the file' if config.watch else ''}"
    )


def create_app(service: Service) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        print(_start_line(service), flush=True)
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="squeezenet serve",
        summary="SqueezeNet image classification, class-activation maps and live model updates",
        version="1",
        lifespan=lifespan,
        responses=COMMON_RESPONSES,
    )
    app.state.service = service
    for router in ROUTERS:
        app.include_router(router)
    static = static_files()
    app.router.routes.append(static)
    # the routers' own routes rather than app.routes: FastAPI may keep an included router as one entry
    routes = [route for router in ROUTERS for route in router.routes]
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, labels=EndpointLabels([*routes, static]))
    add_problem_handlers(app, service.metrics)
    return app
