"""Cache-aside for response bodies with versioned invalidation (week 8: caching, Redis).

- Stored bytes are served as they are: a HIT skips validation and serialisation.
- Versioned keys instead of deletes: every entry key embeds the current version of
  each of its tags (and a global epoch); a write bumps the versions with INCR. A
  reader that loaded old data before the write can only store it under the old
  versions, where nobody looks any more, so the stale-refill race is closed, and
  no KEYS/SCAN is ever needed.
- Stampede protection: concurrent cold GETs in one process share one loader call
  (an asyncio future per key), and a short `SET NX PX` lock makes other processes
  wait briefly for the entry instead of loading too. TTLs get jitter.
- Entries are per principal unless declared public.
- Redis errors mean BYPASS (the loader answers), never a 500. After any outage or
  server change this process bumps the global epoch before serving from Redis
  again, so nothing cached before a write it could not record is ever served.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis
from redis.exceptions import NoScriptError
from starlette.responses import Response
from starlette.types import Scope

from .redis import REDIS_ERRORS, Batcher, OneAtATime, RedisCircuit, redis_watch, server_run_id

logger = logging.getLogger(__name__)

CacheStatus = Literal["HIT", "MISS", "BYPASS"]
ETAG_LENGTH = 34  # '"' + 32 hex digits + '"'

# Looks up a batch of entries: per lookup, the versions of its keys (the epoch,
# then its tags) and the entry stored under them. ARGV[1]: the number of lookups;
# then per lookup its number of version keys and its entry key without the
# version suffix. KEYS: per lookup its version keys. Returns, per lookup,
# versions and value (or false): one round trip, however many GETs run at once.
LOOKUP_SCRIPT = """
local out = {}
local k = 0
local p = 2
for r = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[p])
  local base = ARGV[p + 1]
  p = p + 2
  local parts = {}
  for i = 1, n do parts[i] = redis.call('GET', KEYS[k + i]) or '0' end
  k = k + n
  local versions = table.concat(parts, '.')
  out[#out + 1] = versions
  out[#out + 1] = redis.call('GET', base .. versions)
end
return out
"""

# Stores the entry only if the versions are still those the loader started from,
# and extends the version keys so they outlive every entry that embeds them.
# ARGV: entry key base, versions seen, value, ttl ms, version ttl s, lock key, lock token.
FILL_SCRIPT = """
if ARGV[6] ~= '' and redis.call('GET', ARGV[6]) == ARGV[7] then redis.call('DEL', ARGV[6]) end
local parts = {}
for i = 1, #KEYS do parts[i] = redis.call('GET', KEYS[i]) or '0' end
local versions = table.concat(parts, '.')
if versions ~= ARGV[2] then return 0 end
redis.call('SET', ARGV[1] .. versions, ARGV[3], 'PX', ARGV[4])
for i = 1, #KEYS do
  if parts[i] ~= '0' then redis.call('EXPIRE', KEYS[i], ARGV[5]) end
end
return 1
"""


class CacheSettings(BaseSettings):
    """Cache settings (env: CACHE_TTL_SECONDS, CACHE_JITTER, CACHE_LOCK_SECONDS)."""

    model_config = SettingsConfigDict(env_prefix="CACHE_", env_file=".env", extra="ignore")

    ttl_seconds: float = 60
    jitter: float = 0.1
    lock_seconds: float = 2
    version_seconds: int = 86400


@dataclass(frozen=True, slots=True)
class CachedBody:
    """A response body, its ETag and how the cache answered."""

    body: bytes
    etag: str
    status: CacheStatus


def etag_for(body: bytes) -> str:
    """A strong ETag from the bytes alone, so every worker computes the same one."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class ResponseCache:
    """Cache-aside over Redis for response bodies.

    Keys (all under `prefix`, all with a TTL): `cache:epoch`, `cache:stamp`,
    `cache:tag:{tag}`, `cache:e:{namespace}:{principal}:{key}:{versions}` and
    `cache:lock:...`.
    """

    def __init__(
        self,
        redis: Redis | None,
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
        self._lock_ms = max(1, int(settings.lock_seconds * 1000))
        self._version_seconds = max(settings.version_seconds, int(settings.ttl_seconds) * 10)
        self._epoch_key = f"{prefix}cache:epoch"
        self._stamp_key = f"{prefix}cache:stamp"
        self._tag_prefix = f"{prefix}cache:tag:"
        self._entry_prefix = f"{prefix}cache:e:"
        self._lock_prefix = f"{prefix}cache:lock:"
        self._lookup_sha = _sha(LOOKUP_SCRIPT)
        self._fill_sha = _sha(FILL_SCRIPT)
        self._circuit = RedisCircuit(circuit_cooldown, on_change=on_circuit_change)
        self._repair_interval = repair_interval
        self._watch = redis_watch(redis)
        self._generation = self._watch.generation if self._watch is not None else 0
        # Until verified, Redis may hold entries from before an outage or a restart.
        self._verified = False
        self._dirty = False
        self._recovery = OneAtATime(self._bump_epoch_if_needed)
        self._repair: asyncio.Task[None] | None = None
        self._flights: dict[str, asyncio.Future[CachedBody]] = {}
        self._lookups: Batcher[tuple[list[str], str], tuple[bytes, bytes | None]] = Batcher(
            self._lookup_batch
        )

    async def aclose(self) -> None:
        """Stop the background repair task, if one is running."""
        if self._repair is not None:
            self._repair.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._repair
            self._repair = None

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
        redis = self.redis
        if (principal is None and not public) or redis is None or not self._circuit.allows():
            return await _bypass(loader)
        stale = not self._verified or self._dirty or self._server_changed()
        if stale and not await self._recover():
            return await _bypass(loader)
        who = "pub" if public else f"u{len(principal or '')}:{principal}"
        base = f"{self._entry_prefix}{namespace}:{who}:{len(key)}:{key}:"
        keys = [self._epoch_key, *(self._tag_prefix + tag for tag in tags)]
        try:
            versions, value = await self._lookups.submit((keys, base))
        except REDIS_ERRORS:
            self._lost_redis()
            return await _bypass(loader)
        if self._server_changed():
            # The answer may come from a restarted server's old snapshot.
            self._dirty = True
            return await _bypass(loader)
        if value:
            return CachedBody(value[ETAG_LENGTH:], value[:ETAG_LENGTH].decode(), "HIT")
        full = base + versions.decode()
        flight = self._flights.get(full)
        if flight is None:
            flight = asyncio.ensure_future(self._fill(redis, keys, base, versions, loader))
            self._flights[full] = flight
            flight.add_done_callback(lambda done: self._landed(full, done))
        # shield: a caller that goes away must not cancel the load the others wait for.
        return await asyncio.shield(flight)

    async def _lookup_batch(
        self, items: list[tuple[list[str], str]]
    ) -> list[tuple[bytes, bytes | None]]:
        """One EVALSHA for every lookup of this loop iteration."""
        redis = self.redis
        assert redis is not None
        keys: list[str] = []
        args: list[str | int] = [len(items)]
        for version_keys, base in items:
            keys += version_keys
            args += (len(version_keys), base)
        reply = await self._script(redis, self._lookup_sha, LOOKUP_SCRIPT, keys, *args)
        return [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]

    def _landed(self, full: str, flight: asyncio.Future[CachedBody]) -> None:
        self._flights.pop(full, None)
        if not flight.cancelled():
            flight.exception()  # retrieved: every waiter may have gone away

    async def _fill(
        self,
        redis: Redis,
        keys: list[str],
        base: str,
        versions: bytes,
        loader: Callable[[], Awaitable[bytes]],
    ) -> CachedBody:
        full = base + versions.decode()
        lock_key = self._lock_prefix + full[len(self._entry_prefix) :]
        token = uuid.uuid4().hex
        try:
            locked = await redis.set(lock_key, token, nx=True, px=self._lock_ms)
            if not locked:
                value = await self._wait_for_entry(redis, full, lock_key)
                if value:
                    return CachedBody(value[ETAG_LENGTH:], value[:ETAG_LENGTH].decode(), "HIT")
                lock_key = token = ""
        except REDIS_ERRORS:
            self._lost_redis()
            return await _bypass(loader)
        try:
            body = await loader()
        except BaseException:
            if lock_key:
                with contextlib.suppress(*REDIS_ERRORS):
                    await redis.delete(lock_key)
            raise
        etag = etag_for(body)
        ttl_ms = self._ttl_ms * (1 - self.settings.jitter * random.random())
        try:
            await self._script(
                redis,
                self._fill_sha,
                FILL_SCRIPT,
                keys,
                base,
                versions,
                etag.encode() + body,
                max(1, int(ttl_ms)),
                self._version_seconds,
                lock_key,
                token,
            )
        except REDIS_ERRORS:
            self._lost_redis()
            return CachedBody(body, etag, "BYPASS")
        return CachedBody(body, etag, "MISS")

    async def _wait_for_entry(self, redis: Redis, full: str, lock_key: str) -> bytes | None:
        # Another process holds the lock and is loading: its entry is moments away.
        for _ in range(max(1, self._lock_ms // 20)):
            await asyncio.sleep(0.02)
            value, lock = await redis.mget(full, lock_key)
            if isinstance(value, bytes) and value:
                return value
            if lock is None:
                return None  # it gave up (or its versions went stale): load ourselves
        return None

    async def invalidate(self, *tags: str) -> None:
        """Bump the version of every tag: entries that embed the old ones are never read again.

        Never raises: when Redis is unusable the write is remembered and the global
        epoch is bumped as soon as Redis answers again.
        """
        redis = self.redis
        if redis is None or not tags:
            return
        if self._circuit.allows():
            try:
                async with redis.pipeline(transaction=False) as pipe:
                    for tag in tags:
                        pipe.incr(self._tag_prefix + tag)
                        pipe.expire(self._tag_prefix + tag, self._version_seconds)
                    await pipe.execute()
                return
            except REDIS_ERRORS:
                self._lost_redis()
        self._dirty = True
        self._schedule_repair()

    async def _script(
        self, redis: Redis, sha: str, script: str, keys: list[str], *args: bytes | str | int
    ) -> list[bytes]:
        try:
            reply: list[bytes] = await redis.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            # SCRIPT FLUSH or a restarted server: EVAL runs it and caches it again.
            reply = await redis.eval(script, len(keys), *keys, *args)
        return reply

    def _server_changed(self) -> bool:
        watch = self._watch
        return watch is not None and watch.generation != self._generation

    def _lost_redis(self) -> None:
        self._dirty = True
        if self._circuit.failed():
            logger.warning("Redis unusable: cache bypassed until it answers again")

    async def _recover(self) -> bool:
        """Bump the epoch when needed before serving from Redis; once per process at a time."""
        return await self._recovery()

    async def _bump_epoch_if_needed(self) -> bool:
        redis = self.redis
        if redis is None:
            return False
        generation = self._watch.generation if self._watch is not None else 0
        dirty = self._dirty or generation != self._generation
        try:
            run_id = await server_run_id(redis)
            # A stamp from another server run means entries restored from a snapshot.
            if dirty or await redis.get(self._stamp_key) != run_id:
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.incr(self._epoch_key)
                    pipe.expire(self._epoch_key, self._version_seconds)
                    pipe.set(self._stamp_key, run_id, ex=self._version_seconds)
                    await pipe.execute()
                logger.info("cache epoch bumped: entries from before are never served")
        except REDIS_ERRORS:
            self._lost_redis()
            return False
        self._generation = generation
        self._verified = True
        if dirty:
            self._dirty = False
        self._circuit.succeeded()
        return True

    def _schedule_repair(self) -> None:
        # Other processes trust Redis as soon as it answers: bump the epoch as soon
        # as possible, not only at this process's next request.
        if self._repair is None or self._repair.done():
            self._repair = asyncio.get_running_loop().create_task(self._repair_loop())

    async def _repair_loop(self) -> None:
        while self._dirty:
            await asyncio.sleep(self._repair_interval)
            await self._recover()


async def _bypass(loader: Callable[[], Awaitable[bytes]]) -> CachedBody:
    body = await loader()
    return CachedBody(body, etag_for(body), "BYPASS")


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


# Responses -------------------------------------------------------------------


def if_none_match(scope: Scope) -> str | None:
    """The request's If-None-Match header, read straight from the ASGI scope."""
    raw: bytes
    for name, raw in scope["headers"]:
        if name == b"if-none-match":
            return raw.decode("latin-1")
    return None


def etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of If-None-Match against our ETag."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


class CachedResponse(Response):
    """A response from a `CachedBody`: X-Cache, ETag, and 304 when If-None-Match matches.

    Headers are assembled as raw bytes: no header parsing on the HIT path. Check
    authorisation before building it: a 304 says the caller may see the body.
    """

    def __init__(
        self,
        cached: CachedBody,
        if_none_match: str | None = None,
        *,
        media_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.background = None
        etag = cached.etag.encode()
        extra = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]
        if etag_matches(if_none_match, cached.etag):
            self.status_code = 304
            self.body = b""
            self.raw_headers = [(b"etag", etag), (b"x-cache", _X_CACHE[cached.status]), *extra]
            return
        self.status_code = 200
        self.body = cached.body
        self.raw_headers = [
            (b"content-type", media_type.encode("latin-1")),
            (b"content-length", str(len(cached.body)).encode()),
            (b"etag", etag),
            (b"x-cache", _X_CACHE[cached.status]),
            *extra,
        ]


_X_CACHE: dict[str, bytes] = {"HIT": b"HIT", "MISS": b"MISS", "BYPASS": b"BYPASS"}


def cache_response(
    cached: CachedBody,
    if_none_match: str | None = None,
    *,
    media_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Build the response for a `CachedBody` (see `CachedResponse`)."""
    return CachedResponse(cached, if_none_match, media_type=media_type, headers=headers)
