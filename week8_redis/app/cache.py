"""The cache (days 1 and 3): cache-aside for the users' GET routes, kept in Redis.

Cache-aside: look in Redis first (a HIT answers at once); on a MISS ask the store,
and keep its answer in Redis for CACHE_TTL_SECONDS. Every response says which it
was in `X-Cache: HIT | MISS | BYPASS`.

The hard part is never serving old data after a write. Deleting the changed keys
is not enough: a reader that fetched the old user just before the write can put
it back just after the delete. So every key embeds a version number instead,
`week8:cache:17:users:5`, and every write bumps the version (INCR) before it
returns. Every entry cached before the write becomes unreachable at once, in one
step however many pages held the user, and a slow reader's late copy goes under
the old version, where nobody looks any more. The old entries expire on their own.

One version for all of them keeps this short and obviously right; the price is
that a write to one user also drops every other cached user. (shared/'s cache keeps
a version per user and one for the lists, so a write drops only what it changed.)

When Redis fails, the cache steps aside (BYPASS) and the store answers, until a
bump of the version succeeds. That bump is what makes recovery safe: a write made
while Redis was unreachable could not invalidate anything, and Redis may come back
with its old entries (restored from a snapshot); entries under the old versions
are never read again.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import Response
from redis.asyncio import Redis

from .redis_client import REDIS_ERRORS, CircuitBreaker

logger = logging.getLogger(__name__)

CacheStatus = Literal["HIT", "MISS", "BYPASS"]


class ResponseCache:
    """JSON bodies in Redis under versioned keys, with BYPASS while Redis can't be trusted."""

    def __init__(
        self, redis: Redis, breaker: CircuitBreaker, prefix: str, ttl_seconds: int
    ) -> None:
        self._redis = redis
        self._breaker = breaker
        self._entries = f"{prefix}cache:"
        self._version_key = f"{prefix}cache:version"
        self._ttl = ttl_seconds
        # The version outlives every entry that names it (reads refresh its TTL), so if it
        # ever expires and INCR starts again from 1, no entry of an old "1" is left.
        self._version_ttl = ttl_seconds + 24 * 3600
        # A new process starts in BYPASS and bumps the version before its first use: it
        # can't know what was cached before it started (by a process with other users).
        self._trusted = False
        self._failures = 0
        self._floor = 0  # the newest version Redis has told this process about

    async def respond(self, name: str, load: Callable[[], Awaitable[bytes]]) -> Response:
        """A JSON response from the cache, or from `load()` (kept for next time)."""
        body, status = await self.get_or_load(name, load)
        return Response(body, media_type="application/json", headers={"X-Cache": status})

    async def get_or_load(
        self, name: str, load: Callable[[], Awaitable[bytes]]
    ) -> tuple[bytes, CacheStatus]:
        # The version is read BEFORE loading: if a write bumps it meanwhile, what we
        # loaded may be old, and it goes under the old version, where nobody looks.
        version = await self._version()
        if version is None:
            return await load(), "BYPASS"
        key = f"{self._entries}{version}:{name}"
        try:
            cached = await self._redis.get(key)
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return await load(), "BYPASS"
        if isinstance(cached, bytes):  # None when it isn't there (the client never decodes)
            return cached, "HIT"
        body = await load()  # raises for a 404: errors are not cached
        try:
            await self._redis.set(key, body, ex=self._ttl)
        except REDIS_ERRORS as exc:
            self._failed(exc)
        return body, "MISS"

    async def invalidate(self) -> None:
        """Make every cached entry unreachable: each write awaits this before it answers."""
        # If it fails, the cache stays in BYPASS until a later bump succeeds, which
        # invalidates this write's old entries just the same.
        await self._bump()

    async def _version(self) -> int | None:
        """The version to put in keys, or None for BYPASS."""
        if not self._trusted or not self._breaker.ready():
            return await self._bump()
        floor = self._floor
        try:
            raw = await self._redis.getex(self._version_key, ex=self._version_ttl)
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return None
        self._breaker.succeeded()
        version = int(raw or 0)
        if version < floor:
            # The version only goes up, unless Redis lost data: it restarted empty, or
            # from a snapshot taken before writes that bumped it since. Its entries may
            # predate those writes: BYPASS until a bump takes the version past them.
            logger.warning("Redis lost data: the cache version went back to %d", version)
            self._distrust()
            return None
        self._floor = max(self._floor, version)
        return version

    async def _bump(self) -> int | None:
        """INCR the version, and trust the cache again; None if Redis can't be used."""
        if not self._breaker.ready():
            self._distrust()  # whatever this request changed, a bump must come first
            return None
        failures = self._failures
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(self._version_key)
                pipe.expire(self._version_key, self._version_ttl)
                version, _ = await pipe.execute()
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return None
        self._breaker.succeeded()
        if self._failures != failures:
            # Another request failed while this INCR was on its way: the INCR may have
            # run before that request's write, so it proves nothing about that write.
            return None
        self._floor = max(self._floor, version)
        if not self._trusted:
            self._trusted = True
            logger.info("cache on: entries from version %d on are trusted", version)
        return int(version)

    def _failed(self, error: BaseException) -> None:
        self._breaker.failed(error)
        self._distrust()

    def _distrust(self) -> None:
        """BYPASS until a bump succeeds: a write may have missed its invalidation."""
        self._failures += 1
        self._trusted = False
        self._floor = 0  # what Redis told us before may no longer hold
