"""The users resource: one router for every /users route (week 5, day 4).

Status codes to use (week 5, days 2 and 5): 201 + a Location header for a new user,
204 for a delete, 404 {"detail": "User not found"}, 409 {"detail": "Email already
registered"}; FastAPI answers 422 for invalid input by itself.
"""

from fastapi import APIRouter, Request, status

from ..schemas import User, UserCreate
from ..todo import not_yet

# TODO (week 5, day 4): give the router prefix="/users" and tags=["users"], then drop
# "/users" from each route below: one place names the resource, and /docs groups it.
router = APIRouter()


@router.post("/users", status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, request: Request) -> User:
    """Sign up a new user."""
    # TODO (week 5, day 2): store it (request.app.state.store), answer 201 with the user
    # and a Location: /users/{id} header; a taken email is a 409 (day 5). Day 5 also
    # documents both in OpenAPI: responses={201: {"headers": {"Location": ...}}, 409: ...}.
    raise not_yet("week 5, day 2")


@router.get("/users")
def read_users(offset: int = 0, limit: int = 20) -> list[User]:
    """List users ordered by id, one page at a time."""
    # TODO (week 5, day 2): offset >= 0, limit 1-100 (Query constraints).
    raise not_yet("week 5, day 2")


@router.get("/users/{user_id}")
def read_user(user_id: int) -> User:
    """Read one user."""
    # TODO (week 5, days 2 and 5): the user, or 404; ids are 1 ... 2**63-1 (Path constraints).
    raise not_yet("week 5, day 2")


@router.put("/users/{user_id}")
def replace_user(user_id: int) -> User:
    """Replace a user's name and email."""
    # TODO (week 5, day 2): take a UserUpdate body; 404 (day 5), 409 for a taken email.
    raise not_yet("week 5, day 2")


@router.patch("/users/{user_id}")
def update_user(user_id: int) -> User:
    """Change only the fields sent."""
    # TODO (week 5, day 2): take a UserPatch body; model_dump(exclude_unset=True).
    raise not_yet("week 5, day 2")


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(user_id: int) -> None:
    """Delete a user."""
    # TODO (week 5, day 2): 204 with no body, or 404 (day 5).
    raise not_yet("week 5, day 2")
