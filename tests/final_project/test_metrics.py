"""Prometheus at /metrics and OpenTelemetry spans: off by default, switched on by
settings; what they count, who may read them, and that several workers report one
total.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from final_project.app.config import Settings
from shared.docs import (
    RATE_LIMIT_HEADERS,
    REQUEST_CONTEXT_HEADERS,
    RETRY_AFTER,
    document_headers,
    header,
    serve_docs,
)
from shared.metrics import Metrics, MetricsEndpoint, MetricsMiddleware
from tests.deploy.conftest import PATH, running
from tests.final_project.conftest import SECRET, Api, MakeClient
from tests.servers import RedisServer, Uvicorn, free_port
from tests.waiting import wait_until, wait_until_sync

TOKEN = "metrics-scrape-token-0123456789"
SCRAPE = {"Authorization": f"Bearer {TOKEN}"}
ENABLED = {"metrics_enabled": True, "metrics_token": TOKEN}


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of a Prometheus text exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(exposition: str, name: str, **labels: str) -> float:
    return samples(exposition).get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> str:
    r = await client.get("/metrics", headers=SCRAPE)
    assert r.status_code == 200, r.text
    return r.text


async def test_metrics_are_off_by_default(make_client: MakeClient) -> None:
    async with make_client() as client:
        assert (await client.get("/metrics", headers=SCRAPE)).status_code == 404


async def test_metrics_need_the_token_unless_a_setting_makes_them_public(
    make_client: MakeClient,
) -> None:
    async with make_client(**ENABLED) as client:
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer guess"})
        right = await client.get("/metrics", headers=SCRAPE)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert right.headers["content-type"].startswith("text/plain")

    async with make_client(metrics_enabled=True, metrics_public=True) as client:
        assert (await client.get("/metrics")).status_code == 200


@pytest.mark.parametrize("token", [None, ""])
def test_metrics_without_a_token_or_public_are_refused_at_start(token: str | None) -> None:
    with pytest.raises(ValidationError, match="METRICS_TOKEN"):
        Settings(_env_file=None, metrics_enabled=True, metrics_token=token)


async def test_requests_are_counted_by_route_template_never_by_raw_path(
    make_client: MakeClient,
) -> None:
    async with make_client(**ENABLED) as client:
        me = await Api(client).sign_up()
        for _ in range(2):  # a MISS, then a HIT
            r = await client.get(f"/users/{me.id}", headers=me.headers)
            assert r.status_code == 200, r.text
        assert (await client.get("/users/987654", headers=me.headers)).status_code == 404
        assert (await client.get("/wp-login.php")).status_code == 404
        assert (await client.request("BREW", "/hello")).status_code == 405
        text = await scrape(client)

    route = "/users/{user_id}"
    requests = "final_http_requests_total"
    assert value(text, requests, method="GET", route=route, status="200") == 2
    assert value(text, requests, method="GET", route=route, status="404") == 1
    assert value(text, requests, method="GET", route="<unmatched>", status="404") == 1
    latency = "final_http_request_duration_seconds_count"
    assert value(text, latency, method="GET", route=route) == 3
    # The bounds a dashboard's histogram_quantile works with: a cached read (5 ms) to a
    # password hash under load (10 s), fewer than prometheus-client's default 15.
    bounds = {
        dict(labels)["le"]
        for name, labels in samples(text)
        if name == "final_http_request_duration_seconds_bucket"
    }
    assert bounds == {
        *("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5"),
        *("1.0", "2.5", "5.0", "10.0", "+Inf"),
    }
    assert value(text, "final_cache_responses_total", outcome="MISS") >= 1
    assert value(text, "final_cache_responses_total", outcome="HIT") >= 1
    labels = {v for (_, pairs) in samples(text) for _, v in pairs}
    assert value(text, requests, method="OTHER", route="/hello", status="405") == 1
    assert f"/users/{me.id}" not in labels
    assert "/wp-login.php" not in labels
    assert "BREW" not in labels


async def test_rate_limit_decisions_are_counted_and_scrapes_are_never_limited(
    make_client: MakeClient,
) -> None:
    async with make_client(rate_limit="2/minute", **ENABLED) as client:
        statuses = [(await client.get("/hello")).status_code for _ in range(3)]
        scrapes = [await scrape(client) for _ in range(4)]

    assert statuses == [200, 200, 429]
    text = scrapes[-1]
    assert value(text, "final_rate_limit_decisions_total", decision="allowed") == 2
    assert value(text, "final_rate_limit_decisions_total", decision="limited") == 1
    assert value(text, "final_redis_circuit_open", component="rate_limit") == 0


async def test_redis_trouble_shows_as_fallback_decisions_and_open_circuits(
    make_client: MakeClient,
) -> None:
    # Nothing listens there: every Redis call fails at once.
    down = f"redis://127.0.0.1:{free_port()}/0"
    async with make_client(redis_url=down, **ENABLED) as client:
        me = await Api(client).sign_up()
        r = await client.get(f"/users/{me.id}", headers=me.headers)
        assert r.headers["x-cache"] == "BYPASS"
        text = await scrape(client)

    assert value(text, "final_rate_limit_decisions_total", decision="fallback") >= 1
    assert value(text, "final_rate_limit_decisions_total", decision="allowed") == 0
    for component in ("rate_limit", "cache", "tokens"):
        assert value(text, "final_redis_circuit_open", component=component) == 1, component
    assert value(text, "final_cache_responses_total", outcome="BYPASS") >= 1


async def test_the_circuit_gauge_closes_again_when_redis_is_back(
    make_client: MakeClient, private_redis: RedisServer
) -> None:
    async with make_client(redis_url=private_redis.url, **ENABLED) as client:
        private_redis.kill()
        await client.get("/hello")
        opened = value(await scrape(client), "final_redis_circuit_open", component="rate_limit")
        private_redis.start()

        async def closed() -> bool:
            # Redis is tried again one cooldown (1 s) after the failure.
            await client.get("/hello")
            text = await scrape(client)
            return value(text, "final_redis_circuit_open", component="rate_limit") == 0

        await wait_until(closed, "the circuit gauge closes", timeout=30)

    assert opened == 1


async def test_a_reused_refresh_token_is_counted(make_client: MakeClient) -> None:
    async with make_client(**ENABLED) as client:
        me = await Api(client).sign_up()
        before = value(await scrape(client), "final_refresh_token_reuse_detections_total")
        for expected in (200, 401):
            r = await client.post("/auth/refresh", json={"refresh_token": me.refresh_token})
            assert r.status_code == expected, r.text
        after = value(await scrape(client), "final_refresh_token_reuse_detections_total")

    assert (before, after) == (0, 1)


def test_every_worker_reports_the_total_of_all_workers(redis_url: str, redis_prefix: str) -> None:
    """Two workers, started as the image starts them: any scrape sees every request."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "PATH": PATH,
        "DATABASE_URL": "memory://",
        "DB_LATENCY_MS": "0",
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "JWT_SECRET": SECRET,
        "RATE_LIMIT": "100000/minute",
        "LOG_LEVEL": "WARNING",
        "METRICS_ENABLED": "true",
        "METRICS_TOKEN": TOKEN,
        "WORKERS": "2",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    requests = 40
    with running(["python", "-m", "final_project.serve"], env=env, ready_url=f"{base}/health"):
        # A connection each, so that the kernel hands them to both workers.
        for _ in range(requests):
            r = httpx.get(f"{base}/hello", headers={"Connection": "close"})
            assert r.status_code == 200
        totals = []
        for _ in range(8):
            r = httpx.get(f"{base}/metrics", headers={**SCRAPE, "Connection": "close"})
            assert r.status_code == 200, r.text
            totals.append(
                value(
                    r.text, "final_http_requests_total", method="GET", route="/hello", status="200"
                )
            )
    assert totals == [requests] * 8


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that keeps the bodies it is sent."""

    received: list[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # no access log of its own in the test output


@pytest.fixture
def collector() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []
    handler = type("TestCollector", (Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the collector's thread did not stop"


def test_tracing_sends_fastapis_spans_over_otlp_when_switched_on(
    collector: tuple[str, list[bytes]], redis_url: str, redis_prefix: str
) -> None:
    endpoint, received = collector
    env = {
        "DATABASE_URL": "memory://",
        "DB_LATENCY_MS": "0",
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "JWT_SECRET": SECRET,
        "LOG_LEVEL": "WARNING",
        "TRACING_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "final-project-test",
        # Export every 100 ms instead of every 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with Uvicorn("final_project.app.main:app", env=env) as server:
        assert httpx.get(f"{server.url}/hello?name=Ada").status_code == 200

        def exported() -> bool:
            return any(b"/hello" in body for body in received)

        wait_until_sync(exported, "a span of GET /hello reaches the collector", timeout=30)
    spans = b"".join(received)
    assert b"final-project-test" in spans
    # FastAPI's own spans: the request named by its route, and the endpoint inside it.
    assert b"GET /hello" in spans
    assert b"fastapi.endpoint" in spans
    # The probes (Uvicorn polls /health until it answers) are never traced.
    assert b"/health" not in spans


# shared.docs: offline pages, and the middleware's headers in the schema ------------


async def test_the_docs_pages_and_their_assets_are_served_by_the_app_itself() -> None:
    app = FastAPI(docs_url=None, redoc_url=None)
    serve_docs(app)
    assert app.url_path_for("docs-assets", path="/favicon.png") == "/docs/assets/favicon.png"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for asset in ["swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"]:
            assert (await client.get(f"/docs/assets/{asset}")).status_code == 200, asset
        swagger, redoc = await client.get("/docs"), await client.get("/redoc")
    for page, script in [(swagger, "swagger-ui-bundle.js"), (redoc, "redoc.standalone.js")]:
        assert page.status_code == 200
        assert f"/docs/assets/{script}" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]


def test_document_headers_writes_the_middleware_headers_into_every_response() -> None:
    own = {"ETag": header("The version.")}
    assert own["ETag"] == {"description": "The version.", "schema": {"type": "string"}}
    assert header("n", "integer")["schema"] == {"type": "integer"}
    schema: dict[str, Any] = {
        "paths": {
            "/items": {
                "get": {"responses": {"200": {"headers": own}, "429": {}, "503": {}}},
                "post": {"responses": {"422": {}}},
            },
            "/health": {"get": {"responses": {"200": {}, "503": {}}}},
        }
    }
    assert document_headers(schema, unlimited_paths={"/health"}) is schema
    limited = {**REQUEST_CONTEXT_HEADERS, **RATE_LIMIT_HEADERS}
    items, health = schema["paths"]["/items"], schema["paths"]["/health"]
    assert items["get"]["responses"] == {
        "200": {"headers": {**own, **limited}},
        "429": {"headers": {**limited, **RETRY_AFTER}},
        "503": {"headers": {**limited, **RETRY_AFTER}},
    }
    assert items["post"]["responses"] == {"422": {"headers": limited}}
    assert health["get"]["responses"] == {
        "200": {"headers": REQUEST_CONTEXT_HEADERS},
        "503": {"headers": REQUEST_CONTEXT_HEADERS},
    }
    assert own == {"ETag": header("The version.")}  # a shared constant is left alone
    assert document_headers({}) == {}


# shared.metrics in one process ------------------------------------------------------


def test_every_metric_says_what_it_counts() -> None:
    families = {
        f.name: f.documentation
        for f in text_string_to_metric_families(Metrics("t").exposition().decode())
        if not f.name.endswith("_created")  # the client's creation-time series
    }
    assert families == {
        "t_http_requests": "HTTP requests answered, by route template and status.",
        "t_http_request_duration_seconds": "Time to answer a request, by route template.",
        "t_cache_responses": "Responses of cached routes, by X-Cache outcome.",
        "t_rate_limit_decisions": (
            "Rate-limit decisions: allowed, limited, or fallback (per process, Redis away)."
        ),
        "t_redis_circuit_open": (
            "1 while a module skips Redis after a failure, else 0 (the most of any worker)."
        ),
        "t_refresh_token_reuse_detections": (
            "Spent refresh tokens presented again; each revoked its session."
        ),
    }


async def test_the_middleware_counts_answers_without_headers_and_failures_as_500() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("no answer")
        await send({"type": "http.response.start", "status": 204})  # no headers
        await send({"type": "http.response.body", "body": b""})

    metrics = Metrics("t")
    middleware = MetricsMiddleware(app, metrics=metrics)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    before = time.perf_counter()
    await middleware({"type": "http", "method": "GET", "path": "/ok", "headers": []}, receive, send)
    with pytest.raises(RuntimeError):
        await middleware(
            {"type": "http", "method": "GET", "path": "/boom", "headers": []}, receive, send
        )
    took = time.perf_counter() - before
    assert [m.get("status") for m in sent] == [204, None]
    samples = {
        (s.name, s.labels.get("status")): s.value
        for f in text_string_to_metric_families(metrics.exposition().decode())
        for s in f.samples
    }
    assert samples[("t_http_requests_total", "204")] == 1
    assert samples[("t_http_requests_total", "500")] == 1
    assert 0 <= samples[("t_http_request_duration_seconds_sum", None)] <= took


async def test_without_a_token_the_metrics_endpoint_refuses_every_bearer() -> None:
    endpoint = MetricsEndpoint(Metrics("t"), token=None, public=False)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    for guess in [b"Bearer None", b"Bearer ", b""]:
        scope = {"type": "http", "method": "GET", "path": "/metrics"}
        await endpoint({**scope, "headers": [(b"authorization", guess)]}, receive, send)
    assert [m["status"] for m in sent if "status" in m] == [401] * 3
    body = b'{"detail": "Not authenticated"}'
    assert sent[:2] == [
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b"Bearer"),
                (b"content-length", str(len(body)).encode()),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]
