"""The app factory: middleware, routers and the lifespan that owns every client.

A request travels: RequestContextMiddleware (request id, timing, access log,
last-resort 500) → CORS (when configured) → rate limit → body-size limit →
FastAPI routing → dependencies (auth) → handler → cache → store, and after the
response, background tasks (audit).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Scope

from shared.observability import RequestContextMiddleware, configure_logging
from shared.rate_limit import RateLimiter, RateLimitMiddleware, RouteLimit

from .config import Settings
from .errors import install_error_handlers, render_problem, use_problem_media_type
from .middleware import BodySizeLimitMiddleware
from .routers import audit, auth, basics, demo, health, users
from .services import Services, open_services

logger = logging.getLogger("final_project")

QUIET_PATHS = ("/health", "/health/ready")
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
UNLIMITED = frozenset((*QUIET_PATHS, *DOCS_PATHS))
LOGIN_PATH = "/auth/token"
STARTUP_FAILURE = 3
# What a browser script may read from a cross-origin response.
EXPOSED_HEADERS = [
    *("ETag", "Location", "RateLimit", "RateLimit-Policy", "Retry-After"),
    *("X-Cache", "X-Process-Time", "X-Request-ID"),
]


class App(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = use_problem_media_type(super().openapi())
        return self.openapi_schema


def _services(scope: Scope) -> Services | None:
    return getattr(scope["app"].state, "services", None)


def route_limit(scope: Scope) -> RouteLimit | None:
    """Which budget a request spends: none, the login one, or the shared default."""
    path = scope["path"]
    if path in UNLIMITED:
        return None
    services = _services(scope)
    if services is None:
        return None
    if path == LOGIN_PATH and scope["method"] == "POST":
        return RouteLimit((services.login_policy,), by_address=True)
    return RouteLimit((services.default_policy,))


def limiter_of(scope: Scope) -> RateLimiter | None:
    services = _services(scope)
    return services.limiter if services is not None else None


def principal_of(scope: Scope) -> str | None:
    """The user id of a valid bearer token (not yet revocation-checked), else None."""
    services = _services(scope)
    claims = services.tokens.claims_from_scope(scope) if services is not None else None
    return claims.sub if claims is not None else None


def peek_of(scope: Scope) -> list[str]:
    """The revocation keys of this request's token, read in the rate limiter's round trip."""
    services = _services(scope)
    return services.tokens.peek_keys(scope) if services is not None else []


def settings_from_environment() -> Settings:
    """Settings(), or one clear message and exit status 3 when they are invalid.

    3 is uvicorn's "failed before serving": with --workers, uvicorn then stops
    instead of restarting the worker forever (an ordinary exception would exit 1,
    which it takes for a crash worth a restart).
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False)
        )
        print(f"final_project refuses to start: {problems}", file=sys.stderr, flush=True)
        raise SystemExit(STARTUP_FAILURE) from None


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; tests pass their own settings, uvicorn uses the environment."""
    settings = settings or settings_from_environment()
    configure_logging(settings.log_level)
    # RequestContextMiddleware writes one JSON access line per request (with its
    # request id, and none for /health); uvicorn's own would be a second, plainer one.
    logging.getLogger("uvicorn.access").disabled = True
    if settings.uses_development_secret:
        logger.warning(
            "JWT_SECRET is not set: signing tokens with the public development secret. "
            "Set JWT_SECRET (32+ random bytes) anywhere but your own machine."
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await open_services(settings)
        app.state.services = services
        try:
            yield
        finally:
            await services.aclose()

    app = App(
        title="Users API (final project)",
        version="1.0.0",
        summary="Async CRUD with JWT auth, Redis caching and rate limits.",
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry asks, on every request, whether a tracer,
        # meter or logger provider is configured (reading os.environ each time). This
        # app sets none up, so the answer is always no: skip the question. (Drop this
        # line when you add an OpenTelemetry SDK.)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    # Routes are matched one by one, in this order, at a few µs each: the busiest
    # router (users) goes first, after only /health's two cheap-to-skip routes.
    for module in (health, users, basics, auth, audit, demo):
        app.include_router(module.router)

    # add_middleware wraps: the last one added is the outermost.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.rate_limit_enabled:
        app.add_middleware(
            RateLimitMiddleware,
            route_limit=route_limit,
            limiter=limiter_of,
            principal=principal_of,
            peek=peek_of,
            render_error=render_problem,
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-None-Match", "X-Request-ID"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware, quiet_paths=QUIET_PATHS)
    return app


app = create_app()
