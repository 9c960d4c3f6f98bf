"""Logging in (day 3): trade an email and a password for a signed, short-lived token."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import TypeAdapter, ValidationError

from ..deps import Passwords, Store, Tokens
from ..schemas import Email, Message, Token

router = APIRouter(prefix="/auth", tags=["auth"])

# Sign-up's own rules for an email (lower-cased, normalised), so any casing finds the account.
email_rules = TypeAdapter(Email)


@router.post(
    "/token",
    responses={401: {"model": Message, "description": "Unknown email or wrong password"}},
)
async def log_in(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    store: Store,
    passwords: Passwords,
    tokens: Tokens,
    response: Response,
) -> Token:
    """Log in with the OAuth2 password form (`username` is the email), as Authorize does."""
    try:
        user = await store.get_by_email(email_rules.validate_python(form.username))
    except ValidationError:
        user = None
    # An unknown email gets the same answer as a wrong password, after the same Argon2
    # work (verify() checks a dummy hash): neither tells an attacker which emails exist.
    password_hash = user.password_hash if user else None
    if not await passwords.verify(form.password, password_hash) or user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="Incorrect email or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Until it expires a token is as good as a password: no cache along the way may keep it.
    response.headers["Cache-Control"] = "no-store"
    return Token(
        access_token=tokens.issue(user.id),
        expires_in=int(tokens.lifetime.total_seconds()),
    )
