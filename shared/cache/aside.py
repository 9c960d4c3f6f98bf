"""Cache-aside for response bodies with versioned invalidation (week 8: caching, Redis).

- Stored bytes are served as they are: a HIT skips validation and serialisation.
- Versioned keys instead of deletes (`entries`): no stale refill after a write, and
  no KEYS/SCAN ever.
- Stampede protection: concurrent cold GETs in one process share one loader call
  (an asyncio future per key), and a short `SET NX PX` lock makes other processes
  wait briefly for the entry instead of loading too. TTLs get jitter.
- Entries are per principal unless declared public.
- Redis errors mean BYPASS (the loader answers), never a 500. After any outage or
  server change this process bumps the global epoch before serving from Redis
  again (`shared.redis.RedisRecovery`), so nothing cached before a write it could
  not record is ever served.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence

from pydantic_settings import BaseSettings, SettingsConfigDict

from ..redis import REDIS_ERRORS, AnyRedis, Batcher, RedisCircuit, RedisRecovery
from .entries import (
    CachedBody,
    Lookup,
    VersionedEntries,
    etag_for,
    load_bypassing,
    logger,
    stored_body,
)


class CacheSettings(BaseSettings):
    """Cache settings (env: CACHE_TTL_SECONDS, CACHE_JITTER, CACHE_LOCK_SECONDS)."""

    model_config = SettingsConfigDict(env_prefix="CACHE_", env_file=".env", extra="ignore")

    ttl_seconds: float = 60
    jitter: float = 0.1
    lock_seconds: float = 2
    version_seconds: int = 86400


class ResponseCache:
    """Cache-aside over Redis for response bodies (keys: see `shared.cache.entries`)."""

    def __init__(
        self,
        redis: AnyRedis | None,
        settings: CacheSettings | None = None,
        prefix: str = "app:",
        *,
        circuit_cooldown: float = 1.0,
        repair_interval: float = 0.2,
        on_circuit_change: Callable[[bool], None] | None = None,
    ) -> None:
        settings = settings or CacheSettings()
        self.redis = redis
        self.settings = settings
        self.prefix = prefix
        self._ttl_ms = settings.ttl_seconds * 1000
        self._entries = (
            VersionedEntries(
                redis,
                prefix,
                lock_seconds=settings.lock_seconds,
                version_seconds=max(settings.version_seconds, int(settings.ttl_seconds) * 10),
            )
            if redis is not None
            else None
        )
        self._circuit = RedisCircuit(circuit_cooldown, on_change=on_circuit_change)
        # Until verified, Redis may hold entries from before an outage or a restart.
        self._recovery = RedisRecovery(
            redis,
            self._bump_epoch,
            self._circuit,
            logger=logger,
            while_down="cache bypassed until it answers again",
            dirty_after_errors=True,
            interval=repair_interval,
        )
        self._flights: dict[str, asyncio.Future[CachedBody]] = {}
        self._lookups: Batcher[Lookup, tuple[bytes, bytes | None]] = Batcher(self._lookup_batch)

    async def aclose(self) -> None:
        """Stop the background repair task, if one is running."""
        await self._recovery.aclose()

    async def get_or_load(
        self,
        *,
        namespace: str,
        key: str,
        principal: str | None,
        loader: Callable[[], Awaitable[bytes]],
        tags: Sequence[str],
        public: bool = False,
    ) -> CachedBody:
        """The cached body, else the loader's (stored for the next caller).

        `principal` None without `public=True` is never cached: a response that
        may differ per user must never be served to another one.
        """
        entries = self._entries
        if (principal is None and not public) or entries is None or not self._circuit.allows():
            return await load_bypassing(loader)
        if not await self._recovery.ensure():
            return await load_bypassing(loader)
        lookup = entries.lookup_for(namespace, None if public else principal, key, tags)
        try:
            versions, value = await self._lookups.submit(lookup)
        except REDIS_ERRORS:
            self._recovery.failed()
            return await load_bypassing(loader)
        if self._recovery.server_changed():
            # The answer may come from a restarted server's old snapshot.
            self._recovery.mark_dirty()
            return await load_bypassing(loader)
        if value:
            return stored_body(value)
        # One load per entry and versions in this process.
        full = f"{lookup.key}|{versions.decode()}"
        flight = self._flights.get(full)
        if flight is None:
            flight = asyncio.ensure_future(self._fill(entries, lookup, versions, loader))
            self._flights[full] = flight
            flight.add_done_callback(lambda done: self._landed(full, done))
        # shield: a caller that goes away must not cancel the load the others wait for.
        return await asyncio.shield(flight)

    def _landed(self, full: str, flight: asyncio.Future[CachedBody]) -> None:
        self._flights.pop(full, None)
        if not flight.cancelled():
            flight.exception()  # retrieved: every waiter may have gone away

    async def _lookup_batch(self, items: list[Lookup]) -> list[tuple[bytes, bytes | None]]:
        assert self._entries is not None
        return await self._entries.lookup_batch(items)

    async def _bump_epoch(
        self, redis: AnyRedis, run_id: bytes, *, dirty: bool, server_changed: bool
    ) -> None:
        assert self._entries is not None
        await self._entries.bump_epoch(redis, run_id, dirty=dirty, server_changed=server_changed)

    async def _fill(
        self,
        entries: VersionedEntries,
        lookup: Lookup,
        versions: bytes,
        loader: Callable[[], Awaitable[bytes]],
    ) -> CachedBody:
        try:
            lock = await entries.lock(lookup.key)
            if lock is None:
                # Another process holds the lock and is loading: its entry is moments away.
                value = await entries.wait_for(lookup.key, versions)
                if value:
                    return stored_body(value)
        except REDIS_ERRORS:
            self._recovery.failed()
            return await load_bypassing(loader)
        try:
            body = await loader()
        except BaseException:
            with contextlib.suppress(*REDIS_ERRORS):
                await entries.release(lock)
            raise
        cached = CachedBody(body, etag_for(body), "MISS")
        ttl_ms = self._ttl_ms * (1 - self.settings.jitter * random.random())
        try:
            await entries.fill(lookup, versions, cached, ttl_ms, lock)
        except REDIS_ERRORS:
            self._recovery.failed()
            return CachedBody(body, cached.etag, "BYPASS")
        return cached

    async def invalidate(self, *tags: str) -> None:
        """Bump the version of every tag: entries that embed the old ones are never read again.

        Never raises: when Redis is unusable the write is remembered and the global
        epoch is bumped as soon as Redis answers again.
        """
        entries = self._entries
        if entries is None or not tags:
            return
        if self._circuit.allows():
            try:
                await entries.invalidate(tags)
                return
            except REDIS_ERRORS:
                self._recovery.failed()
        self._recovery.missed_write()
