"""`make demo-week6`: time the same sleep written three ways, so the difference is seen.

It starts the week 6 app with uvicorn, fires many concurrent requests at each
demo endpoint, and prints how long each batch took.

    python -m week6_async.demo [--seconds 1] [--requests 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Batch:
    endpoint: str
    requests: int
    why: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until_up(base: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            try:
                if (await client.get(f"{base}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the app did not start")


async def fire(base: str, batch: Batch, seconds: float) -> float:
    """Send `batch.requests` requests at once and return how long the last one took."""
    limits = httpx.Limits(max_connections=batch.requests)
    timeout = httpx.Timeout(seconds * batch.requests + 30)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        url = f"/demo/{batch.endpoint}"
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(client.get(url, params={"seconds": seconds}) for _ in range(batch.requests))
        )
        elapsed = time.perf_counter() - started
    assert all(r.status_code == 200 for r in responses)
    return elapsed


async def run(seconds: float, requests: int) -> None:
    # 40 is the size of the threadpool FastAPI (through AnyIO) runs plain `def` endpoints in.
    batches = [
        Batch("async-sleep", requests, "one event loop waits for all of them at once"),
        Batch("sync-sleep", 40, "40 threads, 40 requests: each gets a thread at once"),
        Batch("sync-sleep", requests, "more than 40: the rest queue for a free thread"),
        Batch("blocking-sleep", 10, "time.sleep blocks the event loop: one after another"),
    ]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "uvicorn", "week6_async.app.main:app"),
        *("--port", str(port), "--log-level", "warning"),
        env={**os.environ, "DB_LATENCY_MS": "0"},
    )
    try:
        await wait_until_up(base)
        print(f"\nEach request sleeps {seconds:g} s. All requests of a row are sent at once.\n")
        print("| endpoint | requests | total time | requests/s | why |")
        print("|---|---:|---:|---:|---|")
        for batch in batches:
            elapsed = await fire(base, batch, seconds)
            print(
                f"| `{batch.endpoint}` | {batch.requests} | {elapsed:.2f} s "
                f"| {batch.requests / elapsed:.1f} | {batch.why} |"
            )
    finally:
        server.terminate()
        await server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.0, help="how long each request sleeps")
    parser.add_argument("--requests", type=int, default=50, help="requests per batch (> 40)")
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.requests))


if __name__ == "__main__":
    main()
