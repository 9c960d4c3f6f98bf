"""shared.auth passwords: Argon2 off the event loop, bounded, dummy hash, rehash."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

import pytest
from pwdlib import PasswordHash

from shared.auth import AuthSettings, HashingBusy, PasswordHasher, hashing_slots
from tests.waiting import wait_until

HOLD_SECONDS = 10


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
    """Spies on pwdlib's `PasswordHash` (every hasher's): counts verifications, watches
    how many hashes run at once, and holds each hash until `release` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.verifications = 0
        self.running = 0
        self.most = 0
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.release.set()
        # Per hash: True when `release` let it go, False when the hold timed out.
        self.released: list[bool] = []
        self.lock = threading.Lock()
        hash_, verify = PasswordHash.hash, PasswordHash.verify
        verify_and_update = PasswordHash.verify_and_update

        def counted_hash(inner: PasswordHash, password: str | bytes, **kwargs: Any) -> str:
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            self.started.release()
            try:
                self.released.append(self.release.wait(HOLD_SECONDS))
                return hash_(inner, password, **kwargs)
            finally:
                with self.lock:
                    self.running -= 1

        def counted_verify(inner: PasswordHash, password: str | bytes, hashed: str | bytes) -> bool:
            valid = verify(inner, password, hashed)
            self.verifications += 1
            return valid

        def counted_verify_and_update(
            inner: PasswordHash, password: str | bytes, hashed: str | bytes
        ) -> tuple[bool, str | None]:
            outcome = verify_and_update(inner, password, hashed)
            self.verifications += 1
            return outcome

        monkeypatch.setattr(PasswordHash, "hash", counted_hash)
        monkeypatch.setattr(PasswordHash, "verify", counted_verify)
        monkeypatch.setattr(PasswordHash, "verify_and_update", counted_verify_and_update)


async def test_an_unknown_user_still_costs_one_argon2_verification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hasher = cheap()
    counting = CountingHash(monkeypatch)
    assert await hasher.verify("whatever", None) == (False, None)
    assert await hasher.verify("whatever", "not-a-hash") == (False, None)
    assert counting.verifications == 2


async def test_concurrent_hashes_are_bounded_by_the_semaphore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hasher = cheap(max_concurrent=2)
    counting = CountingHash(monkeypatch)
    counting.release.clear()  # each hash waits in its thread until released
    hashes = asyncio.gather(*(hasher.hash(f"pw{i}") for i in range(8)))
    for _ in range(2):
        await wait_until(lambda: counting.started.acquire(blocking=False), "a hash started")
    # Two run, held; the other six wait their turn instead of starting.
    assert counting.running == 2
    counting.release.set()
    # A slot a hash never gives back would leave the rest waiting for it forever.
    await wait_until(hashes.done, "all eight hashes finish")
    await hashes
    assert counting.most == 2
    assert counting.released == [True] * 8


async def test_hashing_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = cheap()
    counting = CountingHash(monkeypatch)
    counting.release.clear()
    hashing = asyncio.create_task(hasher.hash("pw"))
    # The hash is held in its thread until this coroutine releases it: had it run on
    # the event loop, this coroutine could not run until the hold timed out.
    await wait_until(lambda: counting.started.acquire(blocking=False), "the hash started")
    counting.release.set()
    await wait_until(hashing.done, "the released hash finishes")
    assert (await hashing).startswith("$argon2id$")
    assert counting.released == [True]


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
async def test_hashing_threads_yield_the_cpu_to_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hasher = cheap()
    try:
        base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        niceness: list[int] = []
        hash_ = PasswordHash.hash

        def noting_niceness(inner: PasswordHash, password: str | bytes, **kwargs: Any) -> str:
            niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return hash_(inner, password, **kwargs)

        monkeypatch.setattr(PasswordHash, "hash", noting_niceness)
        await hasher.hash("pw")
        assert niceness == [min(19, base + 10)]
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
