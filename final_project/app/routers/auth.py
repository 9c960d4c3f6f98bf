"""Log in, rotate a refresh token, log out.

`POST /auth/token` takes the OAuth2 password form, so Swagger UI's Authorize
button works. Its rate limits are its own: LOGIN_RATE_LIMIT per client address,
and LOGIN_ACCOUNT_RATE_LIMIT per account, so a password-guessing client runs out
long before the general budget would, however many addresses it has.

Token responses carry `Cache-Control: no-store` (RFC 6749 §5.1): no browser or
proxy cache may keep a token.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Response, status

from shared.auth import InvalidToken, TokenPair
from shared.identity import normalize_email

from ..deps import Claims, ServicesDep, spend_password_attempt
from ..errors import problem_responses
from ..schemas import LogoutRequest, RefreshRequest, TokenResponse

router = APIRouter(prefix="/auth", tags=["auth"])

BAD_LOGIN = "Incorrect email or password"
BEARER = {"WWW-Authenticate": "Bearer"}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def token_response(pair: TokenPair, response: Response) -> TokenResponse:
    response.headers.update(NO_STORE)
    return TokenResponse(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@router.post("/token", responses=problem_responses(401, 413, 422, 429, 503))
async def log_in(
    username: Annotated[str, Form(min_length=1, max_length=320, description="your email")],
    password: Annotated[str, Form(min_length=1, max_length=128)],
    services: ServicesDep,
    response: Response,
    # The OAuth2 password grant, the only one served: a client asking for another
    # (client_credentials, ...) gets 422, never a login.
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
) -> TokenResponse:
    """Exchange email and password for an access token and a refresh token."""
    # Taken before the credentials are read: a password change that lands while this
    # login is still hashing the old password ends the session it is about to begin.
    auth_time = time.time()
    email = normalize_email(username)
    await spend_password_attempt(services, email)
    user = await services.store.get_user_by_email(email)
    # An unknown email still verifies a dummy hash, so it takes as long as a wrong password.
    valid, new_hash = await services.hasher.verify(
        password, user.password_hash if user is not None else None
    )
    if user is None or not valid:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=BAD_LOGIN, headers=BEARER)
    if new_hash is not None:
        # The Argon2 parameters changed since this hash was made: upgrade it now, while
        # the plain password is at hand, unless the password itself changed meanwhile.
        await services.store.replace_password_hash(user.id, user.password_hash, new_hash)
    pair = await services.tokens.issue(str(user.id), user.role, auth_time=auth_time)
    return token_response(pair, response)


@router.post("/refresh", responses=problem_responses(401, 413, 422, 429))
async def refresh(body: RefreshRequest, services: ServicesDep, response: Response) -> TokenResponse:
    """Swap a refresh token for a new pair; a spent one revokes its whole session."""
    store = services.store

    async def role_of(user_id: str) -> str | None:
        user = (
            await store.get_user(int(user_id)) if user_id.isascii() and user_id.isdigit() else None
        )
        return None if user is None else user.role

    try:
        pair = await services.tokens.refresh(body.refresh_token, role_of=role_of)
    except InvalidToken:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="Invalid refresh token", headers=BEARER
        ) from None
    return token_response(pair, response)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 413, 422, 429),
)
async def log_out(claims: Claims, services: ServicesDep, body: LogoutRequest | None = None) -> None:
    """End this session: the access token and its refresh tokens stop working."""
    await services.tokens.logout(claims, body.refresh_token if body is not None else None)
