"""Week 6's sync-vs-async lesson: the same wait written three ways.

- `async def` + `await asyncio.sleep`: the event loop serves others while this one waits.
- plain `def` + `time.sleep`: FastAPI runs it in its threadpool (40 threads).
- `async def` + `time.sleep`: the classic mistake; it blocks the event loop, and
  every other request of this worker waits. Rate limited like every route.
"""

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query

from ..errors import problem_responses
from ..schemas import Slept

router = APIRouter(prefix="/demo", tags=["demo"])

Seconds = Annotated[float, Query(ge=0, le=5, allow_inf_nan=False, description="0 to 5")]
RESPONSES = problem_responses(422, 429)


@router.get("/async-sleep", responses=RESPONSES)
async def async_sleep(seconds: Seconds = 1.0) -> Slept:
    """Wait without blocking: other requests run meanwhile."""
    await asyncio.sleep(seconds)
    return Slept(slept=seconds)


@router.get("/sync-sleep", responses=RESPONSES)
def sync_sleep(seconds: Seconds = 1.0) -> Slept:
    """Wait in a worker thread: fine until the threadpool's threads are all busy."""
    time.sleep(seconds)
    return Slept(slept=seconds)


@router.get("/blocking-sleep", responses=RESPONSES)
async def blocking_sleep(seconds: Seconds = 1.0) -> Slept:
    """Wait ON the event loop: don't do this; everything else stops."""
    time.sleep(seconds)  # noqa: ASYNC251 - the mistake this endpoint exists to show
    return Slept(slept=seconds)
