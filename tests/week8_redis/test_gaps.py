"""Week 8: the login budget of a request that carries a token, and how far the cache
may be trusted after a write whose invalidation failed and after a restart.

The contract: `LOGIN_RATE_LIMIT` is a budget per address on `POST /auth/token`, token
or not. A write made while Redis was unreachable may be served stale until the old
entry expires, `CACHE_TTL_SECONDS` at most, never longer. An app that starts makes
every entry of an earlier run unreachable (its users start again from id 1).
"""

from __future__ import annotations

import logging
import re

import httpx
import pytest
import redis
from starlette.types import Receive, Scope, Send

from tests.clients import Account, Api, client_for, running, serve
from tests.servers import RedisServer
from tests.waiting import wait_until
from tests.week8_redis.conftest import PASSWORD, AppFactory

WRONG = "not the password"

# Login budget ---------------------------------------------------------------------


async def log_in(client: httpx.AsyncClient, account: Account, password: str) -> httpx.Response:
    data = {"username": account.email, "password": password}
    return await client.post("/auth/token", data=data, headers=account.headers)


@pytest.mark.parametrize("token_first", [True, False], ids=["token first", "token last"])
async def test_logging_in_with_a_token_spends_the_addresses_login_budget(
    make_app: AppFactory, token_first: bool
) -> None:
    app = make_app(login_rate_limit="2/minute")
    async with running(app) as started:
        # Signed up from elsewhere, so this address's login budget is whole.
        async with client_for(started, client=("203.0.113.1", 50000)) as elsewhere:
            users = Api(elsewhere, password=PASSWORD)
            alice, bob = await users.sign_up("Alice"), await users.sign_up("Bob")
        async with client_for(started, client=("203.0.113.2", 50000)) as guesser:
            without = Account({}, email=alice.email)
            with_token = [Account({}, alice.access_token, email=alice.email), bob]
            first, last = (with_token, [without]) if token_first else ([without], with_token)
            answers = [await log_in(guesser, a, WRONG) for a in first + last]
            refused = await log_in(guesser, alice, PASSWORD)

    # Two guesses fit the address's budget, whatever token rode along; the third is refused.
    assert [r.status_code for r in answers] == [401, 401, 429]
    for r in answers:
        assert r.headers["ratelimit-policy"] == '"login";q=2;w=60'
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1


async def test_a_token_never_buys_a_login_budget_of_its_own(make_app: AppFactory) -> None:
    app = make_app(login_rate_limit="3/minute")
    async with running(app) as started:
        accounts = []
        for n, name in enumerate(("A", "B", "C", "D")):  # each from an address of its own
            async with client_for(started, client=(f"198.51.100.{n}", 50000)) as elsewhere:
                users = Api(elsewhere, password=PASSWORD)
                accounts.append(await users.sign_up(name, email=f"{name.lower()}@example.com"))
        async with client_for(started, client=("203.0.113.2", 50000)) as guesser:
            statuses = [(await log_in(guesser, a, WRONG)).status_code for a in accounts]
        # Another address still has its whole budget.
        async with client_for(started, client=("203.0.113.3", 50000)) as bystander:
            other = await log_in(bystander, accounts[0], PASSWORD)
    assert statuses == [401, 401, 401, 429]
    assert other.status_code == 200, other.text


# The cache after a write Redis missed ------------------------------------------------


async def cached_answer(
    client: httpx.AsyncClient, url: str, account: Account, *, until_hit: bool = False
) -> httpx.Response:
    """Read `url` until the cache answers it (MISS or HIT; HIT with `until_hit`)."""
    reads: list[httpx.Response] = []
    wanted = {"HIT"} if until_hit else {"HIT", "MISS"}

    async def from_the_cache() -> bool:
        reads.append(await client.get(url, headers=account.headers))
        assert reads[-1].status_code == 200, reads[-1].text
        return reads[-1].headers["x-cache"] in wanted

    await wait_until(from_the_cache, f"{url} is answered from the cache")
    return reads[-1]


def assert_entries_expire_within(server: RedisServer, prefix: str, seconds: int) -> int:
    """Every cache entry (not the version) expires within `seconds`; how many there are."""
    client = redis.Redis.from_url(server.url)
    try:
        entries = [
            key
            for key in client.scan_iter(match=f"{prefix}cache:*", count=1000)
            if key != f"{prefix}cache:version".encode()
        ]
        for key in entries:
            assert 0 < client.pttl(key) <= seconds * 1000, key
        return len(entries)
    finally:
        client.close()


async def test_a_write_redis_missed_is_served_stale_no_longer_than_the_ttl(
    make_app: AppFactory, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(redis_url=private_redis.url, redis_prefix="w8:", cache_ttl_seconds=1)
    async with serve(app) as client:
        users = Api(client, password=PASSWORD)
        reader, target = await users.sign_up("Reader"), await users.sign_up("Before")
        user_url = f"/users/{target.id}"
        for url in (user_url, "/users"):
            await cached_answer(client, url, reader, until_hit=True)
        assert assert_entries_expire_within(private_redis, "w8:", 1) >= 3

        private_redis.snapshot()  # Redis comes back with these very entries
        private_redis.kill()
        with caplog.at_level(logging.WARNING, logger="week8_redis.app.cache"):
            r = await client.patch(user_url, json={"name": "After"}, headers=target.headers)
        assert r.status_code == 200, r.text  # its invalidation failed
        # ... and the log tells the operator for how long old data may show.
        warnings = [log.getMessage() for log in caplog.records if log.levelno == logging.WARNING]
        assert any(
            w.startswith("Redis unreachable (") and w.endswith("out of date for up to 1 s")
            for w in warnings
        ), warnings
        private_redis.start()

        async def shows_the_write() -> bool:
            one = await client.get(user_url, headers=reader.headers)
            page = await client.get("/users", headers=reader.headers)
            names = {u["name"] for u in page.json() if u["id"] == target.id}
            return bool(one.json()["name"] == "After" and names == {"After"})

        await wait_until(shows_the_write, "the write shows once the old entries expire")
        # ... and what is cached from now on is the new data, under the same bound.
        r = await cached_answer(client, user_url, reader, until_hit=True)
        assert r.json()["name"] == "After"
        assert_entries_expire_within(private_redis, "w8:", 1)


async def test_a_deletion_redis_missed_stops_the_token_within_the_ttl(
    make_app: AppFactory, private_redis: RedisServer
) -> None:
    app = make_app(redis_url=private_redis.url, redis_prefix="w8:", cache_ttl_seconds=1)
    async with serve(app) as client:
        users = Api(client, password=PASSWORD)
        leaving = await users.sign_up("Leaving")
        for _ in range(2):  # its signed-in lookup is cached (GET /users/me shows no X-Cache)
            assert (await client.get("/users/me", headers=leaving.headers)).status_code == 200

        private_redis.snapshot()
        private_redis.kill()
        r = await client.delete(f"/users/{leaving.id}", headers=leaving.headers)
        assert r.status_code == 204, r.text
        private_redis.start()

        async def refused() -> bool:
            return (await client.get("/users/me", headers=leaving.headers)).status_code == 401

        await wait_until(refused, "the deleted user's token is refused once the entry expires")


# The cache at start-up -----------------------------------------------------------------


async def test_an_app_that_starts_never_serves_an_earlier_runs_entries(
    make_app: AppFactory, private_redis: RedisServer
) -> None:
    """Even when its first write cannot reach Redis: the start-up itself made the old
    entries unreachable."""
    async with serve(make_app(redis_url=private_redis.url)) as client:
        first_run = await Api(client, password=PASSWORD).sign_up("First run")
        url = f"/users/{first_run.id}"
        await cached_answer(client, url, first_run, until_hit=True)  # the signed-in lookup too

    async with serve(make_app(redis_url=private_redis.url)) as client:
        private_redis.snapshot()  # what the new app found at its start
        private_redis.kill()
        second_run = await Api(client, password=PASSWORD).sign_up("Second run")
        assert second_run.id == first_run.id  # a new run: ids start again from 1
        private_redis.start()

        r = await cached_answer(client, url, second_run)  # Redis answers again
        assert r.json()["name"] == "Second run", r.headers["x-cache"]
        me = await client.get("/users/me", headers=second_run.headers)
        assert me.json()["name"] == "Second run"
        r = await cached_answer(client, "/users", second_run)
        assert [u["name"] for u in r.json()] == ["Second run"]


# The cache's version key, and a Redis that refuses writes ------------------------------


async def test_a_read_renews_the_versions_ttl_to_a_day_past_the_entries(
    make_app: AppFactory, redis_url: str, redis_prefix: str
) -> None:
    """The version must outlive every entry that names it: should it expire and count
    again from 1, an old entry of "1" would be served as current."""
    ttl = 30
    version_ttl_ms = (ttl + 24 * 3600) * 1000
    key = f"{redis_prefix}cache:version"
    server = redis.Redis.from_url(redis_url)
    try:
        async with serve(make_app(cache_ttl_seconds=ttl)) as client:
            me = await Api(client, password=PASSWORD).sign_up("Reader")
            assert version_ttl_ms - 60_000 < server.pttl(key) <= version_ttl_ms
            server.pexpire(key, 5_000)  # as if a day passed without a write
            r = await client.get(f"/users/{me.id}", headers=me.headers)
            assert r.status_code == 200, r.text
            assert version_ttl_ms - 60_000 < server.pttl(key) <= version_ttl_ms
    finally:
        server.close()


async def test_a_redis_that_refuses_writes_still_serves_reads_uncached(
    make_app: AppFactory, private_redis: RedisServer
) -> None:
    """Out of memory, Redis answers GETs but refuses SETs: the store answers (MISS),
    and caching starts again once Redis takes writes."""
    app = make_app(redis_url=private_redis.url, redis_prefix="w8:")
    server = redis.Redis.from_url(private_redis.url)
    try:
        async with serve(app) as client:
            users = Api(client, password=PASSWORD)
            me = await users.sign_up("Full")
            url = f"/users/{me.id}"
            server.config_set("maxmemory-policy", "noeviction")
            server.config_set("maxmemory", 1)  # every write is refused from now on
            for _ in range(2):
                r = await client.get(url, headers=me.headers)
                assert r.status_code == 200, r.text
                assert (r.headers["x-cache"], r.json()["name"]) == ("MISS", "Full")
            server.config_set("maxmemory", 0)
            r = await cached_answer(client, url, me, until_hit=True)
            assert r.json()["name"] == "Full"
    finally:
        server.close()


# Rate limits: budgets, windows, schemes and peers ---------------------------------------


def budget(r: httpx.Response) -> tuple[str, int, int]:
    """`RateLimit`'s policy, requests left and whole seconds to the reset."""
    match = re.fullmatch(r'"(\w+)";r=(\d+);t=(\d+)', r.headers["ratelimit"])
    assert match, r.headers
    return match[1], int(match[2]), int(match[3])


async def test_each_policy_counts_its_own_requests_in_its_own_window(
    make_app: AppFactory,
) -> None:
    app = make_app(rate_limit="5/hour", login_rate_limit="2/minute")
    async with serve(app) as client:
        reads = [await client.get("/hello") for _ in range(3)]
        login = await client.post(
            "/auth/token", data={"username": "x@example.com", "password": WRONG}
        )
        after = await client.get("/hello")

    # A new window is the whole period: an hour is 3600 s, not a second less.
    assert budget(reads[0]) == ("default", 4, 3600)
    assert [budget(r)[1] for r in reads] == [4, 3, 2]
    # Three reads spent nothing of the login budget, and the login nothing of theirs.
    assert login.status_code == 401, login.text
    assert budget(login)[:2] == ("login", 1)
    assert 1 <= budget(login)[2] <= 60
    assert budget(after)[:2] == ("default", 1)


async def test_a_token_under_another_scheme_spends_the_addresses_budget(
    make_app: AppFactory,
) -> None:
    """Only `Bearer` names the user; `Authorization: Token <the same JWT>` is no sign-in."""
    app = make_app(rate_limit="3/minute")
    async with running(app) as started:
        async with client_for(started, client=("198.51.100.1", 50000)) as elsewhere:
            me = await Api(elsewhere, password=PASSWORD).sign_up("Schemes")
        async with client_for(started, client=("203.0.113.9", 50000)) as client:
            other_scheme = await client.get(
                "/hello", headers={"Authorization": f"Token {me.access_token}"}
            )
            as_bearer = await client.get("/hello", headers=me.headers)
            anonymous = await client.get("/hello")
    assert [budget(r)[1] for r in (other_scheme, as_bearer, anonymous)] == [2, 2, 1]


async def test_requests_with_no_peer_address_share_one_budget(make_app: AppFactory) -> None:
    """Behind a Unix socket the server reports no client address: limited all the same."""
    app = make_app(rate_limit="2/minute")
    async with running(app) as started:

        async def no_peer(scope: Scope, receive: Receive, send: Send) -> None:
            await started({**scope, "client": None}, receive, send)

        async with client_for(no_peer) as client:
            answers = [await client.get("/hello") for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert [budget(r)[1] for r in answers] == [1, 0, 0]


async def test_the_openapi_schema_documents_the_ratelimit_headers_of_every_limited_answer(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    limited = {"RateLimit-Policy", "RateLimit"}
    for path, method in [("/hello", "get"), ("/auth/token", "post"), ("/users/{user_id}", "patch")]:
        responses = paths[path][method]["responses"]
        for status, response in responses.items():
            assert limited <= set(response.get("headers", {})), (path, method, status)
        # The 429 keeps the header of its own, next to the two added to every answer.
        assert {"Retry-After", *limited} <= set(responses["429"]["headers"])
    for response in paths["/health"]["get"]["responses"].values():
        assert not limited & set(response.get("headers", {}))
