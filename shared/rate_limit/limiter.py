"""GCRA rate limits in one Redis round trip (week 8: rate limiting).

Why GCRA rather than a fixed window: a fixed window lets 2N requests through
around a window edge (N at 0:59, N at 1:00) and needs two keys or a race-prone
INCR + EXPIRE; GCRA keeps one timestamp per client ("theoretical arrival time"),
spaces requests evenly with a burst of up to N, and is exact under any
concurrency because the whole check-and-commit is one Lua script. The script
reads the clock with Redis `TIME`, so application servers with skewed clocks
still agree.

Several policies are checked and committed together: a request either counts
against every policy or against none. When Redis is unusable the limiter falls
back to the same algorithm in this process's memory (fail open, the default) or
refuses (fail closed: 503), and goes back to Redis on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..redis import (
    REDIS_ERRORS,
    AnyRedis,
    Batcher,
    RedisCircuit,
    hash_tag,
    is_cluster,
    key_slot,
    same_slot,
)
from .policies import Decision, LocalLimiter, Policy, PolicyState, ceil_seconds, policy_micros

# The package's name: operators filter on "shared.rate_limit".
logger = logging.getLogger(__package__)

# Checks a batch of requests in order, each against all of its policies.
# ARGV[1]: the number of requests; then per request: its number of policies, its
# number of keys to peek at, and per policy the period and emission interval (µs).
# KEYS: per request its policy keys, then its peek keys.
# Returns, per request: allowed, retry_after_us, per policy remaining and reset_us,
# then the peeked values (a caller's other reads riding on the same round trip).
GCRA_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local out = {}
local k = 0
local p = 2
for r = 1, tonumber(ARGV[1]) do
  local np = tonumber(ARGV[p])
  local npeek = tonumber(ARGV[p + 1])
  p = p + 2
  local tats = {}
  local allowed = 1
  local retry = 0
  for i = 1, np do
    local period = tonumber(ARGV[p + 2 * i - 2])
    local interval = tonumber(ARGV[p + 2 * i - 1])
    local tat = tonumber(redis.call('GET', KEYS[k + i]) or '0')
    if tat < now then tat = now end
    tats[i] = tat
    local allow_at = tat + interval - period
    if allow_at > now then
      allowed = 0
      if allow_at - now > retry then retry = allow_at - now end
    end
  end
  out[#out + 1] = allowed
  out[#out + 1] = retry
  for i = 1, np do
    local period = tonumber(ARGV[p + 2 * i - 2])
    local interval = tonumber(ARGV[p + 2 * i - 1])
    local tat = tats[i]
    if allowed == 1 then
      tat = tat + interval
      redis.call('SET', KEYS[k + i], string.format('%.17g', tat), 'PX',
        math.max(1, math.ceil((tat - now) / 1000)))
    end
    local remaining = math.floor((period - (tat - now)) / interval)
    if remaining < 0 then remaining = 0 end
    out[#out + 1] = remaining
    out[#out + 1] = tat - now
  end
  for j = 1, npeek do
    out[#out + 1] = redis.call('GET', KEYS[k + np + j])
  end
  k = k + np + npeek
  p = p + 2 * np
end
return out
"""


# One hit waiting for its batch: its policy keys, its policies, the keys to peek at.
_Hit = tuple[list[str], tuple[Policy, ...], tuple[str, ...]]


class RateLimiter:
    """GCRA over Redis: one EVALSHA per request, however many policies.

    Concurrent hits of one loop iteration share that EVALSHA (`Batcher`): the
    script checks them one after the other, so exactness is unchanged and the
    per-request cost falls with load.

    Keys: `{prefix}rl:{identity}:{policy}`, the identity as the hash tag, so one
    client's policies share a cluster slot; each with a TTL of the time its budget
    needs to refill. On a cluster a batch goes out as one EVALSHA per slot, side by
    side, and keys to peek at ride along only when they share the client's slot.
    On a Redis error the per-process `LocalLimiter` answers (or,
    failing closed, the decision is `unavailable`); Redis is tried again after
    `circuit_cooldown` seconds.
    """

    def __init__(
        self,
        redis: AnyRedis | None,
        prefix: str,
        *,
        fail_open: bool = True,
        circuit_cooldown: float = 1.0,
        on_circuit_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.fail_open = fail_open
        self.local = LocalLimiter()
        self._circuit = RedisCircuit(circuit_cooldown, on_change=on_circuit_change)
        self._script = redis.register_script(GCRA_SCRIPT) if redis is not None else None
        self._cluster = is_cluster(redis)
        self._batcher: Batcher[_Hit, list[Any]] = Batcher(self._run_batch)
        self._args: dict[tuple[Policy, ...], list[int | float]] = {}

    async def hit(
        self,
        identity: str,
        policies: Sequence[Policy],
        *,
        fail_open: bool | None = None,
        peek: Sequence[str] = (),
    ) -> Decision:
        """Count one request of `identity` against every policy, or against none.

        `peek`: other keys to GET in the same round trip (see `Decision.peeked`).
        """
        policies = tuple(policies)
        tag = hash_tag(identity)
        keys = [f"{self.prefix}rl:{tag}:{p.name}" for p in policies]
        peek = tuple(peek)
        # Not mutated: keys[:2] or keys[:] would be the same, one identity's keys share a slot.
        if self._cluster and peek and not same_slot([*keys[:1], *peek]):  # pragma: no mutate
            peek = ()  # the reader reads them itself: a script can't reach another slot
        redis = self.redis
        if redis is not None and self._circuit.allows():
            try:
                reply = await self._batcher.submit((keys, policies, peek))
            except REDIS_ERRORS as exc:
                if self._circuit.failed():
                    logger.warning("Redis unusable, rate limits fall back to this process: %r", exc)
            else:
                if self._circuit.down and self._circuit.succeeded():
                    logger.info("Redis is back: rate limits shared again")
                return self._decision(reply, policies, peeking=bool(peek))
        if fail_open if fail_open is not None else self.fail_open:
            return self.local.hit(keys, policies)
        return Decision(False, 1, (), unavailable=True)

    async def _run_batch(self, items: list[_Hit]) -> list[list[Any]]:
        """One EVALSHA for every hit of this loop iteration (on a cluster, one per slot)."""
        if not self._cluster:
            return await self._run_slot(items)
        by_slot: dict[int, list[int]] = {}
        for i, (keys, _, _) in enumerate(items):
            by_slot.setdefault(key_slot(keys[0].encode()), []).append(i)
        groups = list(by_slot.values())
        replies = await asyncio.gather(*(self._run_slot([items[i] for i in g]) for g in groups))
        results: list[list[Any]] = [[] for _ in items]
        for group, reply in zip(groups, replies, strict=True):  # pragma: no mutate (same length)
            for i, result in zip(group, reply, strict=True):  # pragma: no mutate (same length)
                results[i] = result
        return results

    async def _run_slot(self, items: list[_Hit]) -> list[list[Any]]:
        """One EVALSHA checking `items` in order; on a cluster they share one slot."""
        script = self._script
        assert script is not None
        keys: list[str] = []
        args: list[int | float] = [len(items)]
        for policy_keys, policies, peek in items:
            per_policy = self._args.get(policies)  # pragma: no mutate (a memo: only speed)
            if per_policy is None:
                per_policy = [n for p in policies for n in policy_micros(p)]
                self._args[policies] = per_policy  # pragma: no mutate (a memo: only speed)
            args += (len(policies), len(peek), *per_policy)
            keys += policy_keys
            keys += peek
        # EVALSHA; after SCRIPT FLUSH or a restart, SCRIPT LOAD and EVALSHA again.
        reply: list[Any] = await script(keys=keys, args=args)
        results = []
        start = 0
        for _, policies, peek in items:
            end = start + 2 + 2 * len(policies) + len(peek)
            results.append(reply[start:end])
            start = end
        return results

    @staticmethod
    def _decision(reply: list[Any], policies: tuple[Policy, ...], *, peeking: bool) -> Decision:
        allowed = reply[0] == 1
        states = tuple(
            # max(0, …): a header must never show a negative budget, whatever Redis sent.
            PolicyState(p, max(0, int(reply[2 * i + 2])), ceil_seconds(int(reply[2 * i + 3])))
            for i, p in enumerate(policies)
        )
        # None when nothing was peeked: the reader then does its own read.
        peeked = tuple(reply[2 + 2 * len(policies) :]) if peeking else None
        retry_after = 0 if allowed else ceil_seconds(int(reply[1]))
        return Decision(allowed, retry_after, states, peeked=peeked)
