"""shared.redis: short timeouts, no retries, readiness, and restart detection."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import RedisError

from shared.redis import (
    Batcher,
    OneAtATime,
    RedisCircuit,
    RedisSettings,
    create_redis,
    redis_ready,
    redis_watch,
    server_run_id,
)
from tests.servers import RedisServer


async def test_client_is_ready_against_a_live_server(redis_url: str) -> None:
    client = create_redis(RedisSettings(url=redis_url))
    try:
        assert await redis_ready(client)
        assert await client.set("x:probe", b"1", ex=5)
    finally:
        await client.delete("x:probe")
        await client.aclose()


async def test_ready_is_false_without_a_client_or_server(private_redis: RedisServer) -> None:
    assert not await redis_ready(None)
    client = create_redis(RedisSettings(url=private_redis.url))
    private_redis.kill()
    started = time.monotonic()
    try:
        assert not await redis_ready(client)
    finally:
        await client.aclose()
    assert time.monotonic() - started < 1.0


async def test_a_paused_server_costs_one_short_timeout_not_retries(
    private_redis: RedisServer,
) -> None:
    client = create_redis(RedisSettings(url=private_redis.url))
    assert await client.ping()
    private_redis.pause()
    started = time.monotonic()
    try:
        with pytest.raises(RedisError):
            await client.get("anything")
        assert not await redis_ready(client)
    finally:
        private_redis.resume()
        await client.aclose()
    # Two calls, each bounded by socket_timeout=0.25 s (redis-py's default retries
    # would have taken seconds).
    assert time.monotonic() - started < 1.2


async def test_pool_is_bounded_and_waits_only_briefly(redis_url: str) -> None:
    settings = RedisSettings(url=redis_url, max_connections=1, pool_timeout=0.05, socket_timeout=2)
    client = create_redis(settings)
    try:

        async def hold_the_only_connection() -> object:
            return await client.blpop(["x:nothing"], timeout=0.3)

        blocking = asyncio.create_task(hold_the_only_connection())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(RedisError):
            await client.ping()
        assert time.monotonic() - started < 0.2
        assert await blocking is None
        assert await client.ping()
    finally:
        await client.aclose()


async def test_watch_notices_a_restarted_server(private_redis: RedisServer) -> None:
    client = create_redis(RedisSettings(url=private_redis.url))
    try:
        watch = redis_watch(client)
        assert watch is not None
        await client.ping()
        first = watch.run_id
        assert first == await server_run_id(client)
        assert watch.generation == 0
        private_redis.restart()
        for _ in range(2):  # the first call may meet the dead connection
            try:
                await client.ping()
                break
            except RedisError:
                continue
        assert watch.generation == 1
        assert watch.run_id != first
    finally:
        await client.aclose()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("REDIS_PREFIX", "demo:")
    settings = RedisSettings()
    assert settings.url == "redis://example:6380/2"
    assert settings.prefix == "demo:"
    assert settings.socket_timeout <= 0.5


def test_circuit_skips_redis_during_the_cooldown_then_probes_again() -> None:
    circuit = RedisCircuit(cooldown=0.05)
    assert circuit.allows()
    assert circuit.failed()  # a new outage
    assert not circuit.failed()  # the same one
    assert not circuit.allows()
    time.sleep(0.06)
    assert circuit.allows()
    assert circuit.succeeded()
    assert not circuit.down


async def test_calls_of_one_loop_iteration_share_one_command() -> None:
    batches: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0.01)
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(run)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(20))) == [
        i * 10 for i in range(20)
    ]
    assert batches == [list(range(20))]
    assert await batcher.submit(7) == 70  # a lone call goes out on its own


async def test_a_failing_batch_fails_each_of_its_callers() -> None:
    async def run(items: list[int]) -> list[int]:
        raise RedisError("down")

    batcher: Batcher[int, int] = Batcher(run)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, RedisError) for o in outcomes)


async def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    async def run(items: list[int]) -> list[int]:
        await asyncio.sleep(0.05)
        return items

    batcher: Batcher[int, int] = Batcher(run)
    leaving = asyncio.create_task(batcher.submit(1))
    staying = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0.01)
    leaving.cancel()
    assert await staying == 2


async def test_one_at_a_time_runs_once_for_concurrent_callers() -> None:
    runs = 0

    async def repair() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return runs

    once = OneAtATime(repair)
    assert await asyncio.gather(*(once() for _ in range(20))) == [1] * 20
    assert await once() == 2  # a later call after it finished runs it again


async def test_one_at_a_time_survives_a_caller_that_gives_up() -> None:
    started = 0

    async def repair() -> bool:
        nonlocal started
        started += 1
        await asyncio.sleep(0.05)
        return True

    once = OneAtATime(repair)
    impatient = asyncio.create_task(once())
    await asyncio.sleep(0.01)
    impatient.cancel()
    # The repair the impatient caller started goes on, and the next caller joins it.
    assert await once() is True
    assert started == 1
