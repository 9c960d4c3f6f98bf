"""shared.observability: request ids, X-Process-Time and one JSON access-log line."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request

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
