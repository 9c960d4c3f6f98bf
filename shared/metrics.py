"""Prometheus metrics for an ASGI app (week 7's middleware and logging, counted).

What is counted, and where it comes from:

- requests and their latency, per method, route template and status
  (`MetricsMiddleware`: the template, never the raw path, so `/users/1` and
  `/users/2` are one series and a scanner can't create unbounded labels);
- cache outcomes, read from the `X-Cache` header the cache sets (HIT/MISS/BYPASS);
- rate-limit decisions (`RateLimitMiddleware(on_decision=metrics.rate_limit_decision)`):
  allowed, limited, or answered by the per-process fallback while Redis is away;
- whether each module's Redis circuit is open (`on_circuit_change=`);
- refresh-token reuse detections (`TokenService(on_reuse=...)`).

Several worker processes share one view through prometheus-client's multiprocess
mode: each process writes its values to memory-mapped files in
`PROMETHEUS_MULTIPROC_DIR`, and a scrape, whichever worker answers it, sums them.
That variable must name an empty directory before the server starts (its workers
inherit it); without it each process counts alone, which is right for one worker.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .rate_limit import Decision, ErrorRenderer, json_error

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
CACHE_HEADER = b"x-cache"
CACHE_OUTCOMES = frozenset({"HIT", "MISS", "BYPASS"})
# Requests no route matched (404s of scanners included) share one label, and so do
# methods outside this set: a client must not be able to mint label values.
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
# From a cached read (a few ms) to a password hash under load (seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR))


class Metrics:
    """One app's metrics. Create it once per app; every name starts with `namespace_`."""

    def __init__(self, namespace: str) -> None:
        self.multiprocess = multiprocess_mode()
        # Multiprocess values live in files, not in a registry; else a registry of
        # this app's own, so that two apps (or tests) in one process never collide.
        self._registry = None if self.multiprocess else CollectorRegistry()
        registry = self._registry
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            namespace=namespace,
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer a request, by route template.",
            ["method", "route"],
            namespace=namespace,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.cache = Counter(
            "cache_responses",
            "Responses of cached routes, by X-Cache outcome.",
            ["outcome"],
            namespace=namespace,
            registry=registry,
        )
        self.rate_limit = Counter(
            "rate_limit_decisions",
            "Rate-limit decisions: allowed, limited, or fallback (per process, Redis away).",
            ["decision"],
            namespace=namespace,
            registry=registry,
        )
        self.circuit = Gauge(
            "redis_circuit_open",
            "1 while a module skips Redis after a failure, else 0 (the most of any worker).",
            ["component"],
            namespace=namespace,
            registry=registry,
            # A worker that stopped cleanly drops out (mark_process_dead).
            multiprocess_mode="livemax",
        )
        self.refresh_reuse = Counter(
            "refresh_token_reuse_detections",
            "Spent refresh tokens presented again; each revoked its session.",
            namespace=namespace,
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._outcomes = {outcome: self.cache.labels(outcome) for outcome in CACHE_OUTCOMES}
        self._decisions = {
            decision: self.rate_limit.labels(decision)
            for decision in ("allowed", "limited", "fallback")
        }

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method if method in METHODS else OTHER_METHOD, route, status)
        children = self._children.get(key)  # pragma: no mutate (a lookup cache only)
        if children is None:
            # labels() validates and locks on every call: look each series up once.
            # Bounded: known methods x route templates x status codes.
            children = (
                self.requests.labels(key[0], route, str(status)),
                self.latency.labels(key[0], route),
            )
            self._children[key] = children  # pragma: no mutate (a lookup cache only)
        count, latency = children
        count.inc()
        latency.observe(seconds)

    def cache_outcome(self, outcome: str) -> None:
        if (child := self._outcomes.get(outcome)) is not None:
            child.inc()

    def rate_limit_decision(self, decision: Decision) -> None:
        if decision.degraded:
            self._decisions["fallback"].inc()
        else:
            self._decisions["allowed" if decision.allowed else "limited"].inc()

    def circuit_watcher(self, component: str) -> Callable[[bool], None]:
        """The `on_circuit_change` callback for one module; starts its series at 0 (closed)."""
        gauge = self.circuit.labels(component)
        gauge.set(0)

        def changed(is_open: bool) -> None:
            gauge.set(1 if is_open else 0)

        return changed

    def refresh_token_reused(self) -> None:
        self.refresh_reuse.inc()

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format, summed over the workers."""
        if self._registry is not None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def process_stopped(self) -> None:
        """Drop this process's live gauges (call at shutdown in multiprocess mode)."""
        if self.multiprocess:
            prometheus_multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def route_template(scope: Scope) -> str:
    """`/users/{user_id}` for `/users/42`: the path of the route that matched, if any."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    """Plain ASGI: times each HTTP request and counts it under its route template.

    Put it inside the rate limiter (added before it): a request refused there is
    counted by the limiter's decision, not here.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    # The plain ASGI middleware skeleton (Starlette's own middleware opens the same
    # way): observability and rate_limit share its shape, not its work.
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == CACHE_HEADER:
                        self.metrics.cache_outcome(value.decode("latin-1"))
                        break
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            self.metrics.observe_request(
                scope["method"], route_template(scope), status, time.perf_counter() - started
            )


class MetricsEndpoint:
    """`GET /metrics` as a bare ASGI app: the exposition, behind a bearer token unless public.

    A scraper sends `Authorization: Bearer <token>` (Prometheus: `authorization:
    credentials`); a JWT would expire under it. `token` None and `public` False
    refuses everyone: metrics are not for the world.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        token: str | None,
        public: bool,
        render_error: ErrorRenderer = json_error,
    ) -> None:
        self.metrics = metrics
        self.expected = f"Bearer {token}".encode() if token else None
        self.public = public
        self.render_error = render_error

    def allowed(self, scope: Scope) -> bool:
        if self.public:
            return True
        if self.expected is None:
            return False
        sent = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
        # Constant time: the comparison must not tell how much of a guess was right.
        return hmac.compare_digest(sent, self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allowed(scope):
            status, body = 200, self.metrics.exposition()
            headers = [(b"content-type", CONTENT_TYPE_LATEST.encode())]
        else:
            status = 401
            content_type, body = self.render_error(status, "Not authenticated", scope)
            headers = [(b"content-type", content_type), (b"www-authenticate", b"Bearer")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
