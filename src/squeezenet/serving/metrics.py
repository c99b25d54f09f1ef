"""Prometheus metrics through the maintained client library (``prometheus_client``), in a
registry of the app's own (two apps in one process, as in the tests, never share counters)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

__all__ = ["CONTENT_TYPE", "Metrics"]


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
            "squeezenet_model_swaps", "Live model updates, by result", ["source", "result"], registry=r
        )
        self.model = Gauge("squeezenet_model_info", "The model being served (value 1)", ["id", "arch"], registry=r)
        self.queue = Gauge("squeezenet_queued_images", "Images waiting for the model", registry=r)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def set_model(self, model_id: str, arch: str) -> None:
        self.model.clear()
        self.model.labels(id=model_id, arch=arch).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
