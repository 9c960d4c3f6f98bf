"""Week 8: week 7's API with a Redis cache and rate limits, still answering when Redis does not.

`create_app()` builds a fresh app each time, so every test gets its own app and
its own store; `app` is the one uvicorn serves: `uvicorn week8_redis.app.main:app`.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .audit import AuditLog
from .cache import ResponseCache
from .config import DEVELOPMENT_JWT_SECRET, Settings
from .db import UserStore
from .docs import CONTACT, LICENSE, operation_id, serve_docs
from .middleware import RequestLogMiddleware, document_request_log_headers
from .rate_limit import Rate, RateLimiter, RateLimitMiddleware, document_rate_limits
from .routers import audit, auth, basics, demo, users
from .security import AccessTokens, PasswordHasher

logger = logging.getLogger(__name__)

TAGS = [
    {"name": "basics", "description": "Is the app up? And a first greeting."},
    {"name": "auth", "description": "Log in with the OAuth2 password form: a bearer token."},
    {"name": "users", "description": "Sign up (no token needed), then read and change users."},
    {"name": "audit", "description": "What happened to whom: written after each response."},
    {"name": "demo", "description": "One wait written three ways: async, threaded, blocking."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    log_to_stderr()
    secret = settings.jwt_secret.get_secret_value()
    if secret == DEVELOPMENT_JWT_SECRET:
        logger.warning(
            "JWT_SECRET is not set: tokens are signed with the development secret, which is "
            "public, so anyone can forge them. Set JWT_SECRET before this app leaves your laptop."
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client for the app's life, shared by the cache and the limiter. It connects on
        # first use, so the app starts while Redis is down. Redis answers in well under a
        # millisecond: a short timeout and no retries bound what a hung or dead one costs.
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), retries=0),
        )
        app.state.cache = ResponseCache(redis, settings.redis_prefix, settings.cache_ttl_seconds)
        app.state.limiter = RateLimiter(redis, settings.redis_prefix)
        # The users live in this process's memory and start again from id 1 on every run:
        # whatever an earlier run cached is not true any more.
        await app.state.cache.invalidate()
        try:
            yield
        finally:
            await redis.aclose()

    app = FastAPI(
        title="Week 8: Redis",
        description="The users API with a Redis cache and rate limits. "
        "Sign up with POST /users, then use Authorize to log in.",
        version="8.0.0",
        contact=CONTACT,
        license_info=LICENSE,
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
        docs_url=None,  # serve_docs() serves both pages, from the app's own files
        redoc_url=None,
        lifespan=lifespan,
        exception_handlers={RequestValidationError: validation_error_without_input},
    )
    serve_docs(app)
    app.state.store = UserStore(latency_ms=settings.db_latency_ms)
    app.state.audit = AuditLog()
    app.state.passwords = PasswordHasher(settings.argon2_time_cost, settings.argon2_memory_cost)
    app.state.tokens = AccessTokens(secret, settings.access_token_minutes)
    # Added first, so it runs inside the request log: a 429 is logged like any answer.
    # A malformed rate raises here, so a typo stops the app at start-up.
    app.add_middleware(
        RateLimitMiddleware,
        default=Rate.parse(settings.rate_limit),
        login=Rate.parse(settings.login_rate_limit),
    )
    app.add_middleware(RequestLogMiddleware)
    app.include_router(basics.router)
    app.include_router(auth.router)
    app.include_router(users.router)
    app.include_router(audit.router)
    app.include_router(demo.router)
    document_rate_limits(app)
    document_request_log_headers(app)
    return app


async def validation_error_without_input(
    request: Request, exc: RequestValidationError
) -> JSONResponse:
    """FastAPI's 422, minus the rejected values."""
    # Pydantic puts what it rejected in "input". Echoing it back can fail outright: a lone
    # surrogate ("\ud800") is valid JSON but can't be encoded as UTF-8, so FastAPI's default
    # handler turns such a 422 into a 500. Where and why is enough for the client.
    # With passwords, dropping "input" matters twice: for a missing field, "input" is the
    # whole body, password included.
    errors = [{key: error[key] for key in ("type", "loc", "msg")} for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def log_to_stderr() -> None:
    """Make this app's INFO lines visible: uvicorn sets up only its own loggers."""
    # The package's logger ("week8_redis") is the parent of every logger in this app.
    package = logging.getLogger(__name__.partition(".")[0])
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
    if not package.hasHandlers():  # keep any logging set-up that already exists
        handler = logging.StreamHandler()  # writes to stderr
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package.addHandler(handler)


app = create_app()
