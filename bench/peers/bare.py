"""A bare FastAPI app: no middleware, no dependencies, no Redis.

The floor for /health (R1). Its /hello validates `name` like the contract says,
so it does the same work as ours minus the rate limit.
"""

from typing import Annotated

from fastapi import FastAPI, Query


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/hello")
    async def hello(
        name: Annotated[str, Query(min_length=1, max_length=100)] = "World",
    ) -> dict[str, str]:
        """Greets the caller."""
        return {"message": f"Hello, {name}!"}

    return app


app = create_app()
