"""The modules composed the way an app uses them: the hot path of a cached, signed-in GET."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from redis.asyncio import Redis
from starlette.types import Scope

from shared.auth import (
    AccessClaims,
    AuthSettings,
    MemoryTokenStore,
    TokenService,
    bearer_claims_dependency,
)
from shared.cache import CacheSettings, ResponseCache, cache_response, if_none_match
from shared.observability import RequestContextMiddleware
from shared.rate_limit import Policy, RateLimiter, RateLimitMiddleware, RouteLimit, parse_rate
from shared.redis import is_cluster

CurrentClaims = Annotated[AccessClaims, Depends(bearer_claims_dependency())]
DEFAULT = RouteLimit((Policy("default", parse_rate("1000/minute")),))


def tokens_of(scope: Scope) -> TokenService:
    tokens: TokenService = scope["app"].state.tokens
    return tokens


def principal(scope: Scope) -> str | None:
    claims = tokens_of(scope).claims_from_scope(scope)
    return claims.sub if claims is not None else None


def build_app(tokens: TokenService, cache: ResponseCache, limiter: RateLimiter) -> FastAPI:
    app = FastAPI()
    app.state.tokens, app.state.limiter = tokens, limiter
    loads = app.state.loads = []

    @app.get("/users/{user_id}")
    async def read_user(user_id: int, claims: CurrentClaims, request: Request) -> Response:
        async def load() -> bytes:
            loads.append(user_id)
            return b'{"id": %d}' % user_id

        cached = await cache.get_or_load(
            namespace="users", key=str(user_id), principal=None, public=True,
            loader=load, tags=[f"user:{user_id}"],
        )  # fmt: skip
        return cache_response(cached, if_none_match(request.scope))

    app.add_middleware(
        RateLimitMiddleware,
        route_limit=lambda scope: DEFAULT,
        principal=principal,
        peek=lambda scope: tokens_of(scope).peek_keys(scope),
    )
    app.add_middleware(RequestContextMiddleware)
    return app


class CommandCounter:
    """Counts the commands a client sends (pipelines aside)."""

    def __init__(self, client: Redis) -> None:
        self.names: list[str] = []
        inner: Callable[..., Awaitable[Any]] = client.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            self.names.append(str(args[0]))
            return await inner(*args, **options)

        client.execute_command = counted  # type: ignore[method-assign]


@pytest.fixture
async def parts(
    auth_settings: AuthSettings, redis: Redis, redis_prefix: str
) -> AsyncIterator[tuple[TokenService, ResponseCache, RateLimiter]]:
    tokens = TokenService(auth_settings, MemoryTokenStore(), redis, redis_prefix)
    cache = ResponseCache(redis, CacheSettings(), redis_prefix)
    yield tokens, cache, RateLimiter(redis, redis_prefix)
    await tokens.aclose()
    await cache.aclose()


@pytest.fixture
async def client(
    parts: tuple[TokenService, ResponseCache, RateLimiter],
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(*parts))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_a_cached_signed_in_get_costs_two_redis_commands(
    client: httpx.AsyncClient, parts: tuple[TokenService, ResponseCache, RateLimiter], redis: Redis
) -> None:
    if is_cluster(redis):
        pytest.skip("one server's round trips; a cluster's are measured by make bench")
    tokens = parts[0]
    pair = await tokens.issue("7", "user")
    auth = {"Authorization": f"Bearer {pair.access_token}"}
    for _ in range(2):  # first: denylist verification and a MISS; then warm
        assert (await client.get("/users/1", headers=auth)).status_code == 200

    counter = CommandCounter(redis)
    r = await client.get("/users/1", headers=auth)
    assert r.status_code == 200, r.text
    assert r.headers["x-cache"] == "HIT"
    assert r.headers["ratelimit-policy"] == '"default";q=1000;w=60'
    assert r.headers["x-request-id"]
    # One EVALSHA for the rate limit (with the revocation keys peeked), one for the cache.
    assert counter.names == ["EVALSHA", "EVALSHA"]

    not_modified = await client.get(
        "/users/1", headers={**auth, "If-None-Match": r.headers["etag"]}
    )
    assert not_modified.status_code == 304


async def test_a_peeked_revocation_check_still_refuses_a_logged_out_token(
    client: httpx.AsyncClient, parts: tuple[TokenService, ResponseCache, RateLimiter]
) -> None:
    tokens = parts[0]
    pair = await tokens.issue("7", "user")
    auth = {"Authorization": f"Bearer {pair.access_token}"}
    assert (await client.get("/users/1", headers=auth)).status_code == 200
    await tokens.logout(tokens.decode_access(pair.access_token), None)
    r = await client.get("/users/1", headers=auth)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"


async def test_peeked_keys_come_back_with_the_decision(redis: Redis, redis_prefix: str) -> None:
    # The client's hash tag: on a cluster a script reaches only its own slot.
    present, absent = f"{redis_prefix}{{ip:1}}:present", f"{redis_prefix}{{ip:1}}:absent"
    await redis.set(present, b"yes", ex=5)
    limiter = RateLimiter(redis, redis_prefix)
    decision = await limiter.hit(
        "ip:1", [Policy("default", parse_rate("5/minute"))], peek=[present, absent]
    )
    assert decision.allowed
    assert decision.peeked == (b"yes", None)


async def test_keys_of_another_slot_are_left_to_the_reader(redis: Redis, redis_prefix: str) -> None:
    """On a cluster a peek outside the client's slot would fail the script: none is made."""
    other = f"{redis_prefix}{{ip:2}}:present"
    await redis.set(other, b"yes", ex=5)
    limiter = RateLimiter(redis, redis_prefix)
    decision = await limiter.hit("ip:1", [Policy("default", parse_rate("5/minute"))], peek=[other])
    assert decision.allowed
    # One server reaches every key; on a cluster the reader reads it itself (None).
    assert decision.peeked == (None if is_cluster(redis) else (b"yes",))


class CountingTokenStore(MemoryTokenStore):
    """Counts the store calls a revocation check makes."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def sessions_valid_from(self, user_id: str) -> datetime | None:
        self.reads += 1
        return await super().sessions_valid_from(user_id)

    async def access_revoked(self, jti: str) -> bool:
        self.reads += 1
        return await super().access_revoked(jti)


async def test_an_ended_session_is_refused_in_the_rate_limiters_round_trip(
    auth_settings: AuthSettings, redis: Redis, redis_prefix: str
) -> None:
    store = CountingTokenStore()
    tokens = TokenService(auth_settings, store, redis, redis_prefix)
    cache = ResponseCache(redis, CacheSettings(), redis_prefix)
    app = build_app(tokens, cache, RateLimiter(redis, redis_prefix))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            stolen = await tokens.issue("7", "user")
            auth = {"Authorization": f"Bearer {stolen.access_token}"}
            for _ in range(2):  # warm: denylist verified, entry cached
                assert (await client.get("/users/1", headers=auth)).status_code == 200

            await tokens.end_sessions("7")  # e.g. the password changed
            fresh = await tokens.issue("7", "user")
            reads_before, counter = store.reads, CommandCounter(redis)
            r = await client.get("/users/1", headers=auth)
            assert r.status_code == 401, r.text
            # Refused by the values peeked in the rate limit's EVALSHA: no other Redis
            # command, and not one store read.
            assert counter.names == ["EVALSHA"]
            assert store.reads == reads_before
            r = await client.get(
                "/users/1", headers={"Authorization": f"Bearer {fresh.access_token}"}
            )
            assert r.status_code == 200, r.text
    finally:
        await tokens.aclose()
        await cache.aclose()
