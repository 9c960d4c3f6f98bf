"""Argon2 password hashing off the event loop (week 7: auth basics).

At most `max_concurrent_hashes` hashes run at a time (each takes
`argon2_memory_cost` KiB: 64 MiB by default), in threads of a lower priority; a
dummy hash for unknown users makes them take as long as known ones, and a hash
made with older parameters is replaced at the next login.
"""

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher

from .settings import AuthSettings, hashing_slots

_T = TypeVar("_T")


class HashingBusy(Exception):
    """Every hashing thread is busy and the waiting line is full: try again shortly."""


def _lower_thread_priority(nice: int) -> None:
    # Linux: niceness is per thread and inherited by the threads Argon2 starts for
    # its lanes, so hashing yields the CPU to the event loop instead of sharing it.
    # Relative to the niceness the thread was started with (the event loop's): in a
    # process already niced, a fixed value would not be lower than the loop's.
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + nice)


class PasswordHasher:
    """Argon2 via pwdlib, in worker threads of its own, `max_concurrent` at a time.

    The threads run at a lower priority (`nice`): a burst of logins on a small
    machine then slows other logins, not every other request of the process.
    """

    def __init__(
        self,
        settings: AuthSettings | None = None,
        *,
        time_cost: int | None = None,
        memory_cost: int | None = None,
        parallelism: int | None = None,
        max_concurrent: int | None = None,
        max_waiting: int | None = None,
        nice: int | None = None,
    ) -> None:
        def pick(explicit: int | None, name: str, default: int) -> int:
            if explicit is not None:
                return explicit
            return int(getattr(settings, name)) if settings is not None else default

        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=pick(time_cost, "argon2_time_cost", 3),
                    memory_cost=pick(memory_cost, "argon2_memory_cost", 65536),
                    parallelism=pick(parallelism, "argon2_parallelism", 1),
                ),
            )
        )
        # Each hash holds memory_cost KiB for its duration: the semaphore bounds memory
        # (and the pool's size holds it even for a hash whose caller went away).
        slots = pick(max_concurrent, "max_concurrent_hashes", hashing_slots())
        self._slots = asyncio.Semaphore(slots)
        # Running plus waiting: beyond this a hash is refused rather than queued.
        self._capacity = slots + pick(max_waiting, "max_waiting_hashes", 8)
        self._pending = 0
        self._threads = ThreadPoolExecutor(
            max_workers=slots,
            thread_name_prefix="argon2",
            initializer=_lower_thread_priority,
            initargs=(pick(nice, "argon2_nice", 10),),
        )
        self._dummy: str | None = None

    def close(self) -> None:
        """Let the hashing threads go (they also go when the hasher is garbage-collected)."""
        self._threads.shutdown(wait=False)

    async def _in_thread(self, function: Callable[..., _T], *args: str) -> _T:
        if self._pending >= self._capacity:
            raise HashingBusy
        self._pending += 1
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._threads, function, *args)
        finally:
            self._pending -= 1

    async def hash(self, password: str) -> str:
        """Hash a password in a worker thread; raises `HashingBusy` when the line is full."""
        return await self._in_thread(self._hash.hash, password)

    async def verify(self, password: str, hashed: str | None) -> tuple[bool, str | None]:
        """Check a password; `hashed` None (unknown user) checks a dummy hash of equal cost.

        Returns (valid, new_hash): new_hash is set when the stored hash used other
        parameters than the current ones, so the caller can store it.
        """
        if hashed is None:
            await self._verify_dummy(password)
            return False, None
        try:
            return await self._in_thread(self._hash.verify_and_update, password, hashed)
        except UnknownHashError:
            pass
        await self._verify_dummy(password)
        return False, None

    async def _verify_dummy(self, password: str) -> None:
        # Verify a dummy hash so unknown emails take as long as wrong passwords.
        if self._dummy is None:
            self._dummy = await self.hash(uuid.uuid4().hex)
        await self._in_thread(self._hash.verify, password, self._dummy)
