"""Dependencies, as `Annotated` aliases a handler names in its signature.

All are `async def`: a plain `def` dependency would hop to the threadpool on
every request, which costs more than the work it does here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status

from shared.auth import AccessClaims, TokenService, bearer_claims_dependency, require_role

from .config import Settings as AppSettings
from .services import Services as AppServices
from .store import UserRecord, UserStore

MAX_ID = 2**63 - 1


def user_id_of(sub: str) -> int | None:
    """The user id in a token's `sub`, or None when it is not one of ours."""
    return int(sub) if sub.isascii() and sub.isdigit() and len(sub) <= 19 else None


def services_of(request: Request) -> AppServices:
    services: AppServices = request.app.state.services
    return services


def tokens_of(request: Request) -> TokenService:
    return services_of(request).tokens


async def get_services(request: Request) -> AppServices:
    return services_of(request)


async def get_store(request: Request) -> UserStore:
    return services_of(request).store


async def get_settings(request: Request) -> AppSettings:
    return services_of(request).settings


Services = Annotated[AppServices, Depends(get_services)]
Store = Annotated[UserStore, Depends(get_store)]
Settings = Annotated[AppSettings, Depends(get_settings)]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


# 401 unless a valid, unrevoked bearer token; also puts the Authorize button in /docs.
# The revocation check reuses the keys the rate limiter read in its round trip.
bearer_claims = bearer_claims_dependency(tokens_of)
# Signed claims only, no database call: enough to read, and what keeps a cached GET cheap.
Claims = Annotated[AccessClaims, Depends(bearer_claims)]
# The role claim is signed; it can lag a role change by one access-token lifetime.
AdminClaims = Annotated[AccessClaims, Depends(require_role("admin", claims=bearer_claims))]


async def current_user(claims: Claims, store: Store) -> UserRecord:
    """The caller as the store knows them now: writes decide on today's role."""
    user_id = user_id_of(claims.sub)
    user = await store.get_user(user_id) if user_id is not None else None
    if user is None:  # deleted since the token was issued
        raise unauthorized("Could not validate credentials")
    return user


CurrentUser = Annotated[UserRecord, Depends(current_user)]

UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="1 … 2⁶³−1")]


async def editable_user(user_id: UserId, me: CurrentUser, store: Store) -> UserRecord:
    """The user a PUT/PATCH/DELETE names: 404 if absent, 403 unless it is the caller or an admin."""
    user = me if user_id == me.id else await store.get_user(user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="User not found")
    if user.id != me.id and me.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Not allowed to change another user")
    return user


EditableUser = Annotated[UserRecord, Depends(editable_user)]
