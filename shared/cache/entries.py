"""Versioned cache entries in Redis: the key scheme, the Lua scripts, the cross-process lock.

Every entry key embeds the current version of each of its tags and of a global
epoch, read in the same script as the value; a write bumps the versions with
INCR. A reader that loaded old data before a write can only store it under the
old versions, which nobody reads any more. Every call here may raise a Redis
error: `ResponseCache` decides what an error means.

Keys (all under `prefix`, all with a TTL): `cache:epoch`, `cache:stamp`,
`cache:tag:{tag}`, `cache:e:{namespace}:{principal}:{key}:{versions}` and
`cache:lock:...`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

logger = logging.getLogger(__package__)

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
# KEYS[1]: a load lock.  ARGV[1]: the token its taker holds. Deletes it only if it
# is still theirs: a loader slower than the lock's lifetime must not free another's.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
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


@dataclass(frozen=True, slots=True)
class CachedBody:
    """A response body, its ETag and how the cache answered."""

    body: bytes
    etag: str
    status: CacheStatus


def etag_for(body: bytes) -> str:
    """A strong ETag from the bytes alone, so every worker computes the same one."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def stored_body(value: bytes) -> CachedBody:
    """A HIT from a stored value: the ETag, then the body."""
    return CachedBody(value[ETAG_LENGTH:], value[:ETAG_LENGTH].decode(), "HIT")


# A lookup: the version keys (the epoch, then the tags) and the entry key without versions.
Lookup = tuple[list[str], str]


class VersionedEntries:
    """Reads and writes entries under the versions of their tags."""

    def __init__(
        self, redis: Redis, prefix: str, *, lock_seconds: float, version_seconds: int
    ) -> None:
        self.redis = redis
        self.version_seconds = version_seconds
        self._lock_ms = max(1, int(lock_seconds * 1000))
        self._epoch_key = f"{prefix}cache:epoch"
        self._stamp_key = f"{prefix}cache:stamp"
        self._tag_prefix = f"{prefix}cache:tag:"
        self.entry_prefix = f"{prefix}cache:e:"
        self._lock_prefix = f"{prefix}cache:lock:"
        self._lookup_script = redis.register_script(LOOKUP_SCRIPT)
        self._fill_script = redis.register_script(FILL_SCRIPT)
        self._release_script = redis.register_script(RELEASE_SCRIPT)

    def lookup_for(
        self, namespace: str, principal: str | None, key: str, tags: Sequence[str]
    ) -> Lookup:
        """The keys of one lookup; `principal` None means a public entry."""
        who = "pub" if principal is None else f"u{len(principal)}:{principal}"
        base = f"{self.entry_prefix}{namespace}:{who}:{len(key)}:{key}:"
        return [self._epoch_key, *(self._tag_prefix + tag for tag in tags)], base

    async def lookup_batch(self, items: list[Lookup]) -> list[tuple[bytes, bytes | None]]:
        """Per lookup, the versions seen and the entry under them: one EVALSHA for all."""
        keys: list[str] = []
        args: list[str | int] = [len(items)]
        for version_keys, base in items:
            keys += version_keys
            args += (len(version_keys), base)
        reply: list[Any] = await self._lookup_script(keys=keys, args=args)
        return [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]

    async def lock(self, full: str) -> tuple[str, str] | None:
        """Take the cross-process load lock of an entry: (key, token), or None when held."""
        lock_key = self._lock_prefix + full[len(self.entry_prefix) :]
        token = uuid.uuid4().hex
        locked = await self.redis.set(lock_key, token, nx=True, px=self._lock_ms)
        return (lock_key, token) if locked else None

    async def wait_for(self, full: str) -> bytes | None:
        """The entry another process is loading, or None when it gave up."""
        lock_key = self._lock_prefix + full[len(self.entry_prefix) :]
        for _ in range(max(1, self._lock_ms // 20)):
            await asyncio.sleep(0.02)
            value, lock = await self.redis.mget(full, lock_key)
            if isinstance(value, bytes) and value:
                return value
            if lock is None:
                return None  # it gave up (or its versions went stale): load ourselves
        return None

    async def fill(
        self,
        lookup: Lookup,
        versions: bytes,
        cached: CachedBody,
        ttl_ms: float,
        lock: tuple[str, str] | None,
    ) -> None:
        """Store an entry if its versions are still `versions`, and release the lock."""
        lock_key, token = lock or ("", "")
        await self._fill_script(
            keys=lookup[0],
            args=[
                lookup[1],
                versions,
                cached.etag.encode() + cached.body,
                max(1, int(ttl_ms)),
                self.version_seconds,
                lock_key,
                token,
            ],
        )

    async def release(self, lock: tuple[str, str] | None) -> None:
        """Give up the load lock (the loader failed), so others load at once."""
        if lock is not None:
            await self._release_script(keys=[lock[0]], args=[lock[1]])

    async def invalidate(self, tags: Sequence[str]) -> None:
        """Bump the version of every tag, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.incr(self._tag_prefix + tag)
                pipe.expire(self._tag_prefix + tag, self.version_seconds)
            await pipe.execute()

    async def bump_epoch(
        self, redis: Redis, run_id: bytes, *, dirty: bool, server_changed: bool
    ) -> None:
        """Bump the epoch when an entry from before may be wrong now (a `RedisRecovery` repair)."""
        # A stamp from another server run means entries restored from a snapshot.
        if dirty or server_changed or await redis.get(self._stamp_key) != run_id:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.incr(self._epoch_key)
                pipe.expire(self._epoch_key, self.version_seconds)
                pipe.set(self._stamp_key, run_id, ex=self.version_seconds)
                await pipe.execute()
            logger.info("cache epoch bumped: entries from before are never served")


async def load_bypassing(loader: Callable[[], Awaitable[bytes]]) -> CachedBody:
    """The loader's body, not cached."""
    body = await loader()
    return CachedBody(body, etag_for(body), "BYPASS")
