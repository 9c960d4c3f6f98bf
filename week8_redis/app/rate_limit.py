"""Rate limits (day 4): each client gets a budget of requests per window, kept in Redis.

The budget lives in Redis, not in each process, because a service runs as several
processes (`uvicorn --workers 4`, several machines): a count in each one's memory
would let a client through N times per process. One Lua script counts and checks
in a single step on the server, so even hundreds of concurrent requests from one
client, spread over every process, get exactly N through.

The window is fixed: the first request starts it, N requests fit in it, and it ends
W seconds later. Its known weakness is the edge: N requests at the end of one
window and N at the start of the next put 2N through within moments. (shared/'s
limiter uses GCRA, which spaces requests out evenly instead.)

While Redis is unusable, each process falls back to the same windows in its own
memory: the limits still hold per process, and Redis takes over again by itself.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.security.utils import get_authorization_scheme_param
from redis.asyncio import Redis
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .redis_client import REDIS_ERRORS, CircuitBreaker
from .security import AccessTokens, InvalidToken

PolicyName = Literal["default", "login"]

PERIODS = {"second": 1, "minute": 60, "hour": 3600}

# KEYS[1]: one client's counter for one policy.  ARGV[1]: the window, in milliseconds.
# The window is the key's time to live, so the only clock is Redis's own: every
# process sees the same window whatever its own clock says. Redis runs a script
# alone, start to end, so two requests can never both read "one left".
FIXED_WINDOW = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  -- The window's first request (or a key that somehow has no TTL): it starts now.
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int

    @classmethod
    def parse(cls, text: str) -> "Rate":
        """`60/minute` -> Rate(60, 60); ValueError unless `<count>/<second|minute|hour>`."""
        count, _, period = text.partition("/")
        if not count.isdecimal() or int(count) < 1 or period not in PERIODS:
            raise ValueError(f"expected <count>/<second|minute|hour>, got {text!r}")
        return cls(int(count), PERIODS[period])


@dataclass(frozen=True)
class Policy:
    name: PolicyName
    rate: Rate


@dataclass(frozen=True)
class Decision:
    """One request's verdict, and what the IETF RateLimit headers tell the client."""

    policy: Policy
    allowed: bool
    remaining: int
    reset: int  # whole seconds until the window ends and the budget is full again

    def headers(self) -> dict[str, str]:
        name, rate = self.policy.name, self.policy.rate
        headers = {
            "RateLimit-Policy": f'"{name}";q={rate.count};w={rate.seconds}',
            "RateLimit": f'"{name}";r={self.remaining};t={self.reset}',
        }
        if not self.allowed:
            # Rounded up: after this long the window is over, so the next request passes.
            headers["Retry-After"] = str(self.reset)
        return headers


class MemoryWindows:
    """The same fixed windows, in this process's memory: the stand-in while Redis is down."""

    MAX_CLIENTS = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[int, float]] = {}  # key -> (count, end on the clock)

    def hit(self, key: str, window_ms: int) -> tuple[int, int]:
        """Count one request; return the count so far and the milliseconds left."""
        now = self._clock()
        count, ends = self._windows.get(key, (0, now))
        if ends <= now:
            if len(self._windows) >= self.MAX_CLIENTS:
                self._forget_ended(now)
            count, ends = 0, now + window_ms / 1000
        self._windows[key] = (count + 1, ends)
        return count + 1, math.ceil((ends - now) * 1000)

    def _forget_ended(self, now: float) -> None:
        self._windows = {key: w for key, w in self._windows.items() if w[1] > now}
        if len(self._windows) >= self.MAX_CLIENTS:
            # A flood of distinct clients: forgetting them all beats running out of memory.
            self._windows.clear()


class RateLimiter:
    """Counts requests per client and policy in Redis; in memory while Redis is unusable."""

    def __init__(self, redis: Redis, breaker: CircuitBreaker, prefix: str) -> None:
        self._breaker = breaker
        self._prefix = prefix
        # EVALSHA sends only the script's hash. A Redis that doesn't know it (restarted,
        # SCRIPT FLUSH) answers NOSCRIPT, and the script object loads it and runs it again.
        self._script = redis.register_script(FIXED_WINDOW)
        self._fallback = MemoryWindows()

    async def hit(self, policy: Policy, client: str) -> Decision:
        """Spend one request of `client`'s budget under `policy`."""
        key = f"{self._prefix}rate:{policy.name}:{client}"
        count, ttl_ms = await self._count(key, policy.rate.seconds * 1000)
        return Decision(
            policy,
            allowed=count <= policy.rate.count,
            remaining=max(0, policy.rate.count - count),
            reset=max(1, math.ceil(ttl_ms / 1000)),
        )

    async def _count(self, key: str, window_ms: int) -> tuple[int, int]:
        if self._breaker.ready():
            try:
                count, ttl_ms = await self._script(keys=[key], args=[window_ms])
            except REDIS_ERRORS as exc:
                self._breaker.failed(exc)  # logs the outage, once
            else:
                self._breaker.succeeded()
                return int(count), int(ttl_ms)
        # Fail open, but not wide open: each process still holds every client to the limit.
        return self._fallback.hit(key, window_ms)


TOO_MANY_REQUESTS = {
    "description": "Rate limit exceeded: wait `Retry-After` seconds",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}},
}

# FastAPI's documentation pages: a browser loads several of them per visit.
DOCS_PATHS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def policy_for(method: str, path: str) -> PolicyName | None:
    """Which budget a request spends: None for health checks and the docs."""
    if path.startswith("/health") or path in DOCS_PATHS:
        return None
    if method == "POST" and path == "/auth/token":
        # Its own, small budget: the one route where guessing (passwords) pays off.
        return "login"
    return "default"


def client_address(scope: Scope) -> str:
    """The address uvicorn reports: the peer's, or X-Forwarded-For's when the peer is
    a proxy listed in FORWARDED_ALLOW_IPS. Never the header itself: anyone can send it."""
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


def client_of(scope: Scope, tokens: AccessTokens) -> str:
    """The signed-in user when the request carries a valid token, else the address."""
    authorization = Headers(scope=scope).get("authorization")
    scheme, token = get_authorization_scheme_param(authorization)
    if scheme.lower() == "bearer" and token:
        try:
            return f"user:{tokens.user_id(token)}"
        except InvalidToken:
            pass  # a forged or expired token spends the address's budget
    return client_address(scope)


class RateLimitMiddleware:
    """Plain ASGI: every limited request spends one unit of its client's budget.

    It runs before routing, so 401s, 404s and 422s spend and show the budget too,
    and an over-limit client gets its 429 without the app doing any work.
    """

    def __init__(self, app: ASGIApp, *, default: Rate, login: Rate) -> None:
        self.app = app
        self.policies: dict[PolicyName, Policy] = {
            "default": Policy("default", default),
            "login": Policy("login", login),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = policy_for(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if name is None:
            await self.app(scope, receive, send)
            return

        state = scope["app"].state  # where create_app and its lifespan keep them
        # Logging in is limited per address, token or not: one budget per address,
        # however many accounts its guesses are aimed at.
        client = client_address(scope) if name == "login" else client_of(scope, state.tokens)
        limiter: RateLimiter = state.limiter
        decision = await limiter.hit(self.policies[name], client)
        headers = decision.headers()

        if not decision.allowed:
            response = JSONResponse({"detail": "Rate limit exceeded"}, 429, headers=headers)
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def document_rate_limits(app: FastAPI) -> None:
    """Add the 429 to every limited route in the OpenAPI schema, so the docs tell the truth."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # built once, then cached by FastAPI: adding twice is harmless
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                if policy_for(method.upper(), path):
                    operation["responses"].setdefault("429", TOO_MANY_REQUESTS)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way
