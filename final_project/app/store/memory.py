"""`DATABASE_URL=memory://`: the week-6 in-memory store, slow on purpose.

Every call awaits `latency_ms` first, so the app behaves like one talking to a
real database. Each worker process has its own copy: with several workers only a
SQL database makes them one service.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import replace
from datetime import datetime
from typing import Literal

from shared.auth import MemoryTokenStore

from .base import AuditRecord, EmailTaken, UserRecord

_EDITABLE = frozenset({"name", "email", "role", "password_hash"})


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
        self._tokens = MemoryTokenStore()

    async def _wait(self) -> None:
        if self._latency:
            await asyncio.sleep(self._latency)

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

    async def replace_password_hash(self, user_id: int, old: str, new: str) -> bool:
        async with self._lock:
            await self._wait()
            user = self._users.get(user_id)
            if user is None or user.password_hash != old:
                return False
            self._users[user_id] = replace(user, password_hash=new)
            return True

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

    # Token state (shared.auth.TokenStore): shared's own, behind the same latency.
    # One line of latency and one of delegation per method, written out: a
    # __getattr__ would hide the protocol from mypy.

    async def add_refresh(self, jti: str, family: str, user_id: str, expires_at: datetime) -> None:
        await self._wait()
        await self._tokens.add_refresh(jti, family, user_id, expires_at)

    async def use_refresh(self, jti: str) -> Literal["ok", "reused", "unknown"]:
        await self._wait()
        return await self._tokens.use_refresh(jti)

    async def revoke_family(self, family: str) -> None:
        await self._wait()
        await self._tokens.revoke_family(family)

    async def family_revoked(self, family: str) -> bool:
        await self._wait()
        return await self._tokens.family_revoked(family)

    async def revoke_access(self, jti: str, expires_at: datetime) -> None:
        await self._wait()
        await self._tokens.revoke_access(jti, expires_at)

    async def revoked_access(self, now: datetime) -> list[tuple[str, datetime]]:
        await self._wait()
        return await self._tokens.revoked_access(now)

    async def access_revoked(self, jti: str) -> bool:
        await self._wait()
        return await self._tokens.access_revoked(jti)

    async def end_sessions(self, user_id: str, at: datetime) -> None:
        await self._wait()
        await self._tokens.end_sessions(user_id, at)

    async def sessions_valid_from(self, user_id: str) -> datetime | None:
        await self._wait()
        return await self._tokens.sessions_valid_from(user_id)

    async def session_marks(self, since: datetime) -> list[tuple[str, datetime]]:
        await self._wait()
        return await self._tokens.session_marks(since)
