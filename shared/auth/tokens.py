"""JWTs: encoding, verification and the claims type (week 7: JWT).

Access and refresh tokens carry `typ` and each is refused where the other is
expected; HS256 only, every claim required, and a token whose lifetime exceeds
what this server hands out (a forgery with a leaked secret, or a setting since
made stricter) is refused.
"""

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.types import Scope

from .settings import AuthSettings

ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"


class InvalidToken(Exception):
    """A token that is malformed, expired, of the wrong type, revoked or reused."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The verified claims of a token; `typ` was checked by whoever decoded it."""

    sub: str
    role: str
    jti: str
    sid: str
    exp: int
    iat: int
    # When the login that began this session read the credentials (epoch seconds, a float).
    auth_time: float


# Both types of token carry the same claims: the names say which one was checked.
AccessClaims = TokenClaims
RefreshClaims = TokenClaims


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a login or a refresh hands out."""

    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret


_REQUIRED = ["exp", "iat", "sub", "jti", "typ", "iss", "sid", "role", "auth_time"]


class TokenCodec:
    """Signs and verifies tokens; remembers verified access tokens.

    A client sends the same access token with every request: its verified claims
    are kept (keyed by the exact token string, at most `verified_tokens`), so the
    signature is checked once per token and process, and expiry on every call.
    """

    def __init__(self, settings: AuthSettings, *, verified_tokens: int = 4096) -> None:
        self.access_seconds = settings.access_token_minutes * 60
        self.refresh_seconds = settings.refresh_token_days * 86400
        self.session_seconds = settings.session_max_days * 86400
        self._secret = settings.jwt_secret.get_secret_value()
        self._issuer = settings.issuer
        self._jwt = jwt.PyJWT()
        self._verified: dict[str, TokenClaims] = {}
        self.verified_max = verified_tokens

    def encode(
        self,
        typ: str,
        sub: str,
        role: str,
        sid: str,
        iat: int,
        exp: int,
        auth_time: float,
        jti: str | None = None,
    ) -> str:
        """A signed token of type `typ` (`ACCESS` or `REFRESH`)."""
        payload = {
            "iss": self._issuer,
            "sub": sub,
            "role": role,
            "sid": sid,
            "jti": jti or uuid.uuid4().hex,
            "typ": typ,
            "iat": iat,
            "exp": exp,
            "auth_time": auth_time,
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def decode_access(self, token: str) -> TokenClaims:
        """Verify an access token (signature, HS256, expiry, claims, typ); raises InvalidToken."""
        claims = self._verified.get(token)
        if claims is not None:
            if time.time() < claims.exp:
                return claims
            self._verified.pop(token, None)
            raise InvalidToken("Signature has expired")
        claims = self._decode(token, ACCESS)
        if len(self._verified) >= self.verified_max:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        self._verified[token] = claims
        return claims

    def decode_refresh(self, token: str) -> TokenClaims:
        """Verify a refresh token; raises InvalidToken (an access token is refused)."""
        return self._decode(token, REFRESH)

    def _decode(self, token: str, typ: str) -> TokenClaims:
        try:
            p: dict[str, Any] = self._jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                options={"require": _REQUIRED},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        if p.get("typ") != typ:
            raise InvalidToken(f"not an {typ} token" if typ == ACCESS else f"not a {typ} token")
        for name in ("sub", "role", "jti", "sid"):
            if not isinstance(p.get(name), str):
                raise InvalidToken(f"claim {name} must be a string")
        for name in ("exp", "iat"):
            if not isinstance(p.get(name), int):
                raise InvalidToken(f"claim {name} must be an integer")
        auth_time = p["auth_time"]
        if isinstance(auth_time, bool) or not isinstance(auth_time, int | float):
            raise InvalidToken("claim auth_time must be a number")
        # A correctly signed token that promises more than this server hands out (a
        # leaked secret's forgery, or a config since made stricter) is refused.
        lifetime = self.access_seconds if typ == ACCESS else self.refresh_seconds
        if p["exp"] - p["iat"] > lifetime:
            raise InvalidToken("token lifetime longer than allowed")
        if not auth_time <= p["iat"] + 1 or p["exp"] > auth_time + self.session_seconds:
            raise InvalidToken("token outlives its session")
        return TokenClaims(
            p["sub"], p["role"], p["jti"], p["sid"], p["exp"], p["iat"], float(auth_time)
        )


def bearer_token(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    raw: bytes
    for name, raw in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = raw.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None
