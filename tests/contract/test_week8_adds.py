"""docs/contract.md, "Week 8 adds": cached reads that are never stale, and rate-limit headers."""

import re

import httpx
import pytest

from tests.contract.conftest import Api
from tests.contract.test_basics import urls_named_by


@pytest.mark.day("week8/day1")
async def test_a_user_read_is_a_miss_then_a_hit(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up()
    url = f"/users/{account.id}"
    first = await client.get(url, headers=account.headers)
    second = await client.get(url, headers=account.headers)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert first.json() == second.json()


@pytest.mark.day("week8/day3")
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


@pytest.mark.day("week8/day3")
async def test_after_a_sign_up_a_cached_list_shows_the_new_user(
    client: httpx.AsyncClient, api: Api
) -> None:
    first = await api.sign_up("First")
    await client.get("/users", headers=first.headers)  # now cached without the next user
    second = await api.sign_up("Second")
    listed = (await client.get("/users", headers=first.headers)).json()
    assert second.id in [user["id"] for user in listed], listed


@pytest.mark.day("week8/day4")
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


@pytest.mark.day("week8/day4")
async def test_login_has_its_own_policy(client: httpx.AsyncClient, api: Api) -> None:
    account = await api.sign_up()
    r = await client.post(
        "/auth/token", data={"username": account.user["email"], "password": "wrong password"}
    )
    assert r.status_code == 401, r.text
    assert r.headers["ratelimit-policy"].startswith('"login";')
    assert r.headers["ratelimit"].startswith('"login";')


@pytest.mark.day("week8/day4")
async def test_health_is_not_limited(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert "ratelimit" not in r.headers
    assert "ratelimit-policy" not in r.headers


@pytest.mark.day("week8/day4")
async def test_the_documentation_pages_and_their_files_are_not_limited(
    client: httpx.AsyncClient,
) -> None:
    # A browser loads several files per visit to /docs: none of them may spend the budget.
    assert "ratelimit" in (await client.get("/hello")).headers  # the limiter is at work
    pages = ["/docs", "/redoc", "/docs/oauth2-redirect", "/openapi.json"]
    files = urls_named_by((await client.get("/docs")).text)
    files |= urls_named_by((await client.get("/redoc")).text)
    assert any(url.endswith(".js") for url in files), files
    for url in [*pages, *sorted(files)]:
        r = await client.get(url)
        assert r.status_code == 200, url
        assert "ratelimit" not in r.headers, url


@pytest.mark.day("week8/day4")
async def test_openapi_documents_the_rate_limit_headers_of_every_limited_response(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, operations in paths.items():
        if path.startswith("/health"):
            continue
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                documented = set(response.get("headers", {}))
                where = (method, path, status)
                assert {"RateLimit", "RateLimit-Policy"} <= documented, where
                if status == "429":
                    assert "Retry-After" in documented, where


@pytest.mark.day("week8/day1")
async def test_openapi_documents_x_cache_on_the_cached_reads(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/users", "/users/{user_id}"):
        assert "X-Cache" in paths[path]["get"]["responses"]["200"].get("headers", {}), path
