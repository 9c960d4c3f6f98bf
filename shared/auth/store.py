"""The durable token state (`TokenStore`) and an in-memory one (week 7: secure API).

Revocations and session marks are written here first: Redis only mirrors them
(see `denylist`), and is refilled from here whenever it may have lost them.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

# Family revocations go through `TokenStore.revoke_access` under this prefix too, so a
# refill from `revoked_access()` restores them (jtis are uuid hex and never collide).
FAMILY_PREFIX = "family:"


class TokenStore(Protocol):
    """Durable token state: it survives Redis restarts, and Redis is refilled from it."""

    async def add_refresh(
        self, jti: str, family: str, user_id: str, expires_at: datetime
    ) -> None: ...

    async def use_refresh(self, jti: str) -> Literal["ok", "reused", "unknown"]:
        """Mark a refresh token spent; of concurrent calls with one jti exactly one is "ok"."""
        ...

    async def revoke_family(self, family: str) -> None: ...

    async def family_revoked(self, family: str) -> bool: ...

    async def revoke_access(self, jti: str, expires_at: datetime) -> None: ...

    async def revoked_access(self, now: datetime) -> list[tuple[str, datetime]]:
        """Every revoked access jti that has not expired yet."""
        ...

    async def access_revoked(self, jti: str) -> bool: ...

    async def end_sessions(self, user_id: str, at: datetime) -> None:
        """Sessions of `user_id` that began before `at` are over (the latest mark wins)."""
        ...

    async def sessions_valid_from(self, user_id: str) -> datetime | None: ...

    async def session_marks(self, since: datetime) -> list[tuple[str, datetime]]:
        """Every mark set after `since` (older ones outlived every session they ended)."""
        ...


@dataclass
class _Refresh:
    # The family and the user are not kept: the memory store revokes by family and by
    # user with marks of its own, never by looking up a token's.
    expires_at: datetime
    used: bool = False


class MemoryTokenStore:
    """A `TokenStore` in this process's memory: for `memory://` and tests.

    Every method runs without an await between its read and its write, which is
    what makes `use_refresh` atomic under asyncio. Expired entries count as gone,
    and are dropped once the maps have doubled since the last sweep.
    """

    def __init__(self) -> None:
        self._refresh: dict[str, _Refresh] = {}
        self._revoked_families: set[str] = set()
        self._revoked_access: dict[str, datetime] = {}
        # One "sessions valid from" mark per user at most, so no sweep is needed.
        self._valid_from: dict[str, datetime] = {}
        self._sweep_at = 1024

    def _forget_expired(self) -> None:
        # Amortised: a sweep only once the maps have doubled since the last one.
        size = len(self._refresh) + len(self._revoked_access)
        if size < self._sweep_at:
            return
        now = datetime.now(UTC)
        self._refresh = {k: v for k, v in self._refresh.items() if v.expires_at > now}
        self._revoked_access = {k: v for k, v in self._revoked_access.items() if v > now}
        self._sweep_at = max(1024, 2 * (len(self._refresh) + len(self._revoked_access)))

    async def add_refresh(self, jti: str, family: str, user_id: str, expires_at: datetime) -> None:
        self._forget_expired()
        # setdefault: like the SQL store, a token already spent is never made fresh again.
        self._refresh.setdefault(jti, _Refresh(expires_at=expires_at))

    async def use_refresh(self, jti: str) -> Literal["ok", "reused", "unknown"]:
        entry = self._refresh.get(jti)
        if entry is None or entry.expires_at <= datetime.now(UTC):
            return "unknown"
        if entry.used:
            return "reused"
        entry.used = True
        return "ok"

    async def revoke_family(self, family: str) -> None:
        self._revoked_families.add(family)

    async def family_revoked(self, family: str) -> bool:
        return family in self._revoked_families

    async def revoke_access(self, jti: str, expires_at: datetime) -> None:
        self._forget_expired()
        self._revoked_access[jti] = expires_at

    async def revoked_access(self, now: datetime) -> list[tuple[str, datetime]]:
        return [(jti, exp) for jti, exp in self._revoked_access.items() if exp > now]

    async def access_revoked(self, jti: str) -> bool:
        expires_at = self._revoked_access.get(jti)
        return expires_at is not None and expires_at > datetime.now(UTC)

    async def end_sessions(self, user_id: str, at: datetime) -> None:
        current = self._valid_from.get(user_id)
        self._valid_from[user_id] = at if current is None else max(current, at)

    async def sessions_valid_from(self, user_id: str) -> datetime | None:
        return self._valid_from.get(user_id)

    async def session_marks(self, since: datetime) -> list[tuple[str, datetime]]:
        return [(user, at) for user, at in self._valid_from.items() if at > since]
