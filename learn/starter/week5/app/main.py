"""Your week 5 app. `make grade-week5` builds it with `create_app()`: keep that name.

Start with day 1 below, then work through app/schemas.py, app/db.py and
app/routers/users.py. Each TODO names the roadmap day it belongs to.
"""

from fastapi import FastAPI

from .db import UserStore
from .docs import CONTACT, LICENSE, operation_id, serve_docs
from .routers import users
from .todo import not_yet

TAGS = [
    {"name": "basics", "description": "Is the app up? And a first greeting."},
    {"name": "users", "description": "Sign up, list, read, replace, change and delete users."},
]


def create_app() -> FastAPI:
    # Given, not a TODO: /docs and /redoc that work offline, and an OpenAPI file that
    # a client generator can use (app/docs.py says how).
    app = FastAPI(
        title="My week 5: REST + CRUD",
        contact=CONTACT,
        license_info=LICENSE,
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
        docs_url=None,
        redoc_url=None,
    )
    serve_docs(app)
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
