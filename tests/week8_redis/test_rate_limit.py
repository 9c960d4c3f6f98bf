"""Day 4: a budget of requests per client, kept in Redis, with the IETF RateLimit headers."""

import asyncio
import re

import httpx
import pytest
import redis

from tests.clients import Api, client_for, running, serve
from tests.week8_redis.conftest import AppFactory
from week8_redis.app.rate_limit import Rate


def budget(r: httpx.Response) -> tuple[str, int, int]:
    """The policy, the requests left and the seconds to the reset, from `RateLimit`."""
    match = re.fullmatch(r'"(\w+)";r=(\d+);t=(\d+)', r.headers["ratelimit"])
    assert match, r.headers
    return match[1], int(match[2]), int(match[3])


async def test_the_headers_count_down_the_budget_then_429(make_app: AppFactory) -> None:
    async with serve(make_app(rate_limit="3/minute")) as client:
        answers = [await client.get("/hello") for _ in range(4)]

    for r, left in zip(answers[:3], (2, 1, 0), strict=True):
        assert r.status_code == 200, r.text
        assert r.headers["ratelimit-policy"] == '"default";q=3;w=60'
        policy, remaining, reset = budget(r)
        assert (policy, remaining) == ("default", left)
        assert 1 <= reset <= 60

    refused = answers[3]
    assert refused.status_code == 429, refused.text
    assert refused.json() == {"detail": "Rate limit exceeded"}
    assert refused.headers["ratelimit-policy"] == '"default";q=3;w=60'
    assert budget(refused)[1] == 0
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-request-id"]  # the request log still saw it


async def test_errors_spend_the_budget_and_carry_the_headers(make_app: AppFactory) -> None:
    async with serve(make_app(rate_limit="4/minute")) as client:
        unauthorized = await client.get("/users")
        not_found = await client.get("/no-such-page")
        invalid = await client.get("/hello", params={"name": ""})
        after = await client.get("/hello")

    assert [r.status_code for r in (unauthorized, not_found, invalid)] == [401, 404, 422]
    assert [budget(r)[1] for r in (unauthorized, not_found, invalid, after)] == [3, 2, 1, 0]


async def test_after_retry_after_seconds_the_next_request_passes(make_app: AppFactory) -> None:
    async with serve(make_app(rate_limit="2/second")) as client:
        for _ in range(10):  # a third request within a second; a slow machine may need more
            refused = await client.get("/hello")
            if refused.status_code == 429:
                break
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        await asyncio.sleep(int(refused.headers["retry-after"]))
        r = await client.get("/hello")
        assert r.status_code == 200, r.text
        assert budget(r)[1] == 1


async def test_a_signed_in_user_has_a_budget_of_their_own(make_app: AppFactory) -> None:
    async with serve(make_app(rate_limit="3/minute")) as client:
        account = await Api(client).sign_up()  # POST /users spends one of the address's
        for _ in range(2):
            await client.get("/hello")
        assert (await client.get("/hello")).status_code == 429  # the address is done
        r = await client.get("/hello", headers=account.headers)
        assert r.status_code == 200, r.text
        assert budget(r)[1] == 2


async def test_a_forged_token_spends_the_address_budget(make_app: AppFactory) -> None:
    async with serve(make_app(rate_limit="2/minute")) as client:
        for n in range(2):
            forged = {"Authorization": f"Bearer not.a.token{n}"}
            await client.get("/hello", headers=forged)
        assert (await client.get("/hello")).status_code == 429


async def test_each_address_has_a_budget_of_its_own(make_app: AppFactory) -> None:
    app = make_app(rate_limit="1/minute")
    async with running(app) as started:
        clients = [
            client_for(started, client=(host, 50000)) for host in ("203.0.113.1", "203.0.113.2")
        ]
        try:
            first = [await client.get("/hello") for client in clients]
            second = [await client.get("/hello") for client in clients]
        finally:
            for client in clients:
                await client.aclose()
    assert [r.status_code for r in first] == [200, 200]
    assert [r.status_code for r in second] == [429, 429]


async def test_spoofed_x_forwarded_for_changes_nothing(make_app: AppFactory) -> None:
    # Only uvicorn may rewrite the client address, and only for a proxy it trusts
    # (FORWARDED_ALLOW_IPS); the app never reads the header itself.
    async with serve(make_app(rate_limit="2/minute")) as client:
        statuses = [
            (await client.get("/hello", headers={"X-Forwarded-For": f"198.51.100.{n}"})).status_code
            for n in range(3)
        ]
    assert statuses == [200, 200, 429]


async def test_logging_in_has_its_own_small_budget(make_app: AppFactory) -> None:
    async with serve(make_app(login_rate_limit="2/minute")) as client:
        wrong = {"username": "nobody@example.com", "password": "wrong password"}
        answers = [await client.post("/auth/token", data=wrong) for _ in range(3)]
        hello = await client.get("/hello")

    assert [r.status_code for r in answers] == [401, 401, 429]
    for r in answers:
        assert r.headers["ratelimit-policy"] == '"login";q=2;w=60'
        assert budget(r)[0] == "login"
    assert answers[2].json() == {"detail": "Rate limit exceeded"}
    assert hello.status_code == 200  # the default budget is untouched
    assert budget(hello)[0] == "default"


async def test_health_checks_and_the_docs_are_never_limited(make_app: AppFactory) -> None:
    async with serve(make_app(rate_limit="1/minute")) as client:
        for path in ["/health"] * 3 + ["/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"]:
            r = await client.get(path)
            assert r.status_code == 200, (path, r.text)
            assert "ratelimit" not in r.headers
        assert (await client.get("/hello")).status_code == 200


async def test_the_openapi_schema_documents_the_429_where_limits_apply(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "429" in paths["/hello"]["get"]["responses"]
    assert "429" in paths["/auth/token"]["post"]["responses"]
    assert "429" in paths["/users/{user_id}"]["patch"]["responses"]
    assert "429" not in paths["/health"]["get"]["responses"]


async def test_a_redis_that_forgot_the_script_gets_it_again(
    make_app: AppFactory, redis_url: str
) -> None:
    async with serve(make_app(rate_limit="5/minute")) as client:
        assert budget(await client.get("/hello"))[1] == 4
        server = redis.Redis.from_url(redis_url)
        try:
            server.script_flush()  # what a restarted Redis knows: no scripts
        finally:
            server.close()
        assert budget(await client.get("/hello"))[1] == 3  # still counted in Redis


# The pieces on their own ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [("60/minute", Rate(60, 60)), ("5/second", Rate(5, 1)), ("1000/hour", Rate(1000, 3600))],
)
def test_a_rate_is_count_slash_period(text: str, rate: Rate) -> None:
    assert Rate.parse(text) == rate


@pytest.mark.parametrize(
    "text", ["", "60", "0/minute", "-1/minute", "1.5/minute", "5/day", "5 /minute"]
)
def test_a_malformed_rate_stops_the_app_at_start_up(make_app: AppFactory, text: str) -> None:
    with pytest.raises(ValueError, match="count"):
        make_app(rate_limit=text)
    with pytest.raises(ValueError, match="count"):
        make_app(login_rate_limit=text)
