"""The cache (days 1 and 3): cache-aside for the users' reads, kept in Redis.

Cache-aside: look in Redis first (a HIT answers at once); on a MISS ask the store
and keep its answer for CACHE_TTL_SECONDS. `X-Cache: HIT | MISS | BYPASS` says which.

Every key holds a version, `week8:cache:17:users:5`, and every write increments it
before it answers. Deleting the changed keys instead would lose a race: a reader that
loaded the old user just before the write puts it back just after the delete. With a
version, that late copy lands under the old version, where nobody looks any more, and
every cached page that held the user is out of reach at once. Old entries expire. (One
version for everything keeps it short; the price is that any write drops every entry.)

When Redis can't answer, the cache steps aside (BYPASS) and the store answers. A write
made meanwhile can't increment the version, so what it changed may be served from the
cache again when Redis is back, until it expires: CACHE_TTL_SECONDS bounds it.
"""

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import Response
from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

CacheStatus = Literal["HIT", "MISS", "BYPASS"]


class ResponseCache:
    """JSON bodies in Redis under versioned keys; BYPASS whenever Redis fails."""

    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int) -> None:
        self._redis = redis
        self._entries = f"{prefix}cache:"
        self._version_key = f"{prefix}cache:version"
        self._ttl = ttl_seconds
        # Every read renews the version's TTL, so it outlives the entries that name it: if
        # it ever expires and counts again from 1, no entry of an old "1" is left.
        self._version_ttl = ttl_seconds + 24 * 3600

    async def respond(self, name: str, load: Callable[[], Awaitable[bytes]]) -> Response:
        """A JSON response from the cache, or from `load()` (kept for next time)."""
        body, status = await self.get_or_load(name, load)
        return Response(body, media_type="application/json", headers={"X-Cache": status})

    async def get_or_load(
        self, name: str, load: Callable[[], Awaitable[bytes]]
    ) -> tuple[bytes, CacheStatus]:
        try:
            # The version is read BEFORE loading: if a write increments it meanwhile, what
            # we load may be old, and it goes under the old version, where nobody looks.
            version = await self._redis.getex(self._version_key, ex=self._version_ttl)
            key = f"{self._entries}{int(version or 0)}:{name}"
            cached = await self._redis.get(key)
        except RedisError:
            return await load(), "BYPASS"
        if isinstance(cached, bytes):  # None when it isn't there (the client never decodes)
            return cached, "HIT"
        body = await load()  # raises for a 404: errors are not cached
        with contextlib.suppress(RedisError):  # not kept this time: the next read tries again
            await self._redis.set(key, body, ex=self._ttl)
        return body, "MISS"

    async def invalidate(self) -> None:
        """Make every cached entry unreachable: each write awaits this before it answers."""
        try:
            # One transaction: the version never exists without its TTL.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(self._version_key)
                pipe.expire(self._version_key, self._version_ttl)
                await pipe.execute()
        except RedisError as exc:
            logger.warning(
                "Redis unreachable (%s): cached users may be out of date for up to %d s",
                exc,  # pragma: no mutate (log wording)
                self._ttl,
            )
