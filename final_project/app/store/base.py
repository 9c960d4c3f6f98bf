"""What the routers need from a store, and the records it hands back.

Routers see only `UserStore`; `MemoryStore` and `SqlStore` both implement it, and
both also keep the durable token state `shared.auth.TokenStore` asks for, so a
logout or a revoked refresh chain outlives a Redis restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

# The asyncio driver of each plain URL scheme; here, where no SQLAlchemy is imported.
ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


@dataclass(frozen=True)
class UserRecord:
    id: int
    name: str
    email: str
    role: str
    password_hash: str


@dataclass(frozen=True)
class AuditRecord:
    action: str
    user_id: int
    at: datetime
    actor_id: int | None = None  # who made the change (None: recorded before actors were)


class EmailTaken(Exception):
    """Another user already has this email (compared case-insensitively)."""


@runtime_checkable
class UserStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool: ...

    async def create_user(
        self, *, name: str, email: str, password_hash: str, role: str = "user"
    ) -> UserRecord: ...

    async def get_user(self, user_id: int) -> UserRecord | None: ...

    async def get_user_by_email(self, email: str) -> UserRecord | None: ...

    async def list_users(self, *, offset: int, limit: int) -> list[UserRecord]: ...

    async def update_user(self, user_id: int, **changes: str) -> UserRecord | None: ...

    async def replace_password_hash(self, user_id: int, old: str, new: str) -> bool:
        """Store `new` only while the stored hash is still `old`; True when it was stored.

        A login re-hashes with today's Argon2 parameters after a slow verify: a password
        change that landed meanwhile must win, not be undone by the old password's hash.
        """
        ...

    async def delete_user(self, user_id: int) -> bool: ...

    async def add_audit(
        self, action: str, user_id: int, at: datetime, *, actor_id: int | None = None
    ) -> None: ...

    async def list_audit(self, *, limit: int) -> list[AuditRecord]: ...

    # The durable half of shared.auth.TokenStore.
    async def add_refresh(
        self, jti: str, family: str, user_id: str, expires_at: datetime
    ) -> None: ...

    async def use_refresh(self, jti: str) -> Literal["ok", "reused", "unknown"]: ...

    async def revoke_family(self, family: str) -> None: ...

    async def family_revoked(self, family: str) -> bool: ...

    async def revoke_access(self, jti: str, expires_at: datetime) -> None: ...

    async def revoked_access(self, now: datetime) -> list[tuple[str, datetime]]: ...

    async def access_revoked(self, jti: str) -> bool: ...

    async def end_sessions(self, user_id: str, at: datetime) -> None: ...

    async def sessions_valid_from(self, user_id: str) -> datetime | None: ...

    async def session_marks(self, since: datetime) -> list[tuple[str, datetime]]: ...
