"""Redis down, hung or restarted: the API keeps answering fast, recovers by itself, and
never serves data that a write made stale, even when Redis comes back from a snapshot."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis

from tests.servers import RedisServer, free_port
from tests.week8_redis.conftest import Account, AppFactory, Users, serve
from week8_redis.app import redis_client

# A request waits for Redis once at most (0.5 s, or 0.2 s for a free connection first):
# after one failure the circuit breaker skips Redis for everyone.
BUDGET = 1.5
COOLDOWN = 0.5  # how long nobody asks a failed Redis again (1 s in the app)


@pytest.fixture(autouse=True)
def short_cooldown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_client, "RETRY_REDIS_AFTER", COOLDOWN)


@pytest.fixture
async def client(
    make_app: AppFactory, private_redis: RedisServer
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_app(redis_url=private_redis.url)) as client:
        yield client


async def timed(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A request that must answer within the budget, whatever Redis is doing."""
    started = time.perf_counter()
    r = await client.request(method, url, **kwargs)
    elapsed = time.perf_counter() - started
    assert elapsed < BUDGET, f"{method} {url} took {elapsed:.2f} s"
    return r


async def read_until_hit(
    client: httpx.AsyncClient, url: str, account: Account
) -> list[httpx.Response]:
    """Every answer to `url` until the cache gives one (it BYPASSes until its cooldown ends)."""
    answers = []
    for _ in range(20):
        r = await timed(client, "GET", url, headers=account.headers)
        assert r.status_code == 200, r.text
        answers.append(r)
        if r.headers["x-cache"] == "HIT":
            return answers
        await asyncio.sleep(COOLDOWN / 4)
    raise AssertionError(f"{url} never came from the cache")


def names(answers: list[httpx.Response], user_id: int) -> set[str]:
    """The names that `user_id` had in these answers, whether single users or lists."""
    found = set()
    for r in answers:
        for user in r.json() if isinstance(r.json(), list) else [r.json()]:
            if user["id"] == user_id:
                found.add(user["name"])
    return found


async def use_the_api(client: httpx.AsyncClient, account: Account, name: str) -> None:
    """Every kind of request, each within the budget; the cache steps aside."""
    url = f"/users/{account.id}"
    r = await timed(client, "PATCH", url, json={"name": name}, headers=account.headers)
    assert r.status_code == 200, r.text
    for path in (url, "/users"):
        r = await timed(client, "GET", path, headers=account.headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-cache"] == "BYPASS"
        assert "ratelimit" in r.headers  # counted by the fallback
    assert (await timed(client, "GET", url, headers=account.headers)).json()["name"] == name
    assert (await timed(client, "GET", "/health")).status_code == 200
    assert (await timed(client, "GET", "/hello")).status_code == 200


def cached_bodies(server: RedisServer) -> list[str]:
    """What the server's cache entries for single users hold, straight from Redis."""
    direct = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        return [str(direct.get(key)) for key in direct.scan_iter(match="*:cache:*:users:*")]
    finally:
        direct.close()


async def test_without_redis_at_all_the_api_answers_without_a_cache(make_app: AppFactory) -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    async with serve(make_app(redis_url=nothing_there, rate_limit="2/minute")) as client:
        users = Users(client)
        account = await users.sign_up()  # spends one of the address's two
        r = await timed(client, "GET", f"/users/{account.id}", headers=account.headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-cache"] == "BYPASS"
        assert (await timed(client, "GET", "/hello")).status_code == 200
        assert (await timed(client, "GET", "/hello")).status_code == 429  # the fallback limits
        assert (await timed(client, "GET", "/health")).status_code == 200


async def test_redis_killed_then_restarted(
    client: httpx.AsyncClient, private_redis: RedisServer
) -> None:
    account = await Users(client).sign_up("Before")
    url = f"/users/{account.id}"
    await read_until_hit(client, url, account)

    private_redis.kill()
    await use_the_api(client, account, "While down")

    private_redis.restart()  # empty: it kept nothing on disk
    assert names(await read_until_hit(client, url, account), account.id) == {"While down"}
    await timed(client, "GET", "/hello")
    direct = redis.Redis.from_url(private_redis.url)
    try:
        assert list(direct.scan_iter(match="*:rate:default:*"))  # the limits are shared again
    finally:
        direct.close()


async def test_redis_hung_then_resumed(
    client: httpx.AsyncClient, private_redis: RedisServer
) -> None:
    account = await Users(client).sign_up("Before")
    url = f"/users/{account.id}"
    await read_until_hit(client, url, account)

    private_redis.pause()  # SIGSTOP: connections open, nobody answers: timeouts, not errors
    try:
        await use_the_api(client, account, "While hung")
        await asyncio.sleep(COOLDOWN)
        await use_the_api(client, account, "Still hung")  # Redis is asked, and times out, again
    finally:
        private_redis.resume()

    # Redis kept its data, "Before" included; the version bump on recovery hides it.
    assert names(await read_until_hit(client, url, account), account.id) == {"Still hung"}


async def test_a_change_made_while_redis_was_down_is_not_hidden_by_an_old_snapshot(
    client: httpx.AsyncClient, private_redis: RedisServer
) -> None:
    users = Users(client)
    reader = await users.sign_up("Reader")
    account = await users.sign_up("Before")
    url = f"/users/{account.id}"
    await read_until_hit(client, url, reader)
    await read_until_hit(client, "/users", reader)
    private_redis.snapshot()

    private_redis.kill()
    r = await timed(client, "PATCH", url, json={"name": "After"}, headers=account.headers)
    assert r.status_code == 200, r.text

    private_redis.restart()  # from the snapshot: the cached "Before" is back in Redis
    assert any('"Before"' in body for body in cached_bodies(private_redis))
    answers = await read_until_hit(client, url, reader)
    answers += await read_until_hit(client, "/users", reader)
    assert names(answers, account.id) == {"After"}


async def test_a_restart_that_lost_the_last_write_does_not_bring_old_data_back(
    client: httpx.AsyncClient, private_redis: RedisServer
) -> None:
    # The write's invalidation succeeded; then Redis restarted from a snapshot taken
    # before it, with the old entry and the old version (see also test_cache.py's
    # test_a_version_that_went_back_is_not_trusted, for when no request sees an error).
    account = await Users(client).sign_up("Before")
    url = f"/users/{account.id}"
    await read_until_hit(client, url, account)
    private_redis.snapshot()
    r = await client.patch(url, json={"name": "After"}, headers=account.headers)
    assert r.status_code == 200, r.text
    assert names(await read_until_hit(client, url, account), account.id) == {"After"}

    private_redis.restart()  # back to the snapshot: "Before" and the version it was cached under
    assert any('"Before"' in body for body in cached_bodies(private_redis))
    assert names(await read_until_hit(client, url, account), account.id) == {"After"}


async def test_an_outage_is_logged_once_and_so_is_the_recovery(
    client: httpx.AsyncClient, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    account = await Users(client).sign_up()
    url = f"/users/{account.id}"
    await read_until_hit(client, url, account)
    caplog.set_level(logging.INFO, logger="week8_redis")
    caplog.clear()

    private_redis.kill()
    for _ in range(3):  # over several cooldowns: Redis is asked again, and fails again
        await timed(client, "GET", url, headers=account.headers)
        await asyncio.sleep(COOLDOWN)
    private_redis.restart()
    await asyncio.sleep(COOLDOWN)
    await read_until_hit(client, url, account)
    await timed(client, "GET", "/hello")  # the limiter, too, has asked Redis again by now

    messages = [r.getMessage() for r in caplog.records if r.name != "week8_redis.app.middleware"]
    assert sum(m.startswith("Redis unusable") for m in messages) == 1, messages
    assert sum(m.startswith("Redis answers again") for m in messages) == 1, messages
    assert sum(m.startswith("cache on") for m in messages) == 1, messages
