"""Week 6: the CRUD API made async, with background tasks and the sync-vs-async demo.

`create_app()` builds a fresh app each time, so every test gets its own app and
its own store; `app` is the one uvicorn serves: `uvicorn week6_async.app.main:app`.
"""

from fastapi import FastAPI

from .audit import AuditLog
from .config import Settings
from .db import UserStore
from .routers import audit, basics, demo, users


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="Week 6: async",
        description="The users API with an async store, background tasks and a sync/async demo.",
        version="6.0.0",
    )
    app.state.store = UserStore(latency_ms=settings.db_latency_ms)
    app.state.audit = AuditLog()
    app.include_router(basics.router)
    app.include_router(users.router)
    app.include_router(audit.router)
    app.include_router(demo.router)
    return app


app = create_app()
