"""Days 1 and 3: cache-aside for GET /users/{id} and GET /users, never stale after a write."""

import asyncio

import httpx
import pytest
import redis
import redis.asyncio

from tests.clients import Api, serve
from tests.servers import RedisServer
from tests.waiting import wait_until
from tests.week8_redis.conftest import AppFactory
from week8_redis.app.cache import ResponseCache
from week8_redis.app.db import UserRecord, UserStore

Params = dict[str, int]


async def read_twice(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], params: Params | None = None
) -> None:
    """Read `url` until it is cached: a MISS (or a HIT already), then a HIT."""
    first = await client.get(url, params=params, headers=headers)
    second = await client.get(url, params=params, headers=headers)
    assert first.headers["x-cache"] in {"MISS", "HIT"}, first.headers
    assert second.headers["x-cache"] == "HIT", second.headers


async def test_a_user_read_is_a_miss_then_a_hit(client: httpx.AsyncClient, users: Api) -> None:
    account = await users.sign_up("Ayesha")
    first = await client.get(f"/users/{account.id}", headers=account.headers)
    second = await client.get(f"/users/{account.id}", headers=account.headers)
    assert first.status_code == second.status_code == 200, second.text
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert (
        first.json()
        == second.json()
        == {"id": account.id, "name": "Ayesha", "email": account.email}
    )
    assert second.headers["content-type"] == "application/json"


async def test_each_page_of_the_list_is_cached_on_its_own(
    client: httpx.AsyncClient, users: Api
) -> None:
    account = await users.sign_up()
    await users.sign_up()
    first_page = {"offset": 0, "limit": 1}
    second_page = {"offset": 1, "limit": 1}
    r = await client.get("/users", params=first_page, headers=account.headers)
    assert r.headers["x-cache"] == "MISS"
    r = await client.get("/users", params=second_page, headers=account.headers)
    assert r.headers["x-cache"] == "MISS"
    r = await client.get("/users", params=first_page, headers=account.headers)
    assert r.headers["x-cache"] == "HIT"
    assert [user["id"] for user in r.json()] == [account.id]


async def test_a_cached_answer_still_needs_a_token(client: httpx.AsyncClient, users: Api) -> None:
    account = await users.sign_up()
    await read_twice(client, f"/users/{account.id}", account.headers)
    r = await client.get(f"/users/{account.id}")
    assert r.status_code == 401, r.text
    assert "x-cache" not in r.headers


async def test_users_me_shows_each_caller_themselves(client: httpx.AsyncClient, users: Api) -> None:
    # The signed-in user is looked up through the cache, each under their own id: one
    # caller's entry never answers for another.
    one, two = await users.sign_up("One"), await users.sign_up("Two")
    for account, name in ((one, "One"), (two, "Two"), (one, "One")):
        r = await client.get("/users/me", headers=account.headers)
        assert r.json()["name"] == name
        assert "x-cache" not in r.headers


async def test_a_cached_read_does_not_wait_for_the_store(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The point of the cache: a HIT, token check included, never asks the (slow) store.
    app = make_app()
    store_reads: list[int] = []
    store: UserStore = app.state.store
    get_from_store = store.get

    async def counting_get(user_id: int) -> UserRecord | None:
        store_reads.append(user_id)
        return await get_from_store(user_id)

    monkeypatch.setattr(store, "get", counting_get)
    async with serve(app) as client:
        users = Api(client)
        reader, other = await users.sign_up(), await users.sign_up()
        url = f"/users/{other.id}"
        assert (await client.get(url, headers=reader.headers)).headers["x-cache"] == "MISS"
        assert store_reads == [reader.id, other.id]  # the token's user, then the one asked for
        store_reads.clear()
        r = await client.get(url, headers=reader.headers)
        assert (r.status_code, r.headers["x-cache"]) == (200, "HIT"), r.text
        assert store_reads == []


async def test_a_404_is_not_cached(client: httpx.AsyncClient, users: Api) -> None:
    account = await users.sign_up()
    next_id = account.id + 1  # ids are handed out in order
    r = await client.get(f"/users/{next_id}", headers=account.headers)
    assert r.status_code == 404, r.text
    newcomer = await users.sign_up("Newcomer")
    assert newcomer.id == next_id
    r = await client.get(f"/users/{next_id}", headers=account.headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Newcomer"


# Invalidation: after each kind of write, the next reads show it ------------------------


async def test_after_a_sign_up_the_lists_show_the_new_user(
    client: httpx.AsyncClient, users: Api
) -> None:
    reader = await users.sign_up("Reader")
    await read_twice(client, "/users", reader.headers)
    newcomer = await users.sign_up("Newcomer")
    listed = (await client.get("/users", headers=reader.headers)).json()
    assert newcomer.id in [user["id"] for user in listed]


@pytest.mark.parametrize(
    ("method", "body"),
    [("PUT", {"name": "After", "email": "after@example.com"}), ("PATCH", {"name": "After"})],
)
async def test_after_an_update_the_user_and_every_list_holding_them_show_it(
    client: httpx.AsyncClient, users: Api, method: str, body: dict[str, str]
) -> None:
    reader = await users.sign_up("Reader")
    account = await users.sign_up("Before")
    url = f"/users/{account.id}"
    pages: list[Params] = [{}, {"offset": 1, "limit": 1}]  # both hold the user
    await read_twice(client, url, reader.headers)
    for page in pages:
        await read_twice(client, "/users", reader.headers, page)

    r = await client.request(method, url, json=body, headers=account.headers)
    assert r.status_code == 200, r.text

    assert (await client.get(url, headers=reader.headers)).json()["name"] == "After"
    for page in pages:
        listed = (await client.get("/users", params=page, headers=reader.headers)).json()
        assert [user["name"] for user in listed if user["id"] == account.id] == ["After"]


async def test_after_a_delete_the_user_and_every_list_holding_them_are_gone(
    client: httpx.AsyncClient, users: Api
) -> None:
    reader = await users.sign_up("Reader")
    account = await users.sign_up("Leaving")
    url = f"/users/{account.id}"
    await read_twice(client, url, reader.headers)
    await read_twice(client, "/users", reader.headers)

    r = await client.delete(url, headers=account.headers)
    assert r.status_code == 204, r.text

    r = await client.get(url, headers=reader.headers)
    assert r.status_code == 404, r.text
    listed = (await client.get("/users", headers=reader.headers)).json()
    assert account.id not in [user["id"] for user in listed]


async def test_a_deleted_users_token_is_refused_even_when_they_were_cached(
    client: httpx.AsyncClient, users: Api
) -> None:
    account = await users.sign_up("Leaving")
    await read_twice(client, f"/users/{account.id}", account.headers)  # the lookup is cached too
    r = await client.delete(f"/users/{account.id}", headers=account.headers)
    assert r.status_code == 204, r.text

    for url in ("/users/me", f"/users/{account.id}", "/users"):
        r = await client.get(url, headers=account.headers)
        assert r.status_code == 401, (url, r.text)
        assert r.headers["www-authenticate"] == "Bearer"


async def test_a_failed_write_leaves_the_cache_alone(client: httpx.AsyncClient, users: Api) -> None:
    taken = await users.sign_up()
    account = await users.sign_up()
    url = f"/users/{account.id}"
    await read_twice(client, url, account.headers)
    r = await client.patch(url, json={"email": taken.email}, headers=account.headers)
    assert r.status_code == 409, r.text
    assert (await client.get(url, headers=account.headers)).headers["x-cache"] == "HIT"


# The race that deleting keys would lose, and a restarted app's empty store -------------------


async def test_a_slow_reader_cannot_put_old_data_back_after_a_write(
    redis_url: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    cache = ResponseCache(client, redis_prefix, ttl_seconds=60)
    stored = {"name": b"old"}
    loaded, release = asyncio.Event(), asyncio.Event()

    async def slow_load() -> bytes:
        value = stored["name"]  # the reader has the old data in hand...
        loaded.set()
        await release.wait()  # ...and is slow to put it in the cache
        return value

    async def load() -> bytes:
        return stored["name"]

    try:
        reader = asyncio.create_task(cache.get_or_load("users:1", slow_load))
        await wait_until(loaded.is_set, "the reader loads")
        stored["name"] = b"new"  # a write lands meanwhile,
        await cache.invalidate()  # and invalidates before it answers
        release.set()
        await wait_until(reader.done, "the slow reader answers")
        assert await reader == (b"old", "MISS")  # its own answer predates the write
        assert await cache.get_or_load("users:1", load) == (b"new", "MISS")
        assert await cache.get_or_load("users:1", load) == (b"new", "HIT")
    finally:
        await client.aclose()


async def test_a_restarted_app_never_serves_what_its_previous_run_cached(
    make_app: AppFactory,
) -> None:
    # The users live in the process's memory, so a restart starts again from id 1,
    # while Redis still holds the last run's user 1.
    async with serve(make_app()) as client:
        first_run = await Api(client).sign_up("First run")
        await read_twice(client, f"/users/{first_run.id}", first_run.headers)
    async with serve(make_app()) as client:
        second_run = await Api(client).sign_up("Second run")
        assert second_run.id == first_run.id
        r = await client.get(f"/users/{second_run.id}", headers=second_run.headers)
        assert r.json()["name"] == "Second run"


async def test_every_key_the_app_writes_has_the_prefix_and_a_ttl(
    make_app: AppFactory, private_redis: RedisServer
) -> None:
    app = make_app(redis_url=private_redis.url, redis_prefix="mine:")
    async with serve(app) as client:
        users = Api(client)
        account = await users.sign_up()
        await read_twice(client, f"/users/{account.id}", account.headers)
        await read_twice(client, "/users", account.headers)
        await client.patch(f"/users/{account.id}", json={"name": "X"}, headers=account.headers)
        await client.get("/hello")

    server = redis.Redis.from_url(private_redis.url)
    try:
        keys = list(server.scan_iter(count=1000))
        assert len(keys) >= 5, keys  # the version, two entries, two rate-limit counters
        for key in keys:
            assert key.startswith(b"mine:"), key
            assert server.ttl(key) > 0, key
    finally:
        server.close()
