"""GET /hello rate-limited with slowapi and its Redis storage, as slowapi's docs
show it (P2): a `Limiter` keyed by client address, the `@limiter.limit` decorator,
and slowapi's handler for 429s.

slowapi reads the limiter from `app.state.limiter` and its storage (the `limits`
library) is synchronous, so each check is a blocking Redis round trip on the
event loop; that is how the library works, not a choice made here.
"""

from typing import Annotated

from fastapi import FastAPI, Query, Request
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address

from .settings import PeerSettings


def create_app(settings: PeerSettings | None = None) -> FastAPI:
    settings = settings or PeerSettings()
    limiter = Limiter(
        key_func=get_remote_address,
        storage_uri=settings.redis_url,
        key_prefix=f"{settings.redis_prefix}slowapi",
    )
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/hello")
    @limiter.limit(settings.rate_limit)
    async def hello(
        request: Request,
        name: Annotated[str, Query(min_length=1, max_length=100)] = "World",
    ) -> dict[str, str]:
        """Greets the caller."""
        return {"message": f"Hello, {name}!"}

    return app


app = create_app()
