"""The first endpoint of week 5, kept so every app answers the same contract."""

from typing import Annotated

from fastapi import APIRouter, Query

from ..errors import problem_responses
from ..schemas import Greeting

router = APIRouter(tags=["basics"])


@router.get("/hello", responses=problem_responses(422, 429))
async def hello(
    name: Annotated[str, Query(min_length=1, max_length=100)] = "World",
) -> Greeting:
    """Greet someone by name; the query parameter is validated like any input."""
    return Greeting(message=f"Hello, {name}!")
