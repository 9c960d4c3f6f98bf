"""Day 1-3: the same one-second wait written three ways. `make demo-week6` times them.

- `async def` + `await asyncio.sleep`: the event loop serves others while this one waits.
- plain `def` + `time.sleep`: FastAPI runs it in a threadpool (40 threads), so up to
  40 can wait at once; the 41st queues for a free thread.
- `async def` + `time.sleep`: the classic mistake. It runs on the event loop and
  blocks it: every other request, /health included, waits until it is done.
"""

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query

router = APIRouter(prefix="/demo", tags=["demo"])

Seconds = Annotated[float, Query(ge=0, le=5, allow_inf_nan=False, description="0 to 5")]


@router.get("/async-sleep")
async def async_sleep(seconds: Seconds = 1.0) -> dict[str, float]:
    """Wait without blocking: other requests run meanwhile."""
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@router.get("/sync-sleep")
def sync_sleep(seconds: Seconds = 1.0) -> dict[str, float]:
    """Wait in a worker thread: fine until the threadpool's 40 threads are all busy."""
    time.sleep(seconds)
    return {"slept": seconds}


@router.get("/blocking-sleep")
async def blocking_sleep(seconds: Seconds = 1.0) -> dict[str, float]:
    """Wait ON the event loop: don't do this; everything else stops."""
    time.sleep(seconds)  # noqa: ASYNC251 - the mistake this endpoint exists to show
    return {"slept": seconds}
