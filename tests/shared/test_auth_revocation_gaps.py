"""shared.auth: a revoked token stays refused whatever happens to Redis.

Without Redis, with Redis down, and after Redis lost its copy of the denylist
(its keys gone, or a restart) and was refilled from the durable store: a
logged-out token, a token of a revoked session and a token issued before
`end_sessions` are refused, by every worker (a `TokenService` of its own on
the same store), while a token nobody revoked keeps working.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from shared.auth import (
    AuthSettings,
    InvalidToken,
    MemoryTokenStore,
    TokenClaims,
    TokenPair,
    TokenService,
)
from shared.redis import RedisSettings, create_redis, keep_peeked
from shared.redis.client import AnyRedis
from tests.servers import RedisServer
from tests.shared.conftest import SECRET, keys_under
from tests.waiting import wait_until

SETTINGS = AuthSettings(jwt_secret=SECRET)


def worker(store: MemoryTokenStore, redis: AnyRedis | None, prefix: str) -> TokenService:
    """One worker process's token service: its own Redis client, the shared store."""
    return TokenService(SETTINGS, store, redis, prefix, circuit_cooldown=0.1)


def scope_of(access_token: str) -> dict[str, Any]:
    return {"type": "http", "headers": [(b"authorization", f"Bearer {access_token}".encode())]}


@dataclass
class Revoked:
    """Tokens of every kind of revocation, and one nobody revoked."""

    logged_out: TokenPair
    session_revoked: TokenPair  # its session ended by a logout naming its refresh token
    ended: TokenPair  # issued before end_sessions of its user
    fine: TokenPair

    def revoked(self) -> dict[str, TokenPair]:
        return {
            "logged out": self.logged_out,
            "session revoked": self.session_revoked,
            "sessions ended": self.ended,
        }


async def revoke_every_way(service: TokenService) -> Revoked:
    logged_out = await service.issue("7", "user")
    await service.logout(service.decode_access(logged_out.access_token), None)
    web, phone = await service.issue("8", "user"), await service.issue("8", "user")
    await service.logout(service.decode_access(web.access_token), phone.refresh_token)
    ended = await service.issue("9", "user")
    await service.end_sessions("9")
    fine = await service.issue("10", "user")
    return Revoked(logged_out, phone, ended, fine)


async def assert_refused_and_fine_accepted(service: TokenService, tokens: Revoked) -> None:
    for kind, pair in tokens.revoked().items():
        assert await service.is_revoked(service.decode_access(pair.access_token)), kind
    assert not await service.is_revoked(service.decode_access(tokens.fine.access_token))


# No Redis at all -------------------------------------------------------------


async def test_without_redis_every_worker_refuses_a_logged_out_token() -> None:
    store = MemoryTokenStore()
    here, there = worker(store, None, "x:"), worker(store, None, "x:")
    pair = await here.issue("7", "user")
    other_session = await here.issue("7", "user")
    claims = here.decode_access(pair.access_token)
    assert not await there.is_revoked(claims)
    await here.logout(claims, pair.refresh_token)

    assert await there.is_revoked(there.decode_access(pair.access_token))
    assert await here.is_revoked(claims)
    with pytest.raises(InvalidToken):
        await there.refresh(pair.refresh_token)
    # The user's other session is not touched.
    assert not await there.is_revoked(there.decode_access(other_session.access_token))


async def test_without_redis_every_worker_refuses_a_token_from_before_end_sessions() -> None:
    store = MemoryTokenStore()
    here, there = worker(store, None, "x:"), worker(store, None, "x:")
    before = await here.issue("7", "user")
    bystander = await here.issue("8", "user")
    assert not await there.is_revoked(there.decode_access(before.access_token))
    await here.end_sessions("7")
    after = await here.issue("7", "user")

    assert await there.is_revoked(there.decode_access(before.access_token))
    assert not await there.is_revoked(there.decode_access(after.access_token))
    assert not await there.is_revoked(there.decode_access(bystander.access_token))


async def test_without_redis_every_kind_of_revocation_holds() -> None:
    store = MemoryTokenStore()
    tokens = await revoke_every_way(worker(store, None, "x:"))
    await assert_refused_and_fine_accepted(worker(store, None, "x:"), tokens)


# Redis down ------------------------------------------------------------------


async def test_with_redis_down_the_store_refuses_what_was_revoked_before_and_during(
    private_redis: RedisServer,
) -> None:
    store = MemoryTokenStore()
    here = worker(store, create_redis(RedisSettings(url=private_redis.url)), "t:")
    there = worker(store, create_redis(RedisSettings(url=private_redis.url)), "t:")
    try:
        before = await revoke_every_way(here)  # on Redis and in the store
        await assert_refused_and_fine_accepted(there, before)  # `there` trusts Redis
        private_redis.kill()
        during = await revoke_every_way(here)  # in the store only
        await assert_refused_and_fine_accepted(there, before)
        await assert_refused_and_fine_accepted(there, during)
        # A user's sessions ended during the outage, with a token from Redis's time.
        await here.end_sessions("10")
        assert await there.is_revoked(there.decode_access(before.fine.access_token))
        assert await there.is_revoked(there.decode_access(during.fine.access_token))
        later = await here.issue("10", "user")
        assert not await there.is_revoked(there.decode_access(later.access_token))
    finally:
        for service in (here, there):
            await service.aclose()
            assert service.redis is not None
            await service.redis.aclose()


# Redis lost its copy, then refilled --------------------------------------------


@dataclass
class LossyRedis:
    """A Redis the test's services use, and how it loses their keys."""

    url: str
    prefix: str
    lose: Callable[[], Awaitable[None]]


@pytest.fixture(params=["keys deleted", "restart"])
async def lossy_redis(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
) -> AsyncIterator[LossyRedis]:
    if request.param == "restart":
        server: RedisServer = request.getfixturevalue("private_redis")

        async def restart() -> None:
            server.restart()  # comes back empty

        yield LossyRedis(server.url, "t:", restart)
        return
    # The shared server: only this test's own keys go, the marker with them.
    client = create_redis(RedisSettings(url=redis_url))

    async def delete_own_keys() -> None:
        keys = await keys_under(client, redis_prefix)
        assert keys
        for key in keys:  # one by one: on a cluster they live in several slots
            await client.delete(key)

    try:
        yield LossyRedis(redis_url, redis_prefix, delete_own_keys)
    finally:
        await client.aclose()


async def peeked_scope(service: TokenService, redis: AnyRedis, pair: TokenPair) -> dict[str, Any]:
    """A request whose rate limiter read the token's revocation keys on its way
    (`shared.redis.peek`), as the final project's limiter does."""
    scope = scope_of(pair.access_token)
    keys = list(service.peek_keys(scope))
    assert keys, "the service names its keys only while it trusts Redis"
    # A cluster spreads the keys over slots: one MGET per slot, as a reader would.
    read = await (
        redis.mget_nonatomic(keys) if isinstance(redis, RedisCluster) else redis.mget(keys)
    )
    values = [value if isinstance(value, bytes) else None for value in read]
    keep_peeked(scope, keys, values)
    return scope


@pytest.mark.parametrize("read", ["own read", "peeked"])
async def test_a_revoked_token_is_refused_before_and_after_redis_is_refilled(
    lossy_redis: LossyRedis, read: str
) -> None:
    store = MemoryTokenStore()
    services: list[TokenService] = []

    def new_worker() -> TokenService:
        service = worker(
            store, create_redis(RedisSettings(url=lossy_redis.url)), lossy_redis.prefix
        )
        services.append(service)
        return service

    try:
        tokens = await revoke_every_way(new_worker())
        pairs = {**tokens.revoked(), "fine": tokens.fine}
        # One worker per token, each trusting Redis: each one's first check after the
        # loss is answered before any refill.
        checkers = {kind: new_worker() for kind in pairs}
        for kind, checker in checkers.items():
            claims = checker.decode_access(pairs[kind].access_token)
            assert await checker.is_revoked(claims) is (kind != "fine"), kind
            assert checker.peek_keys(scope_of(pairs[kind].access_token)), kind

        await lossy_redis.lose()
        limiter_redis = create_redis(RedisSettings(url=lossy_redis.url))
        try:
            for kind, checker in checkers.items():
                claims = checker.decode_access(pairs[kind].access_token)
                scope = None
                if read == "peeked":
                    scope = await peeked_scope(checker, limiter_redis, pairs[kind])
                revoked = await checker.is_revoked(claims, scope=scope)
                assert revoked is (kind != "fine"), f"{kind}, before the refill"

            # Then Redis is refilled from the store, and trusted again.
            refilled = checkers["fine"]
            fine_claims = refilled.decode_access(tokens.fine.access_token)

            async def trusted_again() -> bool:
                await refilled.is_revoked(fine_claims)
                return bool(refilled.peek_keys(scope_of(tokens.fine.access_token)))

            await wait_until(trusted_again, "Redis is refilled and trusted again")
            for checker in (refilled, new_worker()):
                for kind, pair in pairs.items():
                    claims = checker.decode_access(pair.access_token)
                    scope = None
                    if read == "peeked":
                        await checker.is_revoked(claims)  # a new worker checks Redis first
                        scope = await peeked_scope(checker, limiter_redis, pair)
                    revoked = await checker.is_revoked(claims, scope=scope)
                    assert revoked is (kind != "fine"), f"{kind}, after the refill"
                    assert checker.peek_keys(scope_of(pair.access_token)), "answered by Redis"
        finally:
            await limiter_redis.aclose()
    finally:
        for service in services:
            await service.aclose()
            assert service.redis is not None
            await service.redis.aclose()


def claims_of(service: TokenService, pair: TokenPair) -> TokenClaims:
    return service.decode_access(pair.access_token)


async def test_a_refresh_of_a_revoked_session_is_refused_after_the_refill_too(
    lossy_redis: LossyRedis,
) -> None:
    store = MemoryTokenStore()
    service = worker(store, create_redis(RedisSettings(url=lossy_redis.url)), lossy_redis.prefix)
    try:
        tokens = await revoke_every_way(service)
        await lossy_redis.lose()

        async def trusted_again() -> bool:
            await service.is_revoked(claims_of(service, tokens.fine))
            return bool(service.peek_keys(scope_of(tokens.fine.access_token)))

        await wait_until(trusted_again, "Redis is refilled and trusted again")
        for kind, pair in tokens.revoked().items():
            with pytest.raises(InvalidToken):
                await service.refresh(pair.refresh_token)
            assert await service.is_revoked(claims_of(service, pair)), kind
        rotated = await service.refresh(tokens.fine.refresh_token)
        assert not await service.is_revoked(claims_of(service, rotated))
    finally:
        await service.aclose()
        assert service.redis is not None
        await service.redis.aclose()
