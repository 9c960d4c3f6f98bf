"""Passwords and tokens (days 1-3): how a server learns, and then remembers, who you are.

- A password is kept only as an Argon2 hash: slow and memory-hungry on purpose, so a
  stolen copy of the users table takes years to turn back into passwords.
- A token is a JWT, `header.payload.signature`: the server signs "user 7, until 10:15"
  with its secret, and later trusts any token whose signature checks out, without
  looking anything up. Anyone can read a payload (it is only base64), nobody can change it.
"""

import uuid
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from starlette.concurrency import run_in_threadpool

# HS256 only, and never whatever the token's header asks for: a server that believed
# the header would accept `"alg": "none"`, a token with no signature at all.
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["sub", "exp", "iat", "jti"]


class InvalidToken(Exception):
    """Expired, tampered with, signed with another key or algorithm, or missing a claim."""


class PasswordHasher:
    """Argon2 through pwdlib. A hash or a check takes ~0.2 s of CPU, so it runs in a thread."""

    def __init__(self, time_cost: int, memory_cost: int) -> None:
        self._hash = PasswordHash((Argon2Hasher(time_cost=time_cost, memory_cost=memory_cost),))
        # Checked when the email is unknown, so that login takes as long as a wrong password's.
        self._dummy_hash = self._hash.hash("no account has this password")

    async def hash(self, password: str) -> str:
        # On the event loop this would stall every other request for ~0.2 s; in the
        # threadpool, Argon2 (which releases the GIL) runs on another core meanwhile.
        return await run_in_threadpool(self._hash.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Check a password; without a hash (no such user) spend the same time, then say no."""
        matches = await run_in_threadpool(
            self._hash.verify, password, password_hash or self._dummy_hash
        )
        return matches and password_hash is not None


class AccessTokens:
    """Signs and checks the JWTs that `Authorization: Bearer ...` carries."""

    def __init__(self, secret: str, minutes: int) -> None:
        self._secret = secret
        self.lifetime = timedelta(minutes=minutes)

    def issue(self, user_id: int) -> str:
        now = datetime.now(UTC)
        claims = {
            "sub": str(user_id),  # the subject: who this token speaks for (a string, per RFC 7519)
            "iat": now,  # issued at
            "exp": now + self.lifetime,  # expires: a stolen token is only good until then
            "jti": uuid.uuid4().hex,  # unique per token: what a deny list would name to revoke it
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def user_id(self, token: str) -> int:
        """The user a valid token speaks for; InvalidToken for anything else."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options={"require": REQUIRED_CLAIMS}
            )
            return int(claims["sub"])
        except (jwt.InvalidTokenError, ValueError) as exc:
            raise InvalidToken(str(exc)) from None
