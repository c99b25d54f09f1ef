"""Liveness and Prometheus metrics: what a supervisor and a scraper poll."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import Response

from squeezenet.serving.metrics import CONTENT_TYPE
from squeezenet.serving.schemas import Health, content_response
from squeezenet.serving.service import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the model being served", response_model=Health)
async def healthz(service: ServiceDep) -> Health:
    model = service.holder.current
    return Health(status="ok", model=model.id, uptime_s=round(time.time() - service.started, 1))


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    response_class=Response,
    responses=content_response(CONTENT_TYPE, "the metrics in Prometheus' text format"),
)
async def metrics(service: ServiceDep) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)
