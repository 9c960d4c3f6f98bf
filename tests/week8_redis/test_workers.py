"""The limits hold across processes: two real uvicorn workers share one budget per client."""

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import Uvicorn
from tests.waiting import wait_until_sync
from tests.week8_redis.conftest import SECRET
from week8_redis.app.security import AccessTokens

N = 10  # the limit; each burst sends 5N concurrent requests from one client


@pytest.fixture
def server(redis_url: str, redis_prefix: str) -> Iterator[Uvicorn]:
    env = {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "RATE_LIMIT": f"{N}/minute",
        "JWT_SECRET": SECRET,
        "DB_LATENCY_MS": "0",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "1024",
        # Trust X-Forwarded-For only from a proxy at this (documentation) address: the
        # test's own requests come from 127.0.0.1, which uvicorn trusts by default.
        "FORWARDED_ALLOW_IPS": "192.0.2.1",
    }
    with Uvicorn("week8_redis.app.main:app", workers=2, env=env) as server:
        # Ready means one worker answers; wait for the other too, or it would get no work.
        wait_until_sync(
            lambda: server.output().count("Application startup complete") == 2,
            f"both workers start:\n{server.output()}",
            timeout=30,
        )
        yield server


async def burst(url: str, headers: list[dict[str, str]]) -> Counter[int]:
    """One concurrent request per entry of `headers`; how many got each status."""
    limits = httpx.Limits(max_connections=len(headers))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        answers = await asyncio.gather(*(client.get("/hello", headers=h) for h in headers))
    return Counter(r.status_code for r in answers)


async def test_two_workers_let_exactly_n_of_5n_concurrent_requests_through(
    server: Uvicorn,
) -> None:
    tokens = AccessTokens(SECRET, minutes=5)

    # Each burst comes from a client with a fresh budget: first the address (each request
    # with its own spoofed X-Forwarded-For, which must change nothing), then two users.
    # The limiter only checks a token's signature, so users 7 and 8 need not exist.
    spoofed = [{"X-Forwarded-For": f"198.51.100.{n}"} for n in range(5 * N)]
    as_user = [{"Authorization": f"Bearer {tokens.issue(user_id)}"} for user_id in (7, 8)]
    for headers in (spoofed, [as_user[0]] * (5 * N), [as_user[1]] * (5 * N)):
        statuses = await burst(server.url, headers)
        warnings = [line for line in server.output().splitlines() if "WARNING" in line]
        assert statuses == {200: N, 429: 4 * N}, (statuses, warnings)
