"""Day 4: the store is async and slow on purpose; DB_LATENCY_MS says how slow."""

import asyncio
import time

import pytest

from tests.clients import serve
from week6_async.app.config import Settings
from week6_async.app.db import UserStore
from week6_async.app.main import create_app
from week6_async.app.schemas import UserCreate


async def test_every_store_call_waits_db_latency_ms() -> None:
    store = UserStore(latency_ms=200)
    started = time.perf_counter()
    await store.get(1)
    assert time.perf_counter() - started >= 0.2


async def test_requests_wait_the_configured_latency() -> None:
    async with serve(create_app(Settings(db_latency_ms=250))) as client:
        started = time.perf_counter()
        r = await client.get("/users")
        assert r.status_code == 200, r.text
        assert time.perf_counter() - started >= 0.25


async def test_waiting_requests_overlap_instead_of_queueing() -> None:
    # Ten reads of 0.3 s each: one after another would take ten times as long as one.
    # Measured against one read timed here, so a busy machine slows both sides.
    async with serve(create_app(Settings(db_latency_ms=300))) as client:
        started = time.perf_counter()
        assert (await client.get("/users")).status_code == 200
        one = time.perf_counter() - started
        started = time.perf_counter()
        responses = await asyncio.gather(*(client.get("/users") for _ in range(10)))
        ten = time.perf_counter() - started
    assert all(r.status_code == 200 for r in responses)
    assert ten < 5 * one, (one, ten)


def test_latency_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_LATENCY_MS", "0")
    assert Settings().db_latency_ms == 0
    monkeypatch.delenv("DB_LATENCY_MS")
    assert Settings(_env_file=None).db_latency_ms == 100


def test_negative_latency_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_LATENCY_MS", "-5")
    with pytest.raises(ValueError, match="db_latency_ms"):
        Settings()


async def test_email_stays_unique_although_an_await_sits_between_check_and_insert() -> None:
    store = UserStore(latency_ms=20)
    results = await asyncio.gather(
        *(store.create(UserCreate(name=f"R{n}", email="race@example.com")) for n in range(20)),
        return_exceptions=True,
    )
    assert sum(not isinstance(result, Exception) for result in results) == 1
