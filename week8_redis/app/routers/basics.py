"""Day 1: the first endpoints. A request comes in, a function runs, its result goes out."""

from typing import Annotated

from fastapi import APIRouter, Query

router = APIRouter(tags=["basics"])


@router.get("/health")
def health() -> dict[str, str]:
    """Say the app is up: what a load balancer or a monitor polls."""
    return {"status": "ok"}


@router.get("/hello")
def hello(
    name: Annotated[str, Query(min_length=1, max_length=100)] = "World",
) -> dict[str, str]:
    """Greet someone by name; the query parameter is validated like any input."""
    return {"message": f"Hello, {name}!"}
