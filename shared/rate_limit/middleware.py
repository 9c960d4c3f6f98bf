"""The rate limit as plain ASGI middleware: headers, 429 and 503 (week 8: rate limiting)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..redis import keep_peeked
from .limiter import RateLimiter
from .policies import Decision, Policy


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
    `peek(scope)` names keys to read in the same round trip, for a module that
    takes their values with `shared.redis.peeked` (a `shared.redis.PeekSource`'s
    `peek_keys`, e.g. `TokenService.peek_keys`: the revocation check then costs no
    round trip of its own).
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
            keep_peeked(scope, peek, decision.peeked)
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
