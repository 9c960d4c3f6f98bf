"""Week 7's own tests: an app per test, and users who sign up and log in as a client would.

Argon2 runs at its cheapest here, since its cost is not what these tests are about
(`make bench`, ratio R7, measures what real-cost logins do to other requests).
"""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.clients import Api, serve
from week7_auth.app.config import Settings
from week7_auth.app.main import create_app

SECRET = "week7-tests-secret-0123456789abcdef-0123"
PASSWORD = "correct horse battery staple"


def fast_settings(**overrides: Any) -> Settings:
    """Fast settings, and no `.env` file: a developer's own must not change the tests."""
    values: dict[str, Any] = {
        "db_latency_ms": 0,
        "jwt_secret": SECRET,
        "access_token_minutes": 15,
        "argon2_time_cost": 1,
        "argon2_memory_cost": 1024,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture
def app() -> FastAPI:
    return create_app(fast_settings())


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(app) as client:
        yield client


@pytest.fixture
def users(client: httpx.AsyncClient) -> Api:
    return Api(client, password=PASSWORD)
