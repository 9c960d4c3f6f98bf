"""The users resource (days 2, 4, 5): CRUD with meaningful status codes.

- 201 + Location: something was created, and this is where it lives.
- 204: done, and there is nothing to say.
- 404: no such user.   409: the request clashes with what exists (email taken).
- 422: the request itself is invalid (FastAPI and Pydantic answer it for us).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status

from ..db import EmailTaken, UserStore
from ..schemas import Message, User, UserCreate, UserPatch, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])

# 64-bit ids: anything outside 1..2**63-1 could never exist, so it is a 422, not a 404.
UserId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The user's id")]

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Message, "description": "No user has this id"}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Message, "description": "Another user has this email"}
}
CREATED: dict[int | str, dict[str, Any]] = {
    201: {
        "headers": {
            "Location": {
                "description": "The new user's URL: /users/{id}",
                "schema": {"type": "string"},
            }
        }
    }
}


def get_store(request: Request) -> UserStore:
    """The app's store: each app (and each test) has its own."""
    store: UserStore = request.app.state.store
    return store


Store = Annotated[UserStore, Depends(get_store)]


def user_not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="User not found")


def email_taken() -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail="Email already registered")


@router.post("", status_code=status.HTTP_201_CREATED, responses={**CREATED, **CONFLICT})
def create_user(body: UserCreate, store: Store, response: Response) -> User:
    """Sign up a new user."""
    try:
        user = store.create(body)
    except EmailTaken:
        raise email_taken() from None
    response.headers["Location"] = f"/users/{user.id}"
    return user


@router.get("")
def read_users(
    store: Store,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[User]:
    """List users ordered by id, one page at a time."""
    return store.list(offset, limit)


@router.get("/{user_id}", responses=NOT_FOUND)
def read_user(user_id: UserId, store: Store) -> User:
    """Read one user."""
    user = store.get(user_id)
    if user is None:
        raise user_not_found()
    return user


@router.put("/{user_id}", responses={**NOT_FOUND, **CONFLICT})
def replace_user(user_id: UserId, body: UserUpdate, store: Store) -> User:
    """Replace a user's name and email."""
    try:
        user = store.replace(user_id, body)
    except EmailTaken:
        raise email_taken() from None
    if user is None:
        raise user_not_found()
    return user


@router.patch("/{user_id}", responses={**NOT_FOUND, **CONFLICT})
def update_user(user_id: UserId, body: UserPatch, store: Store) -> User:
    """Change only the fields sent."""
    try:
        user = store.update(user_id, body)
    except EmailTaken:
        raise email_taken() from None
    if user is None:
        raise user_not_found()
    return user


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def delete_user(user_id: UserId, store: Store) -> None:
    """Delete a user. Their id is never given to anyone else."""
    if not store.delete(user_id):
        raise user_not_found()
