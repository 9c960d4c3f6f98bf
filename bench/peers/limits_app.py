"""Peer for P3: /hello rate-limited with `limits` and its async Redis storage.

What a careful user of `limits` 5 writes: the asyncio storage on redis-py
(`implementation="redispy"`, so no thread is blocked), the strategy from
LIMITS_STRATEGY (`moving-window` or `fixed-window`), `hit` for the decision and
`get_window_stats` for the IETF RateLimit headers, in a plain ASGI middleware like
ours, so only the limiter differs.
"""

import math
import time

from fastapi import FastAPI
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from pydantic_settings import BaseSettings
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .bare import create_app as create_bare_app
from .settings import PeerSettings

STRATEGIES = {"moving-window": MovingWindowRateLimiter, "fixed-window": FixedWindowRateLimiter}


class LimitsSettings(BaseSettings):
    limits_strategy: str = "moving-window"


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, settings: PeerSettings, strategy: str) -> None:
        self.app = app
        self.item = parse(settings.rate_limit)
        storage = RedisStorage(
            settings.redis_url.replace("redis://", "async+redis://", 1),
            implementation="redispy",
            key_prefix=settings.redis_prefix,
        )
        self.limiter = STRATEGIES[strategy](storage)
        self.policy = f'"default";q={self.item.amount};w={self.item.get_expiry()}'.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else "unknown"
        allowed = await self.limiter.hit(self.item, client)
        stats = await self.limiter.get_window_stats(self.item, client)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        headers = [
            (b"ratelimit-policy", self.policy),
            (b"ratelimit", f'"default";r={stats.remaining};t={reset}'.encode()),
        ]
        if not allowed:
            response = JSONResponse({"detail": "Rate limit exceeded"}, status_code=429)
            response.headers["retry-after"] = str(reset)
            response.raw_headers.extend(headers)
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app() -> FastAPI:
    app = create_bare_app()
    strategy = LimitsSettings().limits_strategy
    app.add_middleware(LimitsMiddleware, settings=PeerSettings(), strategy=strategy)
    return app


app = create_app()
