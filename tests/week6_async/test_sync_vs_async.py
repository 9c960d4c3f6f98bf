"""Days 1-3: the lesson itself, with margins wide enough never to flake.

Ten requests that each sleep 0.3 s: one after another they take ten times as long
as one. Overlap is measured against one request timed in the same test, so a busy
machine slows both sides of the ratio.
"""

import asyncio
import time

import httpx
import pytest

SLEEP = 0.3
REQUESTS = 10
SERIAL = SLEEP * REQUESTS


async def time_concurrent(
    client: httpx.AsyncClient, endpoint: str, requests: int = REQUESTS
) -> float:
    started = time.perf_counter()
    responses = await asyncio.gather(
        *(client.get(f"/demo/{endpoint}", params={"seconds": SLEEP}) for _ in range(requests))
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return time.perf_counter() - started


async def requests_worth(client: httpx.AsyncClient, endpoint: str) -> float:
    """How many single requests' time ten at once take: about 1 if they overlap, 10 if not."""
    one = await time_concurrent(client, endpoint, requests=1)
    return await time_concurrent(client, endpoint) / one


async def test_async_sleep_lets_requests_overlap(client: httpx.AsyncClient) -> None:
    assert await requests_worth(client, "async-sleep") < REQUESTS / 2


async def test_sync_sleep_overlaps_in_the_threadpool(client: httpx.AsyncClient) -> None:
    assert await requests_worth(client, "sync-sleep") < REQUESTS / 2


async def test_blocking_sleep_serialises_everything(client: httpx.AsyncClient) -> None:
    assert await time_concurrent(client, "blocking-sleep") >= SERIAL * 0.95


@pytest.mark.parametrize("endpoint", ["async-sleep", "sync-sleep", "blocking-sleep"])
async def test_demo_answers_what_it_slept(client: httpx.AsyncClient, endpoint: str) -> None:
    r = await client.get(f"/demo/{endpoint}", params={"seconds": 0.01})
    assert r.status_code == 200, r.text
    assert r.json() == {"slept": 0.01}


@pytest.mark.parametrize("seconds", ["-1", "5.01", "nan", "inf", "soon", ""])
async def test_demo_rejects_seconds_outside_0_to_5(client: httpx.AsyncClient, seconds: str) -> None:
    for endpoint in ("async-sleep", "sync-sleep", "blocking-sleep"):
        r = await client.get(f"/demo/{endpoint}", params={"seconds": seconds})
        assert r.status_code == 422, (endpoint, r.text)
