"""The users resource (days 2, 4, 5): CRUD with meaningful status codes, behind a token.

- 201 + Location: something was created, and this is where it lives.
- 204: done, and there is nothing to say.
- 401: no valid token: who are you?   403: we know who you are, and it isn't yours.
- 404: no such user.   409: the request clashes with what exists (email taken).
- 422: the request itself is invalid (FastAPI and Pydantic answer it for us).

Signing up is open to everyone; every other route needs a token. Anyone signed in
may read any user, but only change or delete their own account.
"""

from typing import Annotated, Any

from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    HTTPException,
    Path,
    Query,
    Response,
    status,
)

from ..audit import record_event
from ..db import EmailTaken
from ..deps import UNAUTHORIZED, Audit, CurrentUser, Passwords, Store, get_current_user
from ..schemas import Message, UserCreate, UserPatch, UserPublic, UserUpdate

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
FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": Message, "description": "Someone else's account"}
}


def user_not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="User not found")


def email_taken() -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail="Email already registered")


async def own_user_id(user_id: UserId, current: CurrentUser, store: Store) -> int:
    """The id in the path, if it is the caller's own: else 404 (no such user) or 403."""
    if user_id != current.id:
        # 404 before 403: anyone signed in may read any user, so this reveals nothing.
        if await store.get(user_id) is None:
            raise user_not_found()
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="You may only change your own account"
        )
    return user_id


OwnUserId = Annotated[int, Depends(own_user_id)]


@router.post("", status_code=status.HTTP_201_CREATED, responses={**CREATED, **CONFLICT})
async def create_user(
    body: UserCreate,
    store: Store,
    passwords: Passwords,
    audit: Audit,
    response: Response,
    tasks: BackgroundTasks,
) -> UserPublic:
    """Sign up a new user: the one route that needs no token."""
    password_hash = await passwords.hash(body.password)
    try:
        user = await store.create(body, password_hash)
    except EmailTaken:
        raise email_taken() from None
    response.headers["Location"] = f"/users/{user.id}"
    # Runs after the response is sent: the client doesn't wait for the audit log.
    tasks.add_task(record_event, audit, "user.created", user.id)
    return user.public()


@router.get("", responses=UNAUTHORIZED, dependencies=[Depends(get_current_user)])
async def read_users(
    store: Store,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[UserPublic]:
    """List users ordered by id, one page at a time."""
    return [user.public() for user in await store.list(offset, limit)]


# Before /{user_id}: routes match in order, and "me" would be a 422 there (not an int).
@router.get("/me", responses=UNAUTHORIZED)
async def read_me(current: CurrentUser) -> UserPublic:
    """The signed-in user: whoever the token speaks for."""
    return current.public()


@router.get(
    "/{user_id}",
    responses={**UNAUTHORIZED, **NOT_FOUND},
    dependencies=[Depends(get_current_user)],
)
async def read_user(user_id: UserId, store: Store) -> UserPublic:
    """Read one user."""
    user = await store.get(user_id)
    if user is None:
        raise user_not_found()
    return user.public()


@router.put("/{user_id}", responses={**UNAUTHORIZED, **FORBIDDEN, **NOT_FOUND, **CONFLICT})
async def replace_user(
    user_id: OwnUserId, body: UserUpdate, store: Store, audit: Audit, tasks: BackgroundTasks
) -> UserPublic:
    """Replace your name and email."""
    try:
        user = await store.replace(user_id, body)
    except EmailTaken:
        raise email_taken() from None
    if user is None:
        raise user_not_found()
    tasks.add_task(record_event, audit, "user.updated", user.id)
    return user.public()


@router.patch("/{user_id}", responses={**UNAUTHORIZED, **FORBIDDEN, **NOT_FOUND, **CONFLICT})
async def update_user(
    user_id: OwnUserId,
    body: UserPatch,
    store: Store,
    passwords: Passwords,
    audit: Audit,
    tasks: BackgroundTasks,
) -> UserPublic:
    """Change only the fields sent; a new password replaces the old one at once."""
    password_hash = await passwords.hash(body.password) if body.password is not None else None
    try:
        user = await store.update(user_id, body, password_hash)
    except EmailTaken:
        raise email_taken() from None
    if user is None:
        raise user_not_found()
    tasks.add_task(record_event, audit, "user.updated", user.id)
    return user.public()


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**UNAUTHORIZED, **FORBIDDEN, **NOT_FOUND},
)
async def delete_user(
    user_id: OwnUserId, store: Store, audit: Audit, tasks: BackgroundTasks
) -> None:
    """Delete your account: its id is never reused, and its tokens stop working."""
    if not await store.delete(user_id):
        raise user_not_found()
    tasks.add_task(record_event, audit, "user.deleted", user_id)
