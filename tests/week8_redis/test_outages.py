"""Redis down, paused or restarted: the API keeps answering, and uses Redis again by itself.

Each request waits for Redis no longer than its short timeout, then goes on without it:
the cache answers BYPASS from the store, and the rate limit lets the request through.
"""

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.clients import Account, Api, serve
from tests.servers import RedisServer, free_port
from tests.waiting import wait_until
from tests.week8_redis.conftest import AppFactory


@pytest.fixture
async def client(
    make_app: AppFactory, private_redis: RedisServer
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_app(redis_url=private_redis.url)) as client:
        yield client


async def read_until_hit(client: httpx.AsyncClient, url: str, account: Account) -> httpx.Response:
    """Read `url` until the cache answers it: proof that the app uses Redis (again)."""
    reads: list[httpx.Response] = []

    async def hit() -> bool:
        reads.append(await client.get(url, headers=account.headers))
        assert reads[-1].status_code == 200, reads[-1].text
        return reads[-1].headers["x-cache"] == "HIT"

    await wait_until(hit, f"{url} comes from the cache")
    return reads[-1]


async def use_the_api_without_redis(client: httpx.AsyncClient, account: Account) -> None:
    """A write, the reads after it, /hello and /health: all answered, none from the cache."""
    url = f"/users/{account.id}"
    r = await client.patch(url, json={"name": "Changed"}, headers=account.headers)
    assert r.status_code == 200, r.text
    for path in (url, "/users"):
        r = await client.get(path, headers=account.headers)
        assert (r.status_code, r.headers["x-cache"]) == (200, "BYPASS"), r.text
    assert (await client.get(url, headers=account.headers)).json()["name"] == "Changed"
    hello = await client.get("/hello")
    assert hello.status_code == 200, hello.text
    assert "ratelimit" not in hello.headers  # not counted: nothing to count with
    assert (await client.get("/health")).status_code == 200


async def wait_until_limited_again(client: httpx.AsyncClient) -> None:
    """Send /hello until the rate limit counts it again: its RateLimit headers are back."""

    async def counted() -> bool:
        return "ratelimit" in (await client.get("/hello")).headers

    await wait_until(counted, "the rate limit counts a request again")


async def test_without_redis_at_all_the_api_answers_and_lets_requests_through(
    make_app: AppFactory,
) -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    async with serve(make_app(redis_url=nothing_there, rate_limit="2/minute")) as client:
        account = await Api(client).sign_up()
        r = await client.get(f"/users/{account.id}", headers=account.headers)
        assert (r.status_code, r.headers["x-cache"]) == (200, "BYPASS"), r.text
        assert [(await client.get("/hello")).status_code for _ in range(3)] == [200] * 3
        assert (await client.get("/health")).status_code == 200


async def test_redis_killed_then_restarted(
    client: httpx.AsyncClient, private_redis: RedisServer
) -> None:
    account = await Api(client).sign_up("Before")
    url = f"/users/{account.id}"
    await read_until_hit(client, url, account)

    private_redis.kill()
    await use_the_api_without_redis(client, account)

    private_redis.restart()  # empty: it kept nothing on disk
    assert (await read_until_hit(client, url, account)).json()["name"] == "Changed"
    await wait_until_limited_again(client)


async def test_redis_paused_then_resumed(
    client: httpx.AsyncClient, private_redis: RedisServer
) -> None:
    account = await Api(client).sign_up("Before")
    await read_until_hit(client, f"/users/{account.id}", account)

    private_redis.pause()  # SIGSTOP: connections open, nobody answers: timeouts, not errors
    try:
        await use_the_api_without_redis(client, account)
    finally:
        private_redis.resume()

    await read_until_hit(client, "/users", account)
    await wait_until_limited_again(client)


async def test_a_write_redis_missed_shows_once_the_old_entry_expires(
    make_app: AppFactory, private_redis: RedisServer
) -> None:
    # The gap week 8 accepts: a write made while Redis was unreachable could not
    # invalidate, and Redis still holds the old entry. CACHE_TTL_SECONDS bounds it.
    app = make_app(redis_url=private_redis.url, cache_ttl_seconds=1)
    async with serve(app) as client:
        users = Api(client)
        reader, account = await users.sign_up("Reader"), await users.sign_up("Before")
        url = f"/users/{account.id}"
        await read_until_hit(client, url, reader)

        private_redis.pause()
        try:
            r = await client.patch(url, json={"name": "After"}, headers=account.headers)
            assert r.status_code == 200, r.text
        finally:
            private_redis.resume()

        async def shows_the_write() -> bool:
            return bool((await client.get(url, headers=reader.headers)).json()["name"] == "After")

        await wait_until(shows_the_write, "the write shows once the old entry expires")
