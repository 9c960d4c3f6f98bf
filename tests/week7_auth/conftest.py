"""Week 7's own tests: an app per test, and users who sign up and log in as a client would.

Argon2 runs at its cheapest here, since its cost is not what these tests are about;
the one test that is (`test_logins_do_not_stall_other_requests`) uses the real cost.
"""

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

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


@asynccontextmanager
async def serve(app: FastAPI, **transport: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        asgi = httpx.ASGITransport(app=manager.app, **transport)
        async with httpx.AsyncClient(transport=asgi, base_url="http://test") as client:
            yield client


@pytest.fixture
def app() -> FastAPI:
    return create_app(fast_settings())


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(app) as client:
        yield client


@dataclass
class Account:
    id: int
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Users:
    """Signs users up and logs them in through the API."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self._numbers = itertools.count(1)

    async def sign_up(self, name: str = "Maroof", password: str = PASSWORD) -> Account:
        email = f"user{next(self._numbers)}@example.com"
        body = {"name": name, "email": email, "password": password}
        r = await self.client.post("/users", json=body)
        assert r.status_code == 201, r.text
        return Account(r.json()["id"], email, password, await self.log_in(email, password))

    async def log_in(self, email: str, password: str = PASSWORD) -> str:
        r = await self.try_log_in(email, password)
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    async def try_log_in(self, email: str, password: str) -> httpx.Response:
        return await self.client.post("/auth/token", data={"username": email, "password": password})


@pytest.fixture
def users(client: httpx.AsyncClient) -> Users:
    return Users(client)
