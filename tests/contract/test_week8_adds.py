"""API.md, "Week 8 adds": cached reads that are never stale, and rate-limit headers."""

import re

import httpx

from tests.contract.conftest import Api

SINCE_WEEK = 8


async def test_a_user_read_is_a_miss_then_a_hit(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up()
    url = f"/users/{account.id}"
    first = await client.get(url, headers=account.headers)
    second = await client.get(url, headers=account.headers)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert first.json() == second.json()


async def test_after_a_write_no_read_shows_the_old_data(
    client: httpx.AsyncClient, api: Api
) -> None:
    account = await api.sign_up("Before")
    url, headers = f"/users/{account.id}", account.headers
    await client.get(url, headers=headers)
    await client.get("/users", headers=headers)
    r = await client.patch(url, json={"name": "After"}, headers=headers)
    assert r.status_code == 200, r.text
    assert (await client.get(url, headers=headers)).json()["name"] == "After"
    listed = (await client.get("/users", headers=headers)).json()
    assert [u["name"] for u in listed if u["id"] == account.id] == ["After"]


async def test_limited_routes_carry_the_ietf_rate_limit_headers(
    client: httpx.AsyncClient, api: Api
) -> None:
    account = await api.sign_up()
    for r in (
        await client.get("/hello"),
        await client.get(f"/users/{account.id}", headers=account.headers),
        await client.get("/users/0", headers=account.headers),  # 422 is limited too
    ):
        assert re.fullmatch(r'"default";q=\d+;w=\d+', r.headers["ratelimit-policy"]), r.headers
        assert re.fullmatch(r'"default";r=\d+;t=\d+', r.headers["ratelimit"]), r.headers


async def test_login_has_its_own_policy(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up()
    r = await client.post(
        "/auth/token", data={"username": account.user["email"], "password": "wrong password"}
    )
    assert r.status_code == 401, r.text
    assert r.headers["ratelimit-policy"].startswith('"login";')
    assert r.headers["ratelimit"].startswith('"login";')


async def test_health_is_not_limited(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert "ratelimit" not in r.headers
    assert "ratelimit-policy" not in r.headers
