"""The app factory: middleware, routers and the lifespan that owns every client.

A request travels: security headers → RequestContextMiddleware (request id,
timing, access log, last-resort 500) → trusted host → CORS (when configured) →
rate limit → metrics (when enabled) → body-size limit → FastAPI routing →
dependencies (auth) → handler → cache → store, and after the response,
background tasks (audit).
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

from shared.docs import ASSETS_PATH, DOCS_PATHS, document_headers, operation_id, serve_docs
from shared.metrics import Metrics
from shared.observability import RequestContextMiddleware, configure_logging
from shared.rate_limit import RateLimiter, RateLimitMiddleware, RouteLimit
from shared.security import SecurityHeadersMiddleware, TrustedHostMiddleware

from .config import Settings, settings_problems
from .errors import install_error_handlers, render_problem, use_problem_media_type
from .middleware import BodySizeLimitMiddleware
from .routers import audit, auth, basics, demo, health, users
from .services import Services, open_services
from .telemetry import METRICS_PATH, install_metrics, telemetry_config, tracing_installed

logger = logging.getLogger("final_project")

QUIET_PATHS = ("/health", "/health/ready", METRICS_PATH)
UNLIMITED = frozenset((*QUIET_PATHS, *DOCS_PATHS))
LOGIN_PATH = "/auth/token"
SIGNUP_PATH = "/users"
# The routes whose bodies are a few short JSON fields (or the login form).
SMALL_BODY_PREFIXES = ("/users", "/auth")
STARTUP_FAILURE = 3
# What a browser script may read from a cross-origin response.
EXPOSED_HEADERS = [
    *("ETag", "Location", "RateLimit", "RateLimit-Policy", "Retry-After"),
    *("X-Cache", "X-Process-Time", "X-Request-ID"),
]


TAGS = [
    {"name": "health", "description": "Liveness and readiness, for load balancers."},
    {"name": "users", "description": "Sign up, then read and change users (cached reads)."},
    {"name": "basics", "description": "A first greeting."},
    {"name": "auth", "description": "Log in (OAuth2 password form), refresh, log out."},
    {"name": "audit", "description": "Who did what to whom (admins only)."},
    {"name": "demo", "description": "One wait written three ways: async, threaded, blocking."},
]


class App(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = use_problem_media_type(super().openapi())
            self.openapi_schema = document_headers(schema, unlimited_paths=UNLIMITED)
        return self.openapi_schema


def _services(scope: Scope) -> Services | None:
    return getattr(scope["app"].state, "services", None)


def route_limit(scope: Scope) -> RouteLimit | None:
    """Which budget a request spends: none, the login one, or the shared default."""
    path = scope["path"]
    if path in UNLIMITED or path.startswith(ASSETS_PATH + "/"):
        return None
    services = _services(scope)
    if services is None:
        return None
    if path == LOGIN_PATH and scope["method"] == "POST":
        return RouteLimit((services.login_policy,), by_address=True)
    if path == SIGNUP_PATH and scope["method"] == "POST":
        # Sign-up hashes a password and makes an account: a budget of its own per address.
        return RouteLimit((services.default_policy, services.signup_policy), by_address=True)
    return RouteLimit((services.default_policy,))


def limiter_of(scope: Scope) -> RateLimiter | None:
    services = _services(scope)
    return services.limiter if services is not None else None


def principal_of(scope: Scope) -> str | None:
    """The user id of a valid bearer token this process has not found revoked, else None.

    A revoked token is then counted against the sender's address: replaying a
    logged-out token can't spend (and exhaust) the budget of the user it names.
    """
    services = _services(scope)
    return services.tokens.subject_of(scope) if services is not None else None


def peek_of(scope: Scope) -> list[str]:
    """The revocation keys of this request's token, read in the rate limiter's round trip.

    `TokenService` is a `shared.redis.PeekSource`: see shared/redis/peek.py.
    """
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
        problems = settings_problems(exc)
        print(f"final_project refuses to start: {problems}", file=sys.stderr, flush=True)
        raise SystemExit(STARTUP_FAILURE) from None


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; tests pass their own settings, uvicorn uses the environment."""
    settings = settings or settings_from_environment()
    configure_logging(settings.log_level)
    # RequestContextMiddleware writes one JSON access line per request (with its
    # request id, and none for /health); uvicorn's own would be a second, plainer one.
    logging.getLogger("uvicorn.access").disabled = True
    if settings.tracing_enabled and not tracing_installed():
        print(
            "final_project refuses to start: TRACING_ENABLED needs the tracing extra "
            "(pip install -c constraints.txt -e '.[tracing]')",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(STARTUP_FAILURE)
    metrics = Metrics("final") if settings.metrics_enabled else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await open_services(settings, metrics)
        app.state.services = services
        try:
            yield
        finally:
            await services.aclose()
            if metrics is not None:
                metrics.process_stopped()

    app = App(
        title="Users API (final project)",
        version="1.0.0",
        summary="Async CRUD with JWT auth, Redis caching and rate limits.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry: spans with TRACING_ENABLED, else entirely off.
        telemetry=telemetry_config(settings),
        contact={"name": "The fastapi-backend-course authors"},
        license_info={"name": "MIT", "identifier": "MIT"},
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
        docs_url=None,  # serve_docs() serves both pages, from the app's own files
        redoc_url=None,
    )
    serve_docs(app)
    install_error_handlers(app)
    # Routes are matched one by one, in this order, at a few µs each: the busiest
    # router (users) goes first, after only /health's two cheap-to-skip routes.
    for module in (health, users, basics, auth, audit):
        app.include_router(module.router)
    if settings.app_env != "production":
        # Week 6's lesson: blocking-sleep stalls the event loop on purpose.
        app.include_router(demo.router)

    # add_middleware wraps: the last one added is the outermost.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        path_limits=dict.fromkeys(SMALL_BODY_PREFIXES, settings.max_json_body_bytes),
    )
    if metrics is not None:
        # Inside the rate limiter: what it refuses is counted as its decision.
        install_metrics(app, metrics, settings)
    if settings.rate_limit_enabled:
        app.add_middleware(
            RateLimitMiddleware,
            route_limit=route_limit,
            limiter=limiter_of,
            principal=principal_of,
            peek=peek_of,
            render_error=render_problem,
            on_decision=metrics.rate_limit_decision if metrics is not None else None,
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
    app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts, render_error=render_problem
    )
    app.add_middleware(RequestContextMiddleware, quiet_paths=QUIET_PATHS)
    app.add_middleware(SecurityHeadersMiddleware)
    return app


app = create_app()
