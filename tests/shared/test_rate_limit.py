"""shared.rate_limit: GCRA in one script, exact across processes, fail open or closed."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from redis.asyncio import Redis
from starlette.types import Scope

from shared.rate_limit import (
    Decision,
    Policy,
    Rate,
    RateLimiter,
    RateLimitMiddleware,
    RateLimitSettings,
    RouteLimit,
    parse_rate,
)
from shared.redis import RedisSettings, create_redis
from tests.servers import ROOT, RedisServer
from tests.shared.conftest import assert_every_key_expires
from tests.waiting import wait_until


@pytest.fixture
def limiter(redis: Redis, redis_prefix: str) -> RateLimiter:
    return RateLimiter(redis, redis_prefix)


def policy(text: str, name: str = "default") -> Policy:
    return Policy(name, parse_rate(text))


async def allowed_of(limiter: RateLimiter, identity: str, policies: list[Policy], n: int) -> int:
    decisions = [await limiter.hit(identity, policies) for _ in range(n)]
    return sum(d.allowed for d in decisions)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("60/minute", Rate(60, 60)),
        ("5/second", Rate(5, 1)),
        ("1000/hour", Rate(1000, 3600)),
        (" 7 / Minute ", Rate(7, 60)),
    ],
)
def test_rates_parse(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "60", "0/minute", "-1/minute", "x/minute", "5/fortnight"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="60/minute"):
        parse_rate(text)


def test_settings_read_the_documented_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT", "100000/minute")
    monkeypatch.setenv("LOGIN_RATE_LIMIT", "9/hour")
    settings = RateLimitSettings()
    assert (settings.default, settings.login, settings.fail_open) == (
        "100000/minute",
        "9/hour",
        True,
    )
    assert RateLimitSettings(default="1/second").default == "1/second"


async def test_exactly_the_limit_passes_then_429_with_retry_after(limiter: RateLimiter) -> None:
    policies = [policy("3/minute")]
    decisions = [await limiter.hit("ip:1", policies) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    refused = decisions[3]
    assert 1 <= refused.retry_after <= 20  # one emission interval (20 s), rounded up
    assert dict(refused.headers())[b"retry-after"] == str(refused.retry_after).encode()
    assert b"retry-after" not in dict(decisions[0].headers())


async def test_headers_follow_the_ietf_format(limiter: RateLimiter) -> None:
    first = await limiter.hit("ip:1", [policy("60/minute")])
    headers = first.header_dict()
    assert headers["ratelimit-policy"] == '"default";q=60;w=60'
    assert headers["ratelimit"].startswith('"default";r=59;t=')
    assert int(headers["ratelimit"].rsplit("=", 1)[1]) >= 1
    both = await limiter.hit("ip:2", [policy("60/minute"), policy("5/second", "burst")])
    assert both.header_dict()["ratelimit-policy"] == '"default";q=60;w=60, "burst";q=5;w=1'


async def test_several_policies_commit_all_or_nothing(limiter: RateLimiter) -> None:
    wide, narrow = policy("5/minute", "wide"), policy("2/minute", "narrow")
    assert await allowed_of(limiter, "ip:1", [wide, narrow], 4) == 2
    # The refused hits did not spend the wide budget: 3 of 5 remain.
    assert await allowed_of(limiter, "ip:1", [wide], 10) == 3


async def test_no_burst_at_a_window_edge(limiter: RateLimiter) -> None:
    """After the burst, requests come back one per emission interval, not all at once."""
    policies = [policy("60/minute")]  # one request back per second
    assert await allowed_of(limiter, "ip:1", policies, 61) == 60
    back: list[Decision] = []

    async def one_came_back() -> bool:
        decision = await limiter.hit("ip:1", policies)  # a refused hit spends nothing
        back.append(decision)
        return decision.allowed

    await wait_until(one_came_back, "a request is allowed again")
    # Redis counts the budget left at the moment it allowed that one: none, and no
    # burst comes back with it (a fixed window would now allow 60 at once).
    assert back[-1].states[0].remaining == 0
    assert all(d.retry_after <= 1 for d in back[:-1])


async def test_waiting_retry_after_lets_the_next_request_pass(limiter: RateLimiter) -> None:
    policies = [policy("2/second")]
    await allowed_of(limiter, "ip:1", policies, 2)
    refused = await limiter.hit("ip:1", policies)
    assert not refused.allowed
    assert refused.retry_after == 1
    await asyncio.sleep(refused.retry_after)
    assert (await limiter.hit("ip:1", policies)).allowed


async def test_identities_have_their_own_budgets(limiter: RateLimiter) -> None:
    policies = [policy("1/minute")]
    assert (await limiter.hit("user:1", policies)).allowed
    assert (await limiter.hit("user:2", policies)).allowed
    assert not (await limiter.hit("user:1", policies)).allowed


async def test_a_script_flush_is_survived_without_losing_counts(
    limiter: RateLimiter, redis: Redis
) -> None:
    policies = [policy("3/minute")]
    assert await allowed_of(limiter, "ip:1", policies, 2) == 2
    await redis.script_flush()
    assert await allowed_of(limiter, "ip:1", policies, 3) == 1


async def test_every_key_has_a_ttl(limiter: RateLimiter, redis: Redis, redis_prefix: str) -> None:
    await limiter.hit("ip:1", [policy("3/minute"), policy("100/hour", "hourly")])
    keys = await assert_every_key_expires(redis, redis_prefix)
    assert len(keys) == 2
    for key in keys:
        assert await redis.pttl(key) <= 3_600_000


HAMMER = textwrap.dedent(
    """
    import asyncio, sys, time
    from shared.rate_limit import Policy, Rate, RateLimiter
    from shared.redis import RedisSettings, create_redis

    url, prefix, limit, attempts, start_at = sys.argv[1:6]

    async def main():
        settings = RedisSettings(url=url, socket_timeout=2, connect_timeout=2, pool_timeout=2)
        redis = create_redis(settings)
        limiter = RateLimiter(redis, prefix)
        policies = [Policy("default", Rate(int(limit), 60))]
        await redis.ping()
        await asyncio.sleep(max(0.0, float(start_at) - time.time()))
        decisions = await asyncio.gather(
            *(limiter.hit("ip:10.0.0.1", policies) for _ in range(int(attempts)))
        )
        assert not any(d.degraded for d in decisions)
        print(sum(d.allowed for d in decisions))
        await redis.aclose()

    asyncio.run(main())
    """
)


def test_the_limit_is_exact_across_two_processes(redis_url: str, redis_prefix: str) -> None:
    limit = 20
    start_at = str(time.time() + 1.5)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, redis_url, redis_prefix, str(limit), "50", start_at],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=30) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()
    assert sum(int(out) for out, _ in outputs) == limit  # 5N attempts, exactly N allowed


# Redis away ------------------------------------------------------------------


async def test_without_redis_it_fails_open_to_a_local_limiter_and_recovers(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = create_redis(RedisSettings(url=private_redis.url))
    limiter = RateLimiter(client, "t:", circuit_cooldown=0.1)
    policies = [policy("3/minute")]
    try:
        assert (await limiter.hit("ip:1", policies)).allowed
        private_redis.kill()
        caplog.set_level(logging.INFO, logger="shared.rate_limit")
        decisions = [await limiter.hit("ip:1", policies) for _ in range(5)]
        assert all(d.degraded for d in decisions)
        # Still limited, by this process alone.
        assert [d.allowed for d in decisions] == [True, True, True, False, False]
        # One line for the operator when it happens, not one per request.
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "rate limits fall back to this process" in warnings[0]
        assert "ConnectionError" in warnings[0]  # and why

        private_redis.start()
        recovered: list[Decision] = []

        async def served_by_redis() -> bool:
            recovered.append(await limiter.hit("ip:2", policies))
            return not recovered[-1].degraded

        await wait_until(served_by_redis, "the limiter uses Redis again")
        assert recovered[-1].allowed
        assert not (await limiter.hit("ip:2", policies)).degraded
        back = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert back == ["Redis is back: rate limits shared again"]  # once, when it happened
    finally:
        await client.aclose()


async def test_a_paused_redis_falls_back_within_the_timeout(private_redis: RedisServer) -> None:
    client = create_redis(RedisSettings(url=private_redis.url))
    limiter = RateLimiter(client, "t:")
    try:
        await limiter.hit("ip:1", [policy("3/minute")])
        private_redis.pause()
        hit = asyncio.create_task(limiter.hit("ip:1", [policy("3/minute")]))
        # Answered while Redis still hangs: the limiter gave up on it and fell back.
        await wait_until(hit.done, "the hit is answered while Redis hangs")
        assert hit.result().degraded
        assert hit.result().allowed
    finally:
        private_redis.resume()
        await client.aclose()


async def test_a_fail_closed_route_is_unavailable_without_redis() -> None:
    limiter = RateLimiter(None, "t:")  # no Redis at all
    decision = await limiter.hit("ip:1", [policy("3/minute")], fail_open=False)
    assert decision.unavailable
    assert not decision.allowed
    assert decision.header_dict() == {"retry-after": "1"}
    assert (await limiter.hit("ip:1", [policy("3/minute")])).degraded


# ASGI middleware ---------------------------------------------------------------

DEFAULT = RouteLimit((policy("3/minute"),))
LOGIN = RouteLimit((policy("2/minute", "login"),), by_address=True)
STRICT = RouteLimit((policy("3/minute", "strict"),), fail_open=False)


def route_limit(scope: Scope) -> RouteLimit | None:
    path = scope["path"]
    if path.startswith("/health"):
        return None
    return {"/login": LOGIN, "/strict": STRICT}.get(path, DEFAULT)


def principal(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-test-user":
            return str(value.decode())
    return None


def make_app(limiter: RateLimiter) -> FastAPI:
    app = FastAPI()
    app.state.limiter = limiter

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"message": "hi"}

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(404, "User not found")

    @app.post("/login")
    async def login() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/strict")
    async def strict() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(RateLimitMiddleware, route_limit=route_limit, principal=principal)
    return app


@pytest.fixture
async def client(limiter: RateLimiter) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(limiter), client=("10.1.2.3", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_every_response_of_a_limited_route_carries_the_headers(
    client: httpx.AsyncClient,
) -> None:
    ok = await client.get("/hello")
    assert ok.status_code == 200, ok.text
    assert ok.headers["ratelimit-policy"] == '"default";q=3;w=60'
    assert ok.headers["ratelimit"].startswith('"default";r=2;t=')
    error = await client.get("/missing")
    assert error.status_code == 404, error.text
    assert error.headers["ratelimit"].startswith('"default";r=1;t=')
    await client.get("/hello")
    refused = await client.get("/hello")
    assert refused.status_code == 429, refused.text
    assert refused.json() == {"detail": "Rate limit exceeded"}
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit"].startswith('"default";r=0;t=')
    health = await client.get("/health")
    assert health.status_code == 200
    assert "ratelimit" not in health.headers


async def test_forwarded_for_is_never_trusted(client: httpx.AsyncClient) -> None:
    statuses = [
        (await client.get("/hello", headers={"X-Forwarded-For": f"192.0.2.{i}"})).status_code
        for i in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


async def test_a_signed_in_caller_has_a_budget_of_their_own(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.get("/hello")
    assert (await client.get("/hello")).status_code == 429
    assert (await client.get("/hello", headers={"X-Test-User": "7"})).status_code == 200


async def test_login_is_limited_by_address_with_its_own_policy(client: httpx.AsyncClient) -> None:
    first = await client.post("/login", headers={"X-Test-User": "7"})
    assert first.headers["ratelimit-policy"] == '"login";q=2;w=60'
    await client.post("/login", headers={"X-Test-User": "8"})
    assert (await client.post("/login", headers={"X-Test-User": "9"})).status_code == 429
    assert (await client.get("/hello")).status_code == 200  # the default budget is separate


async def test_a_fail_closed_route_answers_503_without_redis() -> None:
    app = make_app(RateLimiter(None, "t:"))
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/strict")
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert (await client.get("/hello")).status_code == 200  # fails open by default


def test_a_decision_is_plain_data() -> None:
    decision = Decision(True, 0, ())
    assert decision.headers() == []


async def test_concurrent_hits_in_one_process_are_exact(limiter: RateLimiter) -> None:
    policies = [policy("20/minute")]
    decisions = await asyncio.gather(*(limiter.hit("ip:1", policies) for _ in range(100)))
    assert sum(d.allowed for d in decisions) == 20
    remaining = sorted(d.states[0].remaining for d in decisions if d.allowed)
    assert remaining == list(range(20))  # each saw the one before it


@pytest.mark.parametrize("text", ["100000000/minute", "99999999999999999999/second"])
async def test_a_huge_rate_counts_down_sanely(redis: Redis, redis_prefix: str, text: str) -> None:
    """An 'unlimited' rate: its emission interval is clamped to 1 µs, never rounded away."""
    huge = [policy(text)]
    for limiter in (RateLimiter(redis, redis_prefix), RateLimiter(None, redis_prefix)):
        first = await limiter.hit("ip:1", huge)
        second = await limiter.hit("ip:1", huge)
        assert first.allowed
        assert second.allowed
        for decision in (first, second):
            assert 0 <= decision.states[0].remaining < huge[0].rate.count
            assert "r=-" not in dict(decision.header_dict())["ratelimit"]


async def test_a_huge_rate_still_counts_every_request(limiter: RateLimiter) -> None:
    """Hits of one batch share Redis's clock: each must use up budget the next one sees."""
    huge = [policy("100000000/minute")]
    decisions = await asyncio.gather(*(limiter.hit("ip:1", huge) for _ in range(20)))
    remaining = [d.states[0].remaining for d in decisions]
    assert len(set(remaining)) == 20, remaining  # a zero interval would repeat one value
    assert all(r >= 0 for r in remaining)
