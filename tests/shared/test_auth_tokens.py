"""shared.auth tokens: typed JWTs, rotation with reuse detection, durable revocation."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from redis.asyncio import Redis

from shared.auth import (
    AuthSettings,
    InvalidToken,
    MemoryTokenStore,
    TokenCodec,
    TokenPair,
    TokenService,
    TokenStore,
    bearer_token,
)
from shared.auth.denylist import RedisDenylist
from shared.redis import RedisCircuit, RedisSettings, create_redis
from tests.servers import RedisServer
from tests.shared.conftest import SECRET, assert_every_key_expires
from tests.waiting import wait_until


def test_the_memory_store_is_a_token_store() -> None:
    store: TokenStore = MemoryTokenStore()  # checked by mypy
    assert store is not None


@pytest.fixture
async def tokens(
    auth_settings: AuthSettings, redis: Redis, redis_prefix: str
) -> AsyncIterator[TokenService]:
    service = TokenService(auth_settings, MemoryTokenStore(), redis, redis_prefix)
    yield service
    await service.aclose()


def forge(**changes: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "fastapi-course",
        "sub": "1",
        "role": "user",
        "sid": "s1",
        "jti": "j1",
        "typ": "access",
        "iat": now,
        "exp": now + 60,
        "auth_time": now,
    }
    algorithm = changes.pop("algorithm", "HS256")
    key = changes.pop("key", SECRET)
    payload.update(changes)
    payload = {k: v for k, v in payload.items() if v is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HS512 with our 32-byte secret: that is the point
        return jwt.encode(payload, key, algorithm=algorithm)


async def test_an_issued_access_token_decodes_to_its_claims(tokens: TokenService) -> None:
    pair = await tokens.issue("7", "admin")
    claims = tokens.decode_access(pair.access_token)
    assert (claims.sub, claims.role) == ("7", "admin")
    assert claims.exp - claims.iat == 15 * 60
    assert pair.expires_in == 900
    assert pair.token_type == "bearer"
    assert not await tokens.is_revoked(claims)


async def test_access_and_refresh_tokens_are_never_mistaken(tokens: TokenService) -> None:
    pair = await tokens.issue("7", "user")
    with pytest.raises(InvalidToken):
        tokens.decode_access(pair.refresh_token)
    with pytest.raises(InvalidToken):
        tokens.decode_refresh(pair.access_token)
    with pytest.raises(InvalidToken):
        await tokens.refresh(pair.access_token)


def test_a_forged_control_token_is_accepted(tokens: TokenService) -> None:
    assert tokens.decode_access(forge()).sub == "1"


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"algorithm": "none", "key": None}, id="alg-none"),
        pytest.param({"algorithm": "HS512"}, id="other-algorithm"),
        pytest.param({"key": "k" * 32}, id="other-secret"),
        pytest.param({"exp": int(time.time()) - 1}, id="expired"),
        pytest.param({"jti": None}, id="no-jti"),
        pytest.param({"sub": None}, id="no-sub"),
        pytest.param({"iat": None}, id="no-iat"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"typ": None}, id="no-typ"),
        pytest.param({"typ": "refresh"}, id="refresh-typ"),
        pytest.param({"iss": "someone-else"}, id="other-issuer"),
        pytest.param({"sub": 1}, id="numeric-sub"),
        pytest.param({"auth_time": None}, id="no-auth-time"),
        pytest.param({"auth_time": "yesterday"}, id="text-auth-time"),
        pytest.param({"exp": int(time.time()) + 365 * 86400}, id="year-long-exp"),
        pytest.param({"auth_time": int(time.time()) - 15 * 86400}, id="outlives-its-session"),
    ],
)
def test_a_bad_token_is_refused(tokens: TokenService, changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        tokens.decode_access(forge(**changes))


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", forge()[:-2] + "xx"])
def test_a_malformed_or_tampered_token_is_refused(tokens: TokenService, token: str) -> None:
    with pytest.raises(InvalidToken):
        tokens.decode_access(token)


def test_a_remembered_token_still_expires_and_its_variants_are_checked(
    tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = forge(exp=int(time.time()) + 60)
    assert tokens.decode_access(token).sub == "1"  # verified, then remembered
    assert tokens.decode_access(token).sub == "1"
    with pytest.raises(InvalidToken):
        tokens.decode_access(token[:-2] + ("xx" if not token.endswith("xx") else "yy"))
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(InvalidToken):
        tokens.decode_access(token)


async def test_refresh_rotates_and_the_spent_token_stops_working(tokens: TokenService) -> None:
    first = await tokens.issue("7", "user")
    second = await tokens.refresh(first.refresh_token)
    third = await tokens.refresh(second.refresh_token)
    session = tokens.decode_access(first.access_token).sid
    assert tokens.decode_access(third.access_token).sid == session
    with pytest.raises(InvalidToken):
        await tokens.refresh(second.refresh_token)


async def test_reusing_a_spent_refresh_token_revokes_the_whole_chain(
    tokens: TokenService,
) -> None:
    first = await tokens.issue("7", "user")
    other_session = await tokens.issue("7", "user")
    second = await tokens.refresh(first.refresh_token)

    with pytest.raises(InvalidToken, match="reused"):
        await tokens.refresh(first.refresh_token)

    # Every token of the chain is dead, access tokens included ...
    with pytest.raises(InvalidToken):
        await tokens.refresh(second.refresh_token)
    for pair in (first, second):
        assert await tokens.is_revoked(tokens.decode_access(pair.access_token))
    # ... and the user's other session is untouched.
    assert not await tokens.is_revoked(tokens.decode_access(other_session.access_token))
    assert await tokens.refresh(other_session.refresh_token)


async def test_concurrent_refreshes_with_one_token_let_exactly_one_through(
    tokens: TokenService,
) -> None:
    pair = await tokens.issue("7", "user")
    outcomes = await asyncio.gather(
        *(tokens.refresh(pair.refresh_token) for _ in range(10)), return_exceptions=True
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(o, InvalidToken) for o in outcomes if o not in winners)


async def test_refresh_uses_the_current_role_and_refuses_a_deleted_user(
    tokens: TokenService,
) -> None:
    pair = await tokens.issue("7", "user")
    roles = {"7": "admin"}

    async def role_of(user_id: str) -> str | None:
        return roles.get(user_id)

    promoted = await tokens.refresh(pair.refresh_token, role_of=role_of)
    assert tokens.decode_access(promoted.access_token).role == "admin"
    del roles["7"]
    with pytest.raises(InvalidToken):
        await tokens.refresh(promoted.refresh_token, role_of=role_of)


async def test_logout_stops_the_access_and_refresh_tokens_only(tokens: TokenService) -> None:
    pair = await tokens.issue("7", "user")
    other = await tokens.issue("7", "user")
    claims = tokens.decode_access(pair.access_token)
    await tokens.logout(claims, pair.refresh_token)
    assert await tokens.is_revoked(claims)
    with pytest.raises(InvalidToken):
        await tokens.refresh(pair.refresh_token)
    assert not await tokens.is_revoked(tokens.decode_access(other.access_token))


async def test_logout_with_a_refresh_token_of_another_session_ends_both(
    tokens: TokenService,
) -> None:
    web = await tokens.issue("7", "user")
    phone = await tokens.issue("7", "user")
    await tokens.logout(tokens.decode_access(web.access_token), phone.refresh_token)
    with pytest.raises(InvalidToken):
        await tokens.refresh(phone.refresh_token)
    assert await tokens.is_revoked(tokens.decode_access(phone.access_token))


async def test_no_raw_token_in_redis_and_every_key_expires(
    tokens: TokenService, redis: Redis, redis_prefix: str
) -> None:
    pair = await tokens.issue("7", "user")
    rotated = await tokens.refresh(pair.refresh_token)
    with pytest.raises(InvalidToken):
        await tokens.refresh(pair.refresh_token)  # reuse: family revoked
    fresh = await tokens.issue("8", "user")
    claims = tokens.decode_access(fresh.access_token)
    await tokens.logout(claims, fresh.refresh_token)
    assert await tokens.is_revoked(claims)

    keys = await assert_every_key_expires(redis, redis_prefix)
    values = [await redis.get(key) or b"" for key in keys]
    for token in (pair, rotated, fresh):
        for raw in (token.access_token, token.refresh_token):
            signature = raw.rsplit(".", 1)[1].encode()
            assert all(signature not in blob for blob in keys + values)


async def service_on(
    url: str,
    prefix: str,
    store: MemoryTokenStore,
    *,
    on_circuit_change: Callable[[bool], None] | None = None,
) -> TokenService:
    client = create_redis(RedisSettings(url=url))
    settings = AuthSettings(jwt_secret=SECRET)
    return TokenService(
        settings,
        store,
        client,
        prefix,
        circuit_cooldown=0.1,
        on_circuit_change=on_circuit_change,
    )


async def close(service: TokenService) -> None:
    await service.aclose()
    assert service.redis is not None
    await service.redis.aclose()


def trusts_redis(service: TokenService, access_token: str) -> bool:
    """Whether the service reads this token's revocation from Redis: `peek_keys` names
    the keys only once the service has verified the Redis denylist."""
    header = (b"authorization", f"Bearer {access_token}".encode())
    return bool(service.peek_keys({"type": "http", "headers": [header]}))


async def settle(service: TokenService, pair: TokenPair) -> bool:
    """Ask until Redis answers again (the first call after a restart may meet a dead
    socket), then ask Redis."""
    claims = service.decode_access(pair.access_token)

    async def trusted() -> bool:
        await service.is_revoked(claims)
        return trusts_redis(service, pair.access_token)

    await wait_until(trusted, "the service trusts Redis again")
    return await service.is_revoked(claims)


async def test_a_logout_survives_a_redis_restart(private_redis: RedisServer) -> None:
    store = MemoryTokenStore()
    service = await service_on(private_redis.url, "t:", store)
    try:
        pair = await service.issue("7", "user")
        claims = service.decode_access(pair.access_token)
        assert not await service.is_revoked(claims)
        await service.logout(claims, pair.refresh_token)
        private_redis.restart()  # comes back empty
        assert await settle(service, pair)
        # ... and the denylist was refilled from the store.
        assert service.redis is not None
        assert await service.redis.exists(f"t:auth:deny:{claims.jti}")
    finally:
        await close(service)


async def test_a_logout_survives_a_restart_from_an_older_snapshot(
    private_redis: RedisServer,
) -> None:
    store = MemoryTokenStore()
    service = await service_on(private_redis.url, "t:", store)
    newcomer: TokenService | None = None
    try:
        pair = await service.issue("7", "user")
        claims = service.decode_access(pair.access_token)
        assert not await service.is_revoked(claims)  # marker written
        private_redis.snapshot()  # before the logout
        await service.logout(claims, None)
        private_redis.restart()  # back with the old marker and no denylist entry
        assert await settle(service, pair)
        # A process started after the restore sees it too.
        newcomer = await service_on(private_redis.url, "t:", store)
        assert await newcomer.is_revoked(claims)
    finally:
        await close(service)
        if newcomer is not None:
            await close(newcomer)


async def test_a_flushed_redis_is_refilled_before_it_is_trusted(
    private_redis: RedisServer,
) -> None:
    store = MemoryTokenStore()
    service = await service_on(private_redis.url, "t:", store)
    try:
        pair = await service.issue("7", "user")
        claims = service.decode_access(pair.access_token)
        await service.logout(claims, None)
        assert service.redis is not None
        await service.redis.flushdb()  # no error seen: the marker is what tells
        assert await service.is_revoked(claims)
        assert await service.is_revoked(claims)
        assert await service.redis.exists(f"t:auth:deny:{claims.jti}")
    finally:
        await close(service)


async def test_with_redis_down_the_store_answers_without_waiting_for_redis(
    private_redis: RedisServer,
) -> None:
    store = MemoryTokenStore()
    outages: list[bool] = []
    service = await service_on(private_redis.url, "t:", store, on_circuit_change=outages.append)
    try:
        revoked = await service.issue("7", "user")
        fine = await service.issue("7", "user")
        revoked_claims = service.decode_access(revoked.access_token)
        await service.logout(revoked_claims, None)
        private_redis.kill()
        assert await service.is_revoked(revoked_claims)
        assert not await service.is_revoked(service.decode_access(fine.access_token))
        # A logout while Redis is down is durable too.
        fine_claims = service.decode_access(fine.access_token)
        await service.logout(fine_claims, None)
        assert await service.is_revoked(fine_claims)
        # One outage, told once: Redis is skipped while its circuit is open, not waited
        # for on every call.
        assert outages == [True]
    finally:
        await close(service)


async def test_a_paused_redis_costs_at_most_a_short_timeout(private_redis: RedisServer) -> None:
    store = MemoryTokenStore()
    service = await service_on(private_redis.url, "t:", store)
    try:
        pair = await service.issue("7", "user")
        claims = service.decode_access(pair.access_token)
        assert not await service.is_revoked(claims)
        private_redis.pause()
        check = asyncio.create_task(service.is_revoked(claims))
        # Answered while Redis still hangs: the service gave up on it, the store answered.
        await wait_until(check.done, "the check is answered while Redis hangs")
        assert not check.result()
    finally:
        private_redis.resume()
        await close(service)


async def test_a_logout_during_an_outage_reaches_redis_when_it_is_back(
    private_redis: RedisServer,
) -> None:
    """Another process that trusts Redis must not accept the token afterwards."""
    store = MemoryTokenStore()
    here = await service_on(private_redis.url, "t:", store)
    there = await service_on(private_redis.url, "t:", store)
    try:
        pair = await here.issue("7", "user")
        claims = here.decode_access(pair.access_token)
        assert not await there.is_revoked(claims)  # `there` trusts Redis from now on
        private_redis.pause()
        assert not await here.is_revoked(claims)  # `here` sees the outage (store answers)
        await here.logout(claims, None)  # so it reaches only the store
        private_redis.resume()
        # The repair task refills Redis as soon as it answers (no request needed).
        redis = here.redis
        assert redis is not None
        deny_key = f"t:auth:deny:{claims.jti}"
        await wait_until(lambda: redis.exists(deny_key), "the logout reaches Redis")
        assert trusts_redis(there, pair.access_token)  # `there` saw no outage at all ...
        assert await there.is_revoked(claims)  # ... and still refuses the token
    finally:
        await close(here)
        await close(there)


class SlowRefillStore(MemoryTokenStore):
    """A store whose `revoked_access` (the refill's read) waits until `proceed` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()
        self.proceed = asyncio.Event()
        self.proceed.set()

    async def revoked_access(self, now: datetime) -> list[tuple[str, datetime]]:
        entries = await super().revoked_access(now)
        self.reading.set()
        await self.proceed.wait()
        return entries


async def test_a_logout_that_misses_redis_during_a_refill_is_never_forgotten(
    auth_settings: AuthSettings,
    redis: Redis,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = SlowRefillStore()
    tokens = TokenService(auth_settings, store, redis, redis_prefix, circuit_cooldown=0)
    try:
        early = tokens.decode_access((await tokens.issue("7", "user")).access_token)
        late = tokens.decode_access((await tokens.issue("8", "user")).access_token)
        assert not await tokens.is_revoked(early)  # denylist verified
        await redis.delete(f"{redis_prefix}auth:ready")  # as if Redis had lost its data
        assert not await tokens.is_revoked(early)  # noticed: the store answers
        store.reading.clear()
        store.proceed.clear()
        refill = asyncio.create_task(tokens.is_revoked(early))
        await wait_until(store.reading.is_set, "the refill reads the store")  # ...

        async def unreachable(*args: Any, **kwargs: Any) -> None:
            raise ConnectionError("No connection available")

        with monkeypatch.context() as patched:
            patched.setattr(redis, "set", unreachable)
            await tokens.logout(late, None)  # ... before this logout, which misses Redis
        store.proceed.set()
        await wait_until(refill.done, "the refill answers once the store does")
        assert not await refill

        assert await tokens.is_revoked(late)
    finally:
        await tokens.aclose()


# Sessions end when the account changes; they have an absolute lifetime ---------------


async def test_ending_a_users_sessions_refuses_every_earlier_token_and_no_later_one(
    tokens: TokenService,
) -> None:
    web, phone = await tokens.issue("7", "user"), await tokens.issue("7", "user")
    bystander = await tokens.issue("8", "user")
    await tokens.end_sessions("7")
    fresh = await tokens.issue("7", "user")

    for pair in (web, phone):
        assert await tokens.is_revoked(tokens.decode_access(pair.access_token))
        with pytest.raises(InvalidToken):
            await tokens.refresh(pair.refresh_token)
    assert not await tokens.is_revoked(tokens.decode_access(fresh.access_token))
    assert not await tokens.is_revoked(tokens.decode_access(bystander.access_token))
    rotated = await tokens.refresh(fresh.refresh_token)
    assert not await tokens.is_revoked(tokens.decode_access(rotated.access_token))


async def test_a_login_that_read_the_old_password_before_the_change_is_ended_too(
    tokens: TokenService,
) -> None:
    read_at = time.time()  # the login reads the user (and the old hash) here...
    await tokens.end_sessions("7")  # ...the password changes while it hashes...
    late = await tokens.issue("7", "user", auth_time=read_at)  # ...and it issues after.
    assert await tokens.is_revoked(tokens.decode_access(late.access_token))


async def test_ended_sessions_are_refused_by_the_store_without_redis(
    auth_settings: AuthSettings,
) -> None:
    service = TokenService(auth_settings, MemoryTokenStore(), None, "x:")
    pair = await service.issue("7", "user")
    await service.end_sessions("7")
    assert await service.is_revoked(service.decode_access(pair.access_token))


async def test_rotation_never_carries_a_session_past_its_absolute_end(
    auth_settings: AuthSettings, redis: Redis, redis_prefix: str
) -> None:
    settings = auth_settings.model_copy(update={"session_max_days": 2, "refresh_token_days": 14})
    service = TokenService(settings, MemoryTokenStore(), redis, redis_prefix)
    try:
        began = time.time() - 2 * 86400 + 30  # a session with 30 s left
        pair = await service.issue("7", "user", auth_time=began)
        for _ in range(3):
            pair = await service.refresh(pair.refresh_token)
            refresh = service.decode_refresh(pair.refresh_token)
            access = service.decode_access(pair.access_token)
            assert refresh.exp <= began + 2 * 86400
            assert access.exp <= began + 2 * 86400
            assert pair.expires_in <= 30
        with pytest.raises(InvalidToken):
            await service.issue("7", "user", auth_time=began - 31)  # already over
    finally:
        await service.aclose()


async def test_a_token_of_a_user_who_no_longer_exists_is_refused(
    auth_settings: AuthSettings, redis: Redis, redis_prefix: str
) -> None:
    asked: list[str] = []

    async def exists(sub: str) -> bool:
        asked.append(sub)
        return sub == "7"

    service = TokenService(
        auth_settings, MemoryTokenStore(), redis, redis_prefix, subject_exists=exists
    )
    try:
        real, ghost = await service.issue("7", "user"), await service.issue("404", "user")
        for _ in range(3):
            assert not await service.is_revoked(service.decode_access(real.access_token))
            assert await service.is_revoked(service.decode_access(ghost.access_token))
        assert asked.count("7") == 1  # once per user and process, then remembered
    finally:
        await service.aclose()


async def test_a_revoked_token_names_no_subject_to_rate_limit(tokens: TokenService) -> None:
    pair = await tokens.issue("7", "user")
    scope: dict[str, Any] = {
        "type": "http",
        "headers": [(b"authorization", f"Bearer {pair.access_token}".encode())],
    }
    assert tokens.subject_of(dict(scope)) == "7"
    await tokens.logout(tokens.decode_access(pair.access_token), None)
    assert tokens.subject_of(dict(scope)) is None  # its sender's address pays instead


async def test_a_session_mark_survives_a_redis_restart(private_redis: RedisServer) -> None:
    store = MemoryTokenStore()
    service = await service_on(private_redis.url, "t:", store)
    try:
        pair = await service.issue("7", "user")
        claims = service.decode_access(pair.access_token)
        assert not await service.is_revoked(claims)  # marker written: Redis trusted
        private_redis.snapshot()  # before the change
        await service.end_sessions("7")
        private_redis.restart()  # back without the mark
        assert await settle(service, pair)
        assert service.redis is not None
        assert await service.redis.exists("t:auth:user:7")  # refilled from the store
        assert 0 < await service.redis.ttl("t:auth:user:7") <= 14 * 86400
    finally:
        await close(service)


async def test_an_older_session_mark_landing_last_does_not_move_redis_back(
    redis: Redis, redis_prefix: str
) -> None:
    # Two account changes race on two workers (a role change, then a password change):
    # the older mark may reach Redis last. Like the store, Redis keeps the later one.
    denylist = RedisDenylist(
        redis, MemoryTokenStore(), redis_prefix, RedisCircuit(), session_seconds=3600
    )
    earlier, later = datetime.fromtimestamp(1000.5, UTC), datetime.fromtimestamp(2000.5, UTC)
    await denylist.end_sessions("7", later)
    await denylist.end_sessions("7", earlier)
    key = f"{redis_prefix}auth:user:7"

    async def mark() -> float:
        value = await redis.get(key)
        assert value is not None
        return float(value)

    assert await mark() == later.timestamp()
    assert 0 < await redis.ttl(key) <= 3600
    await denylist.end_sessions("7", datetime.fromtimestamp(3000.5, UTC))
    assert await mark() == 3000.5


# What a refused token is told: the reason, for the logs and for whoever debugs a client


def codec(**settings: Any) -> TokenCodec:
    return TokenCodec(AuthSettings(jwt_secret=SECRET, **settings))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param(lambda now: {"exp": now - 1}, "Signature has expired", id="expired"),
        pytest.param(lambda now: {"typ": "refresh"}, "not an access token", id="refresh-typ"),
        pytest.param(lambda now: {"sid": 7}, "claim sid must be a string", id="numeric-sid"),
        pytest.param(
            lambda now: {"exp": now + 60.5}, "claim exp must be an integer", id="fractional-exp"
        ),
        pytest.param(
            lambda now: {"iat": now + 0.5}, "claim iat must be an integer", id="fractional-iat"
        ),
        pytest.param(
            lambda now: {"auth_time": "yesterday"},
            "claim auth_time must be a number",
            id="text-auth-time",
        ),
        pytest.param(
            lambda now: {"auth_time": True}, "claim auth_time must be a number", id="bool-auth-time"
        ),
        pytest.param(
            lambda now: {"iat": now, "exp": now + 901},
            "token lifetime longer than allowed",
            id="a-second-too-long",
        ),
        pytest.param(
            lambda now: {"auth_time": now - 14 * 86400},
            "token outlives its session",
            id="past-the-session",
        ),
        pytest.param(
            lambda now: {"iat": now, "auth_time": now + 1.5},
            "token outlives its session",
            id="login-after-issue",
        ),
    ],
)
def test_a_refused_access_token_says_why(
    changes: Callable[[int], dict[str, Any]], reason: str
) -> None:
    with pytest.raises(InvalidToken) as refused:
        codec().decode_access(forge(**changes(int(time.time()))))
    assert str(refused.value) == reason


def test_each_kind_of_token_is_refused_where_the_other_is_expected_by_name() -> None:
    pair = (forge(typ="access"), forge(typ="refresh"))
    with pytest.raises(InvalidToken) as refused:
        codec().decode_refresh(pair[0])
    assert str(refused.value) == "not a refresh token"
    with pytest.raises(InvalidToken) as refused:
        codec().decode_access(pair[1])
    assert str(refused.value) == "not an access token"


def test_a_token_may_live_exactly_as_long_as_its_type_allows() -> None:
    # A session long enough that only the token's own lifetime decides.
    tokens = codec(session_max_days=30)
    now = int(time.time())
    assert tokens.decode_access(forge(iat=now, exp=now + 15 * 60)).exp == now + 15 * 60
    fortnight = now + 14 * 86400
    refresh = forge(typ="refresh", iat=now, exp=fortnight)
    assert tokens.decode_refresh(refresh).exp == fortnight
    with pytest.raises(InvalidToken, match=r"^token lifetime longer than allowed$"):
        tokens.decode_refresh(forge(typ="refresh", iat=now, exp=fortnight + 1))
    # An access token is held to the access lifetime, not the refresh one.
    with pytest.raises(InvalidToken, match=r"^token lifetime longer than allowed$"):
        tokens.decode_access(forge(iat=now, exp=now + 15 * 60 + 1))


def test_a_login_read_up_to_a_second_after_the_whole_second_of_issue_is_accepted() -> None:
    # iat is whole seconds, auth_time a float read before it: truncation leaves up to a
    # second between them, which is no sign of a forgery.
    now = int(time.time())
    claims = codec().decode_access(forge(iat=now, auth_time=now + 1))
    assert claims.auth_time == now + 1
    with pytest.raises(InvalidToken, match=r"^token outlives its session$"):
        codec().decode_access(forge(iat=now, auth_time=now + 1.25))


def test_a_remembered_token_expires_at_its_exp_second_with_the_usual_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = codec()
    token = forge()
    exp = tokens.decode_access(token).exp  # verified, then remembered
    monkeypatch.setattr(time, "time", lambda: float(exp))
    with pytest.raises(InvalidToken) as refused:
        tokens.decode_access(token)
    # The same words PyJWT gives a token it is asked to verify after its expiry.
    assert str(refused.value) == "Signature has expired"


def counting_verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature is checked, in order (a remembered one is not)."""
    verified: list[str] = []
    decode = jwt.PyJWT.decode

    def counted(self: jwt.PyJWT, token: str, *args: Any, **kwargs: Any) -> Any:
        verified.append(token)
        return decode(self, token, *args, **kwargs)

    monkeypatch.setattr(jwt.PyJWT, "decode", counted)
    return verified


def test_at_most_4096_verified_tokens_are_remembered_the_oldest_leaving_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = codec()
    verified = counting_verifications(monkeypatch)
    many = [forge(jti=f"j{n}") for n in range(4097)]
    for token in many[:4096]:
        tokens.decode_access(token)
    tokens.decode_access(many[0])  # remembered: no second check
    assert len(verified) == 4096
    tokens.decode_access(many[4096])  # one more: the oldest makes room
    tokens.decode_access(many[1])
    tokens.decode_access(many[0])
    assert verified[4096:] == [many[4096], many[0]]


def test_an_expired_token_gives_its_place_among_the_remembered_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = TokenCodec(AuthSettings(jwt_secret=SECRET), verified_tokens=2)
    verified = counting_verifications(monkeypatch)
    now = int(time.time())
    lasting, brief = forge(jti="lasting", exp=now + 600), forge(jti="brief", exp=now + 60)
    tokens.decode_access(lasting)
    tokens.decode_access(brief)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 120)
    with pytest.raises(InvalidToken):
        tokens.decode_access(brief)  # expired: forgotten
    monkeypatch.setattr(time, "time", real_time)
    fresh = forge(jti="fresh")
    tokens.decode_access(fresh)  # takes the expired one's place ...
    tokens.decode_access(lasting)  # ... so this one is still remembered
    assert verified == [lasting, brief, fresh]


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (b"Bearer abc.def.ghi", "abc.def.ghi"),
        (b"bearer abc.def.ghi", "abc.def.ghi"),
        (b"Bearer  abc.def.ghi ", "abc.def.ghi"),  # stray spaces around the token
        (b"Basic dXNlcjpwdw==", None),
        (b"Bearer ", None),
        (b"Bearer", None),
        (b"abc.def.ghi", None),
    ],
)
def test_only_a_bearer_authorization_header_yields_a_token(
    header: bytes, token: str | None
) -> None:
    scope: dict[str, Any] = {"type": "http", "headers": [(b"authorization", header)]}
    assert bearer_token(scope) == token
