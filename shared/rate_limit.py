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

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis
from redis.exceptions import NoScriptError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .redis import PEEK_STATE, REDIS_ERRORS, Batcher, RedisCircuit

logger = logging.getLogger(__name__)

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MICROS = 1_000_000

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


class RateLimitSettings(BaseSettings):
    """Limits as `<count>/<second|minute|hour>` (env: RATE_LIMIT, LOGIN_RATE_LIMIT, ...)."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    default: str = Field("60/minute", validation_alias="RATE_LIMIT")
    login: str = Field("5/minute", validation_alias="LOGIN_RATE_LIMIT")
    # Per account, whatever the address: rotating addresses buys no extra guesses.
    login_account: str = Field("10/hour", validation_alias="LOGIN_ACCOUNT_RATE_LIMIT")
    signup: str = Field("5/minute", validation_alias="SIGNUP_RATE_LIMIT")
    fail_open: bool = Field(True, validation_alias="RATE_LIMIT_FAIL_OPEN")


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` requests per `period_seconds`."""

    count: int
    period_seconds: int


def parse_rate(text: str) -> Rate:
    """Parse `"60/minute"`; raises ValueError on anything else."""
    count, _, unit = text.strip().partition("/")
    period = PERIODS.get(unit.strip().lower())
    if period is None or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"rate must look like '60/minute' (second, minute, hour): {text!r}")
    return Rate(int(count), period)


@dataclass(frozen=True, slots=True)
class Policy:
    """A named budget; the name shows in the RateLimit headers and the Redis key."""

    name: str
    rate: Rate
    # The header pieces that never change, encoded once rather than on every response.
    policy_item: bytes = field(init=False, repr=False, compare=False)
    quoted_name: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        quoted = f'"{self.name}"'
        # A frozen dataclass sets its own fields through object.__setattr__.
        object.__setattr__(self, "quoted_name", quoted.encode())
        object.__setattr__(
            self,
            "policy_item",
            f"{quoted};q={self.rate.count};w={self.rate.period_seconds}".encode(),
        )


@dataclass(frozen=True, slots=True)
class PolicyState:
    """Where one policy stands after a hit."""

    policy: Policy
    remaining: int
    reset_seconds: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of `RateLimiter.hit`.

    `degraded`: answered by the per-process fallback (Redis unusable).
    `unavailable`: Redis unusable and the route fails closed (answer 503).
    `peeked`: the values of the `peek` keys, read in the same round trip (None when
    Redis did not answer).
    """

    allowed: bool
    retry_after: int
    states: tuple[PolicyState, ...]
    degraded: bool = False
    unavailable: bool = False
    peeked: tuple[bytes | None, ...] | None = None

    def headers(self) -> list[tuple[bytes, bytes]]:
        """`RateLimit-Policy`, `RateLimit` and, when refused, `Retry-After` as ASGI headers."""
        headers: list[tuple[bytes, bytes]] = []
        if not self.states:
            if not self.allowed:
                headers.append((b"retry-after", str(self.retry_after).encode()))
            return headers
        # Built as bytes straight away: ASGI headers are bytes, so no str round trip.
        policy = b", ".join(s.policy.policy_item for s in self.states)
        limit = b", ".join(
            b"%s;r=%d;t=%d" % (s.policy.quoted_name, s.remaining, s.reset_seconds)
            for s in self.states
        )
        headers.append((b"ratelimit-policy", policy))
        headers.append((b"ratelimit", limit))
        if not self.allowed:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        return headers

    def header_dict(self) -> dict[str, str]:
        """The same headers as a dict, for `Response(headers=...)` or `HTTPException`."""
        return {name.decode(): value.decode() for name, value in self.headers()}


def _seconds(micros: float) -> int:
    return max(1, math.ceil(micros / MICROS))


class LocalLimiter:
    """The same GCRA in this process's memory: the fallback while Redis is away."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._tats: dict[str, float] = {}
        self._max_keys = max_keys

    def hit(self, keys: Sequence[str], policies: Sequence[Policy]) -> Decision:
        """Check and commit every policy together, like the Lua script."""
        now = time.monotonic_ns() // 1000
        if len(self._tats) > self._max_keys:
            self._tats = {k: tat for k, tat in self._tats.items() if tat > now}
        tats = [max(self._tats.get(key, 0.0), now) for key in keys]
        retry = 0.0
        for tat, policy in zip(tats, policies, strict=True):
            period, interval = _micros(policy)
            retry = max(retry, tat + interval - period - now)
        allowed = retry <= 0
        states = []
        for key, tat, policy in zip(keys, tats, policies, strict=True):
            period, interval = _micros(policy)
            if allowed:
                tat += interval
                self._tats[key] = tat
            remaining = max(0, int((period - (tat - now)) // interval))
            states.append(PolicyState(policy, remaining, _seconds(tat - now)))
        return Decision(allowed, 0 if allowed else _seconds(retry), tuple(states), degraded=True)


def _micros(policy: Policy) -> tuple[int, float]:
    """The period and the emission interval (the time one request uses up), in µs.

    The interval is at least 1 µs: a TAT is ~1.7e15 µs, where a double resolves
    only 0.25 µs, so a smaller step would be rounded away and an "unlimited" rate
    (RATE_LIMIT=100000000/minute) would limit nothing. The floor caps a policy at a
    million requests per second per client, which no server reaches.
    """
    period = policy.rate.period_seconds * MICROS
    return period, max(1.0, period / policy.rate.count)


# One hit waiting for its batch: its policy keys, its policies, the keys to peek at.
_Hit = tuple[list[str], tuple[Policy, ...], tuple[str, ...]]


class RateLimiter:
    """GCRA over Redis: one EVALSHA per request, however many policies.

    Concurrent hits of one loop iteration share that EVALSHA (`Batcher`): the
    script checks them one after the other, so exactness is unchanged and the
    per-request cost falls with load.

    Keys: `{prefix}rl:{policy}:{identity}`, each with a TTL of the time its budget
    needs to refill. On a Redis error the per-process `LocalLimiter` answers (or,
    failing closed, the decision is `unavailable`); Redis is tried again after
    `circuit_cooldown` seconds.
    """

    def __init__(
        self,
        redis: Redis | None,
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
        self._sha = hashlib.sha1(GCRA_SCRIPT.encode(), usedforsecurity=False).hexdigest()
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
        keys = [f"{self.prefix}rl:{p.name}:{identity}" for p in policies]
        redis = self.redis
        if redis is not None and self._circuit.allows():
            try:
                reply = await self._batcher.submit((keys, policies, tuple(peek)))
            except REDIS_ERRORS as exc:
                if self._circuit.failed():
                    logger.warning("Redis unusable, rate limits fall back to this process: %r", exc)
            else:
                if self._circuit.down and self._circuit.succeeded():
                    logger.info("Redis is back: rate limits shared again")
                return self._decision(reply, policies)
        if fail_open if fail_open is not None else self.fail_open:
            return self.local.hit(keys, policies)
        return Decision(False, 1, (), unavailable=True)

    async def _run_batch(self, items: list[_Hit]) -> list[list[Any]]:
        """One EVALSHA for every hit of this loop iteration, checked in order."""
        redis = self.redis
        assert redis is not None
        keys: list[str] = []
        args: list[int | float] = [len(items)]
        for policy_keys, policies, peek in items:
            per_policy = self._args.get(policies)
            if per_policy is None:
                per_policy = [n for p in policies for n in _micros(p)]
                self._args[policies] = per_policy
            args += (len(policies), len(peek), *per_policy)
            keys += policy_keys
            keys += peek
        try:
            reply: list[Any] = await redis.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            # SCRIPT FLUSH or a restarted server: EVAL runs it and caches it again.
            reply = await redis.eval(GCRA_SCRIPT, len(keys), *keys, *args)
        results = []
        start = 0
        for _, policies, peek in items:
            end = start + 2 + 2 * len(policies) + len(peek)
            results.append(reply[start:end])
            start = end
        return results

    @staticmethod
    def _decision(reply: list[Any], policies: tuple[Policy, ...]) -> Decision:
        allowed = reply[0] == 1
        states = tuple(
            # max(0, …): a header must never show a negative budget, whatever Redis sent.
            PolicyState(p, max(0, int(reply[2 * i + 2])), _seconds(int(reply[2 * i + 3])))
            for i, p in enumerate(policies)
        )
        peeked = tuple(reply[2 + 2 * len(policies) :])
        return Decision(allowed, 0 if allowed else _seconds(int(reply[1])), states, peeked=peeked)


# ASGI glue -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteLimit:
    """The policies of one kind of request.

    `by_address`: key on the client address even for a signed-in caller (login).
    `fail_open`: None keeps the limiter's default.
    """

    policies: tuple[Policy, ...]
    by_address: bool = False
    fail_open: bool | None = None


def client_address(scope: Scope) -> str:
    """The client address as the server reports it (`scope["client"]`).

    Never X-Forwarded-For: uvicorn rewrites `client` from proxy headers only for
    the proxies listed in FORWARDED_ALLOW_IPS, which is the only safe place to do it.
    """
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def json_error(status: int, detail: str, scope: Scope) -> tuple[bytes, bytes]:
    """`{"detail": ...}` as (content type, body)."""
    return b"application/json", json.dumps({"detail": detail}).encode()


ErrorRenderer = Callable[[int, str, Scope], tuple[bytes, bytes]]


def app_state_limiter(scope: Scope) -> RateLimiter | None:
    """The `RateLimiter` at `app.state.limiter` (or in the lifespan state as `limiter`)."""
    app = scope.get("app")
    limiter = getattr(getattr(app, "state", None), "limiter", None)
    if limiter is None:
        limiter = scope.get("state", {}).get("limiter")
    return limiter if isinstance(limiter, RateLimiter) else None


class RateLimitMiddleware:
    """Plain ASGI middleware: limits each request before the app sees it.

    `route_limit(scope)` says which policies apply (None: not limited). The identity
    is `user:<principal(scope)>` when that returns one, else `ip:<client address>`.
    Every response of a limited route carries the RateLimit headers; a refused
    request gets 429 with Retry-After (or 503 when failing closed without Redis).
    `peek(scope)` names keys to read in the same round trip; their values land in
    `scope["state"]["redis_peek"]` (e.g. `TokenService.peek_keys`, so the
    revocation check costs no round trip of its own).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        route_limit: Callable[[Scope], RouteLimit | None],
        limiter: Callable[[Scope], RateLimiter | None] = app_state_limiter,
        principal: Callable[[Scope], str | None] | None = None,
        render_error: ErrorRenderer = json_error,
        peek: Callable[[Scope], Sequence[str]] | None = None,
        on_decision: Callable[[Decision], None] | None = None,
    ) -> None:
        self.app = app
        self.route_limit = route_limit
        self.limiter = limiter
        self.principal = principal
        self.render_error = render_error
        self.peek = peek
        # Told every decision (metrics: allowed, limited, answered by the fallback).
        self.on_decision = on_decision

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.route_limit(scope)
        limiter = self.limiter(scope) if rule is not None else None
        if rule is None or limiter is None:
            await self.app(scope, receive, send)
            return
        who = None if rule.by_address or self.principal is None else self.principal(scope)
        identity = f"user:{who}" if who else f"ip:{client_address(scope)}"
        peek = self.peek(scope) if self.peek is not None else ()
        decision = await limiter.hit(identity, rule.policies, fail_open=rule.fail_open, peek=peek)
        if self.on_decision is not None:
            self.on_decision(decision)
        if peek and decision.peeked is not None:
            scope.setdefault("state", {})[PEEK_STATE] = dict(
                zip(peek, decision.peeked, strict=True)
            )
        headers = decision.headers()
        if not decision.allowed:
            if decision.unavailable:
                status, detail = 503, "Rate limiting is unavailable"
            else:
                status, detail = 429, "Rate limit exceeded"
            content_type, body = self.render_error(status, detail, scope)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", content_type),
                        (b"content-length", str(len(body)).encode()),
                        *headers,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
