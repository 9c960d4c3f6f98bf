"""`memory://`: the week-6 store, slow on purpose and safe under concurrency."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from final_project.app.store import EmailTaken, MemoryStore, create_store


async def test_every_call_awaits_the_configured_latency() -> None:
    store = MemoryStore(latency_ms=50)
    started = time.perf_counter()
    await store.get_user(1)
    assert time.perf_counter() - started >= 0.05
    assert await MemoryStore(latency_ms=0).get_user(1) is None


async def test_concurrent_sign_ups_with_one_email_make_one_user_despite_latency() -> None:
    store = MemoryStore(latency_ms=5)

    async def sign_up(n: int) -> bool:
        email = "Same@Example.com" if n % 2 else "same@example.com"
        try:
            await store.create_user(name=f"n{n}", email=email, password_hash="h")
        except EmailTaken:
            return False
        return True

    results = await asyncio.gather(*(sign_up(n) for n in range(20)))
    assert results.count(True) == 1
    assert len(await store.list_users(offset=0, limit=100)) == 1


async def test_of_concurrent_uses_of_a_refresh_token_one_wins_despite_latency() -> None:
    store = MemoryStore(latency_ms=5)
    await store.add_refresh("jti", "family", "1", datetime.now(UTC) + timedelta(days=1))
    outcomes = await asyncio.gather(*(store.use_refresh("jti") for _ in range(10)))
    assert sorted(outcomes) == ["ok"] + ["reused"] * 9


async def test_ids_are_never_reused_after_a_delete() -> None:
    store = MemoryStore(latency_ms=0)
    first = await store.create_user(name="a", email="a@example.com", password_hash="h")
    assert await store.delete_user(first.id)
    second = await store.create_user(name="a", email="a@example.com", password_hash="h")
    assert second.id > first.id


async def test_the_audit_log_keeps_only_the_newest_events() -> None:
    store = MemoryStore(latency_ms=0, audit_keep=3)
    for user_id in range(1, 6):
        await store.add_audit("user.created", user_id, datetime.now(UTC))
    assert [e.user_id for e in await store.list_audit(limit=10)] == [5, 4, 3]


async def test_expired_revocations_are_forgotten() -> None:
    store = MemoryStore(latency_ms=0)
    now = datetime.now(UTC)
    await store.revoke_access("old", now - timedelta(seconds=1))
    await store.revoke_access("new", now + timedelta(minutes=5))
    assert [jti for jti, _ in await store.revoked_access(now)] == ["new"]
    assert not await store.access_revoked("old")
    assert await store.access_revoked("new")


@pytest.mark.parametrize("url", ["mysql://db/app", "redis://localhost", "nonsense", ""])
def test_an_unsupported_database_url_is_refused_clearly(url: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL"):
        create_store(url, latency_ms=0)
