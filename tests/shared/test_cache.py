"""shared.cache: cache-aside bytes, versioned invalidation, stampedes, outages."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from starlette.responses import Response

from shared.cache import CachedBody, CacheSettings, ResponseCache, cache_response, etag_for
from shared.cache.entries import VersionedEntries
from shared.redis import RedisSettings, create_redis
from tests.servers import ROOT, RedisServer
from tests.shared.conftest import assert_every_key_expires, keys_under
from tests.waiting import wait_until


class Database:
    """A stand-in for the real store: the data the loader reads, and how often."""

    def __init__(self) -> None:
        self.value = "v1"
        self.loads = 0

    async def load(self) -> bytes:
        self.loads += 1
        return json.dumps({"name": self.value}).encode()


@pytest.fixture
def db() -> Database:
    return Database()


@pytest.fixture
async def cache(redis: Redis, redis_prefix: str) -> AsyncIterator[ResponseCache]:
    cache = ResponseCache(redis, CacheSettings(), redis_prefix)
    yield cache
    await cache.aclose()


async def get(cache: ResponseCache, db: Database, principal: str | None = "7") -> CachedBody:
    return await cache.get_or_load(
        namespace="users", key="1", principal=principal, loader=db.load, tags=["users", "user:1"]
    )


async def test_a_miss_is_stored_and_the_next_get_serves_the_same_bytes(
    cache: ResponseCache, db: Database
) -> None:
    first = await get(cache, db)
    second = await get(cache, db)
    assert (first.status, second.status) == ("MISS", "HIT")
    assert second.body == first.body == b'{"name": "v1"}'
    assert second.etag == first.etag == etag_for(first.body)
    assert db.loads == 1


async def test_a_write_invalidates_by_bumping_versions(cache: ResponseCache, db: Database) -> None:
    await get(cache, db)
    db.value = "v2"
    await cache.invalidate("user:1")
    fresh = await get(cache, db)
    assert fresh.status == "MISS"
    assert fresh.body == b'{"name": "v2"}'


async def test_the_stale_refill_race_is_closed(cache: ResponseCache, db: Database) -> None:
    """A reader that loaded before a write can't put the old data back."""
    loaded, release = asyncio.Event(), asyncio.Event()

    async def slow_old_read() -> bytes:
        old = json.dumps({"name": db.value}).encode()
        loaded.set()
        await release.wait()  # the write happens meanwhile
        return old

    reader = asyncio.create_task(
        cache.get_or_load(
            namespace="users", key="1", principal="7", loader=slow_old_read, tags=["user:1"]
        )
    )
    await wait_until(loaded.is_set, "the reader loads")
    db.value = "v2"
    await cache.invalidate("user:1")  # the write returns ...
    release.set()
    await wait_until(reader.done, "the slow reader answers")
    assert (await reader).body == b'{"name": "v1"}'  # ... the slow reader finishes late
    after = await cache.get_or_load(
        namespace="users", key="1", principal="7", loader=db.load, tags=["user:1"]
    )
    assert after.body == b'{"name": "v2"}'
    again = await cache.get_or_load(
        namespace="users", key="1", principal="7", loader=db.load, tags=["user:1"]
    )
    assert (again.status, again.body) == ("HIT", b'{"name": "v2"}')


async def test_fifty_concurrent_cold_gets_call_the_loader_once(cache: ResponseCache) -> None:
    calls = 0

    async def slow_load() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"[]"

    results = await asyncio.gather(
        *(
            cache.get_or_load(
                namespace="users", key="list", principal="7", loader=slow_load, tags=["users"]
            )
            for _ in range(50)
        )
    )
    assert calls == 1
    assert {r.body for r in results} == {b"[]"}
    assert {r.status for r in results} <= {"MISS", "HIT"}  # late lookups may find the entry


async def test_a_failing_loader_fails_its_waiters_and_is_not_cached(
    cache: ResponseCache, db: Database
) -> None:
    async def broken() -> bytes:
        await asyncio.sleep(0.01)
        raise LookupError("database hiccup")

    outcomes = await asyncio.gather(
        *(
            cache.get_or_load(namespace="n", key="k", principal="7", loader=broken, tags=["t"])
            for _ in range(5)
        ),
        return_exceptions=True,
    )
    assert all(isinstance(o, LookupError) for o in outcomes)
    ok = await cache.get_or_load(namespace="n", key="k", principal="7", loader=db.load, tags=["t"])
    assert ok.status == "MISS"


STAMPEDE_WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from shared.cache import CacheSettings, ResponseCache
    from shared.redis import RedisSettings, create_redis

    url, prefix, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])

    async def main():
        redis = create_redis(RedisSettings(url=url, socket_timeout=2, connect_timeout=2))
        cache = ResponseCache(redis, CacheSettings(lock_seconds=3), prefix)

        async def load():
            await redis.incr(prefix + "loads")
            await redis.expire(prefix + "loads", 60)
            await asyncio.sleep(0.3)
            return b"expensive"

        await asyncio.sleep(max(0.0, start_at - time.time()))
        results = await asyncio.gather(*(
            cache.get_or_load(namespace="n", key="cold", principal=None, public=True,
                              loader=load, tags=["t"])
            for _ in range(10)
        ))
        assert {r.body for r in results} == {b"expensive"}
        print(" ".join(sorted(r.status for r in results)))
        await cache.aclose()
        await redis.aclose()

    asyncio.run(main())
    """
)


async def test_two_processes_load_a_cold_key_once(
    redis: Redis, redis_url: str, redis_prefix: str
) -> None:
    start_at = str(time.time() + 1.5)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", STAMPEDE_WORKER, redis_url, redis_prefix, start_at],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=30) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()
    assert await redis.get(redis_prefix + "loads") == b"1"
    statuses = " ".join(out.decode() for out, _ in outputs).split()
    assert len(statuses) == 20
    assert set(statuses) <= {"MISS", "HIT"}


async def test_entries_are_per_principal_unless_public(cache: ResponseCache) -> None:
    async def body_for(who: str) -> bytes:
        return who.encode()

    def load_as(who: str):  # type: ignore[no-untyped-def]
        return lambda: body_for(who)

    alice = await cache.get_or_load(
        namespace="me", key="", principal="alice", loader=load_as("alice"), tags=["u"]
    )
    bob = await cache.get_or_load(
        namespace="me", key="", principal="bob", loader=load_as("bob"), tags=["u"]
    )
    assert (alice.body, bob.body) == (b"alice", b"bob")
    assert bob.status == "MISS"
    shared = await cache.get_or_load(
        namespace="p", key="", principal="alice", public=True, loader=load_as("one"), tags=["u"]
    )
    other = await cache.get_or_load(
        namespace="p", key="", principal="bob", public=True, loader=load_as("two"), tags=["u"]
    )
    assert (shared.body, other.body, other.status) == (b"one", b"one", "HIT")


async def test_without_a_principal_nothing_is_cached(
    cache: ResponseCache, db: Database, redis: Redis, redis_prefix: str
) -> None:
    first = await get(cache, db, principal=None)
    second = await get(cache, db, principal=None)
    assert (first.status, second.status) == ("BYPASS", "BYPASS")
    assert db.loads == 2
    assert await keys_under(redis, redis_prefix + "cache:e:") == []


async def test_every_worker_computes_the_same_etag(
    redis_url: str, redis_prefix: str, db: Database
) -> None:
    clients = [create_redis(RedisSettings(url=redis_url)) for _ in range(2)]
    caches = [ResponseCache(c, CacheSettings(), redis_prefix) for c in clients]
    try:
        miss = await get(caches[0], db)
        hit = await get(caches[1], db)
        assert hit.status == "HIT"
        assert hit.etag == miss.etag
    finally:
        for c in clients:
            await c.aclose()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_TTL_SECONDS", "5")
    assert CacheSettings().ttl_seconds == 5


def test_a_cached_response_carries_x_cache_and_etag_and_answers_304() -> None:
    cached = CachedBody(b'{"id": 1}', etag_for(b'{"id": 1}'), "HIT")
    r: Response = cache_response(cached)
    assert r.status_code == 200
    assert r.body == b'{"id": 1}'
    assert r.headers["x-cache"] == "HIT"
    assert r.headers["etag"] == cached.etag
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == "9"
    for header in (cached.etag, f"W/{cached.etag}", f'"other", {cached.etag}', "*"):
        not_modified = cache_response(cached, header)
        assert not_modified.status_code == 304, header
        assert not_modified.body == b""
        assert not_modified.headers["etag"] == cached.etag
    assert cache_response(cached, '"other"').status_code == 200


async def test_every_key_expires_and_ttls_are_jittered(redis: Redis, redis_prefix: str) -> None:
    cache = ResponseCache(redis, CacheSettings(ttl_seconds=60, jitter=0.5), redis_prefix)
    for i in range(12):
        await cache.get_or_load(
            namespace="n", key=str(i), principal="7", loader=Database().load, tags=["a", "b"]
        )
    await cache.invalidate("a")
    keys = await assert_every_key_expires(redis, redis_prefix)
    entries = [k for k in keys if k.startswith(f"{redis_prefix}cache:e:".encode())]
    ttls = [await redis.pttl(k) for k in entries]
    assert len(ttls) == 12
    assert all(0 < ttl <= 60_000 for ttl in ttls)
    assert max(ttls) - min(ttls) > 1000  # spread, so they don't all expire at once


async def test_a_script_flush_is_survived(cache: ResponseCache, db: Database, redis: Redis) -> None:
    await get(cache, db)
    await redis.script_flush()
    assert (await get(cache, db)).status == "HIT"
    db.value = "v2"
    await cache.invalidate("users")
    await redis.script_flush()
    assert (await get(cache, db)).body == b'{"name": "v2"}'


# Outages ---------------------------------------------------------------------


def outage_cache(
    url: str, *, on_circuit_change: Callable[[bool], None] | None = None, cooldown: float = 0.1
) -> ResponseCache:
    return ResponseCache(
        create_redis(RedisSettings(url=url)),
        CacheSettings(),
        "t:",
        circuit_cooldown=cooldown,
        on_circuit_change=on_circuit_change,
    )


async def close(cache: ResponseCache) -> None:
    await cache.aclose()
    assert cache.redis is not None
    await cache.redis.aclose()


async def test_redis_down_means_bypass_never_an_error(
    private_redis: RedisServer, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shared.cache")
    outages: list[bool] = []
    cache = outage_cache(private_redis.url, on_circuit_change=outages.append)
    try:
        await get(cache, db)
        private_redis.kill()
        for _ in range(5):
            answer = await get(cache, db)
            assert answer.status == "BYPASS"
            assert answer.body == b'{"name": "v1"}'
        await cache.invalidate("users")  # a write while down does not raise either
        # One outage, told once: Redis is skipped while its circuit is open, not waited
        # for on every call. The log says what that means for the responses.
        assert outages == [True]
        told = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Redis")]
        assert told == ["Redis unusable: cache bypassed until it answers again"]
    finally:
        await close(cache)


async def test_redis_down_is_bypassed_also_when_each_call_may_try_it_again(
    private_redis: RedisServer, db: Database
) -> None:
    """No cooldown: every call finds the circuit closed, tries to check Redis first,
    fails, and still answers with the loader's body."""
    cache = outage_cache(private_redis.url, cooldown=0)
    try:
        await get(cache, db)
        private_redis.kill()
        answers = [await get(cache, db) for _ in range(3)]
        assert [a.status for a in answers] == ["BYPASS"] * 3
        assert {a.body for a in answers} == {b'{"name": "v1"}'}
        assert db.loads == 4
    finally:
        await close(cache)


async def test_a_paused_redis_is_bypassed_within_the_timeout(
    private_redis: RedisServer, db: Database
) -> None:
    cache = outage_cache(private_redis.url)
    try:
        await get(cache, db)
        private_redis.pause()
        read = asyncio.create_task(get(cache, db))
        # Answered while Redis still hangs: the cache gave up on it and the loader answered.
        await wait_until(read.done, "the read is answered while Redis hangs")
        assert read.result().status == "BYPASS"
    finally:
        private_redis.resume()
        await close(cache)


async def test_a_write_during_an_outage_is_never_served_stale_afterwards(
    private_redis: RedisServer, db: Database
) -> None:
    writer, other = outage_cache(private_redis.url), outage_cache(private_redis.url)
    try:
        await get(writer, db)
        assert (await get(other, db)).status == "HIT"  # `other` trusts Redis
        before = await epoch(private_redis)
        private_redis.pause()
        assert (await get(writer, db)).status == "BYPASS"  # the writer sees the outage
        db.value = "v2"
        await writer.invalidate("user:1")  # so the bump is never sent
        private_redis.resume()

        # The writer's repair task bumps the epoch as soon as Redis answers, with no
        # request of its own: `other`, which saw no outage, then reads v2.
        async def bumped() -> bool:
            return await epoch(private_redis) != before

        await wait_until(bumped, "the writer bumps the epoch")
        assert (await get(other, db)).body == b'{"name": "v2"}'
        assert (await get(writer, db)).body == b'{"name": "v2"}'
    finally:
        await close(writer)
        await close(other)


async def epoch(server: RedisServer) -> bytes | None:
    """The cache's epoch (`t:cache:epoch`), read by a client of its own."""
    client = create_redis(RedisSettings(url=server.url))
    try:
        value = await client.get("t:cache:epoch")
        assert value is None or isinstance(value, bytes)
        return value
    finally:
        await client.aclose()


async def first_answers(cache: ResponseCache, db: Database) -> list[bytes]:
    """Every answer until the cache serves from Redis again, and one more from Redis."""
    answers: list[CachedBody] = []

    async def from_redis() -> bool:
        answers.append(await get(cache, db))
        return answers[-1].status != "BYPASS"

    await wait_until(from_redis, "the cache serves from Redis again")
    answers.append(await get(cache, db))
    assert answers[-1].status == "HIT"
    return [answer.body for answer in answers]


async def test_a_restart_from_an_old_snapshot_serves_nothing_stale(
    private_redis: RedisServer, db: Database
) -> None:
    cache = outage_cache(private_redis.url)
    newcomer: ResponseCache | None = None
    try:
        assert (await get(cache, db)).status == "MISS"
        private_redis.snapshot()  # holds the v1 entry
        db.value = "v2"
        await cache.invalidate("user:1")
        assert (await get(cache, db)).body == b'{"name": "v2"}'
        private_redis.restart()  # back with v1 "current" again
        assert b'{"name": "v1"}' not in await first_answers(cache, db)
        # A process started after the restore refuses the old entries too.
        newcomer = outage_cache(private_redis.url)
        private_redis.restart()
        assert b'{"name": "v1"}' not in await first_answers(newcomer, db)
    finally:
        await close(cache)
        if newcomer is not None:
            await close(newcomer)


async def test_the_cache_recovers_by_itself(
    private_redis: RedisServer, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shared.cache")
    cache = outage_cache(private_redis.url)
    try:
        await get(cache, db)
        private_redis.restart()

        async def hit() -> bool:
            return (await get(cache, db)).status == "HIT"

        await wait_until(hit, "the cache serves HITs again")
        assert (await get(cache, db)).status == "HIT"
        # The restarted server's entries were written off, and the log says so.
        bumped = "cache epoch bumped: entries from before are never served"
        assert bumped in [r.getMessage() for r in caplog.records]
    finally:
        await close(cache)


async def test_a_loader_slower_than_its_lock_never_frees_the_next_loaders_lock(
    redis: Redis, redis_prefix: str
) -> None:
    entries = VersionedEntries(redis, redis_prefix, lock_seconds=0.05, version_seconds=60)
    entry = entries.entry_prefix + "users:1"
    slow = await entries.lock(entry)
    assert slow is not None

    async def lock_expired() -> bool:
        return await redis.exists(slow[0]) == 0

    await wait_until(lock_expired, "the slow loader's lock expired")
    fast = await entries.lock(entry)  # the next loader takes the entry's lock
    assert fast is not None
    await entries.release(slow)  # the slow loader fails at last, and gives up "its" lock
    assert await redis.get(fast[0]) == fast[1].encode()  # the other's lock still stands
    await entries.release(fast)
    assert await redis.exists(fast[0]) == 0
