"""shared.auth: a revoked token stays refused whatever happens to Redis.

Without Redis, with Redis down, and after Redis lost its copy of the denylist
(its keys gone, or a restart) and was refilled from the durable store: a
logged-out token, a token of a revoked session and a token issued before
`end_sessions` are refused, by every worker (a `TokenService` of its own on
the same store), while a token nobody revoked keeps working.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

import shared.auth.store
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


# Every copy in Redis expires with what it revokes, also after a refill ----------


class LaggingSqlStore(MemoryTokenStore):
    """A store as SQLite makes one: naive UTC datetimes, and its clock a little behind
    ours, so it still lists, first, a revocation that expired a moment ago."""

    async def revoked_access(self, now: datetime) -> list[tuple[str, datetime]]:
        expired = ("expired", (now - timedelta(seconds=1.5)).replace(tzinfo=None))
        listed = await super().revoked_access(now)
        return [expired, *((jti, at.replace(tzinfo=None)) for jti, at in listed)]

    async def session_marks(self, since: datetime) -> list[tuple[str, datetime]]:
        return [(user, at.replace(tzinfo=None)) for user, at in await super().session_marks(since)]


async def mark_of(redis: AnyRedis, key: str) -> float:
    """A session mark in Redis: the timestamp sessions are valid from."""
    value = await redis.get(key)
    assert isinstance(value, bytes), value
    return float(value)


async def expires_at_ms(redis: AnyRedis, key: str) -> int:
    """When the key expires (Unix ms): -2 when it is missing, -1 when it never does."""
    return int(await redis.pexpiretime(key))


async def test_denylist_keys_expire_with_what_they_revoke_also_after_a_refill(
    redis: AnyRedis, redis_url: str, redis_prefix: str
) -> None:
    store = LaggingSqlStore()
    service = worker(store, redis, redis_prefix)

    def key(name: str) -> str:
        return f"{redis_prefix}auth:{name}"

    try:
        logged_out = claims_of(service, await service.issue("7", "user"))
        before = time.time()
        await service.logout(logged_out, None)
        after = time.time()
        # The token's own key goes when the token would have; its session's key when
        # the last access token of the session would have. (Redis counts whole ms.)
        deny_until = await expires_at_ms(redis, key(f"deny:{logged_out.jti}"))
        # Set for exp - int(now) seconds, at some time between before and after.
        assert -1 <= deny_until - logged_out.exp * 1000 <= (after - int(before)) * 1000 + 1
        family_until = await expires_at_ms(redis, key(f"family:{logged_out.sid}"))
        access_ms = service.access_seconds * 1000
        assert before * 1000 + access_ms - 1 <= family_until <= after * 1000 + access_ms + 1

        # A logout may name the refresh token of another session of the same user,
        # never one of somebody else (that stays working).
        web, phone = await service.issue("8", "user"), await service.issue("8", "user")
        stranger = await service.issue("11", "user")
        await service.logout(claims_of(service, web), phone.refresh_token)
        await service.logout(
            claims_of(service, await service.issue("12", "user")), stranger.refresh_token
        )
        assert await redis.exists(key(f"family:{claims_of(service, phone).sid}"))
        assert not await redis.exists(key(f"family:{claims_of(service, stranger).sid}"))
        stranger = await service.refresh(stranger.refresh_token)

        ended = claims_of(service, await service.issue("9", "user"))
        await service.end_sessions("9")
        mark = await mark_of(redis, key("user:9"))
        mark_until = await expires_at_ms(redis, key("user:9"))
        session_ms = service.session_seconds * 1000
        assert -1 <= mark_until - (mark * 1000 + session_ms) <= (time.time() - mark) * 1000 + 1

        # Redis loses its copy; a worker refills it from the store.
        for lost in await keys_under(redis, redis_prefix):
            await redis.delete(lost)
        refilling = worker(store, create_redis(RedisSettings(url=redis_url)), redis_prefix)
        fine = claims_of(service, stranger)
        started = time.time()

        async def trusted_again() -> bool:
            await refilling.is_revoked(fine)
            return bool(refilling.peek_keys(scope_of(stranger.access_token)))

        try:
            await wait_until(trusted_again, "Redis is refilled and trusted again")
            took_ms = (time.time() - started) * 1000
            # Each entry is back for the rest of its life (rounded up to the second).
            deny_until = await expires_at_ms(redis, key(f"deny:{logged_out.jti}"))
            assert -1 <= deny_until - logged_out.exp * 1000 <= 1000 + took_ms
            mark_until = await expires_at_ms(redis, key("user:9"))
            assert await mark_of(redis, key("user:9")) == mark
            assert -1 <= mark_until - (mark * 1000 + session_ms) <= 1000 + took_ms
            for sid in (logged_out.sid, claims_of(service, phone).sid):
                assert await expires_at_ms(redis, key(f"family:{sid}")) > 0, sid
            # What had expired is not copied (nor does it stop the rest from being).
            assert not await redis.exists(key("deny:expired"))
            # Checks made side by side share one read: each still gets its own answer. A
            # login at the very instant of the mark is not before it.
            at_mark = claims_of(service, await service.issue("9", "user", auth_time=mark))
            checked = [logged_out, claims_of(service, phone), ended, fine, at_mark]
            answers = await asyncio.gather(*(refilling.is_revoked(c) for c in checked))
            assert answers == [True, True, True, False, False]
            assert refilling.peek_keys(scope_of(stranger.access_token)), "answered by Redis"
            assert refilling.peek_keys(scope_of("garbage")) == [], "no keys without a token"
        finally:
            await refilling.aclose()
            assert refilling.redis is not None
            await refilling.redis.aclose()
    finally:
        await service.aclose()


# The durable store's contract, and why a refresh is refused ----------------------


async def test_the_memory_store_forgets_what_expired_and_keeps_the_latest_session_mark() -> None:
    store = MemoryTokenStore()
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    await store.add_refresh("live", "fam", "7", now + hour)
    await store.add_refresh("old", "fam", "7", now - hour)
    assert [await store.use_refresh(j) for j in ("live", "live", "old", "nope")] == [
        "ok",
        "reused",
        "unknown",
        "unknown",
    ]
    # Added again, a spent token stays spent, as in the SQL store: a replay stays a replay.
    await store.add_refresh("live", "fam", "7", now + hour)
    assert await store.use_refresh("live") == "reused"
    await store.revoke_access("live", now + hour)
    await store.revoke_access("old", now - hour)
    await store.revoke_access("edge", now)
    assert [await store.access_revoked(j) for j in ("live", "old", "nope")] == [True, False, False]
    assert await store.revoked_access(now) == [("live", now + hour)]

    # The latest mark wins, whatever order the marks arrive in; each user has their own.
    await store.end_sessions("7", now)
    await store.end_sessions("7", now - hour)
    await store.end_sessions("8", now - hour)
    assert await store.sessions_valid_from("7") == now
    assert await store.sessions_valid_from("8") == now - hour
    await store.end_sessions("7", now + hour)
    assert await store.sessions_valid_from("7") == now + hour
    assert await store.sessions_valid_from("9") is None
    # Marks set after `since` only.
    assert await store.session_marks(now - hour) == [("7", now + hour)]


async def test_the_memory_store_sweeps_what_expired_once_it_has_grown_enough() -> None:
    """Expired entries are dropped in one sweep once the maps hold 1024 entries (then
    each time they have doubled), and never a live one: the store stays bounded."""
    store = MemoryTokenStore()
    now = datetime.now(UTC)
    await store.revoke_access("live", now + timedelta(hours=1))
    await store.add_refresh("live", "fam", "7", now + timedelta(hours=1))
    for n in range(1100):
        await store.revoke_access(f"old {n}", now - timedelta(hours=1))
    # Asked as of long ago, the store lists what it still holds. The sweep ran when
    # the 1023rd expired entry was added (2 live + 1022 expired held): 78 came after.
    held = await store.revoked_access(datetime(2000, 1, 1, tzinfo=UTC))
    assert len(held) == 1 + 78
    assert held[0] == ("live", now + timedelta(hours=1))
    assert await store.use_refresh("live") == "ok"


async def test_a_refused_refresh_says_why_and_a_reuse_is_reported() -> None:
    reuses: list[None] = []
    store = MemoryTokenStore()
    service = TokenService(SETTINGS, store, None, "t:", on_reuse=lambda: reuses.append(None))
    assert service.settings is SETTINGS

    async def role_of(user_id: str) -> str | None:
        return None if user_id == "gone" else "admin"

    try:
        pair = await service.issue("7", "user")
        rotated = await service.refresh(pair.refresh_token, role_of=role_of)
        assert claims_of(service, rotated).role == "admin"
        assert reuses == []
        with pytest.raises(InvalidToken, match=r"^refresh token reused: session revoked$"):
            await service.refresh(pair.refresh_token)
        assert reuses == [None]
        with pytest.raises(InvalidToken, match=r"^session revoked$"):
            await service.refresh(rotated.refresh_token)

        gone = await service.issue("gone", "user")
        with pytest.raises(InvalidToken, match=r"^user no longer exists$"):
            await service.refresh(gone.refresh_token, role_of=role_of)
        assert await service.is_revoked(claims_of(service, gone))

        unknown = await TokenService(SETTINGS, MemoryTokenStore(), None, "t:").issue("7", "user")
        with pytest.raises(InvalidToken, match=r"^unknown refresh token$"):
            await service.refresh(unknown.refresh_token)

        # A session began at the instant of the mark is not before it: it goes on.
        at = datetime.fromtimestamp(int(time.time()) - 10, UTC)
        await store.end_sessions("8", at)
        same = await service.issue("8", "user", auth_time=at.timestamp())
        assert not await service.is_revoked(claims_of(service, same))
        same = await service.refresh(same.refresh_token)
        earlier = await service.issue("8", "user", auth_time=at.timestamp() - 1)
        with pytest.raises(InvalidToken, match=r"^session ended by an account change$"):
            await service.refresh(earlier.refresh_token)

        # A login whose session would end this very second is refused outright.
        with pytest.raises(InvalidToken, match=r"^session expired: log in again$"):
            await service.issue("7", "user", auth_time=time.time() - service.session_seconds)
    finally:
        await service.aclose()


async def test_a_refused_token_names_no_subject_for_the_rate_limiter() -> None:
    """`subject_of` is what a rate limiter keys on: a token this process refused names
    nobody (its sender spends their address budget), for as many tokens as the bound."""
    service = TokenService(SETTINGS, MemoryTokenStore(), None, "t:", verified_tokens=2)
    try:
        pairs = [await service.issue(str(n), "user") for n in range(3)]
        for pair in pairs:
            await service.logout(claims_of(service, pair), None)
        fresh = [scope_of(pair.access_token) for pair in pairs]
        # logout remembered them all, the bound only the latest two.
        assert [service.subject_of(scope) for scope in fresh] == ["0", None, None]
        assert await service.is_revoked(claims_of(service, pairs[0]))
        assert service.subject_of(scope_of(pairs[0].access_token)) is None

        # Decoded once per request and kept in the scope, where the limiter finds it.
        fine = await service.issue("5", "user")
        scope = scope_of(fine.access_token)
        claims = service.claims_from_scope(scope)
        assert claims is not None
        assert scope["state"]["access_claims"] is claims
        scope["headers"] = []
        assert service.claims_from_scope(scope) is claims
        assert service.subject_of(scope) == "5"
    finally:
        await service.aclose()


async def test_at_the_instant_it_expires_a_store_entry_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An entry ends at its expiry instant, as a JWT does (expired once now reaches exp):
    a refresh token is unknown from then on, a revocation no longer listed, and a sweep
    at that instant drops both."""
    instant = datetime(2030, 1, 1, tzinfo=UTC)
    clock = SimpleNamespace(now=lambda tz=None: instant)
    monkeypatch.setattr(shared.auth.store, "datetime", clock)
    store = MemoryTokenStore()
    await store.add_refresh("ends now", "fam", "7", instant)
    await store.revoke_access("ends now", instant)
    assert await store.use_refresh("ends now") == "unknown"
    assert not await store.access_revoked("ends now")

    # 1024 entries (these two and 1022 more) make a sweep due: the next write runs it,
    # at this same instant.
    for n in range(1022):
        await store.revoke_access(f"old {n}", instant - timedelta(hours=1))
    await store.revoke_access("after the sweep", instant + timedelta(hours=1))
    # Asked as of an hour earlier, the store shows what it still holds.
    clock.now = lambda tz=None: instant - timedelta(hours=1)
    assert await store.revoked_access(datetime(2000, 1, 1, tzinfo=UTC)) == [
        ("after the sweep", instant + timedelta(hours=1))
    ]
    assert await store.use_refresh("ends now") == "unknown"


async def held_until_a_sweep(store: MemoryTokenStore) -> tuple[int, int]:
    """Revoke expired jtis one at a time until a sweep drops them: how many entries the
    store held just before the sweep, and just after the write that ran it."""
    expired = datetime.now(UTC) - timedelta(hours=1)
    everything = datetime(2000, 1, 1, tzinfo=UTC)
    held = len(await store.revoked_access(everything))
    for n in range(4096):
        await store.revoke_access(f"expired {n} {held}", expired)
        now_held = len(await store.revoked_access(everything))
        if now_held <= held:
            return held, now_held
        held = now_held
    raise AssertionError(f"no sweep while the store grew to {held} entries")


@pytest.mark.parametrize("live", [0, 600])
async def test_after_a_sweep_the_next_comes_once_the_store_has_doubled(live: int) -> None:
    """Amortised: a sweep costs one pass over the store, so it waits until the store
    holds twice what the last sweep kept (at least 1024 entries), never longer."""
    store = MemoryTokenStore()
    later = datetime.now(UTC) + timedelta(hours=1)
    for n in range(live):
        await store.revoke_access(f"live {n}", later)
    assert await held_until_a_sweep(store) == (1024, live + 1)
    assert await held_until_a_sweep(store) == (max(1024, 2 * live), live + 1)
