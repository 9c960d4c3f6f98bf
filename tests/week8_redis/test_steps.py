"""Week 8's steps on a real Redis: the commands (day 2), a naive cache (day 3) and naive
rate limiters (day 4) failing the way their docstrings say, where week 8's app does not."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.clients import Api, serve
from tests.servers import run_step
from tests.waiting import wait_until
from tests.week8_redis.conftest import AppFactory
from week8_redis.steps import day3_naive_cache as day3
from week8_redis.steps import day4_naive_limiter as day4


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client like the steps' own: it answers str, not bytes."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def run_step_on(module: str, redis_url: str) -> str:
    return run_step(module, {"REDIS_URL": redis_url})


async def step_keys(redis: Redis) -> list[str]:
    return [key async for key in redis.scan_iter(match="step:*")]


# Day 2 ---------------------------------------------------------------------------------


async def test_day2_runs_every_command_and_leaves_no_key_behind(
    redis_url: str, redis: Redis
) -> None:
    output = run_step_on("week8_redis.steps.day2_redis_basics", redis_url)
    assert "GET greeting -> hello" in output
    assert "INCR visits -> 1 then 2" in output
    assert "TTL visits -> -1 (no expiry yet)" in output
    assert "GET missing -> None" in output
    assert "DEL -> 3 keys deleted" in output
    assert await step_keys(redis) == []


# Day 3: the stale refill, then week 8's cache without it ------------------------------


@pytest.fixture
async def day3_database(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """The step's module-global database, fresh for this test, and no cached copy of it."""
    monkeypatch.setattr(day3, "database", {"user:1": "Maroof"})
    await redis.delete(day3.KEY)
    yield
    await redis.delete(day3.KEY)


@pytest.mark.usefixtures("day3_database")
async def test_day3_reads_come_from_redis_until_a_write_deletes_the_key(redis: Redis) -> None:
    assert await day3.read_user(redis) == "Maroof"
    day3.database["user:1"] = "Changed behind the cache's back"
    assert await day3.read_user(redis) == "Maroof"  # the cached copy
    await day3.write_user(redis, "Maroof Khan")
    assert await day3.read_user(redis) == "Maroof Khan"


@pytest.mark.usefixtures("day3_database")
async def test_day3_a_slow_reader_puts_the_old_value_back_after_a_write(redis: Redis) -> None:
    served = await day3.lose_the_race(redis)
    # The flaw: the database says one thing, and every read serves the other until the TTL.
    assert day3.database["user:1"] == "Maroof Khan"
    assert served == "Maroof"
    assert await redis.get(day3.KEY) == "Maroof"
    assert 0 < await redis.ttl(day3.KEY) <= day3.TTL_SECONDS


async def test_week8_a_slow_reader_cannot_put_the_old_user_back_after_a_write(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    async with serve(app) as client:
        users = Api(client)
        reader, account = await users.sign_up("Reader"), await users.sign_up("Before")
        store = app.state.store
        get_from_store = store.get
        loaded, written = asyncio.Event(), asyncio.Event()

        async def slow_first_load(user_id: int) -> object:
            user = await get_from_store(user_id)
            if user_id == account.id and not loaded.is_set():
                loaded.set()  # the reader has the old user in hand...
                await written.wait()  # ...and is slow to cache it, as in the step
            return user

        monkeypatch.setattr(store, "get", slow_first_load)
        url = f"/users/{account.id}"
        slow_read = asyncio.create_task(client.get(url, headers=reader.headers))
        await wait_until(loaded.is_set, "the first read loads the user")
        r = await client.patch(url, json={"name": "After"}, headers=account.headers)
        assert r.status_code == 200, r.text
        written.set()
        await wait_until(slow_read.done, "the slow read answers")
        assert (await slow_read).json()["name"] == "Before"  # it began before the write

        for _ in range(2):  # the next read, and the one after it, which may be cached
            r = await client.get(url, headers=reader.headers)
            assert r.json()["name"] == "After", r.headers


async def test_day3_the_script_shows_the_stale_value_and_cleans_up(
    redis_url: str, redis: Redis
) -> None:
    output = run_step_on("week8_redis.steps.day3_naive_cache", redis_url)
    assert "database: 'Maroof Khan', cache: 'Maroof' for " in output
    assert await step_keys(redis) == []


# Day 4: the two naive limiters, then week 8's ------------------------------------------


@pytest.fixture
async def client_name(redis: Redis) -> AsyncIterator[str]:
    """A client of the steps' limiters of this test's own; its counters are deleted after."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    await redis.delete(f"{day4.PREFIX}get-set:{name}", f"{day4.PREFIX}incr:{name}")


async def test_day4_get_then_set_lets_a_concurrent_burst_through(
    redis: Redis, client_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    burst = 5 * day4.LIMIT
    every_get_done = asyncio.Barrier(burst)
    get = redis.get

    async def get_then_wait_for_the_others(key: str) -> object:
        # Each request reads the count, then waits until every request has read it: the
        # timing requests that arrive together get anyway, made certain.
        count = await get(key)
        await every_get_done.wait()
        return count

    monkeypatch.setattr(redis, "get", get_then_wait_for_the_others)
    burst_answered = asyncio.gather(
        *(day4.allow_get_then_set(redis, client_name) for _ in range(burst))
    )
    # The barrier opens only if every request reads before any writes: a limiter that
    # serialized them would wait on it forever.
    await wait_until(burst_answered.done, "every request of the burst reads, then answers")
    allowed = await burst_answered
    assert sum(allowed) == burst  # the flaw: 5x the limit got through


async def test_day4_incr_lets_exactly_the_limit_of_a_concurrent_burst_through(
    redis: Redis, client_name: str
) -> None:
    allowed = await asyncio.gather(
        *(day4.allow_incr_then_expire(redis, client_name) for _ in range(5 * day4.LIMIT))
    )
    assert sum(allowed) == day4.LIMIT
    assert 0 < await redis.ttl(f"{day4.PREFIX}incr:{client_name}") <= day4.WINDOW_SECONDS


async def test_day4_a_stop_between_incr_and_expire_locks_the_client_out_for_good(
    redis: Redis, client_name: str
) -> None:
    key = f"{day4.PREFIX}incr:{client_name}"
    await redis.incr(key)  # the first call of the pair; the process stops before the second
    answers = [await day4.allow_incr_then_expire(redis, client_name) for _ in range(day4.LIMIT)]
    assert answers == [True] * (day4.LIMIT - 1) + [False]
    assert await redis.ttl(key) == -1  # the flaw: no window ever ends, so no request ever passes


async def test_week8_lets_exactly_the_limit_of_a_concurrent_burst_through(
    make_app: AppFactory,
) -> None:
    limit = day4.LIMIT
    async with serve(make_app(rate_limit=f"{limit}/minute")) as client:
        answers = await asyncio.gather(*(client.get("/hello") for _ in range(5 * limit)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * limit + [429] * (4 * limit)


async def test_day4_the_script_shows_both_flaws_and_cleans_up(redis_url: str, redis: Redis) -> None:
    output = run_step_on("week8_redis.steps.day4_naive_limiter", redis_url)
    assert "(b) INCR, then the process stops: TTL -1, no expiry" in output
    assert "[True, True, True, True, False]; still TTL -1" in output
    assert await step_keys(redis) == []
