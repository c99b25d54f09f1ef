"""Prometheus metrics through the maintained client library (``prometheus_client``), in a
registry of the app's own (two apps in one process, as in the tests, never share counters),
and the middleware that counts and times every request."""

from __future__ import annotations

import time
from collections.abc import Iterable

from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import BaseRoute, Mount

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

__all__ = ["CONTENT_TYPE", "EndpointLabels", "Metrics", "MetricsMiddleware"]


class Metrics:
    """Requests by endpoint and status, errors by kind, latency, batch sizes, model swaps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "squeezenet_requests", "HTTP requests answered", ["endpoint", "method", "status"], registry=r
        )
        self.errors = Counter("squeezenet_errors", "Requests refused or failed, by kind", ["kind"], registry=r)
        self.latency = Histogram(
            "squeezenet_request_seconds", "Time to answer a request", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "squeezenet_batch_size", "Images per inference batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.inference = Histogram(
            "squeezenet_inference_seconds", "ONNX Runtime time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.swaps = Counter(
            "squeezenet_model_swaps",
            "Live model updates, by result (swapped, unchanged, refused, abandoned)",
            ["source", "result"],
            registry=r,
        )
        self.model = Gauge("squeezenet_model_info", "The model being served (value 1)", ["id", "arch"], registry=r)
        self.queue = Gauge("squeezenet_queued_images", "Images waiting for the model", registry=r)
        self._connection_metrics(r)
        self._memory_metrics(r)

    def _connection_metrics(self, r: CollectorRegistry) -> None:
        self.connections = Gauge("squeezenet_open_connections", "Connections open (refused ones aside)", registry=r)
        self.connections_closed = Counter(
            "squeezenet_connections_closed",
            "Connections the server closed before reading a request from them, by reason (idle: no byte "
            "within --header-timeout; header_timeout, header_too_large: a 408 or 431 sent; too_many_connections, "
            "too_many_from_client: refused with a 503)",
            ["reason"],
            registry=r,
        )

    def _memory_metrics(self, r: CollectorRegistry) -> None:
        self.image_memory = Gauge(
            "squeezenet_image_memory_bytes", "Bytes reserved by images in flight (--image-memory-mb)", registry=r
        )
        self.memory_waiting = Gauge(
            "squeezenet_images_waiting_for_memory", "Images waiting for their decoding memory", registry=r
        )

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def set_model(self, model_id: str, arch: str) -> None:
        self.model.clear()
        self.model.labels(id=model_id, arch=arch).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class EndpointLabels:
    """The ``endpoint`` label of a request path, read off the app's own routes. The labels must be
    a bounded set (one per path a client makes up would grow the metrics without end): the path of
    the API route that answers it; ``static`` for a file (under a mount, or named by a route's path
    parameter); ``other`` for anything else (a 404, FastAPI's OpenAPI pages)."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        routes = list(routes)
        ours = [r for r in routes if isinstance(r, APIRoute)]  # FastAPI's own /docs etc. are plain Routes
        self.endpoints = frozenset(r.path for r in ours if not r.param_convertors)
        self.file_prefixes = tuple(
            [r.path + "/" for r in routes if isinstance(r, Mount)]
            + [r.path.split("{")[0] for r in ours if r.param_convertors]
        )

    def __call__(self, path: str) -> str:
        if path in self.endpoints:
            return path
        return "static" if path.startswith(self.file_prefixes) else "other"


class MetricsMiddleware:
    """Counts every HTTP request by endpoint and status and times it (plain ASGI: no per-request task)."""

    def __init__(self, app, metrics: Metrics, labels: EndpointLabels) -> None:
        self.app, self.metrics, self.labels = app, metrics, labels

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = self.labels(scope["path"])
            self.metrics.requests.labels(endpoint=endpoint, method=scope["method"], status=str(status[0])).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - start)
