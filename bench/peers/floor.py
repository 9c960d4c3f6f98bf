"""The floor: the least work a signed-in cached read and a rate-limited /hello can do here.

R2f divides the final project's cached `GET /users/{id}` by this app's: decode the
bearer JWT with PyJWT, then one Redis GET whose bytes are the response. R5f divides
the final project's rate-limited `/hello` by this app's: one EVALSHA of the smallest
counting script, then the greeting. No middleware, no dependency injection, no
headers: whatever the final project does beyond this is what the ratios price.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import jwt
from fastapi import FastAPI, Header, HTTPException, Query, Request, Response
from redis.asyncio import Redis

from .settings import PeerSettings

COUNT = """
local hits = redis.call('INCR', KEYS[1])
if hits == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return hits
"""
BODY = b'{"id":1,"name":"Bench User","email":"bench@example.com","role":"user"}'


def create_app() -> FastAPI:
    settings = PeerSettings()
    secret = settings.jwt_secret.get_secret_value()
    prefix = settings.redis_prefix

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(settings.redis_url)
        app.state.redis = redis
        app.state.count = redis.register_script(COUNT)
        yield
        await redis.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/users/{user_id}")
    async def read_user(
        user_id: int, request: Request, authorization: Annotated[str, Header()] = ""
    ) -> Response:
        try:
            jwt.decode(authorization.removeprefix("Bearer "), secret, algorithms=["HS256"])
        except jwt.InvalidTokenError:
            raise HTTPException(401, "Not authenticated") from None
        key = f"{prefix}user:{user_id}"
        body = await request.app.state.redis.get(key)
        if body is None:  # the first request of a run fills it, as a cache MISS would
            body = BODY
            await request.app.state.redis.set(key, body)
        return Response(body, media_type="application/json")

    @app.get("/hello")
    async def hello(
        request: Request, name: Annotated[str, Query(min_length=1, max_length=100)] = "World"
    ) -> dict[str, str]:
        client = request.client.host if request.client else "unknown"
        await request.app.state.count(keys=[f"{prefix}hello:{client}"], args=[60_000])
        return {"message": f"Hello, {name}!"}

    return app


app = create_app()
