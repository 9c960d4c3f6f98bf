"""shared.cache: the cross-process load lock after a failing loader, and waiters that go away.

Two `ResponseCache`s on one Redis and prefix, each with a client of its own, stand
for two workers. The lock lives far longer than any poll here (LOCK_SECONDS), so a
lock that is not freed shows as a request that never loads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.cache import CachedBody, CacheSettings, ResponseCache
from shared.redis import RedisSettings, create_redis
from tests.waiting import wait_until

LOCK_SECONDS = 600


class Worker:
    """One process's cache on the shared Redis; `answered` counts the Redis calls its
    client got an answer to (any command: it says how far a request got, not how)."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        client = create_redis(RedisSettings(url=redis_url))
        self.answered = 0
        send = client.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            try:
                return await send(*args, **options)
            finally:
                self.answered += 1

        client.execute_command = counted  # type: ignore[method-assign]
        self.cache = ResponseCache(client, CacheSettings(lock_seconds=LOCK_SECONDS), prefix)

    async def get(self, loader: Loader, key: str = "1") -> CachedBody:
        return await self.cache.get_or_load(
            namespace="users", key=key, principal=None, public=True, loader=loader.load,
            tags=["users"],
        )  # fmt: skip

    async def aclose(self) -> None:
        await self.cache.aclose()
        assert self.cache.redis is not None
        await self.cache.redis.aclose()


class Loader:
    """A loader that can be held at its start, and made to fail or answer."""

    def __init__(self, body: bytes = b'{"name": "v1"}', *, fail: bool = False) -> None:
        self.body = body
        self.fail = fail
        self.calls = 0
        self.started = asyncio.Event()
        self.go = asyncio.Event()
        self.go.set()

    def hold(self) -> Loader:
        self.go.clear()
        return self

    async def load(self) -> bytes:
        self.calls += 1
        self.started.set()
        await self.go.wait()
        if self.fail:
            raise LookupError("database hiccup")
        return self.body


@pytest.fixture
async def workers(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[Worker, Worker]]:
    first, second = Worker(redis_url, redis_prefix), Worker(redis_url, redis_prefix)
    yield first, second
    await first.aclose()
    await second.aclose()


async def cancel(task: asyncio.Task[CachedBody]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# A failing loader frees the load lock ------------------------------------------


async def test_after_a_failed_load_the_next_request_on_another_worker_loads_at_once(
    workers: tuple[Worker, Worker],
) -> None:
    first, second = workers
    with pytest.raises(LookupError):
        await first.get(Loader(fail=True))  # took the load lock, then failed

    good = Loader()
    answer = asyncio.create_task(second.get(good))
    try:
        await wait_until(lambda: good.calls == 1, "the other worker loads")
        assert (await answer).body == b'{"name": "v1"}'
    finally:
        answer.cancel()
    assert (await first.get(Loader(b"unused"))).status == "HIT"  # and it was stored


async def test_a_worker_waiting_on_a_load_that_fails_loads_itself(
    workers: tuple[Worker, Worker],
) -> None:
    first, second = workers
    broken = Loader(fail=True).hold()
    failing = asyncio.create_task(first.get(broken))
    await wait_until(broken.started.is_set, "the first worker loads")  # it holds the lock ...
    good = Loader()
    before = second.answered
    waiting = asyncio.create_task(second.get(good))  # ... so the second one waits for it
    try:
        # Its lookup, then its try at the lock (or a look for the entry): it found the
        # first worker's lock, and waits.
        await wait_until(lambda: second.answered >= before + 2, "the second worker waits")
        assert good.calls == 0
        broken.go.set()  # the load fails
        with pytest.raises(LookupError):
            await failing
        await wait_until(lambda: good.calls == 1, "the waiting worker loads by itself")
        answer = await waiting
        assert (answer.body, answer.status) == (b'{"name": "v1"}', "MISS")
    finally:
        waiting.cancel()


# A waiter that goes away -------------------------------------------------------


@pytest.mark.parametrize("gone", [0, 1], ids=["the first caller", "the second caller"])
async def test_cancelling_one_of_two_requests_waiting_on_a_load_spares_the_other(
    workers: tuple[Worker, Worker], gone: int
) -> None:
    cache, _ = workers
    loader = Loader().hold()
    requests = [asyncio.create_task(cache.get(loader)) for _ in range(2)]
    await wait_until(loader.started.is_set, "the load starts")  # both wait on it
    await cancel(requests[gone])  # a client hangs up
    loader.go.set()
    [answer] = await asyncio.gather(requests[1 - gone], return_exceptions=True)
    assert isinstance(answer, CachedBody), repr(answer)
    assert (answer.body, answer.status) == (b'{"name": "v1"}', "MISS")
    assert loader.calls == 1
    # The load went on to the end: its entry was stored.
    assert (await cache.get(Loader(b"unused"))).status == "HIT"
