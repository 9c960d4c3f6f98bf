"""shared.cache: the cross-process load lock after a failing loader, and waiters that go away.

Two `ResponseCache`s on one Redis and prefix, each with a client of its own, stand
for two workers. The lock lives far longer than any poll here (LOCK_SECONDS), so a
lock that is not freed shows as a request that never loads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.cache import CachedBody, CacheSettings, ResponseCache, cache_response, etag_for
from shared.cache.responses import CachedResponse, if_none_match
from shared.redis import AnyRedis, RedisSettings, create_redis, hash_tag, key_slot
from tests.servers import RedisClusterServers
from tests.shared.conftest import keys_under
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


# Waiting on another worker's load -------------------------------------------------


async def test_a_worker_waits_for_the_entry_another_worker_is_loading(
    workers: tuple[Worker, Worker],
) -> None:
    first, second = workers
    slow = Loader(b'{"name": "first"}').hold()
    loading = asyncio.create_task(first.get(slow))
    await wait_until(slow.started.is_set, "the first worker loads")
    unused = Loader(b'{"name": "second"}')
    before = second.answered
    waiting = asyncio.create_task(second.get(unused))
    try:
        # Its lookup, its try at the lock, then a few polls for the entry.
        await wait_until(lambda: second.answered >= before + 5, "the second worker polls")
        assert unused.calls == 0
        assert not waiting.done()
        slow.go.set()
        assert (await loading).status == "MISS"
        answer = await waiting
        assert (answer.body, answer.status) == (b'{"name": "first"}', "HIT")
        assert answer.etag == etag_for(b'{"name": "first"}')
        assert unused.calls == 0
    finally:
        waiting.cancel()


async def test_a_stored_entry_frees_its_lock_for_the_next_version(
    workers: tuple[Worker, Worker],
) -> None:
    first, second = workers
    assert (await first.get(Loader())).status == "MISS"
    await first.cache.invalidate("users")
    fresh = Loader(b'{"name": "v2"}')
    answer = asyncio.create_task(second.get(fresh))
    try:
        await wait_until(lambda: fresh.calls == 1, "the next version loads at once")
        assert ((await answer).body, (await answer).status) == (b'{"name": "v2"}', "MISS")
    finally:
        answer.cancel()


# Redis errors in the middle of a load ---------------------------------------------


class Flaky:
    """A client whose commands named in `failing` raise a connection error."""

    def __init__(self, redis_url: str) -> None:
        self.client = create_redis(RedisSettings(url=redis_url))
        self.failing: set[str] = set()
        send = self.client.execute_command

        async def flaky(*args: Any, **options: Any) -> Any:
            if str(args[0]).upper() in self.failing:
                raise RedisConnectionError("connection reset")
            return await send(*args, **options)

        self.client.execute_command = flaky  # type: ignore[method-assign]


async def test_redis_errors_during_a_load_answer_with_the_body_and_later_bump_the_epoch(
    redis_url: str, redis_prefix: str
) -> None:
    flaky = Flaky(redis_url)
    cache = ResponseCache(flaky.client, CacheSettings(), redis_prefix, circuit_cooldown=0.05)

    async def get(body: bytes, *, then_fail: str = "") -> CachedBody:
        async def load() -> bytes:
            if then_fail:
                flaky.failing.add(then_fail)
            return body

        return await cache.get_or_load(
            namespace="users", key="1", principal=None, public=True, loader=load,
            tags=["users"],
        )  # fmt: skip

    answers: list[CachedBody] = []

    async def cached(body: bytes) -> bool:
        """Asks until Redis is trusted again (the circuit closes by itself)."""
        answers.append(await get(body))
        return answers[-1].status != "BYPASS"

    try:
        # Taking the load lock fails: the loader answers.
        flaky.failing.add("SET")
        answer = await get(b"lock fails")
        assert (answer.body, answer.etag, answer.status) == (
            b"lock fails", etag_for(b"lock fails"), "BYPASS",
        )  # fmt: skip
        flaky.failing.clear()
        await wait_until(lambda: cached(b"v1"), "the cache is used again")
        assert (answers[-1].body, answers[-1].status) == (b"v1", "MISS")
        # Storing fails (the fill script, after the lookup): the body still answers.
        await cache.invalidate("users")
        answer = await get(b"store fails", then_fail="EVALSHA")
        assert (answer.body, answer.etag, answer.status) == (
            b"store fails", etag_for(b"store fails"), "BYPASS",
        )  # fmt: skip
        flaky.failing.clear()
        await wait_until(lambda: cached(b"v2"), "the cache is used again")
        assert (answers[-1].body, answers[-1].status) == (b"v2", "MISS")
        assert (await get(b"unused")).status == "HIT"
        # A lookup fails: Redis may now lack a write of ours, so what it held
        # before is never served again.
        flaky.failing.add("EVALSHA")
        assert (await get(b"v3")).status == "BYPASS"
        flaky.failing.clear()
        await wait_until(lambda: cached(b"v3"), "the cache is used again")
        assert (answers[-1].body, answers[-1].status) == (b"v3", "MISS")
    finally:
        await cache.aclose()
        await flaky.client.aclose()


# Batches, namespaces, keys ---------------------------------------------------------


def loads(body: bytes) -> Callable[[], Awaitable[bytes]]:
    async def load() -> bytes:
        return body

    return load


async def test_one_batch_of_lookups_answers_each_caller_with_its_own_entry(
    redis: AnyRedis, redis_prefix: str
) -> None:
    cache = ResponseCache(redis, CacheSettings(), redis_prefix)
    asks = [("users", "1"), ("users", "2"), ("teams", "1")]  # same tags, one batch

    async def round(tag: str) -> list[CachedBody]:
        return await asyncio.gather(
            *(
                cache.get_or_load(
                    namespace=ns,
                    key=key,
                    principal="7",
                    tags=["shared"],
                    loader=loads(f"{ns}/{key}/{tag}".encode()),
                )
                for ns, key in asks
            )
        )

    try:
        first = await round("a")
        assert [(a.body, a.status) for a in first] == [
            (b"users/1/a", "MISS"), (b"users/2/a", "MISS"), (b"teams/1/a", "MISS"),
        ]  # fmt: skip
        second = await round("b")
        assert [(a.body, a.status) for a in second] == [
            (b"users/1/a", "HIT"), (b"users/2/a", "HIT"), (b"teams/1/a", "HIT"),
        ]  # fmt: skip
    finally:
        await cache.aclose()


async def test_entries_follow_the_documented_keys_and_lifetimes(
    redis: AnyRedis, redis_prefix: str
) -> None:
    settings = CacheSettings(ttl_seconds=100, jitter=0, version_seconds=1)
    cache = ResponseCache(redis, settings, redis_prefix)
    try:
        await cache.get_or_load(
            namespace="users", key="1", principal=None, public=True, loader=loads(b"a"),
            tags=["user:1", "users"],
        )  # fmt: skip
        await cache.get_or_load(
            namespace="users", key="22", principal="7", loader=loads(b"b"), tags=[]
        )
        entries = f"{redis_prefix}cache:e:"
        public = f"{entries}{{user:1}}:users:pub:1:1"
        private = f"{entries}{{users}}:users:u1:7:2:22"
        assert set(await keys_under(redis, entries)) == {public.encode(), private.encode()}
        # The TTL without jitter, in milliseconds.
        assert 99_000 < await redis.pttl(public) <= 100_000
        # Versions outlive every entry: ten TTLs at least.
        await cache.invalidate("users")
        assert await redis.ttl(f"{redis_prefix}cache:tag:{{users}}") == 1000
    finally:
        await cache.aclose()


async def test_without_redis_every_answer_is_loaded_and_a_write_is_a_no_op() -> None:
    cache = ResponseCache(None)
    try:
        answer = await cache.get_or_load(
            namespace="users", key="1", principal="7", loader=loads(b"x"), tags=["users"]
        )
        assert (answer.body, answer.etag, answer.status) == (b"x", etag_for(b"x"), "BYPASS")
        await cache.invalidate("users")
    finally:
        await cache.aclose()


async def test_a_cluster_serves_and_invalidates_entries_whose_tags_span_slots(
    redis_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    client = create_redis(RedisSettings(url=redis_cluster.url))
    cache = ResponseCache(client, CacheSettings(), redis_prefix)
    # Entries of several slots, two of them in one slot, all sharing a tag elsewhere.
    asks = [("item:0", "a"), ("item:0", "b"), ("item:1", "a"), ("item:2", "a")]
    assert len({key_slot(hash_tag(tag).encode()) for tag, _ in asks}) == 3

    async def round(version: str) -> list[tuple[bytes, str]]:
        answers = await asyncio.gather(
            *(
                cache.get_or_load(
                    namespace="items",
                    key=key,
                    principal=None,
                    public=True,
                    tags=[tag, "items"],
                    loader=loads(f"{tag}/{key}/{version}".encode()),
                )
                for tag, key in asks
            )
        )
        return [(a.body, a.status) for a in answers]

    def expect(versions: list[str], statuses: list[str]) -> list[tuple[bytes, str]]:
        return [
            (f"{tag}/{key}/{v}".encode(), s)
            for (tag, key), v, s in zip(asks, versions, statuses, strict=True)
        ]

    try:
        assert await round("1") == expect(["1"] * 4, ["MISS"] * 4)
        assert await round("2") == expect(["1"] * 4, ["HIT"] * 4)
        await cache.invalidate("items")  # a tag outside every entry's slot
        assert await round("3") == expect(["3"] * 4, ["MISS"] * 4)
        await cache.invalidate("item:1", "item:2")  # tags of two slots, in one call
        assert await round("4") == expect(["3", "3", "4", "4"], ["HIT", "HIT", "MISS", "MISS"])
    finally:
        await cache.aclose()
        await client.aclose()


# Responses -------------------------------------------------------------------------


async def test_a_cached_response_matches_any_of_several_etags_and_runs_its_background_task() -> (
    None
):
    cached = CachedBody(b'{"a": 1}', etag_for(b'{"a": 1}'), "HIT")
    ran: list[str] = []

    async def endpoint(request: Request) -> Response:
        return CachedResponse(
            cached,
            if_none_match(request.scope),
            media_type="text/plain",
            headers={"cache-control": "private"},
            background=BackgroundTask(ran.append, request.headers.get("if-none-match", "")),
        )

    app = Starlette(routes=[Route("/", endpoint)])
    several = f'"other", W/{cached.etag}'
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        full = await client.get("/")
        unchanged = await client.get("/", headers={"If-None-Match": several})
        changed = await client.get("/", headers={"If-None-Match": '"one", "two"'})
        packed = await client.get("/", headers={"If-None-Match": f'"one",{cached.etag}'})
    assert (full.status_code, full.content) == (200, b'{"a": 1}')
    assert full.headers["content-type"] == "text/plain; charset=utf-8"
    assert (full.headers["etag"], full.headers["x-cache"]) == (cached.etag, "HIT")
    assert full.headers["cache-control"] == "private"
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    assert unchanged.headers["cache-control"] == "private"
    assert changed.status_code == 200
    assert packed.status_code == 304  # no space after the comma
    assert ran == ["", several, '"one", "two"', f'"one",{cached.etag}']  # on a 304 as well


def test_cache_response_keeps_the_media_type_and_headers() -> None:
    cached = CachedBody(b"x", etag_for(b"x"), "MISS")
    response = cache_response(cached, media_type="text/csv", headers={"vary": "Cookie"})
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["vary"] == "Cookie"
    assert cache_response(cached, cached.etag).status_code == 304
    assert cache_response(cached).headers["content-type"] == "application/json"
    assert CachedResponse(cached).headers["content-type"] == "application/json"
