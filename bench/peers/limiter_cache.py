"""GET /users/{id} — authenticated, rate-limited and cached — built the way the
fastapi-limiter 0.2 and fastapi-cache2 0.2 docs show, on the same Redis (P1).

- Authentication: FastAPI's OAuth2 tutorial, a bearer JWT decoded with PyJWT
  (HS256, the same secret as ours, so one token works for both apps).
- Rate limit: fastapi-limiter's `RateLimiter` dependency over a pyrate-limiter
  `Limiter`. For Redis, pyrate-limiter documents a `StateBucket` with a
  `RedisStateStore`: GCRA in one Lua script, the algorithm ours uses too.
- Cache: fastapi-cache2's `@cache` decorator with its `RedisBackend`.

Users live in a dict, as in FastAPI's tutorial; on a cache hit it is not read.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordBearer
from fastapi_cache import FastAPICache
from fastapi_cache.backends.redis import RedisBackend
from fastapi_cache.decorator import cache
from fastapi_limiter.depends import RateLimiter
from pydantic import BaseModel
from pyrate_limiter import Limiter, Rate, RedisStateStore, StateBucket
from redis import asyncio as aioredis

from .settings import PeerSettings, parse_rate

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token")


class UserPublic(BaseModel):
    id: int
    name: str
    email: str
    role: str


@dataclass(frozen=True)
class Claims:
    sub: str
    jti: str


USERS = {
    i: UserPublic(id=i, name=f"User {i}", email=f"user{i}@example.com", role="user")
    for i in range(1, 101)
}


async def current_user(request: Request, token: Annotated[str, Depends(oauth2_scheme)]) -> Claims:
    settings: PeerSettings = request.app.state.settings
    try:
        payload = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=["HS256"],
            options={"require": ["sub", "exp", "iat", "jti"]},
        )
    except jwt.InvalidTokenError:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Could not validate credentials",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    return Claims(sub=str(payload["sub"]), jti=str(payload["jti"]))


CurrentUser = Annotated[Claims, Depends(current_user)]


async def rate_limited(request: Request, response: Response) -> None:
    # The limiter needs the Redis client, which only exists once the lifespan ran.
    await request.app.state.rate_limiter(request, response)


def create_app(settings: PeerSettings | None = None) -> FastAPI:
    settings = settings or PeerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = aioredis.from_url(settings.redis_url)
        FastAPICache.init(RedisBackend(redis), prefix=f"{settings.redis_prefix}cache")
        count, period = parse_rate(settings.rate_limit)
        store = RedisStateStore(redis, f"{settings.redis_prefix}limit")
        limiter = Limiter(StateBucket([Rate(count, period * 1000)], store=store))
        app.state.rate_limiter = RateLimiter(limiter=limiter)
        yield
        limiter.close()
        await redis.aclose()

    app = FastAPI(lifespan=lifespan)
    app.state.settings = settings

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/users/{user_id}", dependencies=[Depends(rate_limited)])
    @cache(expire=settings.cache_ttl_seconds)
    async def read_user(user_id: int, user: CurrentUser) -> UserPublic:
        """One user, for any signed-in caller."""
        found = USERS.get(user_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found")
        return found

    return app


app = create_app()
