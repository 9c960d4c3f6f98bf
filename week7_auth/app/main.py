"""Week 7: the async CRUD API behind passwords and tokens, with a request-logging middleware.

`create_app()` builds a fresh app each time, so every test gets its own app and
its own store; `app` is the one uvicorn serves: `uvicorn week7_auth.app.main:app`.
"""

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .audit import AuditLog
from .config import DEVELOPMENT_JWT_SECRET, Settings
from .db import UserStore
from .docs import CONTACT, LICENSE, operation_id, serve_docs
from .middleware import RequestLogMiddleware, document_request_log_headers
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
    app = FastAPI(
        title="Week 7: auth",
        description="The users API behind passwords and JWTs, with request logging. "
        "Sign up with POST /users, then use Authorize to log in.",
        version="7.0.0",
        contact=CONTACT,
        license_info=LICENSE,
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
        docs_url=None,  # serve_docs() serves both pages, from the app's own files
        redoc_url=None,
        exception_handlers={RequestValidationError: validation_error_without_input},
    )
    serve_docs(app)
    app.state.store = UserStore(latency_ms=settings.db_latency_ms)
    app.state.audit = AuditLog()
    app.state.passwords = PasswordHasher(settings.argon2_time_cost, settings.argon2_memory_cost)
    app.state.tokens = AccessTokens(secret, settings.access_token_minutes)
    app.add_middleware(RequestLogMiddleware)
    app.include_router(basics.router)
    app.include_router(auth.router)
    app.include_router(users.router)
    app.include_router(audit.router)
    app.include_router(demo.router)
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
    # The package's logger ("week7_auth") is the parent of every logger in this app.
    package = logging.getLogger(__name__.partition(".")[0])
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
    if not package.hasHandlers():  # keep any logging set-up that already exists
        handler = logging.StreamHandler()  # writes to stderr
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package.addHandler(handler)


app = create_app()
