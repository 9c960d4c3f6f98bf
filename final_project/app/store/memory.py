"""`DATABASE_URL=memory://`: the week-6 in-memory store, slow on purpose.

Every call awaits `latency_ms` first, so the app behaves like one talking to a
real database. Each worker process has its own copy: with several workers only a
SQL database makes them one service.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from .base import AuditRecord, EmailTaken, UserRecord

_EDITABLE = frozenset({"name", "email", "role", "password_hash"})


@dataclass
class _Refresh:
    family: str
    user_id: str
    expires_at: datetime
    used: bool = False


class MemoryStore:
    """Users, audit events and token state in dicts, behind an `asyncio.Lock`."""

    def __init__(self, *, latency_ms: int = 100, audit_keep: int = 10_000) -> None:
        self._latency = max(latency_ms, 0) / 1000
        # The lock makes check-then-insert atomic even though a latency await sits
        # inside it: 20 concurrent sign-ups with one email give exactly one user.
        self._lock = asyncio.Lock()
        self._users: dict[int, UserRecord] = {}
        self._by_email: dict[str, int] = {}
        self._next_id = 1
        # Bounded like week 6's log: a long-running memory:// server must not grow forever.
        self._audit: deque[AuditRecord] = deque(maxlen=audit_keep)
        self._refresh: dict[str, _Refresh] = {}
        self._revoked_families: set[str] = set()
        self._revoked_access: dict[str, datetime] = {}
        # One "sessions valid from" mark per user at most, so no sweep is needed.
        self._valid_from: dict[str, datetime] = {}
        self._sweep_at = 1024

    async def _wait(self) -> None:
        if self._latency:
            await asyncio.sleep(self._latency)

    def _forget_expired(self) -> None:
        # Amortised: a sweep only once the maps have doubled since the last one.
        size = len(self._refresh) + len(self._revoked_access)
        if size < self._sweep_at:
            return
        now = datetime.now(UTC)
        self._refresh = {k: v for k, v in self._refresh.items() if v.expires_at > now}
        self._revoked_access = {k: v for k, v in self._revoked_access.items() if v > now}
        self._sweep_at = max(1024, 2 * (len(self._refresh) + len(self._revoked_access)))

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    # Users ---------------------------------------------------------------

    async def create_user(
        self, *, name: str, email: str, password_hash: str, role: str = "user"
    ) -> UserRecord:
        async with self._lock:
            await self._wait()
            key = email.lower()
            if key in self._by_email:
                raise EmailTaken(email)
            user = UserRecord(
                id=self._next_id, name=name, email=key, role=role, password_hash=password_hash
            )
            self._next_id += 1  # never reused, even after a delete
            self._users[user.id] = user
            self._by_email[key] = user.id
            return user

    async def get_user(self, user_id: int) -> UserRecord | None:
        await self._wait()
        return self._users.get(user_id)

    async def get_user_by_email(self, email: str) -> UserRecord | None:
        await self._wait()
        user_id = self._by_email.get(email.lower())
        return None if user_id is None else self._users.get(user_id)

    async def list_users(self, *, offset: int, limit: int) -> list[UserRecord]:
        await self._wait()
        ids = sorted(self._users)[offset : offset + limit]
        return [self._users[i] for i in ids]

    async def update_user(self, user_id: int, **changes: str) -> UserRecord | None:
        async with self._lock:
            await self._wait()
            user = self._users.get(user_id)
            if user is None:
                return None
            if "email" in changes:
                changes["email"] = changes["email"].lower()
                owner = self._by_email.get(changes["email"])
                if owner is not None and owner != user_id:
                    raise EmailTaken(changes["email"])
            unknown = changes.keys() - _EDITABLE
            if unknown:
                raise ValueError(f"not editable: {sorted(unknown)}")
            updated = replace(
                user,
                name=changes.get("name", user.name),
                email=changes.get("email", user.email),
                role=changes.get("role", user.role),
                password_hash=changes.get("password_hash", user.password_hash),
            )
            del self._by_email[user.email]
            self._by_email[updated.email] = user_id
            self._users[user_id] = updated
            return updated

    async def delete_user(self, user_id: int) -> bool:
        async with self._lock:
            await self._wait()
            user = self._users.pop(user_id, None)
            if user is None:
                return False
            del self._by_email[user.email]
            return True

    async def add_audit(
        self, action: str, user_id: int, at: datetime, *, actor_id: int | None = None
    ) -> None:
        await self._wait()
        self._audit.appendleft(
            AuditRecord(action=action, user_id=user_id, at=at, actor_id=actor_id)
        )

    async def list_audit(self, *, limit: int) -> list[AuditRecord]:
        await self._wait()
        return list(itertools.islice(self._audit, limit))

    # Token state (shared.auth.TokenStore) ----------------------------------

    async def add_refresh(self, jti: str, family: str, user_id: str, expires_at: datetime) -> None:
        await self._wait()
        self._forget_expired()
        self._refresh[jti] = _Refresh(family=family, user_id=user_id, expires_at=expires_at)

    async def use_refresh(self, jti: str) -> Literal["ok", "reused", "unknown"]:
        await self._wait()
        # No await between the check and the mark: of concurrent calls with one
        # jti, exactly one sees it unused.
        entry = self._refresh.get(jti)
        if entry is None or entry.expires_at <= datetime.now(UTC):
            return "unknown"
        if entry.used:
            return "reused"
        entry.used = True
        return "ok"

    async def revoke_family(self, family: str) -> None:
        await self._wait()
        self._revoked_families.add(family)

    async def family_revoked(self, family: str) -> bool:
        await self._wait()
        return family in self._revoked_families

    async def revoke_access(self, jti: str, expires_at: datetime) -> None:
        await self._wait()
        self._forget_expired()
        self._revoked_access[jti] = expires_at

    async def revoked_access(self, now: datetime) -> list[tuple[str, datetime]]:
        await self._wait()
        return [(jti, exp) for jti, exp in self._revoked_access.items() if exp > now]

    async def access_revoked(self, jti: str) -> bool:
        await self._wait()
        expires_at = self._revoked_access.get(jti)
        return expires_at is not None and expires_at > datetime.now(UTC)

    async def end_sessions(self, user_id: str, at: datetime) -> None:
        await self._wait()
        current = self._valid_from.get(user_id)
        self._valid_from[user_id] = at if current is None else max(current, at)

    async def sessions_valid_from(self, user_id: str) -> datetime | None:
        await self._wait()
        return self._valid_from.get(user_id)

    async def session_marks(self, since: datetime) -> list[tuple[str, datetime]]:
        await self._wait()
        return [(user_id, at) for user_id, at in self._valid_from.items() if at > since]
