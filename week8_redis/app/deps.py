"""Dependencies (day 4): what a handler needs, declared in its signature, resolved by FastAPI.

`CurrentUser` is the whole of authentication for a route: a handler that takes
`current: CurrentUser` only runs for a valid token, and `current` is who sent it.
"""

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from .audit import AuditLog
from .cache import ResponseCache
from .db import UserStore
from .schemas import Message, UserPublic
from .security import AccessTokens, InvalidToken, PasswordHasher

# Reads `Authorization: Bearer <token>` (401 when it is missing), and tells the OpenAPI
# schema where tokens come from, which is what makes Swagger UI's Authorize button work.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token")


# `async def` although nothing is awaited: a plain `def` dependency would be sent to
# the threadpool, a thread hop for a dictionary lookup.
async def get_store(request: Request) -> UserStore:
    """The app's store: each app (and each test) has its own."""
    store: UserStore = request.app.state.store
    return store


async def get_audit(request: Request) -> AuditLog:
    """The app's audit log, written by background tasks."""
    audit: AuditLog = request.app.state.audit
    return audit


async def get_passwords(request: Request) -> PasswordHasher:
    """The app's password hasher, set up with the Argon2 cost from the settings."""
    passwords: PasswordHasher = request.app.state.passwords
    return passwords


async def get_tokens(request: Request) -> AccessTokens:
    """The app's token signer, set up with JWT_SECRET."""
    tokens: AccessTokens = request.app.state.tokens
    return tokens


async def get_cache(request: Request) -> ResponseCache:
    """The app's Redis cache, set up by its lifespan."""
    cache: ResponseCache = request.app.state.cache
    return cache


Store = Annotated[UserStore, Depends(get_store)]
Audit = Annotated[AuditLog, Depends(get_audit)]
Passwords = Annotated[PasswordHasher, Depends(get_passwords)]
Tokens = Annotated[AccessTokens, Depends(get_tokens)]
Cache = Annotated[ResponseCache, Depends(get_cache)]


async def get_current_user(
    token: Annotated[str, Depends(oauth2_scheme)], tokens: Tokens, store: Store, cache: Cache
) -> UserPublic:
    """The user the bearer token speaks for: 401 unless the token is valid and theirs."""
    # One answer for every failure (expired, forged, ...): either way the client's next
    # step is to log in again. WWW-Authenticate names the credentials that would work.
    invalid = HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail="Could not validate credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )
    try:
        user_id = tokens.user_id(token)
    except InvalidToken:
        raise invalid from None

    async def load() -> bytes:
        # A valid signature only proves we issued the token: the user may be gone since.
        user = await store.get(user_id)
        if user is None:
            raise invalid
        return user.public().model_dump_json().encode()

    # Finding the user is a read too, so it is cached too: a cached GET never waits for
    # the store. Every write invalidates it like any entry, so after a DELETE the deleted
    # user's token gets a 401 at once. Its own key, not `users:{id}`: else reading
    # yourself would say HIT after waiting for the store.
    body, _ = await cache.get_or_load(f"signed-in:{user_id}", load)
    return UserPublic.model_validate_json(body)


CurrentUser = Annotated[UserPublic, Depends(get_current_user)]

# For `responses=` on every route that needs a token, so the OpenAPI schema says so.
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": Message, "description": "No token, or not a valid one"}
}
