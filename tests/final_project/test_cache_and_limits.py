"""The Redis cache (X-Cache, ETag, invalidation), rate limits, health and readiness."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from tests.final_project.conftest import Api, MakeClient
from tests.servers import sync_redis_client
from tests.waiting import wait_until

# Cache ---------------------------------------------------------------------------


async def test_a_read_is_a_miss_then_a_hit_with_one_etag(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    first = await client.get(f"/users/{me.id}", headers=me.headers)
    second = await client.get(f"/users/{me.id}", headers=me.headers)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.headers["etag"] == second.headers["etag"]
    assert first.json() == second.json() == me.user


async def test_if_none_match_gives_304_only_after_authorisation(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    etag = (await client.get(f"/users/{me.id}", headers=me.headers)).headers["etag"]

    r = await client.get(f"/users/{me.id}", headers={**me.headers, "If-None-Match": etag})
    assert r.status_code == 304, r.text
    assert r.content == b""
    assert r.headers["etag"] == etag

    r = await client.get(f"/users/{me.id}", headers={"If-None-Match": etag})
    assert r.status_code == 401, r.text


async def test_a_write_is_never_followed_by_the_old_data(
    client: httpx.AsyncClient, api: Api
) -> None:
    me = await api.sign_up()
    for _ in range(2):  # cache both the user and the list
        await client.get(f"/users/{me.id}", headers=me.headers)
        await client.get("/users", headers=me.headers)

    r = await client.patch(f"/users/{me.id}", headers=me.headers, json={"name": "Renamed"})
    assert r.status_code == 200, r.text

    r = await client.get(f"/users/{me.id}", headers=me.headers)
    assert (r.json()["name"], r.headers["x-cache"]) == ("Renamed", "MISS")
    r = await client.get("/users", headers=me.headers)
    assert [u["name"] for u in r.json() if u["id"] == me.id] == ["Renamed"]


async def test_a_new_user_shows_in_a_cached_list(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    await client.get("/users", headers=me.headers)
    other = await api.sign_up("Other")
    ids = [u["id"] for u in (await client.get("/users", headers=me.headers)).json()]
    assert other.id in ids


async def test_a_deleted_user_is_not_served_from_the_cache(
    client: httpx.AsyncClient, api: Api
) -> None:
    me, admin = await api.sign_up(), await api.admin()
    await client.get(f"/users/{me.id}", headers=admin.headers)
    assert (await client.delete(f"/users/{me.id}", headers=me.headers)).status_code == 204
    assert (await client.get(f"/users/{me.id}", headers=admin.headers)).status_code == 404


async def test_a_404_is_not_cached(client: httpx.AsyncClient, api: Api) -> None:
    me = await api.sign_up()
    for _ in range(2):
        r = await client.get("/users/777", headers=me.headers)
        assert r.status_code == 404, r.text
        assert "x-cache" not in r.headers


async def test_redis_keys_carry_the_prefix_and_no_token(
    client: httpx.AsyncClient, api: Api, redis_url: str, redis_prefix: str
) -> None:
    me = await api.sign_up()
    await client.get(f"/users/{me.id}", headers=me.headers)
    await client.post("/auth/logout", headers=me.headers)
    sync = sync_redis_client(redis_url)
    ours = [key.decode() for key in sync.scan_iter(match=f"{redis_prefix}*")]
    sync.close()
    assert ours
    assert not [k for k in ours if me.access_token[:20] in k or "eyJ" in k]


# Rate limits ---------------------------------------------------------------------


async def test_a_client_over_the_limit_gets_429_with_retry_after(
    make_client: MakeClient,
) -> None:
    async with make_client(rate_limit="3/minute") as client:
        statuses = [(await client.get("/hello")).status_code for _ in range(3)]
        r = await client.get("/hello")
    assert statuses == [200, 200, 200]
    assert r.status_code == 429, r.text
    assert r.json()["detail"] == "Rate limit exceeded"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["ratelimit-policy"] == '"default";q=3;w=60'
    assert r.headers["ratelimit"].startswith('"default";r=0;t=')


async def test_with_rate_limiting_disabled_nothing_is_limited(make_client: MakeClient) -> None:
    async with make_client(rate_limit="1/minute", rate_limit_enabled=False) as client:
        responses = [await client.get("/hello") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all("ratelimit" not in r.headers for r in responses)


async def test_after_retry_after_the_next_request_passes(make_client: MakeClient) -> None:
    async with make_client(rate_limit="2/second") as client:
        # A limit that never trips would otherwise keep this loop asking forever.
        answers: list[httpx.Response] = []

        async def limited() -> bool:
            answers.append(await client.get("/hello"))
            return answers[-1].status_code == 429

        await wait_until(limited, "a 429 from /hello", interval=0)
        r = answers[-1]
        # Checked before sleeping on it: a wrong Retry-After must fail, not stall the run.
        assert r.headers["retry-after"] == "1", r.headers
        await asyncio.sleep(int(r.headers["retry-after"]))
        assert (await client.get("/hello")).status_code == 200


async def test_every_response_of_a_limited_route_carries_the_headers(
    make_client: MakeClient,
) -> None:
    async with make_client(rate_limit="50/minute") as client:
        api = Api(client)
        me = await api.sign_up()
        responses = [
            await client.get("/hello"),
            await client.get("/users/999", headers=me.headers),  # 404
            await client.get("/users/abc", headers=me.headers),  # 422
            await client.get("/users"),  # 401
            await client.delete("/users"),  # 405
        ]
        for r in responses:
            assert r.headers["ratelimit-policy"] == '"default";q=50;w=60', r.request.url
            assert r.headers["ratelimit"].startswith('"default";r='), r.request.url


async def test_health_and_docs_are_not_limited(make_client: MakeClient) -> None:
    async with make_client(rate_limit="1/minute") as client:
        for path in ["/health", "/health/ready", "/openapi.json", "/docs", "/redoc"] * 3:
            r = await client.get(path)
            assert r.status_code == 200, (path, r.text)
            assert "ratelimit" not in r.headers


async def test_each_signed_in_user_has_a_budget_of_their_own(
    make_client: MakeClient,
) -> None:
    async with make_client(rate_limit="4/minute") as client:
        api = Api(client)
        # POST /users spends one of the address's 4; the log-in spends the login
        # budget; the /users/me it makes spends one of Alice's own 4.
        alice = await api.sign_up("Alice")
        for _ in range(3):
            assert (await client.get("/hello")).status_code == 200
        assert (await client.get("/hello")).status_code == 429  # the address is spent

        # Same address, but signed in: Alice's budget, one already spent.
        for _ in range(3):
            assert (await client.get("/hello", headers=alice.headers)).status_code == 200
        assert (await client.get("/hello", headers=alice.headers)).status_code == 429

        # Another user behind the same address is not held back by either.
        admin = await api.admin()
        assert (await client.get("/hello", headers=admin.headers)).status_code == 200


async def test_login_has_its_own_budget_per_address(make_client: MakeClient) -> None:
    async with make_client(login_rate_limit="2/minute") as client:
        form = {"username": "nobody@example.com", "password": "wrong password"}
        statuses = [(await client.post("/auth/token", data=form)).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
        r = await client.post("/auth/token", data=form)
        assert r.headers["ratelimit-policy"] == '"login";q=2;w=60'
        assert (await client.get("/hello")).status_code == 200


# Health and readiness -----------------------------------------------------------


async def test_readiness_names_each_dependency(client: httpx.AsyncClient) -> None:
    r = await client.get("/health/ready")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "checks": {"redis": "ok", "database": "ok"}}


async def test_without_redis_the_app_starts_serves_and_says_so_once(
    make_client: MakeClient, unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        async with make_client(redis_url=f"redis://127.0.0.1:{unused_tcp_port}/0") as client:
            startup = [r for r in caplog.records if r.levelno >= logging.WARNING]
            api = Api(client)
            me = await api.sign_up()
            r = await client.get(f"/users/{me.id}", headers=me.headers)
            assert (r.status_code, r.headers["x-cache"]) == (200, "BYPASS")
            assert (await client.get("/health")).status_code == 200
            r = await client.get("/health/ready")
    assert len(startup) == 1
    assert f"Redis at redis://127.0.0.1:{unused_tcp_port}/0 is unreachable" in (
        startup[0].getMessage()
    )
    assert r.status_code == 503, r.text
    assert r.json() == {
        "status": "unavailable",
        "checks": {"redis": "unavailable", "database": "ok"},
    }
