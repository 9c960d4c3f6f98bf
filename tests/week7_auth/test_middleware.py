"""Days 5-6: the request-logging middleware: two headers on every response, one log line."""

import logging
import re
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.clients import Api, serve
from tests.servers import Uvicorn
from tests.waiting import wait_until_sync
from tests.week7_auth.conftest import fast_settings
from week7_auth.app.config import DEVELOPMENT_JWT_SECRET
from week7_auth.app.main import create_app

LOGGER = "week7_auth.app.middleware"
LINE = re.compile(r"(\S+) (\S+) (\d{3}) (\d+\.\d{2})ms request_id=([A-Za-z0-9._-]{1,64})")


def request_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def parse(line: str) -> re.Match[str]:
    match = LINE.fullmatch(line)
    assert match is not None, line
    return match


async def test_each_request_is_logged_once_with_method_path_status_duration_and_id(
    client: httpx.AsyncClient, users: Api, caplog: pytest.LogCaptureFixture
) -> None:
    account = await users.sign_up()
    caplog.set_level(logging.INFO, logger="week7_auth")
    caplog.clear()
    r = await client.get("/users/me", headers={**account.headers, "X-Request-ID": "trace-42"})
    assert r.status_code == 200, r.text

    [line] = request_lines(caplog)
    assert parse(line).group(1, 2, 3, 5) == ("GET", "/users/me", "200", "trace-42")


async def test_errors_are_logged_with_their_status(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="week7_auth")
    await client.get("/users/me")
    await client.get("/no/such/page")
    await client.post("/users", json={})
    statuses = [parse(line).group(3) for line in request_lines(caplog)]
    assert statuses == ["401", "404", "422"]


async def test_every_response_gets_a_request_id_and_its_process_time(
    client: httpx.AsyncClient,
) -> None:
    for r in (await client.get("/health"), await client.get("/users"), await client.get("/nope")):
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), r.headers
        assert re.fullmatch(r"\d+\.\d{2}", r.headers["x-process-time"]), r.headers


async def test_a_sane_request_id_is_kept_on_success_and_on_error(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/health", "/users"):
        r = await client.get(path, headers={"X-Request-ID": "Abc.1_2-3"})
        assert r.headers["x-request-id"] == "Abc.1_2-3", path


@pytest.mark.parametrize("incoming", ["", "a" * 65, "two words", "a/b", "x;y", "caf\xe9", "a\tb"])
async def test_an_odd_request_id_is_replaced(client: httpx.AsyncClient, incoming: str) -> None:
    r = await client.get("/health", headers=[(b"X-Request-ID", incoming.encode("latin-1"))])
    assert r.status_code == 200, r.text
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), r.headers


async def test_a_64_character_request_id_is_kept(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"X-Request-ID": "a" * 64})
    assert r.headers["x-request-id"] == "a" * 64


async def test_a_newline_in_the_path_cannot_forge_a_log_line(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="week7_auth")
    await client.get("/health%0AINFO%20GET%20/admin%20200")
    [line] = request_lines(caplog)
    assert "\n" not in line
    assert "/health%0AINFO" in line


async def test_a_crash_is_a_logged_500_that_still_carries_the_headers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(fast_settings())

    async def crash() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/crash", crash)
    caplog.set_level(logging.INFO, logger="week7_auth")
    # raise_app_exceptions=False: answer as a server would, instead of raising in the test.
    async with serve(app, raise_app_exceptions=False) as client:
        r = await client.get("/crash", headers={"X-Request-ID": "crash-1"})

    assert r.status_code == 500
    assert r.json() == {"detail": "Internal Server Error"}
    assert r.headers["x-request-id"] == "crash-1"
    assert re.fullmatch(r"\d+\.\d{2}", r.headers["x-process-time"])
    [line] = request_lines(caplog)
    assert line.startswith("GET /crash 500 "), line
    assert line.endswith("request_id=crash-1"), line


async def test_the_log_line_does_not_wait_for_background_tasks(
    app: FastAPI,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The audit task runs after the response has gone out: make it take 0.3 s more,
    # and the logged duration (the client's wait) must not include them.
    audit = app.state.audit
    original = audit.record

    def slow_record(*args: Any) -> None:
        time.sleep(0.3)  # the task runs in the threadpool: this blocks only its thread
        original(*args)

    monkeypatch.setattr(audit, "record", slow_record)
    caplog.set_level(logging.INFO, logger="week7_auth")
    body = {"name": "A", "email": "a@example.com", "password": "p" * 8}
    started = time.perf_counter()
    assert (await client.post("/users", json=body)).status_code == 201
    # The test client returns only once the background task is done, too.
    with_background_ms = (time.perf_counter() - started) * 1000
    [line] = request_lines(caplog)
    assert float(parse(line).group(4)) <= with_background_ms - 300, line


@pytest.mark.slow
def test_log_lines_reach_the_terminal_under_uvicorn() -> None:
    # uvicorn sets up only its own loggers: without the app's handler, nothing would show.
    env = {
        "JWT_SECRET": DEVELOPMENT_JWT_SECRET,  # so the start-up warning must show too
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "1024",
        "DB_LATENCY_MS": "0",
    }
    with Uvicorn("week7_auth.app.main:app", env=env) as server:
        r = httpx.get(f"{server.url}/users", headers={"X-Request-ID": "under-uvicorn"})
        assert r.status_code == 401, r.text
        wait_until_sync(
            lambda: "request_id=under-uvicorn" in server.output(),
            f"the log line reaches the terminal:\n{server.output()}",
        )
        output = server.output()

    [line] = [line for line in output.splitlines() if "request_id=under-uvicorn" in line]
    assert "INFO week7_auth.app.middleware: GET /users 401 " in line, output
    assert "WARNING week7_auth.app.main: JWT_SECRET is not set" in output, output
