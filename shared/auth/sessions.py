"""Sessions: issuing, refresh rotation, revocation and the revocation check (week 7: secure API).

- A login starts a session (a refresh family); each refresh spends its token
  (atomic in the store) and hands out a new pair in the same family. A spent
  token presented again means two parties hold it, one of them a thief: the
  whole family is revoked, access tokens included.
- Revocation (logout, reuse) is written to the durable `TokenStore` first and
  mirrored in Redis (`RedisDenylist`); while Redis can't be trusted the store answers.
- Sessions end when the account changes (`end_sessions`): a per-user "valid from"
  mark refuses every token of a session that began before it. A session also has
  an absolute lifetime (`session_max_days`) that rotation never extends.
"""

import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from ..redis import AnyRedis as Redis
from ..redis import RedisCircuit
from .denylist import RedisDenylist
from .settings import AuthSettings
from .store import FAMILY_PREFIX, TokenStore
from .tokens import ACCESS, REFRESH, InvalidToken, TokenClaims, TokenCodec, TokenPair
from .verification import SubjectLookup, TokenVerifier, remember

RoleLookup = Callable[[str], Awaitable[str | None]]


class TokenService(TokenVerifier):
    """Issues, rotates and revokes tokens; checks them as a `TokenVerifier`.

    `redis` may be None (no fast path: the store answers every revocation check).
    """

    def __init__(
        self,
        settings: AuthSettings,
        store: TokenStore,
        redis: Redis | None,
        prefix: str,
        *,
        circuit_cooldown: float = 1.0,
        marker_seconds: int = 3600,
        repair_interval: float = 0.2,
        verified_tokens: int = 4096,
        subject_exists: SubjectLookup | None = None,
        on_circuit_change: Callable[[bool], None] | None = None,
        on_reuse: Callable[[], None] | None = None,
    ) -> None:
        codec = TokenCodec(settings, verified_tokens=verified_tokens)
        self._circuit = RedisCircuit(circuit_cooldown, on_change=on_circuit_change)
        denylist = RedisDenylist(
            redis,
            store,
            prefix,
            self._circuit,
            session_seconds=codec.session_seconds,
            marker_seconds=marker_seconds,
            repair_interval=repair_interval,
        )
        super().__init__(codec, store, denylist, subject_exists=subject_exists)
        self.settings = settings
        self.redis = redis
        self.prefix = prefix
        self.access_seconds = codec.access_seconds
        self.refresh_seconds = codec.refresh_seconds
        self.session_seconds = codec.session_seconds
        # Told each time a spent refresh token comes back (metrics, alerts).
        self._on_reuse = on_reuse

    @property
    def _marker(self) -> bytes | None:
        """The run_id of the server whose denylist this process verified (None: not yet)."""
        return self._denylist.recovery.verified

    async def aclose(self) -> None:
        """Stop the background repair task, if one is running."""
        await self._denylist.recovery.aclose()

    async def issue(self, user_id: str, role: str, *, auth_time: float | None = None) -> TokenPair:
        """Start a new session (refresh family) and hand out its first pair.

        `auth_time`: when the login read the credentials it checked (`time.time()`
        before the store lookup), default now. A password change that lands while a
        login with the old one is still hashing then ends that session too.
        """
        started = time.time() if auth_time is None else auth_time
        return await self._issue_pair(user_id, role, uuid.uuid4().hex, started)

    async def _issue_pair(
        self, user_id: str, role: str, family: str, auth_time: float
    ) -> TokenPair:
        now = int(time.time())
        # Neither token outlives the session: rotation never pushes its end further.
        session_end = int(auth_time) + self.session_seconds
        if session_end <= now:
            raise InvalidToken("session expired: log in again")
        access_exp = min(now + self.access_seconds, session_end)
        access = self.codec.encode(ACCESS, user_id, role, family, now, access_exp, auth_time)
        refresh_jti = uuid.uuid4().hex
        refresh_exp = min(now + self.refresh_seconds, session_end)
        refresh = self.codec.encode(
            REFRESH, user_id, role, family, now, refresh_exp, auth_time, refresh_jti
        )
        await self.store.add_refresh(refresh_jti, family, user_id, _utc(refresh_exp))
        return TokenPair(access, refresh, access_exp - now)

    async def refresh(self, refresh_token: str, *, role_of: RoleLookup | None = None) -> TokenPair:
        """Rotate a refresh token: a new pair in the same family; raises InvalidToken.

        A spent token presented again revokes the whole family (its access tokens
        too): of two parties holding one refresh token, one is a thief. `role_of`
        (user id -> current role, None when the user is gone) keeps roles fresh.
        """
        claims = self.codec.decode_refresh(refresh_token)
        if await self.store.family_revoked(claims.sid):
            raise InvalidToken("session revoked")
        valid_from = await self.store.sessions_valid_from(claims.sub)
        if valid_from is not None and claims.auth_time < valid_from.timestamp():
            await self.revoke_family(claims.sid)
            raise InvalidToken("session ended by an account change")
        outcome = await self.store.use_refresh(claims.jti)
        if outcome == "reused":
            if self._on_reuse is not None:
                self._on_reuse()
            await self.revoke_family(claims.sid)
            raise InvalidToken("refresh token reused: session revoked")
        if outcome != "ok":
            raise InvalidToken("unknown refresh token")
        role = claims.role
        if role_of is not None:
            current = await role_of(claims.sub)
            if current is None:
                await self.revoke_family(claims.sid)
                raise InvalidToken("user no longer exists")
            role = current
        return await self._issue_pair(claims.sub, role, claims.sid, claims.auth_time)

    async def logout(self, claims: TokenClaims, refresh_token: str | None) -> None:
        """End the session: the access token, its family and the refresh token stop working."""
        remember(self._refused, claims.jti, self._seen_max)
        await self.store.revoke_access(claims.jti, _utc(claims.exp))
        await self._denylist.deny_token(claims.jti, claims.exp - int(time.time()))
        await self.revoke_family(claims.sid)
        if refresh_token:
            try:
                other = self.codec.decode_refresh(refresh_token)
            except InvalidToken:
                return  # nothing to revoke: it does not work anyway
            if other.sub == claims.sub and other.sid != claims.sid:
                await self.revoke_family(other.sid)

    async def revoke_family(self, family: str) -> None:
        """Revoke a session: its refresh tokens and every access token issued in it."""
        await self.store.revoke_family(family)
        # Access tokens of the family live at most access_seconds from now.
        until = int(time.time()) + self.access_seconds
        await self.store.revoke_access(FAMILY_PREFIX + family, _utc(until))
        await self._denylist.deny_family(family, self.access_seconds)

    async def end_sessions(self, user_id: str) -> None:
        """End every session of `user_id` that began before now (password, role, deletion).

        Call it after the change is stored. Durable first, then mirrored in Redis, where
        every worker's next request reads it in the round trip it already makes.
        """
        at = datetime.now(UTC)
        await self.store.end_sessions(user_id, at)
        await self._denylist.end_sessions(user_id, at)


def _utc(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
