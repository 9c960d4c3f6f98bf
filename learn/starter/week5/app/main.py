"""Your week 5 app. `make grade-week5` builds it with `create_app()`: keep that name.

Start with day 1 below, then work through app/schemas.py, app/db.py and
app/routers/users.py. Each TODO names the roadmap day it belongs to.
"""

from fastapi import FastAPI

from .db import UserStore
from .routers import users
from .todo import not_yet


def create_app() -> FastAPI:
    app = FastAPI(title="My week 5: REST + CRUD")
    # One store per app, kept on the app: no module-level `fake_db` that tests would share.
    app.state.store = UserStore()
    app.include_router(users.router)

    @app.get("/health")
    def health() -> dict[str, str]:
        # TODO (week 5, day 1): answer {"status": "ok"}.
        raise not_yet("week 5, day 1")

    @app.get("/hello")
    def hello(name: str = "World") -> dict[str, str]:
        # TODO (week 5, day 1): answer {"message": "Hello, <name>!"}; a name must be
        # 1-100 characters (a Query(...) constraint), else FastAPI answers 422.
        raise not_yet("week 5, day 1")

    return app


app = create_app()
