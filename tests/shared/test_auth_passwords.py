"""shared.auth passwords: Argon2 off the event loop, bounded, dummy hash, rehash."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import pytest
from pwdlib import PasswordHash

from shared.auth import AuthSettings, HashingBusy, PasswordHasher, hashing_slots


def cheap(time_cost: int = 1, max_concurrent: int = 2) -> PasswordHasher:
    return PasswordHasher(
        time_cost=time_cost, memory_cost=64, parallelism=1, max_concurrent=max_concurrent
    )


async def test_a_hash_verifies_its_password_only() -> None:
    hasher = cheap()
    hashed = await hasher.hash("correct horse")
    assert hashed.startswith("$argon2id$")
    assert await hasher.verify("correct horse", hashed) == (True, None)
    assert await hasher.verify("wrong horse", hashed) == (False, None)


async def test_default_parameters_use_64_mib_and_come_from_settings() -> None:
    hashed = await PasswordHasher().hash("pw")
    assert "$m=65536,t=3,p=1$" in hashed
    settings = AuthSettings(jwt_secret="k" * 32, argon2_memory_cost=128, argon2_time_cost=2)
    hashed = await PasswordHasher(settings).hash("pw")
    assert "$m=128,t=2,p=1$" in hashed


class CountingHash:
    """Wraps pwdlib to count verifications and watch how many run at once."""

    def __init__(self, inner: PasswordHash) -> None:
        self.inner = inner
        self.verifications = 0
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def _enter(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)

    def _leave(self) -> None:
        with self.lock:
            self.running -= 1

    def hash(self, password: str) -> str:
        self._enter()
        try:
            time.sleep(0.03)
            return self.inner.hash(password)
        finally:
            self._leave()

    def verify(self, password: str, hashed: str) -> bool:
        valid = self.inner.verify(password, hashed)
        self.verifications += 1
        return valid

    def verify_and_update(self, password: str, hashed: str) -> tuple[bool, str | None]:
        outcome = self.inner.verify_and_update(password, hashed)
        self.verifications += 1
        return outcome


async def test_an_unknown_user_still_costs_one_argon2_verification() -> None:
    hasher = cheap()
    counting = CountingHash(hasher._hash)
    hasher._hash = counting  # type: ignore[assignment]
    assert await hasher.verify("whatever", None) == (False, None)
    assert await hasher.verify("whatever", "not-a-hash") == (False, None)
    assert counting.verifications == 2


async def test_concurrent_hashes_are_bounded_by_the_semaphore() -> None:
    hasher = cheap(max_concurrent=2)
    counting = CountingHash(hasher._hash)
    hasher._hash = counting  # type: ignore[assignment]
    await asyncio.gather(*(hasher.hash(f"pw{i}") for i in range(8)))
    assert counting.most == 2


async def test_hashing_runs_off_the_event_loop() -> None:
    hasher = cheap()
    counting = CountingHash(hasher._hash)  # each hash sleeps 30 ms in its thread
    hasher._hash = counting  # type: ignore[assignment]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await hasher.hash("pw")
    task.cancel()
    assert ticks >= 5  # the loop kept running while the thread hashed


async def test_a_hash_with_old_parameters_is_rehashed_on_login() -> None:
    old = await cheap(time_cost=1).hash("pw")
    current = cheap(time_cost=2)
    valid, new_hash = await current.verify("pw", old)
    assert valid
    assert new_hash is not None
    assert "t=2" in new_hash
    assert await current.verify("pw", new_hash) == (True, None)
    # A wrong password never yields a new hash.
    assert await current.verify("nope", old) == (False, None)


def test_a_short_jwt_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        AuthSettings(jwt_secret="x" * 31)
    assert AuthSettings(jwt_secret="x" * 32).jwt_secret.get_secret_value() == "x" * 32


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux")
async def test_hashing_threads_yield_the_cpu_to_the_event_loop() -> None:
    hasher = cheap()
    try:
        base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        def own_niceness() -> int:
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        assert await hasher._in_thread(own_niceness) == min(19, base + 10)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    finally:
        hasher.close()


async def test_past_the_waiting_line_a_hash_is_refused_at_once() -> None:
    hasher = PasswordHasher(
        time_cost=2, memory_cost=1024, parallelism=1, max_concurrent=1, max_waiting=2
    )
    try:
        # All ten arrive in one loop iteration: one hashes, two wait, seven are refused
        # (before any of them could have waited for a thread).
        results = await asyncio.gather(
            *(hasher.hash(f"password {n}") for n in range(10)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, HashingBusy)]
        hashed = [r for r in results if isinstance(r, str)]
        assert (len(hashed), len(refused)) == (3, 7), results
        # The line empties as hashes finish: the next caller is served.
        assert (await hasher.hash("later")).startswith("$argon2id$")
        # Verification waits in the same line.
        line = [hasher.verify("x", hashed[0]) for _ in range(4)]
        outcomes = await asyncio.gather(*line, return_exceptions=True)
        assert sum(isinstance(o, HashingBusy) for o in outcomes) == 1
    finally:
        hasher.close()


@pytest.mark.parametrize(("cores", "slots"), [(1, 1), (2, 1), (4, 3)])
def test_hashing_leaves_one_core_to_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, cores: int, slots: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert hashing_slots() == slots
    assert AuthSettings(jwt_secret="k" * 32).max_concurrent_hashes == slots
