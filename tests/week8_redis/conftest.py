"""Week 8's own tests: an app per test on real Redis, and users who sign up and log in.

Every app gets the test's own key prefix (`redis_prefix`), so tests never see each
other's cache entries or rate-limit counters. Argon2 runs at its cheapest and the
limits are generous unless a test is about them.
"""

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.clients import Api, serve
from week8_redis.app.config import Settings
from week8_redis.app.main import create_app

SECRET = "week8-tests-secret-0123456789abcdef-0123"
PASSWORD = "correct horse battery staple"
GENEROUS = "100000/minute"

AppFactory = Callable[..., FastAPI]


def fast_settings(**overrides: Any) -> Settings:
    """Fast settings, and no `.env` file: a developer's own must not change the tests."""
    values: dict[str, Any] = {
        "db_latency_ms": 0,
        "jwt_secret": SECRET,
        "argon2_time_cost": 1,
        "argon2_memory_cost": 1024,
        "rate_limit": GENEROUS,
        "login_rate_limit": GENEROUS,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture
def make_app(redis_url: str, redis_prefix: str) -> AppFactory:
    """Build an app on the test's Redis and prefix; keyword arguments override settings."""

    def make(**overrides: Any) -> FastAPI:
        values = {"redis_url": redis_url, "redis_prefix": redis_prefix, **overrides}
        return create_app(fast_settings(**values))

    return make


@pytest.fixture
async def client(make_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_app()) as client:
        yield client


@pytest.fixture
def users(client: httpx.AsyncClient) -> Api:
    return Api(client, password=PASSWORD)
