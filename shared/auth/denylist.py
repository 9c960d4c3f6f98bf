"""The Redis mirror of revocations and session marks: the fast path of a revocation check.

Logouts, revoked sessions and session marks are durable in the `TokenStore`;
Redis holds a copy, with TTLs, so a check is one MGET (or none, when it rides on
the rate limiter's round trip: `shared.redis.peek`). Redis can lose that copy
(a restart without persistence, an old snapshot, a write missed during an
outage), so a marker key holding the server's run_id says for which server the
copy is complete; when it is missing or stale the copy is refilled from the
store (`shared.redis.RedisRecovery`) and meanwhile the store answers.

Keys: `{prefix}auth:ready`, `{prefix}auth:deny:{jti}`, `{prefix}auth:family:{sid}`,
`{prefix}auth:user:{sub}` (sessions valid from); never a raw token, each with a TTL.
Each is read and written on its own or in an MGET; on a cluster the MGET is split
per slot by redis-py (`mget_nonatomic`) and the parts go out side by side, so a
check still waits for one round trip. There the marker vouches for its own node;
a node restarted empty or replaced by its replica is seen by the `RedisWatch`.
"""

import logging
from datetime import UTC, datetime
from typing import Any

from redis.asyncio.cluster import RedisCluster
from starlette.types import Scope

from ..redis import REDIS_ERRORS, AnyRedis, Batcher, RedisCircuit, RedisRecovery, peeked
from .store import FAMILY_PREFIX, TokenStore
from .tokens import TokenClaims

logger = logging.getLogger(__package__)

# KEYS[1]: a user's session mark.  ARGV: the new mark (a timestamp), its TTL in seconds.
# A mark only moves forward, as in the store: of two account changes racing on two
# workers, the older must not land last and reopen the sessions the newer one ended.
MARK_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class RedisDenylist:
    """Mirrors the store's revocations in Redis and answers from there while it is complete."""

    def __init__(
        self,
        redis: AnyRedis | None,
        store: TokenStore,
        prefix: str,
        circuit: RedisCircuit,
        *,
        session_seconds: int,
        marker_seconds: int = 3600,  # pragma: no mutate (TokenService always passes it)
        repair_interval: float = 0.2,  # pragma: no mutate (TokenService always passes it)
    ) -> None:
        self.redis = redis
        self.store = store
        self.session_seconds = session_seconds
        self._ready_key = f"{prefix}auth:ready"
        self._deny_prefix = f"{prefix}auth:deny:"
        self._family_prefix = f"{prefix}auth:family:"
        self._user_prefix = f"{prefix}auth:user:"
        self._marker_seconds = marker_seconds
        self.recovery = RedisRecovery(
            redis,
            self._repair,
            circuit,
            logger=logger,
            # The two log messages: their wording is not mutated.
            while_down="token revocation answered by the durable store",  # pragma: no mutate
            when_back="token denylist verified",  # pragma: no mutate
            interval=repair_interval,
        )
        self._reads: Batcher[tuple[str, str, str], tuple[bytes | None, ...]] = Batcher(
            self._read_batch
        )
        self._mark = redis.register_script(MARK_SCRIPT) if redis is not None else None

    async def deny_token(self, jti: str, seconds: int) -> None:
        """Mirror a revoked access token, for the `seconds` it could still be used."""
        await self._write(self._deny_prefix + jti, seconds)

    async def deny_family(self, sid: str, seconds: int) -> None:
        """Mirror a revoked session, for the `seconds` its access tokens could still be used."""
        await self._write(self._family_prefix + sid, seconds)

    async def end_sessions(self, user_id: str, at: datetime) -> None:
        """Mirror a session mark, unless a later one is there already; after
        session_seconds every session it could end is over."""
        await self._write(
            self._user_prefix + user_id,
            self.session_seconds,
            repr(at.timestamp()).encode(),
            forward_only=True,
        )

    async def _write(
        self,
        key: str,
        seconds: int,
        # Not mutated: a deny key is read for presence only, and on a fresh key the
        # script does what SET does; end_sessions, which needs them, passes both.
        value: bytes = b"1",  # pragma: no mutate
        *,
        forward_only: bool = False,  # pragma: no mutate
    ) -> None:
        if self.redis is None or seconds <= 0:
            return
        if self.recovery.circuit.allows():
            try:
                if forward_only and self._mark is not None:
                    await self._mark(keys=[key], args=[value, seconds])
                else:
                    await self.redis.set(key, value, ex=seconds)
                return
            except REDIS_ERRORS:
                self.recovery.failed()
        # The store has it; Redis must be refilled before anyone trusts it again.
        self.recovery.missed_write()

    def peek_keys(self, claims: TokenClaims) -> list[str]:
        """The keys `revoked` reads; empty until this process has verified the copy."""
        if self.recovery.verified is None or self.redis is None:
            return []
        return [
            self._ready_key,
            self._deny_prefix + claims.jti,
            self._family_prefix + claims.sid,
            self._user_prefix + claims.sub,
        ]

    async def revoked(self, claims: TokenClaims, scope: Scope | None) -> bool | None:
        """Whether Redis has the token revoked or its session ended; None: ask the store."""
        recovery = self.recovery
        if self.redis is None or not recovery.circuit.allows() or not await recovery.ensure():
            return None
        deny_key = self._deny_prefix + claims.jti
        family_key = self._family_prefix + claims.sid
        user_key = self._user_prefix + claims.sub
        values = peeked(scope)
        if values is not None and user_key in values and deny_key in values:
            ready, denied, family, valid_from = (
                values.get(self._ready_key),
                values[deny_key],
                values.get(family_key),
                values[user_key],
            )
        else:
            try:
                ready, denied, family, valid_from = await self._reads.submit(
                    (deny_key, family_key, user_key)
                )
            except REDIS_ERRORS:
                recovery.failed()
                return None
        if recovery.circuit.down:
            recovery.circuit.succeeded()
        if ready != recovery.verified or recovery.server_changed():
            # Redis lost its data or is another server now: the store decides until refilled.
            recovery.forget()
            return None
        return (
            denied is not None
            or family is not None
            or (valid_from is not None and claims.auth_time < float(valid_from))
        )

    async def _read_batch(
        self, items: list[tuple[str, str, str]]
    ) -> list[tuple[bytes | None, ...]]:
        """One MGET for every revocation check of this loop iteration (the marker once)."""
        redis = self.redis
        assert redis is not None
        keys = [self._ready_key]
        for item in items:
            keys += item
        if isinstance(redis, RedisCluster):
            values: list[Any] = await redis.mget_nonatomic(keys)
        else:
            values = await redis.mget(keys)
        ready = values[0]
        return [(ready, *values[i : i + 3]) for i in range(1, len(values), 3)]

    async def _repair(
        self, redis: AnyRedis, run_id: bytes, *, dirty: bool, server_changed: bool
    ) -> None:
        # A new server shows as a marker of another run: no need to look at server_changed.
        if dirty or await redis.get(self._ready_key) != run_id:
            await self._refill(redis, run_id)

    async def _refill(self, redis: AnyRedis, run_id: bytes) -> None:
        now = datetime.now(UTC)
        revoked = await self.store.revoked_access(now)
        since = datetime.fromtimestamp(int(now.timestamp()) - self.session_seconds, UTC)
        marks = await self.store.session_marks(since)
        async with redis.pipeline(transaction=False) as pipe:
            for user_id, at in marks:
                if at.tzinfo is None:
                    at = at.replace(tzinfo=UTC)
                seconds = int(at.timestamp() + self.session_seconds - now.timestamp()) + 1
                pipe.set(self._user_prefix + user_id, repr(at.timestamp()).encode(), ex=seconds)
            for jti, expires_at in revoked:
                if expires_at.tzinfo is None:  # SQLite hands back naive UTC datetimes
                    expires_at = expires_at.replace(tzinfo=UTC)
                seconds = int((expires_at - now).total_seconds()) + 1
                if seconds <= 0:
                    continue
                if jti.startswith(FAMILY_PREFIX):
                    key = self._family_prefix + jti.removeprefix(FAMILY_PREFIX)
                else:
                    key = self._deny_prefix + jti
                pipe.set(key, b"1", ex=seconds)
            await pipe.execute()
        # The marker goes after every entry has landed: a reader that sees it sees the
        # whole denylist. (A cluster pipeline runs per node, side by side, in no set order.)
        await redis.set(self._ready_key, run_id, ex=self._marker_seconds)
        # pragma: no mutate start (log wording)
        logger.info(
            "token denylist refilled from the store (%d entries, %d session marks)",
            len(revoked),
            len(marks),
        )
        # pragma: no mutate end
