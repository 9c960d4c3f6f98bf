"""Fixtures for the final project's own tests.

- `make_client(**settings)`: the app in this process (httpx over ASGI, lifespan
  run), with test settings: memory store without latency, cheap Argon2, real Redis
  under this test's prefix, generous limits unless a test sets its own.
- `Api`: sign up, log in and act as a user, the way a client would (`tests.clients.Api`,
  with this suite's password, and the user of each login read from GET /users/me).
- `final_env(...)`: the environment for a real uvicorn of the final project.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from final_project.app.config import LOCAL_HOSTS, Settings
from final_project.app.main import create_app
from tests import clients
from tests.clients import Account, serve

SECRET = "final-project-tests-secret-0123456789abcdef"
PASSWORD = "correct horse battery"
ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "admin password of the tests"
GENEROUS = "100000/minute"
# Argon2 at its cheapest: the tests are about the API, not about hashing cost.
CHEAP_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}
APP = "final_project.app.main:app"


def settings_for_tests(redis_url: str, redis_prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": "memory://",
        "db_latency_ms": 0,
        "jwt_secret": SECRET,
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "rate_limit": GENEROUS,
        "login_rate_limit": GENEROUS,
        "login_account_rate_limit": GENEROUS,
        "signup_rate_limit": GENEROUS,
        # httpx's ASGI transport sends `Host: test` (base_url below).
        "allowed_hosts": ["test", *LOCAL_HOSTS],
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        "log_level": "WARNING",
        **CHEAP_ARGON2,
        **overrides,
    }
    return Settings(_env_file=None, **values)


MakeClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def make_client(redis_url: str, redis_prefix: str) -> MakeClient:
    """`async with make_client(rate_limit="3/minute") as client:` an app of this test's own."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        url = overrides.pop("redis_url", redis_url)
        return serve(create_app(settings_for_tests(url, redis_prefix, **overrides)))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as client:
        yield client


class Api(clients.Api):
    """Drives the API the way a client does; every helper asserts its own success."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        super().__init__(client, password=PASSWORD)

    async def log_in(self, email: str, password: str | None = None) -> Account:
        """A new session of `email`'s, with the user as GET /users/me shows it."""
        return await self.who_am_i(await super().log_in(email, password))

    async def admin(self) -> Account:
        return await self.log_in(ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture
def api(client: httpx.AsyncClient) -> Api:
    return Api(client)


def final_env(
    *, redis_url: str, redis_prefix: str, database_url: str = "memory://", **extra: str
) -> dict[str, str]:
    """The environment of a real uvicorn running the final project under test settings."""
    return {
        "APP_ENV": "development",
        "JWT_SECRET": SECRET,
        "DATABASE_URL": database_url,
        "DB_LATENCY_MS": "0",
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "RATE_LIMIT": GENEROUS,
        "LOGIN_RATE_LIMIT": GENEROUS,
        "LOGIN_ACCOUNT_RATE_LIMIT": GENEROUS,
        "SIGNUP_RATE_LIMIT": GENEROUS,
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LOG_LEVEL": "WARNING",
        "CORS_ORIGINS": "",
        **{name.upper(): str(value) for name, value in CHEAP_ARGON2.items()},
        **extra,
    }


class ServerApi:
    """The same moves as `Api`, over real HTTP to a real uvicorn.

    `Connection: close` makes every request a new connection, which any worker may
    accept, so a sequence of requests exercises all of them.
    """

    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        self.client = httpx.Client(
            base_url=base_url, headers={"Connection": "close"}, timeout=timeout
        )
        self._numbers = itertools.count(1)

    def close(self) -> None:
        self.client.close()

    def new_email(self) -> str:
        # Unique across tests: a module's server keeps its database between them.
        return f"user{next(self._numbers)}-{uuid.uuid4().hex[:8]}@example.com"

    def sign_up(self, name: str = "Maroof", email: str | None = None) -> Account:
        email = email or self.new_email()
        r = self.client.post("/users", json={"name": name, "email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        session = self.log_in(email)
        session.user = r.json()
        return session

    def log_in(self, email: str, password: str = PASSWORD) -> Account:
        r = self.client.post("/auth/token", data={"username": email, "password": password})
        assert r.status_code == 200, r.text
        body = r.json()
        me = self.client.get(
            "/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        assert me.status_code == 200, me.text
        return Account(me.json(), body["access_token"], body["refresh_token"], email, password)
