"""Metrics and traces, both opt-in: Prometheus at /metrics (`shared/metrics.py`), and
FastAPI's own OpenTelemetry spans.

FastAPI 0.163 ships OpenTelemetry support of its own (`fastapi/telemetry/`): with
an SDK installed it makes a server span per request, named by the route template,
and, with `operation_spans`, child spans for dependency resolution, the endpoint,
serialization and background tasks; `auto_configure` adds an OTLP/HTTP exporter
from the standard `OTEL_*` variables. So tracing needs no instrumentation library
here, only the switch. Its metrics and logs stay off: Prometheus counts (it is
what most scrapers expect, and works across workers), the JSON log lines log.
"""

from __future__ import annotations

import importlib.util
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.routing import Route

from shared.metrics import Metrics, MetricsEndpoint, MetricsMiddleware

from .config import Settings
from .errors import render_problem

METRICS_PATH = "/metrics"
# Probes and scrapes every few seconds: spans of them would drown the real ones.
UNTRACED = frozenset(("/health", "/health/ready", METRICS_PATH))


def tracing_installed() -> bool:
    return importlib.util.find_spec("opentelemetry.sdk") is not None


def untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNTRACED


def telemetry_config(settings: Settings) -> TelemetryConfig:
    """FastAPI's `telemetry=`: spans with TRACING_ENABLED, else nothing at all.

    All off, FastAPI skips its per-request check for a configured provider (which
    reads os.environ each time): a request then costs what it did without it.
    """
    if not settings.tracing_enabled:
        return {"tracing": False, "metrics": False, "logs": False}
    return {
        "tracing": True,
        "metrics": False,
        "logs": False,
        "auto_configure": True,
        "exclude": untraced,
    }


def install_metrics(app: FastAPI, metrics: Metrics, settings: Settings) -> None:
    """GET /metrics, and the middleware that counts. Call it where the middleware belongs."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    endpoint = MetricsEndpoint(
        metrics, token=token, public=settings.metrics_public, render_error=render_problem
    )
    app.router.routes.append(
        Route(METRICS_PATH, endpoint, methods=["GET"], include_in_schema=False)
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
