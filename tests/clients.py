"""How the tests talk to an app in this process: its lifespan run, an httpx client
over ASGI, and users who sign up and log in through the API as a client would.

Every suite uses these (the contract suite and the learner grader too), each with
its own password and app: a week 5 or 6 app has no passwords (`Api(auth=False)`).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp

PASSWORD = "correct horse battery staple"
# The address requests come from, unless a test says otherwise.
LOCAL_CLIENT = ("127.0.0.1", 50000)


@asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[ASGIApp]:
    """Run the app's lifespan (start-up, then shutdown on the way out); yields what to call."""
    async with LifespanManager(app) as manager:
        yield manager.app


def client_for(
    app: ASGIApp,
    *,
    client: tuple[str, int] = LOCAL_CLIENT,
    base_url: str = "http://test",
    raise_app_exceptions: bool = True,
) -> httpx.AsyncClient:
    """An httpx client whose requests go straight to `app`, from `client` (host, port).

    `raise_app_exceptions=False`: an unhandled error comes back as the 500 a real
    server would send, instead of being raised in the test.
    """
    transport = httpx.ASGITransport(
        app=app, client=client, raise_app_exceptions=raise_app_exceptions
    )
    return httpx.AsyncClient(transport=transport, base_url=base_url)


@asynccontextmanager
async def serve(
    app: ASGIApp,
    *,
    client: tuple[str, int] = LOCAL_CLIENT,
    base_url: str = "http://test",
    raise_app_exceptions: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app, started, and a client to talk to it."""
    async with (
        running(app) as started,
        client_for(
            started, client=client, base_url=base_url, raise_app_exceptions=raise_app_exceptions
        ) as http,
    ):
        yield http


@dataclass
class Account:
    """A user the test signed up or logged in, and the tokens that act as them."""

    user: dict[str, Any]
    access_token: str = ""
    refresh_token: str = ""
    email: str = ""
    password: str = PASSWORD

    @property
    def id(self) -> int:
        return int(self.user["id"])

    @property
    def headers(self) -> dict[str, str]:
        """`Authorization: Bearer ...`, or nothing where the app has no tokens."""
        return {"Authorization": f"Bearer {self.access_token}"} if self.access_token else {}


class Api:
    """Signs users up and logs them in through the API; every move asserts its own success."""

    def __init__(
        self, client: httpx.AsyncClient, *, password: str = PASSWORD, auth: bool = True
    ) -> None:
        self.client = client
        self.password = password
        self.auth = auth
        self._numbers = itertools.count(1)

    def new_email(self) -> str:
        return f"user{next(self._numbers)}@example.com"

    def sign_up_body(
        self, name: str = "Maroof", email: str | None = None, password: str | None = None
    ) -> dict[str, str]:
        body = {"name": name, "email": email or self.new_email()}
        if self.auth:
            body["password"] = self.password if password is None else password
        return body

    async def sign_up(
        self, name: str = "Maroof", email: str | None = None, password: str | None = None
    ) -> Account:
        """A new user, logged in (from week 7 on)."""
        body = self.sign_up_body(name, email, password)
        r = await self.client.post("/users", json=body)
        assert r.status_code == 201, r.text
        if not self.auth:
            return Account(r.json(), email=body["email"])
        account = await self.log_in(body["email"], body["password"])
        account.user = r.json()
        return account

    async def try_log_in(self, email: str, password: str | None = None) -> httpx.Response:
        data = {"username": email, "password": self.password if password is None else password}
        return await self.client.post("/auth/token", data=data)

    async def log_in(self, email: str, password: str | None = None) -> Account:
        """A new session of `email`'s; its `user` stays empty (`who_am_i` fills it)."""
        password = self.password if password is None else password
        r = await self.try_log_in(email, password)
        assert r.status_code == 200, r.text
        tokens = r.json()
        return Account({}, tokens["access_token"], tokens.get("refresh_token", ""), email, password)

    async def who_am_i(self, account: Account) -> Account:
        """`account` with its `user` as GET /users/me answers it."""
        me = await self.client.get("/users/me", headers=account.headers)
        assert me.status_code == 200, me.text
        account.user = me.json()
        return account
