"""The users resource: sign-up, reads (cached in Redis), owner-or-admin writes.

Reads are served from the shared response cache: one Redis round trip on a hit,
no database. Every write bumps the cache tags it touches before it returns, so no
later read on any worker sees the old data. Each successful write also queues an
audit event, recorded after the response has gone out.

Privacy: a non-admin sees other users as `UserSummary` (id and name); email and
role are for the user themself and admins. Each view is cached on its own.

A change of password or role, and a deletion, end every session of that user
(`TokenService.end_sessions`): a stolen token stops working when the victim
changes their password. Changing your own password or email takes
`current_password`, so a stolen access token alone can't take the account over.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, Request, Response, status

from shared.auth import AccessClaims
from shared.cache import cache_response, if_none_match
from shared.docs import CACHED_READ, IF_NONE_MATCH, header

from ..deps import (
    Claims,
    CurrentUser,
    EditableUser,
    ServicesDep,
    UserId,
    spend_password_attempt,
)
from ..errors import problem_responses
from ..schemas import UserCreate, UserPatch, UserPublic, UserSummary, UserUpdate
from ..services import MAX_ID, Services
from ..store import EmailTaken, UserRecord, UserStore
from .audit import record_event

router = APIRouter(prefix="/users", tags=["users"])

CREATED: dict[int | str, dict[str, Any]] = {
    201: {"headers": {"Location": header("The new user's URL: /users/{id}")}}
}

NOT_FOUND = "User not found"
EMAIL_TAKEN = "Email already registered"
# Messages, not passwords.
NEEDS_CURRENT_PASSWORD = "Changing your password or email needs your current password"  # noqa: S105
WRONG_CURRENT_PASSWORD = "Incorrect current password"  # noqa: S105
LIST_TAG = "users"


def user_tag(user_id: int) -> str:
    return f"user:{user_id}"


def public(user: UserRecord) -> UserPublic:
    return UserPublic.model_validate(user, from_attributes=True)


def summary(user: UserRecord) -> UserSummary:
    return UserSummary(id=user.id, name=user.name)


def sees_everything(claims: AccessClaims, user_id: int | None = None) -> bool:
    """Admins see every field of everyone; other users, every field of themselves."""
    return claims.role == "admin" or claims.sub == str(user_id)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**CREATED, **problem_responses(409, 413, 422, 429, 503)},
)
async def create_user(
    body: UserCreate, services: ServicesDep, background: BackgroundTasks, response: Response
) -> UserPublic:
    """Sign up. Public; the server picks the id and the role ("user")."""
    password_hash = await services.hasher.hash(body.password)
    try:
        user = await services.store.create_user(
            name=body.name, email=body.email, password_hash=password_hash
        )
    except EmailTaken:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=EMAIL_TAKEN) from None
    await services.cache.invalidate(LIST_TAG)
    background.add_task(record_event, services.store, "user.created", user.id, user.id)
    response.headers["Location"] = f"/users/{user.id}"
    return public(user)


@router.get(
    "",
    response_model=list[UserPublic] | list[UserSummary],
    responses={**CACHED_READ, **problem_responses(401, 422, 429)},
    openapi_extra=IF_NONE_MATCH,
)
async def read_users(
    claims: Claims,
    services: ServicesDep,
    request: Request,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """A page of users, ordered by id (any signed-in user; id and name unless an admin)."""
    store = services.store
    full = claims.role == "admin"

    async def load() -> bytes:
        users = await store.list_users(offset=offset, limit=limit)
        return _users_json([public(u) if full else summary(u) for u in users])

    cached = await services.cache.get_or_load(
        namespace="users:list:full" if full else "users:list",
        key=f"{offset}:{limit}",
        principal=None,
        public=True,
        loader=load,
        tags=[LIST_TAG],
    )
    return cache_response(cached, if_none_match(request.scope))


@router.get("/me", responses=problem_responses(401, 429))
async def read_me(me: CurrentUser) -> UserPublic:
    """The caller."""
    return public(me)


@router.api_route("/me", methods=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def me_is_read_only() -> None:
    """Without it, PUT /users/me would reach /users/{user_id} and fail as a bad id (422)."""
    raise HTTPException(status.HTTP_405_METHOD_NOT_ALLOWED, detail="Method Not Allowed")


@router.get(
    "/{user_id}",
    response_model=UserPublic | UserSummary,
    responses={**CACHED_READ, **problem_responses(401, 404, 422, 429)},
    openapi_extra=IF_NONE_MATCH,
)
async def read_user(
    user_id: UserId, claims: Claims, services: ServicesDep, request: Request
) -> Response:
    """One user (any signed-in user; id and name unless it is you or you are an admin)."""
    store = services.store
    full = sees_everything(claims, user_id)

    async def load() -> bytes:
        user = await store.get_user(user_id)
        if user is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)
        return (public(user) if full else summary(user)).model_dump_json().encode()

    cached = await services.cache.get_or_load(
        namespace="users:one:full" if full else "users:one",
        key=str(user_id),
        principal=None,
        public=True,
        loader=load,
        tags=[user_tag(user_id)],
    )
    return cache_response(cached, if_none_match(request.scope))


WRITE_ERRORS = problem_responses(401, 403, 404, 409, 413, 422, 429, 503)


@router.put("/{user_id}", responses=WRITE_ERRORS)
async def replace_user(
    target: EditableUser,
    body: UserUpdate,
    me: CurrentUser,
    services: ServicesDep,
    background: BackgroundTasks,
) -> UserPublic:
    """Replace name and email (the user themself, or an admin)."""
    if body.email != target.email:
        await confirm_current_password(services, me, target, body.current_password)
    return await _apply(services, background, me, target, name=body.name, email=body.email)


@router.patch("/{user_id}", responses=WRITE_ERRORS)
async def update_user(
    target: EditableUser,
    body: UserPatch,
    me: CurrentUser,
    services: ServicesDep,
    background: BackgroundTasks,
) -> UserPublic:
    """Change some fields; `password` is re-hashed, `role` is for admins only.

    Changing your own `password` or `email` takes `current_password`.
    """
    changes: dict[str, str] = body.model_dump(
        exclude_unset=True, exclude={"password", "current_password"}
    )
    if body.role is not None and me.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Only an admin may change a role")
    if body.password is not None or (body.email is not None and body.email != target.email):
        await confirm_current_password(services, me, target, body.current_password)
    if body.password is not None:
        changes["password_hash"] = await services.hasher.hash(body.password)
    if not changes:
        return public(target)
    return await _apply(services, background, me, target, **changes)


async def confirm_current_password(
    services: Services, me: UserRecord, target: UserRecord, current_password: str | None
) -> None:
    """403 unless `current_password` is the caller's (only when changing themself).

    A stolen access token lives 15 minutes; a changed password or email would be
    the whole account for good. An admin changing someone else is not asked: the
    admin's own session is what protects that. Each check spends the account's
    login budget, so this is no faster a password oracle than the login is.
    """
    if target.id != me.id:
        return
    if current_password is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=NEEDS_CURRENT_PASSWORD)
    await spend_password_attempt(services, me.email)
    valid, _ = await services.hasher.verify(current_password, me.password_hash)
    if not valid:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=WRONG_CURRENT_PASSWORD)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 422, 429),
)
async def delete_user(
    target: EditableUser, me: CurrentUser, services: ServicesDep, background: BackgroundTasks
) -> None:
    """Delete a user (the user themself, or an admin). Their id is never reused."""
    if not await services.store.delete_user(target.id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)
    await services.tokens.end_sessions(str(target.id))
    await services.cache.invalidate(user_tag(target.id), LIST_TAG)
    background.add_task(record_event, services.store, "user.deleted", target.id, me.id)


async def _apply(
    services: Services,
    background: BackgroundTasks,
    me: UserRecord,
    target: UserRecord,
    **changes: str,
) -> UserPublic:
    store: UserStore = services.store
    try:
        user = await store.update_user(target.id, **changes)
    except EmailTaken:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=EMAIL_TAKEN) from None
    if user is None:  # deleted between the check and the write
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)
    # After the write, so a login that read the old password is ended too.
    if "password_hash" in changes or user.role != target.role:
        await services.tokens.end_sessions(str(user.id))
    # Before returning: once the client sees 200, no worker may serve the old user.
    await services.cache.invalidate(user_tag(user.id), LIST_TAG)
    background.add_task(record_event, store, "user.updated", user.id, me.id)
    return public(user)


def _users_json(users: list[UserPublic | UserSummary]) -> bytes:
    return b"[" + b",".join(u.model_dump_json().encode() for u in users) + b"]"
