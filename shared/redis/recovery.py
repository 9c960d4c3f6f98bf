"""Earning back the trust in what a module keeps in Redis (`RedisRecovery`).

The token denylist and the cache's versions live in Redis, which can lose them
without raising: a restart (maybe from an old snapshot), an outage during which
a write of ours went nowhere. Both modules therefore follow the same rule: after
an error, a missed write or a different server, check Redis and repair it before
serving from it again. `RedisRecovery` holds that rule once:

- the watch: the `RedisWatch` generation it last verified, to notice a new server;
- the dirty flag: a write missed Redis, so repair even if the server looks the same;
- at most one repair at a time per process (`OneAtATime`), its callers sharing it;
- a background task that repairs as soon as Redis answers after a missed write
  (other processes trust Redis as soon as it answers), logs what goes wrong and
  retries rather than dying silently, and stops in `aclose`.

What "repair" means belongs to the module: refill the denylist from the durable
store, or bump the cache's global epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from .client import REDIS_ERRORS, AnyRedis, RedisCircuit, redis_watch, server_run_id

ResultT = TypeVar("ResultT")


class OneAtATime(Generic[ResultT]):
    """Runs `work` at most once at a time in this process; callers that arrive while
    it runs await the same result.

    Repairs after an outage (refilling a denylist, bumping a cache epoch) must not
    run once per waiting request. `shield` keeps a caller's cancellation (a client
    that hung up) from cancelling the repair the others are waiting for.
    """

    def __init__(self, work: Callable[[], Awaitable[ResultT]]) -> None:
        self._work = work
        self._running: asyncio.Future[ResultT] | None = None

    async def __call__(self) -> ResultT:
        if self._running is None:
            self._running = asyncio.ensure_future(self._work())
            self._running.add_done_callback(self._done)
        return await asyncio.shield(self._running)

    def _done(self, future: asyncio.Future[ResultT]) -> None:
        self._running = None
        if not future.cancelled():
            future.exception()  # mark it retrieved: every waiter may have gone away


class Repair(Protocol):
    """Makes Redis trustworthy again for one module, or raises a Redis error.

    `run_id` names the server now answering. `dirty`: a write of this process
    missed Redis since the last repair. `server_changed`: another server answers
    than the one last verified.
    """

    async def __call__(
        self, redis: AnyRedis, run_id: bytes, *, dirty: bool, server_changed: bool
    ) -> None: ...


class RedisRecovery:
    """Says whether a module may trust its Redis state, and repairs it when not.

    `verified` is the run_id of the server last repaired or checked (None: check
    first). With `dirty_after_errors`, every failed call counts as a missed write
    (the cache bumps its epoch after any outage; the denylist only re-checks).
    """

    def __init__(
        self,
        redis: AnyRedis | None,
        repair: Repair,
        circuit: RedisCircuit,
        *,
        logger: logging.Logger,
        while_down: str,
        when_back: str | None = None,
        dirty_after_errors: bool = False,
        interval: float = 0.2,
    ) -> None:
        self.redis = redis
        self.circuit = circuit
        self.verified: bytes | None = None
        self.dirty = False
        self._watch = redis_watch(redis)
        self._generation = self._watch.generation if self._watch is not None else 0
        self._repair = repair
        self._dirty_after_errors = dirty_after_errors
        self._interval = interval
        # What the log says when Redis goes away and when it is trusted again.
        self._logger, self._while_down, self._when_back = logger, while_down, when_back
        # Counts missed writes, so a repair that began before one of them (and may
        # have read its source too early) does not declare Redis trustworthy.
        self._misses = 0
        self._once = OneAtATime(self._run)
        self._task: asyncio.Task[None] | None = None

    def server_changed(self) -> bool:
        """True when another server answers than the one last verified."""
        watch = self._watch
        return watch is not None and watch.generation != self._generation

    def trusted(self) -> bool:
        """True when Redis can be served from without a check first."""
        return self.verified is not None and not self.dirty and not self.server_changed()

    async def ensure(self) -> bool:
        """True once Redis is trustworthy, repairing it first when needed; never raises."""
        return self.trusted() or await self._once()

    def failed(self) -> None:
        """A call to Redis failed: check it before trusting it again."""
        self.verified = None
        if self._dirty_after_errors:
            self.mark_dirty()
        if self.circuit.failed():
            self._logger.warning("Redis unusable: %s", self._while_down)

    def forget(self) -> None:
        """What Redis said does not match what was verified: check it again first."""
        self.verified = None

    def mark_dirty(self) -> None:
        """Redis may lack a write of ours: repair it before trusting it again."""
        self.verified = None
        self.dirty = True
        self._misses += 1

    def missed_write(self) -> None:
        """A write of ours missed Redis: mark it dirty and repair it in the background."""
        self.mark_dirty()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._repair_until_clean())

    async def aclose(self) -> None:
        """Stop the background repair task, if one is running."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> bool:
        redis = self.redis
        if redis is None:
            return False
        generation = self._watch.generation if self._watch is not None else 0
        dirty, misses = self.dirty, self._misses
        try:
            run_id = await server_run_id(redis)
            await self._repair(
                redis, run_id, dirty=dirty, server_changed=generation != self._generation
            )
        except REDIS_ERRORS:
            self.failed()
            return False
        if self._misses != misses:
            return False  # a write missed Redis meanwhile: repair again first
        if self._watch is not None:
            self._watch.settle()  # every primary answered server_run_id: all are known
        if dirty:
            self.dirty = False
        self.verified = run_id
        self._generation = generation
        if self.circuit.succeeded() and self._when_back is not None:
            self._logger.info("Redis is back: %s", self._when_back)
        return True

    async def _repair_until_clean(self) -> None:
        while self.dirty:
            await asyncio.sleep(self._interval)
            try:
                await self._once()
            except Exception:
                self._logger.exception("repairing Redis failed; retrying")
