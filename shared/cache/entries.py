"""Versioned cache entries in Redis: the key scheme, the Lua scripts, the cross-process lock.

Every entry is stored with the versions it was loaded under: a global epoch and
one version per tag, read in the same script as the value. A write bumps its
tags' versions with INCR, so an entry stored under older versions is never served
again, and a reader that loaded old data before a write can't store it: the fill
script refuses versions that moved. Every call here may raise a Redis error:
`ResponseCache` decides what an error means.

Keys (all under `prefix`, all with a TTL), with the entry's first tag as hash tag
so that one lookup or fill touches one cluster slot:

    cache:epoch                                     (and cache:stamp)
    cache:tag:{user:42}                             a tag's version
    cache:e:{user:42}:users:one:pub:2:42            the entry: "<versions>|<etag><body>"
    cache:lock:{user:42}:users:one:pub:2:42         its load lock

On one server the epoch and every tag are read inside the lookup script. On a
cluster the script reads what shares the entry's slot (its first tag); the epoch
and any other tag live in other slots and are read by an MGET sent beside the
scripts: more commands, but no more waiting than one round trip.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio.cluster import RedisCluster

from ..redis import AnyRedis, hash_tag, is_cluster, key_slot

logger = logging.getLogger(__package__)

CacheStatus = Literal["HIT", "MISS", "BYPASS"]
ETAG_LENGTH = 34  # '"' + 32 hex digits + '"'

# Looks up a batch of entries: per lookup, the versions of its version keys and
# the entry's stored value. ARGV[1]: the number of lookups; then per lookup its
# number of version keys. KEYS: per lookup its version keys, then its entry key.
# Returns, per lookup, versions and value (or false): one round trip, however many
# GETs run at once. Whether the value was stored under these versions is checked
# by the caller, which may add the epoch read elsewhere.
LOOKUP_SCRIPT = """
local out = {}
local k = 0
for r = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[r + 1])
  local parts = {}
  for i = 1, n do parts[i] = redis.call('GET', KEYS[k + i]) or '0' end
  out[#out + 1] = table.concat(parts, '.')
  out[#out + 1] = redis.call('GET', KEYS[k + n + 1])
  k = k + n + 1
end
return out
"""

# KEYS[1]: a load lock.  ARGV[1]: the token its taker holds. Deletes it only if it
# is still theirs: a loader slower than the lock's lifetime must not free another's.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Stores the entry only if the versions are still those the loader started from,
# releases the loader's lock, and extends the version keys so they outlive every
# entry stored under them.
# KEYS: the version keys, then the entry key, then the lock key.
# ARGV: versions seen, value (versions, "|", etag, body), ttl ms, version ttl s,
# lock token ('' when the loader holds no lock).
FILL_SCRIPT = """
local n = #KEYS - 2
if ARGV[5] ~= '' and redis.call('GET', KEYS[n + 2]) == ARGV[5] then
  redis.call('DEL', KEYS[n + 2])
end
local parts = {}
for i = 1, n do parts[i] = redis.call('GET', KEYS[i]) or '0' end
if table.concat(parts, '.') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[n + 1], ARGV[2], 'PX', ARGV[3])
for i = 1, n do
  if parts[i] ~= '0' then redis.call('EXPIRE', KEYS[i], ARGV[4]) end
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


@dataclass(frozen=True, slots=True)
class Lookup:
    """The keys of one entry.

    `version_keys` are read in the lookup script, so they share the entry's slot;
    `outside` (on a cluster: the epoch and tags of other slots) are read beside it.
    """

    version_keys: list[str]
    key: str
    outside: tuple[str, ...] = ()


class VersionedEntries:
    """Reads and writes entries under the versions of their tags."""

    def __init__(
        self, redis: AnyRedis, prefix: str, *, lock_seconds: float, version_seconds: int
    ) -> None:
        self.redis = redis
        self.version_seconds = version_seconds
        self._lock_ms = max(1, int(lock_seconds * 1000))
        self.cluster = is_cluster(redis)
        self.epoch_key = f"{prefix}cache:epoch"
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
        group = hash_tag(tags[0] if tags else namespace)
        entry = f"{self.entry_prefix}{group}:{namespace}:{who}:{len(key)}:{key}"
        version_keys = [self._tag_prefix + hash_tag(tag) for tag in tags]
        if not self.cluster:
            return Lookup([self.epoch_key, *version_keys], entry)
        slot = key_slot(entry.encode())
        inside = [k for k in version_keys if key_slot(k.encode()) == slot]
        outside = [k for k in version_keys if key_slot(k.encode()) != slot]
        return Lookup(inside, entry, (self.epoch_key, *outside))

    async def lookup_batch(self, items: list[Lookup]) -> list[tuple[bytes, bytes | None]]:
        """Per lookup, the versions now and the entry if stored under them.

        One EVALSHA for all on one server. On a cluster one per slot, side by side
        with one MGET (split per slot by redis-py) of the keys outside each entry's
        slot: the epoch, and the tags an entry shares with others.
        """
        if not self.cluster:
            pairs = await self._lookup_slot(items)
            return [(versions, self._body(versions, value)) for versions, value in pairs]
        by_slot: dict[int, list[int]] = {}
        for i, lookup in enumerate(items):
            by_slot.setdefault(key_slot(lookup.key.encode()), []).append(i)
        groups = list(by_slot.values())
        outside = list(dict.fromkeys(key for lookup in items for key in lookup.outside))
        values, replies = await asyncio.gather(
            self._read(outside),
            asyncio.gather(*(self._lookup_slot([items[i] for i in group]) for group in groups)),
        )
        # Not mutated: every zip below pairs lists of one length, and every slot of
        # `results` is set in the loop, so neither `strict` nor the placeholder is ever seen.
        now = dict(zip(outside, values, strict=True))  # pragma: no mutate
        results: list[tuple[bytes, bytes | None]] = [(b"", None)] * len(items)  # pragma: no mutate
        for group, reply in zip(groups, replies, strict=True):  # pragma: no mutate
            for i, (inside, value) in zip(group, reply, strict=True):  # pragma: no mutate
                # The keys read beside, then "/", then those read in the script: the
                # fill script checks the part after "/" (see `fill`).
                head = b".".join(now[key] or b"0" for key in items[i].outside)
                versions = head + b"/" + inside
                results[i] = versions, self._body(versions, value)
        return results

    async def _read(self, keys: list[str]) -> list[bytes | None]:
        assert isinstance(self.redis, RedisCluster)
        values: list[Any] = await self.redis.mget_nonatomic(keys)
        return values

    async def _lookup_slot(self, items: list[Lookup]) -> list[tuple[bytes, bytes | None]]:
        """One EVALSHA: per lookup, the versions of its keys and the raw stored value."""
        keys: list[str] = []
        args: list[int] = [len(items)]
        for lookup in items:
            keys += lookup.version_keys
            keys.append(lookup.key)
            args.append(len(lookup.version_keys))
        reply: list[Any] = await self._lookup_script(keys=keys, args=args)
        return [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]

    @staticmethod
    def _body(versions: bytes, value: bytes | None) -> bytes | None:
        """The stored etag and body when `value` was stored under `versions`, else None."""
        cut = len(versions)
        if not value or value[cut : cut + 1] != b"|" or not value.startswith(versions):
            return None
        return value[cut + 1 :]

    async def lock(self, key: str) -> tuple[str, str] | None:
        """Take the cross-process load lock of an entry: (key, token), or None when held."""
        lock_key = self._lock_prefix + key[len(self.entry_prefix) :]
        token = uuid.uuid4().hex
        locked = await self.redis.set(lock_key, token, nx=True, px=self._lock_ms)
        return (lock_key, token) if locked else None

    async def wait_for(self, key: str, versions: bytes) -> bytes | None:
        """The entry another process is loading under `versions`, or None when it gave up."""
        lock_key = self._lock_prefix + key[len(self.entry_prefix) :]
        for _ in range(max(1, self._lock_ms // 20)):
            await asyncio.sleep(0.02)
            reply: list[Any] = await self.redis.mget(key, lock_key)  # one slot: same hash tag
            value, lock = reply
            body = self._body(versions, value)
            if body:
                return body
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
        lock_key, token = lock or (self._lock_prefix + lookup.key[len(self.entry_prefix) :], "")
        # On a cluster the keys read beside the script head `versions` and are not
        # checked here: an entry stored as one of them moves carries the old value in
        # its versions, so a lookup never serves it.
        seen = versions.partition(b"/")[2] if self.cluster else versions
        await self._fill_script(
            keys=[*lookup.version_keys, lookup.key, lock_key],
            args=[
                seen,
                versions + b"|" + cached.etag.encode() + cached.body,
                max(1, int(ttl_ms)),
                self.version_seconds,
                token,
            ],
        )

    async def release(self, lock: tuple[str, str] | None) -> None:
        """Give up the load lock (the loader failed), so others load at once."""
        if lock is not None:
            await self._release_script(keys=[lock[0]], args=[lock[1]])

    async def invalidate(self, tags: Sequence[str]) -> None:
        """Bump the version of every tag, in one round trip (one per node on a cluster)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for tag in tags:
                key = self._tag_prefix + hash_tag(tag)
                pipe.incr(key)
                pipe.expire(key, self.version_seconds)
            await pipe.execute()

    async def bump_epoch(
        self, redis: AnyRedis, run_id: bytes, *, dirty: bool, server_changed: bool
    ) -> None:
        """Bump the epoch when an entry from before may be wrong now (a `RedisRecovery` repair)."""
        # A stamp from another server run means entries restored from a snapshot.
        if dirty or server_changed or await redis.get(self._stamp_key) != run_id:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.incr(self.epoch_key)
                pipe.expire(self.epoch_key, self.version_seconds)
                pipe.set(self._stamp_key, run_id, ex=self.version_seconds)
                await pipe.execute()
            logger.info("cache epoch bumped: entries from before are never served")


async def load_bypassing(loader: Callable[[], Awaitable[bytes]]) -> CachedBody:
    """The loader's body, not cached."""
    body = await loader()
    return CachedBody(body, etag_for(body), "BYPASS")
