"""The bare app plus our rate limiter (shared/rate_limit/) and nothing else.

R5 compares the same endpoint with and without rate limiting. When the app under
test has no setting that turns its limiter off, R5 compares this app's /hello
with the bare app's instead: the limiter's cost on an app that does nothing
else, which is a stricter test (the same cost is a larger share of less work).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Query
from starlette.types import Scope

from shared.rate_limit import (
    Policy,
    RateLimiter,
    RateLimitMiddleware,
    RateLimitSettings,
    RouteLimit,
    parse_rate,
)
from shared.redis import RedisSettings, create_redis


def create_app() -> FastAPI:
    redis_settings = RedisSettings()
    limit = RouteLimit((Policy("default", parse_rate(RateLimitSettings().default)),))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = create_redis(redis_settings)
        app.state.limiter = RateLimiter(redis, redis_settings.prefix)
        yield
        await redis.aclose()

    def route_limit(scope: Scope) -> RouteLimit | None:
        return None if scope["path"] == "/health" else limit

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(RateLimitMiddleware, route_limit=route_limit)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/hello")
    async def hello(
        name: Annotated[str, Query(min_length=1, max_length=100)] = "World",
    ) -> dict[str, str]:
        """Greets the caller."""
        return {"message": f"Hello, {name}!"}

    return app


app = create_app()
