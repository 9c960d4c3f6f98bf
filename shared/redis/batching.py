"""One Redis command for the calls of one event-loop iteration (`Batcher`).

The hot-path calls of the rate limiter, the cache and the token denylist go
through it; nothing changes for their callers but the number of round trips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class Batcher(Generic[ItemT, ResultT]):
    """Sends the calls made during one event-loop iteration as one Redis command.

    Under load many requests reach the same Redis call in the same iteration, and
    redis-py spends far more per call (connection checkout, timeouts, parsing)
    than Redis spends per item. `run` gets every pending item and returns one
    result per item, in order, from a single command; the batch goes out on the
    next iteration, so a lone call waits for nothing but that.

    While one batch is on its way, the next one collects and leaves when the
    first returns: under load the batches grow instead of several round trips
    running side by side, each paying redis-py's per-call cost.
    """

    def __init__(
        self,
        run: Callable[[list[ItemT]], Awaitable[Sequence[ResultT]]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._scheduled: asyncio.Handle | None = None  # the flush at the next iteration
        self._in_flight = False  # a batch is waiting for Redis
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, item: ItemT) -> ResultT:
        """The result for `item`, from the batch it joins; raises what the batch raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_batch:
            self._flush()
        elif self._scheduled is None and not self._in_flight:
            self._scheduled = loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        if self._scheduled is not None:
            # A full batch may leave before the iteration's flush: the calls made after
            # it wait for it to return (`_next_batch`), not go out beside it.
            self._scheduled.cancel()
            self._scheduled = None
        if not self._pending:
            return
        self._in_flight = True
        batch, self._pending = self._pending, []
        # A task of its own: a caller that goes away must not cancel the others' batch.
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
            # One result per item, or the batch fails as a whole: a short answer must
            # not leave its last callers waiting forever.
            answers = list(zip(batch, results, strict=True))
        except BaseException as exc:
            self._next_batch()
            for _, future in batch:
                if not future.done():
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:
                        future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        self._next_batch()
        for (_, future), result in answers:
            if not future.done():
                future.set_result(result)

    def _next_batch(self) -> None:
        """This batch is back: send the calls that arrived meanwhile (they waited for it)."""
        self._in_flight = False
        self._flush()
