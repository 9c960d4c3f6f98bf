"""Week 6's steps: asyncio on its own (day 2), and a background task (day 5)."""

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.types import Message, Scope

from tests.servers import run_step
from week6_async.steps import day2_asyncio_basics as day2
from week6_async.steps import day5_background_task as day5


class Waiting:
    """Counts how many `get_data` calls are waiting at the same moment."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def wrap(self, monkeypatch: pytest.MonkeyPatch) -> None:
        get_data = day2.get_data

        async def counted(name: str, seconds: float) -> str:
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                return await get_data(name, seconds)
            finally:
                self.now -= 1

        monkeypatch.setattr(day2, "get_data", counted)


@pytest.mark.parametrize(
    ("way", "most_waiting_at_once"),
    [(day2.one_after_another, 1), (day2.at_the_same_time, 2)],
    ids=["one_after_another", "at_the_same_time"],
)
async def test_day2_awaits_in_a_row_wait_one_at_a_time_and_gather_waits_for_both_at_once(
    monkeypatch: pytest.MonkeyPatch,
    way: Callable[[], Awaitable[list[str]]],
    most_waiting_at_once: int,
) -> None:
    waiting = Waiting()
    waiting.wrap(monkeypatch)
    assert await way() == ["users after 0.5 s", "orders after 0.5 s"]
    assert waiting.most == most_waiting_at_once


def test_day2_await_outside_async_def_is_refused_before_anything_runs() -> None:
    with pytest.raises(SyntaxError, match="'await' outside async function"):
        compile(day2.AWAIT_OUTSIDE_ASYNC, "<example>", "exec")


def test_day2_the_script_runs_and_shows_every_lesson() -> None:
    output = run_step("week6_async.steps.day2_asyncio_basics")
    assert "calling it gives: coroutine" in output
    assert "one_after_another: ['users after 0.5 s', 'orders after 0.5 s']" in output
    assert "at_the_same_time: ['users after 0.5 s', 'orders after 0.5 s']" in output
    assert "await outside async def: 'await' outside async function" in output


async def test_day5_the_client_has_its_answer_before_the_email_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(day5, "outbox", [])
    monkeypatch.setattr(day5, "EMAIL_SECONDS", 0)
    answer: dict[str, Any] = {}

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        # Called as the server sends each part of the response to the client.
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            answer["body"] = json.loads(message["body"])
            answer["outbox when answered"] = list(day5.outbox)

    # Called the way a server calls it: the call returns once the background tasks are done.
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/signup",
        "raw_path": b"/signup",
        "query_string": b"email=maroof%40example.com",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8006),
    }
    await day5.app(scope, receive, send)

    assert answer["status"] == 201
    assert answer["body"]["email"] == "maroof@example.com"
    assert answer["outbox when answered"] == []  # the response went out first
    assert day5.outbox == ["maroof@example.com"]
