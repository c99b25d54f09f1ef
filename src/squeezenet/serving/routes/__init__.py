"""The routes, one router per concern: the page and its files, health and metrics, classification,
the model (its card, live updates and the in-browser copy)."""

from __future__ import annotations

from squeezenet.serving.routes import classify, health, model, page

ROUTERS = (page.router, health.router, classify.router, model.router)
