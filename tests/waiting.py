"""Waiting for an event by polling for it, never for a fixed time.

A poll returns as soon as the event has happened, so its timeout is no ceiling on
how fast anything must be: it only turns a hang into a failure that says what
never happened.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

TIMEOUT = 15.0


async def wait_until(
    check: Callable[[], object],
    what: str,
    *,
    timeout: float = TIMEOUT,
    interval: float = 0.01,
) -> None:
    """Await until `check()` is true; a `check` that returns an awaitable is awaited."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        await asyncio.sleep(interval)


def wait_until_sync(
    check: Callable[[], bool], what: str, *, timeout: float = TIMEOUT, interval: float = 0.1
) -> None:
    """The same, for a test that talks to real processes without an event loop."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(interval)
