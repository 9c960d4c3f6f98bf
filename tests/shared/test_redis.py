"""shared.redis: short timeouts, no retries, readiness, and restart detection."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import RedisError

from shared.redis import (
    AnyRedis,
    Batcher,
    OneAtATime,
    RedisCircuit,
    RedisSettings,
    create_redis,
    parse_redis_url,
    redis_ready,
    redis_watch,
    server_run_id,
)
from tests.servers import RedisServer
from tests.waiting import wait_until, wait_until_sync


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
    try:
        assert not await redis_ready(client)
    finally:
        await client.aclose()


async def test_a_paused_server_costs_one_short_timeout_not_retries(
    private_redis: RedisServer,
) -> None:
    client = create_redis(RedisSettings(url=private_redis.url))
    watcher = create_redis(RedisSettings(url=private_redis.url))
    assert await client.ping()
    connections = await connections_received(watcher)
    private_redis.pause()
    try:
        # Both give up while the server still hangs ...
        async def get_anything() -> object:
            return await client.get("anything")

        get = asyncio.create_task(get_anything())
        await wait_until(get.done, "the GET gives up while Redis hangs")
        with pytest.raises(RedisError):
            get.result()
        ready = asyncio.create_task(redis_ready(client))
        await wait_until(ready.done, "the readiness check gives up while Redis hangs")
        assert not ready.result()
    finally:
        private_redis.resume()
        await client.aclose()

    try:
        # ... after one try each. The resumed server accepts the connections made while
        # it hung: one, the readiness check's (the GET had its connection already).
        # redis-py's default retries would have reconnected to send each call again.
        async def accepted() -> bool:
            return await connections_received(watcher) > connections

        await wait_until(accepted, "the resumed server accepts what waited for it")
        assert await connections_received(watcher) == connections + 1
    finally:
        await watcher.aclose()


async def connections_received(watcher: AnyRedis) -> int:
    """The server's count of connections accepted so far (INFO stats)."""
    stats = await watcher.info("stats")
    return int(stats["total_connections_received"])


async def test_pool_is_bounded_and_waits_only_briefly(redis_url: str, redis_prefix: str) -> None:
    if parse_redis_url(redis_url).mode == "cluster":
        pytest.skip("a cluster's pools are per node and refuse at once: no wait to bound")
    settings = RedisSettings(url=redis_url, max_connections=1, pool_timeout=0.05, socket_timeout=60)
    client = create_redis(settings)
    other = create_redis(RedisSettings(url=redis_url))
    queue = f"{redis_prefix}queue"
    try:
        # Holds the only connection until something is pushed onto the queue.
        async def hold_the_only_connection() -> object:
            return await client.blpop([queue], timeout=0)

        blocking = asyncio.create_task(hold_the_only_connection())

        async def blocked() -> bool:
            return any(c.get("cmd") == "blpop" for c in await other.client_list())

        await wait_until(blocked, "the BLPOP holds the only connection")
        with pytest.raises(RedisError):
            await client.ping()
        # The PING gave up while the only connection was still taken: it waited for
        # the pool briefly, not for the connection to come back.
        assert not blocking.done()
        await other.lpush(queue, b"done")
        assert await blocking == (queue.encode(), b"done")
        assert await client.ping()
    finally:
        await client.aclose()
        await other.aclose()


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
    wait_until_sync(circuit.allows, "the cooldown ends")
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
    batches: list[list[int]] = []
    answer = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        await answer.wait()
        return items

    batcher: Batcher[int, int] = Batcher(run)
    leaving = asyncio.create_task(batcher.submit(1))
    staying = asyncio.create_task(batcher.submit(2))
    await wait_until(lambda: batches == [[1, 2]], "one batch goes out for both")
    leaving.cancel()
    answer.set()
    await wait_until(staying.done, "the caller that stayed gets its answer")
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
    finish = asyncio.Event()

    async def repair() -> bool:
        nonlocal started
        started += 1
        await finish.wait()
        return True

    once = OneAtATime(repair)
    impatient = asyncio.create_task(once())
    await wait_until(lambda: started == 1, "the repair starts")
    impatient.cancel()
    # The repair the impatient caller started goes on, and the next caller joins it.
    patient = asyncio.create_task(once())
    await asyncio.sleep(0)  # one turn of the loop: the patient caller is waiting too
    finish.set()
    await wait_until(patient.done, "the patient caller gets the repair's outcome")
    assert await patient is True
    assert started == 1
