"""shared.auth FastAPI glue: bearer claims (401 + WWW-Authenticate) and roles (403)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from redis.asyncio import Redis

from shared.auth import (
    AccessClaims,
    AuthSettings,
    MemoryTokenStore,
    TokenService,
    bearer_claims_dependency,
    require_role,
)
from tests.shared.test_auth_tokens import forge

CurrentClaims = Annotated[AccessClaims, Depends(bearer_claims_dependency())]
AdminClaims = Annotated[AccessClaims, Depends(require_role("admin"))]


@pytest.fixture
async def tokens(
    auth_settings: AuthSettings, redis: Redis, redis_prefix: str
) -> AsyncIterator[TokenService]:
    service = TokenService(auth_settings, MemoryTokenStore(), redis, redis_prefix)
    yield service
    await service.aclose()


@pytest.fixture
async def client(tokens: TokenService) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.tokens = tokens

    @app.get("/me")
    async def me(claims: CurrentClaims, request: Request) -> dict[str, str]:
        return {"sub": claims.sub, "logged_as": request.state.user_id}

    @app.get("/admin")
    async def admin(claims: AdminClaims) -> dict[str, str]:
        return {"sub": claims.sub}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_valid_access_token_reaches_the_route(
    client: httpx.AsyncClient, tokens: TokenService
) -> None:
    pair = await tokens.issue("7", "user")
    r = await client.get("/me", headers=bearer(pair.access_token))
    assert r.status_code == 200, r.text
    assert r.json() == {"sub": "7", "logged_as": "7"}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Basic dXNlcjpwdw=="}, id="not-bearer"),
        pytest.param(bearer("garbage"), id="malformed"),
        pytest.param(bearer(forge(algorithm="none", key=None)), id="alg-none"),
        pytest.param(bearer(forge(exp=1)), id="expired"),
        pytest.param(bearer(forge(key="k" * 32)), id="tampered"),
    ],
)
async def test_every_bad_token_is_a_401_with_www_authenticate(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await client.get("/me", headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["detail"]


async def test_a_refresh_token_is_not_a_bearer_token(
    client: httpx.AsyncClient, tokens: TokenService
) -> None:
    pair = await tokens.issue("7", "user")
    r = await client.get("/me", headers=bearer(pair.refresh_token))
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"


async def test_a_revoked_token_is_a_401(client: httpx.AsyncClient, tokens: TokenService) -> None:
    pair = await tokens.issue("7", "user")
    await tokens.logout(tokens.decode_access(pair.access_token), None)
    r = await client.get("/me", headers=bearer(pair.access_token))
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"


async def test_only_the_named_role_passes_require_role(
    client: httpx.AsyncClient, tokens: TokenService
) -> None:
    user = await tokens.issue("7", "user")
    admin = await tokens.issue("1", "admin")
    r = await client.get("/admin", headers=bearer(user.access_token))
    assert r.status_code == 403, r.text
    r = await client.get("/admin", headers=bearer(admin.access_token))
    assert r.status_code == 200, r.text
    r = await client.get("/admin")
    assert r.status_code == 401, r.text
