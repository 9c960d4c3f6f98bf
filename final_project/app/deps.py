"""Dependencies, as `Annotated` aliases a handler names in its signature.

All are `async def`: a plain `def` dependency would hop to the threadpool on
every request, which costs more than the work it does here.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status

from shared.auth import AccessClaims, TokenService, bearer_claims_dependency, require_role

from .config import Settings
from .services import MAX_ID, Services, user_id_of
from .store import UserRecord, UserStore


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def tokens_of(request: Request) -> TokenService:
    return services_of(request).tokens


async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_store(request: Request) -> UserStore:
    return services_of(request).store


async def get_settings(request: Request) -> Settings:
    return services_of(request).settings


# Named `...Dep` so they never shadow the classes they wrap.
ServicesDep = Annotated[Services, Depends(get_services)]
StoreDep = Annotated[UserStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


# 401 unless a valid, unrevoked bearer token; also puts the Authorize button in /docs.
# The revocation check reuses the keys the rate limiter read in its round trip.
bearer_claims = bearer_claims_dependency(tokens_of)
# Signed claims only, no database call: enough to read, and what keeps a cached GET cheap.
# A password, role or account change ends the token's session (TokenService.end_sessions),
# so the claims never outlive the account they describe.
Claims = Annotated[AccessClaims, Depends(bearer_claims)]
AdminClaims = Annotated[AccessClaims, Depends(require_role("admin", claims=bearer_claims))]


async def current_user(claims: Claims, store: StoreDep) -> UserRecord:
    """The caller as the store knows them now: writes decide on today's role."""
    user_id = user_id_of(claims.sub)
    user = await store.get_user(user_id) if user_id is not None else None
    if user is None:  # deleted since the token was issued
        raise unauthorized("Could not validate credentials")
    return user


CurrentUser = Annotated[UserRecord, Depends(current_user)]

UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="1 … 2⁶³−1")]


async def editable_user(user_id: UserId, me: CurrentUser, store: StoreDep) -> UserRecord:
    """The user a PUT/PATCH/DELETE names: 404 if absent, 403 unless it is the caller or an admin."""
    user = me if user_id == me.id else await store.get_user(user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="User not found")
    if user.id != me.id and me.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Not allowed to change another user")
    return user


EditableUser = Annotated[UserRecord, Depends(editable_user)]


async def spend_password_attempt(services: Services, email: str) -> None:
    """Count a password check against its account's budget (LOGIN_ACCOUNT_RATE_LIMIT): 429 past it.

    Per account, whatever the client address: rotating X-Forwarded-For or addresses
    buys no extra guesses. Keyed on a digest, so no email is written to Redis.
    """
    if not services.settings.rate_limit_enabled:
        return
    account = hashlib.sha256(email.encode()).hexdigest()[:32]  # pragma: no mutate (key name only)
    decision = await services.limiter.hit(f"account:{account}", (services.login_account_policy,))
    if not decision.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="Too many password attempts for this account",
            headers={"Retry-After": str(decision.retry_after)},
        )
