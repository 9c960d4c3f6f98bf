"""Week 5: a users CRUD API (day 4: one router per resource, wired here).

`create_app()` builds a fresh app each time, so every test gets its own app and
its own store; `app` is the one uvicorn serves: `uvicorn week5_crud.app.main:app`.
"""

from fastapi import FastAPI

from .db import UserStore
from .routers import basics, users


def create_app() -> FastAPI:
    app = FastAPI(
        title="Week 5: REST + CRUD",
        description="A users CRUD API with an in-memory store.",
        version="5.0.0",
    )
    app.state.store = UserStore()
    app.include_router(basics.router)
    app.include_router(users.router)
    return app


app = create_app()
