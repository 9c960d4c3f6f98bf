"""Rate limits (day 4): each client gets a budget of requests per window, counted in Redis.

In Redis, not in each process: with `--workers 2`, a count in each one's memory would
let a client through N times per process. One Lua script counts and checks in a single
step on the server, so even a burst of concurrent requests gets exactly N through.

The window is fixed: the first request starts it, and it ends W seconds later. Its
weakness is the edge: N requests at the end of one window and N at the start of the
next put 2N through within moments.

When Redis can't answer, requests go through uncounted: for a while, an API without
limits beats an API that is down.
"""

import math
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.security.utils import get_authorization_scheme_param
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .security import AccessTokens, InvalidToken

PERIODS = {"second": 1, "minute": 60, "hour": 3600}

# KEYS[1]: one client's counter for one policy.  ARGV[1]: the window, in milliseconds.
# The window is the key's time to live, so the only clock is Redis's own. Redis runs a
# script alone, start to end, so two requests never both read "one left", and no
# counter is ever left without its TTL.
FIXED_WINDOW = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
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
        count, _, period = text.partition("/")  # pragma: no mutate (rpartition rejects the same)
        if not count.isdecimal() or int(count) < 1 or period not in PERIODS:
            raise ValueError(f"expected <count>/<second|minute|hour>, got {text!r}")
        return cls(int(count), PERIODS[period])


class RateLimiter:
    """Counts each client's requests in Redis: one script call per request."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._prefix = prefix
        # EVALSHA sends only the script's hash. A Redis that doesn't know it (restarted,
        # SCRIPT FLUSH) answers NOSCRIPT, and the script object loads it and runs it again.
        self._script = redis.register_script(FIXED_WINDOW)

    async def hit(self, policy: str, rate: Rate, client: str) -> tuple[int, int]:
        """Spend one request: the window's count so far, and the whole seconds left in it."""
        key = f"{self._prefix}rate:{policy}:{client}"
        count, ttl_ms = await self._script(keys=[key], args=[rate.seconds * 1000])
        return int(count), max(1, math.ceil(int(ttl_ms) / 1000))


TOO_MANY_REQUESTS = {
    "description": "Rate limit exceeded: wait `Retry-After` seconds",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}},
    "headers": {
        "Retry-After": {
            "description": "Whole seconds to wait: then the next request passes.",
            "schema": {"type": "integer"},
        }
    },
}
# As the OpenAPI file describes the headers of a response.
RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": {
        "description": 'The budget: "default";q=60;w=60 is 60 requests per 60 seconds.',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'What is left of it: "default";r=59;t=42 is 59 more, for 42 seconds.',
        "schema": {"type": "string"},
    },
}

# FastAPI's documentation pages: a browser loads several of them (and /docs/...) per visit.
DOCS_PAGES = {"/docs", "/redoc", "/openapi.json"}


def policy_for(method: str, path: str) -> str | None:
    """Which budget a request spends: None for health checks and the docs."""
    if path.startswith(("/health", "/docs/")) or path in DOCS_PAGES:
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
    authorization = Headers(scope=scope).get("authorization")  # pragma: no mutate (any case)
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
        self.rates = {"default": default, "login": login}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = policy_for(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if policy is None:
            await self.app(scope, receive, send)
            return

        state = scope["app"].state  # where create_app and its lifespan keep them
        # Logging in is limited per address, token or not: one budget per address,
        # however many accounts its guesses are aimed at.
        client = client_address(scope) if policy == "login" else client_of(scope, state.tokens)
        rate = self.rates[policy]
        limiter: RateLimiter = state.limiter
        try:
            count, reset = await limiter.hit(policy, rate, client)
        except RedisError:
            await self.app(scope, receive, send)  # nothing to count with: let it through
            return

        headers = {
            "RateLimit-Policy": f'"{policy}";q={rate.count};w={rate.seconds}',
            "RateLimit": f'"{policy}";r={max(0, rate.count - count)};t={reset}',
        }
        if count > rate.count:
            # Rounded up: after this long the window is over, so the next request passes.
            headers["Retry-After"] = str(reset)  # pragma: no mutate (header case)
            response = JSONResponse({"detail": "Rate limit exceeded"}, 429, headers=headers)
            await response(scope, receive, send)  # pragma: no mutate (receive unused)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def document_rate_limits(app: FastAPI) -> None:
    """Add the 429 and the RateLimit headers to every limited route in the OpenAPI schema,
    so the docs tell the truth."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # built once, then cached by FastAPI: adding twice is harmless
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                if not policy_for(method.upper(), path):  # pragma: no mutate (path decides)
                    continue  # pragma: no mutate (all of a path's methods alike)
                responses = operation["responses"]
                responses.setdefault("429", TOO_MANY_REQUESTS)
                for status, response in responses.items():
                    # A new dict each time: a route's own headers may be a shared constant.
                    headers = {**response.get("headers", {}), **RATE_LIMIT_HEADERS}
                    responses[status] = {**response, "headers": headers}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way
