"""shared.observability: request ids, X-Process-Time and one JSON access-log line."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.observability import (
    JsonFormatter,
    ObservabilitySettings,
    RequestContextMiddleware,
    configure_logging,
    current_request_id,
)


@pytest.fixture
def log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
async def client(log: io.StringIO) -> AsyncIterator[httpx.AsyncClient]:
    logger = logging.getLogger(f"test.access.{id(log)}")
    handler = logging.StreamHandler(log)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/echo")
    async def echo(request: Request) -> dict[str, str | None]:
        request.state.user_id = "42"
        return {"contextvar": current_request_id(), "state": request.state.request_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    app.add_middleware(RequestContextMiddleware, logger=logger)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
    logger.removeHandler(handler)


def lines(log: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


async def test_a_request_id_is_generated_and_shared_with_the_handler(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/echo")
    assert r.status_code == 200, r.text
    request_id = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert r.json() == {"contextvar": request_id, "state": request_id}
    assert current_request_id() is None  # reset after the request


async def test_a_sane_incoming_request_id_is_kept(client: httpx.AsyncClient) -> None:
    r = await client.get("/echo", headers={"X-Request-ID": "abc.DEF_123-x"})
    assert r.headers["x-request-id"] == "abc.DEF_123-x"


@pytest.mark.parametrize("bad", ["a" * 65, "has space", "semi;colon", "ünï", ""])
async def test_an_insane_incoming_request_id_is_replaced(
    client: httpx.AsyncClient, bad: str
) -> None:
    r = await client.get("/echo", headers={b"X-Request-ID": bad.encode("utf-8")})
    assert r.headers["x-request-id"] != bad
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


async def test_process_time_is_plain_milliseconds(client: httpx.AsyncClient) -> None:
    r = await client.get("/echo")
    assert re.fullmatch(r"\d+\.\d{2}", r.headers["x-process-time"])


async def test_a_500_is_problem_json_with_the_request_id_and_no_traceback(
    client: httpx.AsyncClient, log: io.StringIO
) -> None:
    r = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert r.status_code == 500, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-request-id"] == "req-500"
    body = r.json()
    assert body["status"] == 500
    assert body["request_id"] == "req-500"
    assert "secret internals" not in r.text
    # The traceback goes to the log, with the request id.
    errors = [e for e in lines(log) if e["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "req-500"
    assert "secret internals" in str(errors[0]["exc_info"])


async def test_each_request_logs_one_json_line_and_health_checks_none(
    client: httpx.AsyncClient, log: io.StringIO
) -> None:
    await client.get("/health")
    r = await client.get("/echo?x=1")
    await client.get("/boom")
    access = [e for e in lines(log) if e["level"] == "INFO"]
    assert len(access) == 2
    first = access[0]
    assert first["method"] == "GET"
    assert first["path"] == "/echo"
    assert first["status"] == 200
    assert isinstance(first["duration_ms"], float)
    assert first["request_id"] == r.headers["x-request-id"]
    assert first["user"] == "42"
    assert access[1]["status"] == 500


def test_configure_logging_writes_json_lines_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        configure_logging("DEBUG")
        configure_logging("INFO")  # idempotent: one handler, not two
        logging.getLogger("test.configure").info("hello %s", "there")
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        entry = json.loads(err[0])
        assert entry["message"] == "hello there"
        assert entry["level"] == "INFO"
    finally:
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
        root.setLevel(before[1])


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("ACCESS_LOG", "false")
    settings = ObservabilitySettings()
    assert (settings.log_level, settings.access_log) == ("DEBUG", False)


# At the ASGI level: what the app gets, what goes out, what is logged --------------


class Inner:
    """Reads the request, then answers without headers, fails, or is cancelled."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        message = await receive()
        if scope["type"] != "http":
            await send({"type": "echo", "got": message})
            return
        if scope["path"] == "/cancelled":
            raise asyncio.CancelledError
        if scope["path"] != "/boom":
            await send({"type": "http.response.start", "status": 201})
        if scope["path"].startswith("/boom"):
            raise RuntimeError("secret internals")
        await send({"type": "http.response.body", "body": message["body"]})


async def call(app: ASGIApp, kind: str, path: str = "/", **extra: Any) -> list[Message]:
    scope: Scope = {"type": kind, "method": "GET", "path": path, "headers": [], **extra}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"ping", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_the_middleware_at_the_asgi_level(caplog: pytest.LogCaptureFixture) -> None:
    inner = Inner()
    app = RequestContextMiddleware(inner)  # logs to "shared.access"
    caplog.set_level(logging.INFO, logger="shared.access")
    ok = {"type": "echo", "got": {"type": "http.request", "body": b"ping", "more_body": False}}
    for kind in ["websocket", "lifespan"]:
        assert await call(app, kind) == [ok]  # passed through, untouched
    assert [s["type"] for s in inner.scopes] == ["websocket", "lifespan"]
    assert "state" not in inner.scopes[0]

    shared = {"db": "pool"}
    before = time.perf_counter()
    sent = await call(app, "http", "/items", state=shared)
    took_ms = (time.perf_counter() - before) * 1000
    assert shared == {"db": "pool"}  # the lifespan state is copied, never changed
    request_id = inner.scopes[-1]["state"]["request_id"]
    assert inner.scopes[-1]["state"] == {"db": "pool", "request_id": request_id}
    assert sent[0]["status"] == 201
    [(id_name, id_value), (time_name, process_time)] = sent[0]["headers"]
    assert (id_name, id_value, time_name) == (
        b"x-request-id",
        request_id.encode(),
        b"x-process-time",
    )
    assert sent[1]["body"] == b"ping"
    [access] = [r for r in caplog.records if r.name == "shared.access"]
    fields = access.fields  # type: ignore[attr-defined]
    assert access.request_id == request_id  # type: ignore[attr-defined]
    assert re.fullmatch(rf"GET /items 201 \d+\.\d\dms {request_id}", access.getMessage())
    duration = fields["duration_ms"]
    assert duration == round(duration, 2)
    # Measured from the same start: the header first, the log line when done.
    assert float(process_time) <= duration <= took_ms + 0.01

    # A failure before the response: a 500 in ASGI form, the error logged with its path.
    caplog.clear()
    [start, body] = await call(app, "http", "/boom")
    problem = body["body"]
    assert start["status"] == 500
    assert start["headers"][:2] == [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(problem)).encode()),
    ]
    assert json.loads(problem)["status"] == 500
    [error, access] = caplog.records
    assert (error.getMessage(), error.fields) == ("unhandled error", {"path": "/boom"})  # type: ignore[attr-defined]
    assert access.fields["status"] == 500  # type: ignore[attr-defined]

    # A failure after the response started goes on up: no second start.
    caplog.clear()
    sent = []
    with pytest.raises(RuntimeError):
        await app(
            {"type": "http", "method": "GET", "path": "/boom-late", "headers": []},
            _request,
            _append_to(sent),
        )
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert caplog.records[-1].fields["status"] == 201  # type: ignore[attr-defined]

    # A request cancelled before any answer (the client went away) is logged as a 500.
    caplog.clear()
    with pytest.raises(asyncio.CancelledError):
        await call(app, "http", "/cancelled")
    assert caplog.records[-1].fields["status"] == 500  # type: ignore[attr-defined]


async def _request() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _append_to(sent: list[Message]) -> Send:
    async def send(message: Message) -> None:
        sent.append(message)

    return send


async def test_a_log_line_formatted_later_keeps_its_request_id_and_fields() -> None:
    """A handler may format a record after the request is over (a queue, another thread)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.access.later")
    logger.addHandler(keep := Keep())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        await call(RequestContextMiddleware(Inner(), logger=logger), "http", "/items")
    finally:
        logger.removeHandler(keep)
    [record] = records
    entry = json.loads(JsonFormatter().format(record))
    assert current_request_id() is None
    assert re.fullmatch(r"[0-9a-f]{32}", entry["request_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", entry["time"])
    assert (entry["logger"], entry["level"], entry["path"]) == (
        "test.access.later",
        "INFO",
        "/items",
    )
    odd = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    odd.fields = {"when": datetime.date(2024, 1, 2)}
    assert json.loads(JsonFormatter().format(odd))["when"] == "2024-01-02"


def test_configure_logging_defaults_to_info() -> None:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        root.setLevel(logging.DEBUG)
        configure_logging()
        assert root.level == logging.INFO
    finally:
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
        root.setLevel(before[1])
