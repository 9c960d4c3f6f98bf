"""What a request's token is worth: its claims, and whether it still works (week 7: JWT).

The request path of `TokenService`, kept apart from issuing and rotation: a
bearer dependency or a rate limiter needs only this.
"""

import contextlib
from collections.abc import Awaitable, Callable

from starlette.types import Scope

from .denylist import RedisDenylist
from .store import TokenStore
from .tokens import InvalidToken, TokenClaims, TokenCodec, bearer_token

SubjectLookup = Callable[[str], Awaitable[bool]]


class TokenVerifier:
    """Decodes a request's bearer token once and checks it against revocations.

    Revocation: the Redis denylist while it is complete, else the durable store.
    `subject_exists(sub)`, when given, is asked once per user and process whether a
    token's `sub` still names someone; after that, deletion is the session mark's job.
    """

    def __init__(
        self,
        codec: TokenCodec,
        store: TokenStore,
        denylist: RedisDenylist,
        *,
        subject_exists: SubjectLookup | None = None,
    ) -> None:
        self.codec = codec
        self.store = store
        self._denylist = denylist
        self._subject_exists = subject_exists
        # Users this process has seen exist, and tokens it has found revoked: both
        # bounded like the verified tokens, and both only ever trusted in the safe direction.
        self._seen_max = codec.verified_max
        self._known_subjects: dict[str, None] = {}
        self._refused: dict[str, None] = {}

    def decode_access(self, token: str) -> TokenClaims:
        """Verify an access token (signature, HS256, expiry, claims, typ); raises InvalidToken.

        Verified claims are remembered per token string: the signature is checked
        once per token and process, expiry on every call.
        """
        return self.codec.decode_access(token)

    def decode_refresh(self, token: str) -> TokenClaims:
        """Verify a refresh token; raises InvalidToken (an access token is refused)."""
        return self.codec.decode_refresh(token)

    def claims_from_scope(self, scope: Scope) -> TokenClaims | None:
        """The verified (not revocation-checked) claims of the request's bearer token.

        Decoded once per request and kept in `scope["state"]`, so a rate limiter
        that keys on the user and the auth dependency share one decode.
        """
        state = scope.setdefault("state", {})
        if "access_claims" in state:
            cached: TokenClaims | None = state["access_claims"]
            return cached
        claims: TokenClaims | None = None
        token = bearer_token(scope)
        if token is not None:
            with contextlib.suppress(InvalidToken):
                claims = self.codec.decode_access(token)
        state["access_claims"] = claims
        return claims

    def subject_of(self, scope: Scope) -> str | None:
        """The `sub` of the request's valid token, unless this process found it revoked.

        What a rate limiter keys on: a replayed logged-out token then spends its
        sender's address budget, not the budget of the user it names.
        """
        claims = self.claims_from_scope(scope)
        if claims is None or claims.jti in self._refused:
            return None
        return claims.sub

    def peek_keys(self, scope: Scope) -> list[str]:
        """The keys `is_revoked` reads for this request's token (a `shared.redis.PeekSource`).

        Empty until this process has verified the denylist, or without a valid token.
        """
        claims = self.claims_from_scope(scope)
        return [] if claims is None else self._denylist.peek_keys(claims)

    async def is_revoked(self, claims: TokenClaims, *, scope: Scope | None = None) -> bool:
        """True when the token no longer works: revoked, its session ended, or its user gone.

        One MGET on Redis, else the durable store. With `scope`, values already read
        for this request (`peek_keys`, carried by the rate limiter's round trip) are
        used instead of a round trip of its own.
        """
        revoked = await self._denylist.revoked(claims, scope)
        if revoked is None:
            revoked = await self._revoked_in_store(claims)
        if not revoked and claims.sub not in self._known_subjects:
            if self._subject_exists is not None and not await self._subject_exists(claims.sub):
                revoked = True
            else:
                remember(self._known_subjects, claims.sub, self._seen_max)
        if revoked:
            remember(self._refused, claims.jti, self._seen_max)
        return revoked

    async def _revoked_in_store(self, claims: TokenClaims) -> bool:
        if await self.store.access_revoked(claims.jti) or await self.store.family_revoked(
            claims.sid
        ):
            return True
        valid_from = await self.store.sessions_valid_from(claims.sub)
        return valid_from is not None and claims.auth_time < valid_from.timestamp()


def remember(seen: dict[str, None], key: str, limit: int) -> None:
    """Add `key` to a bounded insertion-ordered set, dropping the oldest when full."""
    if len(seen) >= limit:
        seen.pop(next(iter(seen)))  # the oldest
    seen[key] = None  # pragma: no mutate (a set: the value is never read)
