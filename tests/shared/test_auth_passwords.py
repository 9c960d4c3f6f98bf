"""shared.auth passwords: Argon2 off the event loop, bounded, dummy hash, rehash."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable
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


def test_without_affinity_the_cpu_count_decides_and_an_unknown_count_is_one_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # macOS and Windows have no sched_getaffinity: os.cpu_count() says how many cores.
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert hashing_slots() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undetermined"
    assert hashing_slots() == 1


async def test_explicit_parameters_win_over_the_settings() -> None:
    settings = AuthSettings(
        jwt_secret="k" * 32, argon2_memory_cost=128, argon2_time_cost=2, argon2_parallelism=3
    )
    hasher = PasswordHasher(settings)
    explicit = PasswordHasher(settings, time_cost=1, memory_cost=256, parallelism=2)
    try:
        assert "$m=128,t=2,p=3$" in await hasher.hash("pw")
        assert "$m=256,t=1,p=2$" in await explicit.hash("pw")
    finally:
        hasher.close()
        explicit.close()


async def test_without_settings_eight_hashes_may_wait_for_a_thread() -> None:
    hasher = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, max_concurrent=1)
    try:
        # All twelve arrive in one loop iteration: one hashes, eight wait, three are refused.
        results = await asyncio.gather(
            *(hasher.hash(f"password {n}") for n in range(12)), return_exceptions=True
        )
        assert sum(isinstance(r, str) for r in results) == 9, results
        assert sum(isinstance(r, HashingBusy) for r in results) == 3, results
    finally:
        hasher.close()


async def test_close_returns_at_once_and_a_hash_under_way_still_finishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hasher = cheap(max_concurrent=1)
    counting = CountingHash(monkeypatch)
    counting.release.clear()
    hashing = asyncio.create_task(hasher.hash("pw"))
    await wait_until(lambda: counting.started.acquire(blocking=False), "the hash started")
    # close() runs on the event loop (an app's shutdown): had it waited for the held
    # hash, it would have returned only once the hold timed out.
    hasher.close()
    assert counting.released == []
    counting.release.set()
    assert (await hashing).startswith("$argon2id$")
    assert counting.released == [True]


async def test_a_hash_whose_caller_went_away_still_holds_its_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancelled caller gives its slot back while its hash runs on in its thread: the
    pool's size then keeps the next hash from starting beside it (memory stays bounded),
    and the threads are named argon2_N, so a thread dump tells what they are."""
    before = set(threading.enumerate())
    hasher = cheap(max_concurrent=1)
    counting = CountingHash(monkeypatch)
    counting.release.clear()
    loop = asyncio.get_running_loop()
    handed_over = 0
    run_in_executor = loop.run_in_executor

    def counted(executor: Any, function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        nonlocal handed_over
        handed_over += 1
        return run_in_executor(executor, function, *args)

    monkeypatch.setattr(loop, "run_in_executor", counted)
    try:
        abandoned = asyncio.create_task(hasher.hash("first"))
        await wait_until(lambda: counting.started.acquire(blocking=False), "the hash started")
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        second = asyncio.create_task(hasher.hash("second"))
        await wait_until(lambda: handed_over == 2, "the second hash reaches the pool")
        hashing = [t for t in threading.enumerate() if t not in before]
        assert [t.name.startswith("argon2_") for t in hashing] == [True]
        counting.release.set()
        assert (await second).startswith("$argon2id$")
        assert counting.most == 1
    finally:
        counting.release.set()
        hasher.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux")
@pytest.mark.parametrize(
    ("options", "nice"),
    [
        pytest.param({}, 10, id="default"),
        pytest.param({"nice": 3}, 3, id="explicit"),
        pytest.param(
            {"settings": AuthSettings(jwt_secret="k" * 32, argon2_nice=5)}, 5, id="settings"
        ),
    ],
)
async def test_hashing_threads_ask_for_the_configured_niceness(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], nice: int
) -> None:
    # What the thread asks for, not what it gets: in a process already niced (as under
    # `nice make mutate`) the kernel caps both 10 and 11 above it at 19.
    asked: list[tuple[int, int]] = []
    setpriority = os.setpriority

    def noting(which: int, who: int, priority: int) -> None:
        asked.append((who, priority - os.getpriority(which, who)))
        setpriority(which, who, priority)

    monkeypatch.setattr(os, "setpriority", noting)
    hasher = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, **options)
    try:
        await hasher.hash("pw")
        [(thread, more)] = asked
        assert more == nice
        assert thread != threading.get_native_id()  # the hashing thread, not the loop's
    finally:
        hasher.close()


@pytest.mark.parametrize("failure", ["unsupported", "refused"])
async def test_hashing_works_where_thread_niceness_cannot_be_changed(
    monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    # No os.getpriority (Windows), or a sandbox that refuses setpriority: the hashes
    # still run, only at the event loop's priority.
    if failure == "unsupported":
        monkeypatch.delattr(os, "getpriority", raising=False)
    else:

        def refuse(*args: int) -> None:
            raise PermissionError("setpriority is not allowed here")

        monkeypatch.setattr(os, "setpriority", refuse)
    hasher = cheap()
    try:
        hashed = await hasher.hash("pw")
        assert await hasher.verify("pw", hashed) == (True, None)
    finally:
        hasher.close()
