"""shared.auth FastAPI glue: bearer claims (401 + WWW-Authenticate) and roles (403)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from redis.asyncio import Redis
from starlette.types import Receive, Scope, Send

from shared.auth import (
    AccessClaims,
    AuthSettings,
    BearerClaims,
    ClaimsDependency,
    MemoryTokenStore,
    TokenService,
    app_state_tokens,
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


def app_with(dependency: ClaimsDependency, tokens: TokenService | None = None) -> FastAPI:
    """An app whose GET /r answers the claims `dependency` returns.

    The dependency is built by the test itself, when it runs, not at import.
    """
    app = FastAPI()
    if tokens is not None:
        app.state.tokens = tokens

    async def route(claims: AccessClaims) -> dict[str, str]:
        return {"sub": claims.sub, "role": claims.role}

    route.__annotations__["claims"] = Annotated[AccessClaims, Depends(dependency)]
    app.get("/r")(route)
    return app


def client_of(app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_a_401_says_why_and_a_403_says_which_permission_is_missing(
    tokens: TokenService,
) -> None:
    user = await tokens.issue("7", "user")
    revoked = await tokens.issue("8", "user")
    await tokens.logout(tokens.decode_access(revoked.access_token), None)
    cases = [
        ({}, "Not authenticated"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, "Not authenticated"),
        (bearer("garbage"), "Could not validate credentials"),
        (bearer(revoked.access_token), "Token has been revoked"),
    ]
    async with client_of(app_with(bearer_claims_dependency(), tokens)) as client:
        for headers, detail in cases:
            r = await client.get("/r", headers=headers)
            assert (r.status_code, r.json()) == (401, {"detail": detail}), headers
            assert r.headers["www-authenticate"] == "Bearer"
    async with client_of(app_with(require_role("admin"), tokens)) as client:
        r = await client.get("/r", headers=bearer(user.access_token))
        assert (r.status_code, r.json()) == (403, {"detail": "Not enough permissions"})
        assert "www-authenticate" not in r.headers
        r = await client.get("/r", headers=bearer(revoked.access_token))
        assert (r.status_code, r.json()) == (401, {"detail": "Token has been revoked"})


async def test_require_role_admits_each_listed_role_via_the_claims_it_is_given(
    tokens: TokenService,
) -> None:
    """`claims=` replaces the default bearer dependency: here one that skips revocation."""
    unchecked = bearer_claims_dependency(check_revoked=False)
    staff = app_with(require_role("admin", "editor", claims=unchecked), tokens)
    admin = await tokens.issue("1", "admin")
    editor = await tokens.issue("2", "editor")
    user = await tokens.issue("3", "user")
    await tokens.logout(tokens.decode_access(editor.access_token), None)
    async with client_of(staff) as client:
        r = await client.get("/r", headers=bearer(admin.access_token))
        assert r.json() == {"sub": "1", "role": "admin"}
        # Revoked, but this claims dependency does not look: the role check alone decides.
        r = await client.get("/r", headers=bearer(editor.access_token))
        assert r.json() == {"sub": "2", "role": "editor"}
        r = await client.get("/r", headers=bearer(user.access_token))
        assert r.status_code == 403, r.text


async def test_the_token_service_can_come_from_the_lifespan_state(tokens: TokenService) -> None:
    """A lifespan that yields {"tokens": service} works as well as app.state.tokens."""
    # Built directly, a BearerClaims checks revocation by default.
    app = app_with(BearerClaims(app_state_tokens, token_url="/auth/token"))

    async def with_lifespan_state(scope: Scope, receive: Receive, send: Send) -> None:
        # What an ASGI server does with the state a lifespan yielded.
        scope["state"] = {"tokens": tokens}
        await app(scope, receive, send)

    pair = await tokens.issue("7", "user")
    gone = await tokens.issue("8", "user")
    await tokens.logout(tokens.decode_access(gone.access_token), None)
    async with client_of(with_lifespan_state) as client:
        r = await client.get("/r", headers=bearer(pair.access_token))
        assert (r.status_code, r.json()) == (200, {"sub": "7", "role": "user"})
        r = await client.get("/r", headers=bearer(gone.access_token))
        assert (r.status_code, r.json()) == (401, {"detail": "Token has been revoked"})


async def test_an_app_with_no_token_service_fails_loudly() -> None:
    async with client_of(app_with(bearer_claims_dependency())) as client:
        with pytest.raises(RuntimeError, match=r"^no TokenService at app\.state\.tokens$"):
            await client.get("/r", headers=bearer("anything"))


def test_openapi_names_the_password_flow_and_its_token_url() -> None:
    def schemes(dependency: ClaimsDependency) -> object:
        return app_with(dependency).openapi()["components"]["securitySchemes"]

    def password_flow(token_url: str) -> dict[str, object]:
        flows = {"password": {"scopes": {}, "tokenUrl": token_url}}
        return {"OAuth2PasswordBearer": {"type": "oauth2", "flows": flows}}

    assert schemes(require_role("admin")) == password_flow("/auth/token")
    assert schemes(bearer_claims_dependency()) == password_flow("/auth/token")
    assert schemes(bearer_claims_dependency(token_url="/login")) == password_flow("/login")
