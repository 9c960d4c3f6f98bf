"""Week 6: the CRUD API made async, with background tasks and the sync-vs-async demo.

`create_app()` builds a fresh app each time, so every test gets its own app and
its own store; `app` is the one uvicorn serves: `uvicorn week6_async.app.main:app`.
"""

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .audit import AuditLog
from .config import Settings
from .db import UserStore
from .docs import CONTACT, LICENSE, operation_id, serve_docs
from .routers import audit, basics, demo, users

TAGS = [
    {"name": "basics", "description": "Is the app up? And a first greeting."},
    {"name": "users", "description": "Sign up, list, read, replace, change and delete users."},
    {"name": "audit", "description": "What happened to whom: written after each response."},
    {"name": "demo", "description": "One wait written three ways: async, threaded, blocking."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="Week 6: async",
        description="The users API with an async store, background tasks and a sync/async demo.",
        version="6.0.0",
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
    app.include_router(basics.router)
    app.include_router(users.router)
    app.include_router(audit.router)
    app.include_router(demo.router)
    return app


async def validation_error_without_input(
    request: Request, exc: RequestValidationError
) -> JSONResponse:
    """FastAPI's 422, minus the rejected values."""
    # Pydantic puts what it rejected in "input". Echoing it back can fail outright: a lone
    # surrogate ("\ud800") is valid JSON but can't be encoded as UTF-8, so FastAPI's default
    # handler turns such a 422 into a 500. Where and why is enough for the client.
    errors = [{key: error[key] for key in ("type", "loc", "msg")} for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


app = create_app()
