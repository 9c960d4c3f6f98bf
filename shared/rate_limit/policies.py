"""Rates, policies and decisions, and the in-process GCRA fallback (week 8: rate limiting)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MICROS = 1_000_000


class RateLimitSettings(BaseSettings):
    """Limits as `<count>/<second|minute|hour|day>` (env: RATE_LIMIT, LOGIN_RATE_LIMIT, ...)."""

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
    count, _, unit = text.strip().partition("/")  # pragma: no mutate (2nd "/" fails anyway)
    period = PERIODS.get(unit.strip().lower())
    if period is None or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"rate must look like '60/minute' (second, minute, hour, day): {text!r}")
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


def ceil_seconds(micros: float) -> int:
    """Microseconds as whole seconds for a header: rounded up, and at least 1."""
    return max(1, math.ceil(micros / MICROS))


class LocalLimiter:
    """The same GCRA in this process's memory: the fallback while Redis is away."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._tats: dict[str, float] = {}
        self._max_keys = max_keys

    def hit(self, keys: Sequence[str], policies: Sequence[Policy]) -> Decision:
        """Check and commit every policy together, like the Lua script."""
        now = time.monotonic_ns() // 1000
        if len(self._tats) > self._max_keys:  # pragma: no mutate (prunes only spent keys)
            self._tats = {k: tat for k, tat in self._tats.items() if tat > now}
        tats = [max(self._tats.get(key, 0.0), now) for key in keys]
        retry = 0.0
        for tat, policy in zip(tats, policies, strict=True):
            period, interval = policy_micros(policy)
            retry = max(retry, tat + interval - period - now)
        allowed = retry <= 0
        states = []
        for key, tat, policy in zip(keys, tats, policies, strict=True):
            period, interval = policy_micros(policy)
            if allowed:
                tat += interval
                self._tats[key] = tat
            remaining = max(0, int((period - (tat - now)) // interval))
            states.append(PolicyState(policy, remaining, ceil_seconds(tat - now)))
        retry_after = 0 if allowed else ceil_seconds(retry)
        return Decision(allowed, retry_after, tuple(states), degraded=True)


def policy_micros(policy: Policy) -> tuple[int, float]:
    """The period and the emission interval (the time one request uses up), in µs.

    The interval is at least 1 µs: a TAT is ~1.7e15 µs, where a double resolves
    only 0.25 µs, so a smaller step would be rounded away and an "unlimited" rate
    (RATE_LIMIT=100000000/minute) would limit nothing. The floor caps a policy at a
    million requests per second per client, which no server reaches.
    """
    period = policy.rate.period_seconds * MICROS
    return period, max(1.0, period / policy.rate.count)
