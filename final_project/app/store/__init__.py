"""Pick the store `DATABASE_URL` names."""

from __future__ import annotations

from .base import ASYNC_DRIVERS, AuditRecord, EmailTaken, UserRecord, UserStore
from .memory import MemoryStore

__all__ = ["AuditRecord", "EmailTaken", "MemoryStore", "UserRecord", "UserStore", "create_store"]


def create_store(database_url: str, *, latency_ms: int) -> UserStore:
    """`memory://` → MemoryStore; SQLite and PostgreSQL URLs → SqlStore."""
    scheme, sep, rest = database_url.partition("://")
    if not sep:
        raise ValueError(f"DATABASE_URL must look like scheme://..., got {database_url!r}")
    if scheme == "memory":
        return MemoryStore(latency_ms=latency_ms)
    scheme = ASYNC_DRIVERS.get(scheme, scheme)
    if scheme.startswith(("sqlite+aiosqlite", "postgresql+asyncpg")):
        # Imported here so memory:// never loads SQLAlchemy.
        from .sql import SqlStore

        return SqlStore(f"{scheme}://{rest}")
    raise ValueError(
        "DATABASE_URL must be memory://, sqlite+aiosqlite:///path or "
        f"postgresql+asyncpg://user@host/db, got scheme {scheme!r}"
    )
